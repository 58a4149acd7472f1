"""Exported reports: every account's rows of one date, as files and a DuckDB table for analysts."""


import os
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from reporting_assets.assets.downloads import create_table_sql, downloaded_reports, table_name
from reporting_assets.consumer.landing import LANDED_SCHEMA
from reporting_assets.partitions import DATE_DIMENSION, daily_partitions
from reporting_assets.reports import DEFAULT_REPORTS, get_report
from reporting_assets.resources.warehouse import WarehouseResource

FORMATS = {
    "csv": "(FORMAT csv, HEADER true)",
    "parquet": "(FORMAT parquet, COMPRESSION zstd)",
    "json": "(FORMAT json, ARRAY true)",
}
EXPORT_COLUMNS = [name for name in LANDED_SCHEMA.names if name not in ("request_id", "report")]


class ExportConfig(dg.Config):
    reports: list[str] = Field(default=list(DEFAULT_REPORTS), description="Reports to export.")
    formats: list[str] = Field(default=["csv", "parquet", "json"], description="Any of csv, parquet, json.")


def export_file(db: duckdb.DuckDBPyConnection, source: str, target: Path, fmt: str) -> None:
    """COPY to a temporary file in the target folder, then rename: readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    literal = str(tmp).replace("'", "''")
    db.execute(f"COPY {source} TO '{literal}' {FORMATS[fmt]}")
    os.replace(tmp, target)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[
        dg.AssetDep(
            downloaded_reports,
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIMENSION),
        )
    ],
    group_name="reporting",
    kinds={"csv", "parquet", "json", "duckdb"},
)
def exported_reports(
    context: dg.AssetExecutionContext, config: ExportConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """All accounts of one date: `exports/<report>/<date>.<ext>` and the `export_<report>` table."""
    unknown = [fmt for fmt in config.formats if fmt not in FORMATS]
    if unknown:
        raise ValueError(f"ExportConfig.formats: unknown {unknown} (allowed: {', '.join(FORMATS)})")
    date = context.partition_key
    reports = [get_report(name) for name in config.reports]
    files: dict[str, str] = {}
    row_counts: dict[str, int] = {}
    columns = ", ".join(f'"{name}"' for name in EXPORT_COLUMNS)
    with warehouse.connect() as db:
        for report in reports:
            source = table_name(report)
            export_table = f"export_{report.name}"
            db.execute(create_table_sql(source))
            db.execute("BEGIN TRANSACTION")
            db.execute(f'CREATE TABLE IF NOT EXISTS "{export_table}" AS SELECT {columns} FROM "{source}" LIMIT 0')
            db.execute(f'DELETE FROM "{export_table}" WHERE "date" = ?::DATE', [date])
            db.execute(
                f'INSERT INTO "{export_table}" SELECT {columns} FROM "{source}" WHERE "date" = ?::DATE '
                "ORDER BY account, row_number",
                [date],
            )
            db.execute("COMMIT")
            row_counts[report.name] = db.execute(
                f'SELECT count(*) FROM "{export_table}" WHERE "date" = ?::DATE', [date]
            ).fetchone()[0]
            # COPY cannot take parameters: stage the date's rows in a temp table first.
            db.execute(
                f'CREATE OR REPLACE TEMP TABLE export_day AS SELECT {columns} FROM "{export_table}" '
                'WHERE "date" = ?::DATE ORDER BY account, row_number',
                [date],
            )
            for fmt in config.formats:
                target = warehouse.exports_dir / report.name / f"{date}.{fmt}"
                export_file(db, "(SELECT * FROM export_day ORDER BY account, row_number)", target, fmt)
                files[f"{report.name}.{fmt}"] = str(target)
            db.execute("DROP TABLE export_day")
    context.log.info(f"exported {sum(row_counts.values())} rows for {date}: {sorted(files.values())}")
    return dg.MaterializeResult(
        metadata={
            "rows": sum(row_counts.values()),
            "rows_by_report": dg.MetadataValue.json(row_counts),
            "files": dg.MetadataValue.json(files),
            **{f"path_{key}": dg.MetadataValue.path(path) for key, path in files.items()},
        }
    )
