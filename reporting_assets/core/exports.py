"""Exports of one date for analysts: a DuckDB table per report and CSV, Parquet and JSON files."""

from __future__ import annotations

from pathlib import Path

import duckdb

from reporting_assets.core.downloads import add_missing_columns, ensure_table, table_name
from reporting_assets.core.durable import replace_durably, temporary_path
from reporting_assets.core.landing import LANDED_SCHEMA
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
