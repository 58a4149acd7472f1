"""Loading a (date, account) partition: its landed pages, checked complete, into a DuckDB table per report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb

from reporting_assets.core.keys import parse_key
from reporting_assets.core.landing import LANDED_SCHEMA, Completeness, LandingZone
from reporting_assets.core.reports import ReportSpec, get_report

DUCKDB_TYPES = {"string": "VARCHAR", "date32[day]": "DATE", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN"}


@dataclass(frozen=True)
class PartitionLoad:
    date: str
    account: str
    report: str
    completeness: Completeness

    @property
    def partition(self) -> tuple[str, str, str]:
        return (self.report, self.date, self.account)

    @property
    def label(self) -> str:
        return f"{self.report} {self.date} {self.account}"

    @property
    def still_downloading(self) -> list[int]:
        """Missing pages that are not dead-lettered: their requests are still on the topic."""
        dead = {
            (str(letter.request.get("filters", "")), letter.request["start_row"])
            for letter in self.completeness.dead_letters
            if letter.request
        }
        return [row for filters, row in self.completeness.missing if (filters, row) not in dead]


def coverage(loads: Iterable[PartitionLoad]) -> dict[str, dict[str, int]]:
    """Per partition report past the row cap: its rows, the slices it was split into, those still at the cap."""
    return {
        load.label: {
            "rows": load.completeness.rows,
            "slices": load.completeness.slices,
            "truncated_slices": len(load.completeness.truncated),
        }
        for load in loads
        if load.completeness.slices or load.completeness.truncated
    }


def table_name(report: ReportSpec) -> str:
    return report.name


def create_table_sql(name: str) -> str:
    columns = ", ".join(f'"{field.name}" {DUCKDB_TYPES[str(field.type)]}' for field in LANDED_SCHEMA)
    return f'CREATE TABLE IF NOT EXISTS "{name}" ({columns})'


def ensure_table(db: duckdb.DuckDBPyConnection, name: str) -> None:
    """The table with every landed column; one made before a column was added gets it (NULL)."""
    db.execute(create_table_sql(name))
    add_missing_columns(db, name, LANDED_SCHEMA.names)


def add_missing_columns(db: duckdb.DuckDBPyConnection, name: str, columns: Iterable[str]) -> None:
    have = {row[0] for row in db.execute(f'DESCRIBE "{name}"').fetchall()}
    for field in LANDED_SCHEMA:
        if field.name in columns and field.name not in have:
            db.execute(f'ALTER TABLE "{name}" ADD COLUMN "{field.name}" {DUCKDB_TYPES[str(field.type)]}')


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
    db.execute(
        f'INSERT INTO "{name}" ({columns}) SELECT {columns} FROM read_parquet(?, hive_partitioning = false)', [files]
    )
    return load.completeness.rows


def survey(
    zone: LandingZone,
    keys: Iterable[str],
    reports: Iterable[str] | None = None,
    also: Iterable[tuple[str, str, str]] = (),
) -> list[PartitionLoad]:
    """What the landing zone holds for each partition key (`account|date`) and report.

    `reports` None: every report enqueued for the partition: those with a download, and those of
    `also` ((report, date, account) with requests on their way, maybe not one landed yet).
    """
    chosen = None if reports is None else list(reports)
    on_the_way: dict[tuple[str, str], set[str]] = {}
    for report, date, account in also:
        on_the_way.setdefault((date, account), set()).add(report)
    loads = []
    for key in keys:
        date, account = parse_key(key)
        names = (
            chosen
            if chosen is not None
            else sorted(set(zone.reports_of(date, account)) | on_the_way.get((date, account), set()))
        )
        for report in names:
            loads.append(PartitionLoad(date, account, report, zone.completeness(report, date, account)))
    return loads


def partition_settled(zone: LandingZone, date: str, account: str) -> bool:
    """Every page of the newest download of every report of the partition is landed or dead-lettered.

    Asked once the group has committed past the partition's enqueue: each of its first pages then left
    its download's folder (a page, a dead-letter marker, or a page awaited from the delay topic), so
    the folders say which reports were enqueued. None yet: its requests are not done.
    """
    reports = zone.reports_of(date, account)
    return bool(reports) and not any(
        PartitionLoad(date, account, report, zone.completeness(report, date, account)).still_downloading
        for report in reports
    )


def remove_replaced(zone: LandingZone, loads: Iterable[PartitionLoad]) -> int:
    """After the loads are committed: delete the downloads older than the ones they loaded."""
    return sum(
        zone.remove_older_downloads(load.report, load.date, load.account, load.completeness.download)
        for load in loads
        if load.completeness.download is not None
    )
