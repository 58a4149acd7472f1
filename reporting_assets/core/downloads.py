"""Loading a (date, account) partition: its landed pages, checked complete, into a DuckDB table per report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb

from reporting_assets.core.keys import parse_key
from reporting_assets.core.landing import LANDED_SCHEMA, Completeness, LandingZone
from reporting_assets.core.reports import ReportSpec, get_report

DUCKDB_TYPES = {"string": "VARCHAR", "date32[day]": "DATE", "int64": "BIGINT", "double": "DOUBLE"}


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


def survey(zone: LandingZone, keys: Iterable[str], reports: Iterable[ReportSpec]) -> list[PartitionLoad]:
    """What the landing zone holds for each partition key (`account|date`) and report."""
    reports = list(reports)
    loads = []
    for key in keys:
        date, account = parse_key(key)
        for report in reports:
            loads.append(PartitionLoad(date, account, report.name, zone.completeness(report.name, date, account)))
    return loads


def partition_settled(zone: LandingZone, date: str, account: str, reports: Iterable[str]) -> bool:
    """Every page of every report of the partition is landed or dead-lettered (what a load needs)."""
    for report in reports:
        load = PartitionLoad(date, account, report, zone.completeness(report, date, account))
        if load.still_downloading:
            return False
        # Pages of one download share the chain of their first page. A mix means the partition is
        # being downloaded again (re-enqueued) and only part of the new chain has landed so far.
        if len({getattr(page.request, "chain", "") for page in load.completeness.pages}) > 1:
            return False
    return True
