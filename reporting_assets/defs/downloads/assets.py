"""Downloaded reports: each (date, account) partition's landed pages, loaded into DuckDB."""

import dagster as dg
from pydantic import Field

from reporting_assets.core.downloads import coverage, ensure_table, load_partition, remove_replaced, survey, table_name
from reporting_assets.core.keys import (
    COMPLETE_CHECK,
    COVERAGE_CHECK,
    DOWNLOAD_SENSOR,
    DOWNLOADS_ASSET,
    REQUESTS_ASSET,
    SENSOR_TAG,
)
from reporting_assets.core.landing import describe
from reporting_assets.core.reports import get_report
from reporting_assets.core.rerun import PartitionId, on_the_way
from reporting_assets.defs.partitions import account_date_partitions
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.warehouse import WarehouseResource


class LoadConfig(dg.Config):
    reports: list[str] | None = Field(
        default=None,
        description="Reports to load per partition; by default every report enqueued for it (with a download).",
    )


@dg.asset(
    name=DOWNLOADS_ASSET,
    partitions_def=account_date_partitions,
    deps=[REQUESTS_ASSET],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="reporting",
    kinds={"duckdb", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            COMPLETE_CHECK,
            asset=DOWNLOADS_ASSET,
            # Not blocking: a blocking check fails the run (and its retries) for what the partition's
            # data, not the load, is missing; exported_reports refuses the date itself instead.
            description="Every request of the partition is landed: no page missing, none dead-lettered.",
        ),
        dg.AssetCheckSpec(
            COVERAGE_CHECK,
            asset=DOWNLOADS_ASSET,
            description=(
                "Every row Google serves is landed: a site-day past the 50 000-row cap was split into slices "
                "each under it (none left truncated; rows of anonymized queries are never served)."
            ),
        ),
    ],
)
def downloaded_reports(
    context: dg.AssetExecutionContext, config: LoadConfig, warehouse: WarehouseResource, kafka: KafkaResource
) -> dg.MaterializeResult:
    """Landed rows of each (date, account), in a DuckDB table per report; rerunning changes nothing.

    Each (report, date, account) is its newest download, taken whole once complete. A partition whose
    requests are still on the topics is not loaded: the run fails and says so (the download sensor
    loads it once done). The sensor has checked that before launching; any other run reads the topics.
    """
    for name in config.reports or ():
        get_report(name)  # an unknown report name fails here, before anything is read
    zone = warehouse.landing_zone()
    on_the_topics: set[PartitionId] = set()
    if context.run.tags.get(SENSOR_TAG) != DOWNLOAD_SENSOR:
        left = kafka.cluster().uncommitted_values([kafka.request_topic, kafka.delay_topic])
        on_the_topics = on_the_way(left, kafka.delay_topic)
    loads = survey(zone, context.partition_keys, config.reports, also=on_the_topics)
    downloading = [load for load in loads if load.still_downloading or load.partition in on_the_topics]
    if downloading:
        raise dg.Failure(
            description=(
                f"{len(downloading)} of {len(loads)} partition reports still have requests on the topic "
                f"(e.g. {downloading[0].label}: {describe(downloading[0].completeness)}). "
                "Run the download_requests job (or let the lag sensor do it) and materialize again."
            ),
            metadata={"still_downloading": dg.MetadataValue.json([load.label for load in downloading[:50]])},
        )
    with warehouse.connect() as db:
        db.execute("BEGIN TRANSACTION")
        for report in sorted({load.report for load in loads}):
            ensure_table(db, table_name(get_report(report)))
        rows = sum(load_partition(db, load) for load in loads)
        db.execute("COMMIT")
    replaced = remove_replaced(zone, loads)
    dead = [load for load in loads if load.completeness.dead_letters]
    dead_count = sum(len(load.completeness.dead_letters) for load in dead)
    landed = sum(len(load.completeness.pages) for load in loads)
    context.log.info(
        f"loaded {rows} rows from {landed} landed requests; {dead_count} dead-lettered; "
        f"{replaced} replaced downloads removed"
    )
    check = dg.AssetCheckResult(
        check_name=COMPLETE_CHECK,
        passed=not dead,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "all requests landed"
            if not dead
            else f"{dead_count} requests dead-lettered in {len(dead)} partition reports "
            f"(e.g. {dead[0].label}: {dead[0].completeness.dead_letters[0].error}). "
            "Fix the cause, run redrive_dead_letters, then download again."
        ),
        metadata={"dead_lettered": dead_count, "incomplete": dg.MetadataValue.json([d.label for d in dead[:50]])},
    )
    split = coverage(loads)
    truncated = {label: figures for label, figures in split.items() if figures["truncated_slices"]}
    coverage_check = dg.AssetCheckResult(
        check_name=COVERAGE_CHECK,
        passed=not truncated,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(split)} partition reports split past the row cap, every slice under it"
            if not truncated
            else f"{len(truncated)} partition reports still have slices at the row cap that no filter splits "
            f"further (e.g. {next(iter(truncated))}): their rows past it are missing"
        ),
        metadata={
            "split": len(split),
            "truncated": len(truncated),
            "coverage": dg.MetadataValue.json(dict(list(split.items())[:50])),
        },
    )
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "requests_landed": landed,
            "requests_dead_lettered": dead_count,
            "complete": not dead,
            "partitions_in_run": len(context.partition_keys),
            # Site-days past Google's row cap, split into filtered slices (see the within_row_cap check).
            "split_past_row_cap": len(split),
            "downloads_replaced": replaced,
            "downloads": dg.MetadataValue.json({load.label: load.completeness.download for load in loads[:50]}),
            # Days Google still collects: pulled again (refresh_provisional) until final.
            "provisional": sum(1 for load in loads if load.completeness.provisional),
            "data_state": dg.MetadataValue.json(
                {load.label: "provisional" if load.completeness.provisional else "final" for load in loads[:50]}
            ),
        },
        check_results=[check, coverage_check],
    )
