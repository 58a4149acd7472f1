"""Exported reports: every account's rows of one date, as files and a DuckDB table for analysts."""

import dagster as dg
from pydantic import Field

from reporting_assets.core.exports import FORMATS, export_date
from reporting_assets.core.keys import DATE_DIMENSION, DOWNLOADS_ASSET, EXPORTS_ASSET
from reporting_assets.core.reports import get_report
from reporting_assets.defs.partitions import daily_partitions
from reporting_assets.resources.warehouse import WarehouseResource


class ExportConfig(dg.Config):
    reports: list[str] | None = Field(
        default=None, description="Reports to export; by default every report downloaded for the date."
    )
    formats: list[str] = Field(default=["csv", "parquet", "json"], description="Any of csv, parquet, json.")


@dg.asset(
    name=EXPORTS_ASSET,
    partitions_def=daily_partitions,
    deps=[
        dg.AssetDep(
            DOWNLOADS_ASSET,
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
    files: dict[str, str] = {}
    row_counts: dict[str, int] = {}
    with warehouse.connect() as db:
        names = config.reports if config.reports is not None else warehouse.landing_zone().reports_of_date(date)
        for report in [get_report(name) for name in names]:
            row_counts[report.name], written = export_date(db, warehouse.exports_dir, report, date, config.formats)
            files.update(written)
    context.log.info(f"exported {sum(row_counts.values())} rows for {date}: {sorted(files.values())}")
    return dg.MaterializeResult(
        metadata={
            "rows": sum(row_counts.values()),
            "rows_by_report": dg.MetadataValue.json(row_counts),
            "files": dg.MetadataValue.json(files),
            **{f"path_{key}": dg.MetadataValue.path(path) for key, path in files.items()},
        }
    )
