"""The request topic: one Kafka message per API call, enqueued by Spark."""

import dagster as dg
from pydantic import Field

from reporting_assets.core.enqueue import request_frame, write_requests
from reporting_assets.core.keys import ACCOUNTS_ASSET, REFRESH_TAG, REQUESTS_ASSET
from reporting_assets.core.messages import DATA_STATES, MAX_ROW_LIMIT, new_download_id
from reporting_assets.core.reports import get_report
from reporting_assets.core.rerun import on_the_way, plan_enqueue
from reporting_assets.defs.partitions import account_date_partitions, split_key
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.spark import KafkaSparkResource
from reporting_assets.resources.warehouse import WarehouseResource
from reporting_assets.settings import load_settings


class RequestConfig(dg.Config):
    reports: list[str] = Field(
        default=load_settings().report_names(),
        description="Reports to request per partition (REPORTING_REPORTS; `python -m reporting_assets reports` lists them).",
    )
    row_limit: int = Field(
        default=load_settings().row_limit,
        ge=1,
        le=MAX_ROW_LIMIT,
        description="Rows per page (REPORTING_ROW_LIMIT; Search Console allows up to 25 000, the fewest calls).",
    )
    data_state: str | None = Field(
        default=None,
        description="final, all or hourly_all instead of each report's own (its catalog entry's data_state).",
    )
    refresh: bool = Field(
        default=False,
        description=(
            "Download again what is already downloaded or on its way (so does the run tag "
            "reporting_assets/refresh=true, e.g. on a UI backfill). By default a run continues: a partition "
            "whose requests are still on the topics (a killed run's) or that is landed complete is not enqueued."
        ),
    )


@dg.asset(
    name=REQUESTS_ASSET,
    partitions_def=account_date_partitions,
    deps=[ACCOUNTS_ASSET],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="reporting",
    kinds={"kafka", "spark"},
)
def report_requests(
    context: dg.AssetExecutionContext,
    config: RequestConfig,
    spark: KafkaSparkResource,
    kafka: KafkaResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """First-page API calls for each (date, account) × report, on the request topic.

    A rerun continues: what is still on the topics or landed complete is not enqueued again
    (`refresh` to download it anew).
    """
    reports = [get_report(name) for name in config.reports]
    if config.data_state is not None and config.data_state not in DATA_STATES:
        raise ValueError(f"RequestConfig.data_state {config.data_state!r} is not one of {', '.join(DATA_STATES)}")
    hourly = sorted(spec.name for spec in reports if "hour" in spec.dimensions)
    if config.data_state is not None and (config.data_state == "hourly_all") != bool(hourly):
        raise ValueError(
            f"RequestConfig.data_state {config.data_state}: Google takes hourly_all with the hour dimension and "
            f"only with it (hourly reports asked for: {hourly or 'none'})"
        )
    pairs = [(account, date) for date, account in map(split_key, context.partition_keys)]
    refresh = config.refresh or context.run.tags.get(REFRESH_TAG, "").lower() == "true"
    kafka.ensure_topics()
    cluster = kafka.cluster()
    left = () if refresh else cluster.uncommitted_values([kafka.request_topic, kafka.delay_topic])
    pending = on_the_way(left, kafka.delay_topic)
    zone = warehouse.landing_zone()
    plan = plan_enqueue(pairs, config.reports, pending, zone, refresh=refresh)
    context.log.info(plan.describe())
    download = new_download_id()
    if plan.to_enqueue:
        # The new downloads' folders first: from now on a load waits for them, never takes an older one.
        zone.begin_downloads(plan.to_enqueue, download)
        frame = request_frame(
            spark.spark_session, pairs, reports, config.row_limit, download, config.data_state, skip=plan.skipped
        )
        write_requests(frame, kafka.spark_options(), kafka.request_topic)
    watermark = kafka.end_offsets(kafka.request_topic)
    enqueued = len(plan.to_enqueue)
    context.log.info(f"enqueued {enqueued} requests on {kafka.request_topic}; end offsets {watermark}")
    return dg.MaterializeResult(
        metadata={
            "requests_enqueued": enqueued,
            "download": download if enqueued else "",
            "partitions_continued": len(plan.continued),
            "partitions_already_downloaded": len(plan.downloaded),
            "partitions_unavailable": len(plan.unavailable),
            "refresh": refresh,
            "partitions_in_run": len(pairs),
            "reports": dg.MetadataValue.json(config.reports),
            "topic": kafka.request_topic,
            "end_offsets": dg.MetadataValue.json({str(p): o for p, o in sorted(watermark.items())}),
        }
    )
