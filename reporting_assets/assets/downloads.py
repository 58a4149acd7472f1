"""Downloaded reports: each (date, account) partition's landed pages, loaded into DuckDB."""


from dataclasses import dataclass

import dagster as dg
import duckdb
from pydantic import Field

from reporting_assets.assets.requests import report_requests
from reporting_assets.consumer.landing import LANDED_SCHEMA, Completeness, LandingZone, describe
from reporting_assets.partitions import account_date_partitions, split_key
from reporting_assets.reports import DEFAULT_REPORTS, ReportSpec, get_report
from reporting_assets.resources.warehouse import WarehouseResource

COMPLETE_CHECK = "all_requests_landed"

DUCKDB_TYPES = {"string": "VARCHAR", "date32[day]": "DATE", "int64": "BIGINT", "double": "DOUBLE"}


class LoadConfig(dg.Config):
    reports: list[str] = Field(default=list(DEFAULT_REPORTS), description="Reports to load per partition.")


@dataclass(frozen=True)
class PartitionLoad:
    date: str
    account: str
    report: str
    completeness: Completeness

    @property
    def label(self) -> str:
        return f"{self.report} {self.date} {self.account}"

    @property
    def still_downloading(self) -> list[int]:
        """Missing pages that are not dead-lettered: their requests are still on the topic."""
        dead_rows = {letter.request["start_row"] for letter in self.completeness.dead_letters if letter.request}
        return [row for row in self.completeness.missing_start_rows if row not in dead_rows]


def table_name(report: ReportSpec) -> str:
    return report.name


def create_table_sql(name: str) -> str:
    columns = ", ".join(f'"{field.name}" {DUCKDB_TYPES[str(field.type)]}' for field in LANDED_SCHEMA)
    return f'CREATE TABLE IF NOT EXISTS "{name}" ({columns})'


def load_partition(db: duckdb.DuckDBPyConnection, load: PartitionLoad) -> int:
    """Delete-then-insert one (report, date, account) in the caller's transaction; returns rows."""
    name = table_name(get_report(load.report))
    db.execute(f'DELETE FROM "{name}" WHERE "date" = ?::DATE AND account = ?', [load.date, load.account])
    files = [str(page.path) for page in load.completeness.pages]
    if not files:
        return 0
    columns = ", ".join(f'"{name}"' for name in LANDED_SCHEMA.names)
    # hive_partitioning off: DuckDB would otherwise take `account`/`date` from the folder names,
    # which hold the file-safe form of the account, not the account itself.
    db.execute(f'INSERT INTO "{name}" SELECT {columns} FROM read_parquet(?, hive_partitioning = false)', [files])
    return load.completeness.rows


def survey(zone: LandingZone, keys: list[str], reports: list[ReportSpec]) -> list[PartitionLoad]:
    loads = []
    for key in keys:
        date, account = split_key(key)
        for report in reports:
            loads.append(PartitionLoad(date, account, report.name, zone.completeness(report.name, date, account)))
    return loads


@dg.asset(
    partitions_def=account_date_partitions,
    deps=[report_requests],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="reporting",
    kinds={"duckdb", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            COMPLETE_CHECK,
            asset="downloaded_reports",
            description="Every request of the partition is landed: no page missing, none dead-lettered.",
        )
    ],
)
def downloaded_reports(
    context: dg.AssetExecutionContext, config: LoadConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Landed rows of each (date, account), in a DuckDB table per report; rerunning changes nothing."""
    reports = [get_report(name) for name in config.reports]
    loads = survey(warehouse.landing_zone(), list(context.partition_keys), reports)
    downloading = [load for load in loads if load.still_downloading]
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
        for report in reports:
            db.execute(create_table_sql(table_name(report)))
        rows = sum(load_partition(db, load) for load in loads)
        db.execute("COMMIT")
    dead = [load for load in loads if load.completeness.dead_letters]
    dead_count = sum(len(load.completeness.dead_letters) for load in dead)
    landed = sum(len(load.completeness.pages) for load in loads)
    context.log.info(f"loaded {rows} rows from {landed} landed requests; {dead_count} dead-lettered")
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
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "requests_landed": landed,
            "requests_dead_lettered": dead_count,
            "complete": not dead,
            "partitions_in_run": len(context.partition_keys),
        },
        check_results=[check],
    )
