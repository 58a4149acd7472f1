"""Exports of one date for analysts: a DuckDB table per report and CSV, Parquet and JSON files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from reporting_assets.core.downloads import add_missing_columns, ensure_table, table_name
from reporting_assets.core.durable import replace_durably, temporary_path
from reporting_assets.core.landing import LANDED_SCHEMA, LandingZone
from reporting_assets.core.reports import ReportSpec

FORMATS = {
    "csv": "(FORMAT csv, HEADER true)",
    "parquet": "(FORMAT parquet, COMPRESSION zstd)",
    "json": "(FORMAT json, ARRAY true)",
}
# Which download a row came from is bookkeeping (it differs between two runs of the same data): not exported.
EXPORT_COLUMNS = [name for name in LANDED_SCHEMA.names if name not in ("request_id", "download", "report")]


def export_file(db: duckdb.DuckDBPyConnection, source: str, target: Path, fmt: str) -> None:
    """COPY to a temporary file in the target folder, then rename: readers never see half a file."""
    tmp = temporary_path(target)
    try:
        literal = str(tmp).replace("'", "''")
        db.execute(f"COPY {source} TO '{literal}' {FORMATS[fmt]}")
        replace_durably(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def export_date(
    db: duckdb.DuckDBPyConnection, exports_dir: Path, report: ReportSpec, date: str, formats: list[str]
) -> tuple[int, dict[str, str]]:
    """Replace the date's rows in `export_<report>` and write its files; returns (rows, files by name)."""
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise ValueError(f"ExportConfig.formats: unknown {unknown} (allowed: {', '.join(FORMATS)})")
    columns = ", ".join(f'"{name}"' for name in EXPORT_COLUMNS)
    source = table_name(report)
    export_table = f"export_{report.name}"
    ensure_table(db, source)
    db.execute("BEGIN TRANSACTION")
    db.execute(f'CREATE TABLE IF NOT EXISTS "{export_table}" AS SELECT {columns} FROM "{source}" LIMIT 0')
    add_missing_columns(db, export_table, EXPORT_COLUMNS)
    db.execute(f'DELETE FROM "{export_table}" WHERE "date" = ?::DATE', [date])
    db.execute(
        f'INSERT INTO "{export_table}" ({columns}) SELECT {columns} FROM "{source}" WHERE "date" = ?::DATE '
        "ORDER BY account, row_number",
        [date],
    )
    db.execute("COMMIT")
    rows = db.execute(f'SELECT count(*) FROM "{export_table}" WHERE "date" = ?::DATE', [date]).fetchone()[0]
    # COPY cannot take parameters: stage the date's rows in a temp table first.
    db.execute(
        f'CREATE OR REPLACE TEMP TABLE export_day AS SELECT {columns} FROM "{export_table}" '
        'WHERE "date" = ?::DATE ORDER BY account, row_number',
        [date],
    )
    files: dict[str, str] = {}
    for fmt in formats:
        target = exports_dir / report.name / f"{date}.{fmt}"
        export_file(db, "(SELECT * FROM export_day ORDER BY account, row_number)", target, fmt)
        files[f"{report.name}.{fmt}"] = str(target)
    db.execute("DROP TABLE export_day")
    return rows, files


@dataclass(frozen=True)
class ExportSummary:
    """What one report's export of a date holds: its accounts, how final, how covered past the row cap."""

    accounts: int
    provisional_accounts: int
    provisional_rows: int
    split: int  # accounts whose day went past the row cap and was split into slices
    truncated: int  # slices still at the cap that no filter splits further (their rows past it are missing)
    coverage: dict[str, dict[str, int]]  # of the split accounts: rows, slices, truncated slices

    @property
    def data_state(self) -> str:
        """final, provisional (every account), or partly provisional."""
        if not self.provisional_accounts:
            return "final"
        return "provisional" if self.provisional_accounts == self.accounts else "partly provisional"


def export_summary(db: duckdb.DuckDBPyConnection, zone: LandingZone, report: ReportSpec, date: str) -> ExportSummary:
    """The exported rows of `export_<report>` on `date`, and the split figures of their downloads."""
    per_account = db.execute(
        f'SELECT account, count(*) FILTER (WHERE provisional) FROM "export_{report.name}" '
        'WHERE "date" = ?::DATE GROUP BY account ORDER BY account',
        [date],
    ).fetchall()
    coverage: dict[str, dict[str, int]] = {}
    for account, _ in per_account:
        completeness = zone.completeness(report.name, date, account)
        if completeness.slices or completeness.truncated:
            coverage[account] = {
                "rows": completeness.rows,
                "slices": completeness.slices,
                "truncated_slices": len(completeness.truncated),
            }
    return ExportSummary(
        accounts=len(per_account),
        provisional_accounts=sum(1 for _, provisional in per_account if provisional),
        provisional_rows=sum(provisional for _, provisional in per_account),
        split=len(coverage),
        truncated=sum(figures["truncated_slices"] for figures in coverage.values()),
        coverage=dict(list(coverage.items())[:50]),
    )
