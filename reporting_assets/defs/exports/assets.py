"""Exported reports: every account's rows of one date, as files and a DuckDB table for analysts."""

import dagster as dg
from pydantic import Field

from reporting_assets.core.exports import FORMATS, export_date
from reporting_assets.core.keys import DATE_DIMENSION, DOWNLOADS_ASSET, EXPORT_COMPLETE_CHECK, EXPORTS_ASSET
from reporting_assets.core.reports import get_report
from reporting_assets.defs.partitions import daily_partitions
from reporting_assets.resources.warehouse import WarehouseResource


class ExportConfig(dg.Config):
    reports: list[str] | None = Field(
        default=None, description="Reports to export; by default every report downloaded for the date."
    )
    formats: list[str] = Field(default=["csv", "parquet", "json"], description="Any of csv, parquet, json.")
    allow_incomplete: bool = Field(
        default=False,
        description=(
            "Export a date even though some of its partitions have dead-lettered requests (their rows are "
            "missing); the export's metadata and its export_complete check then name them. By default such a "
            "date is refused: fix the cause and run redrive_dead_letters, and the sensors re-export it."
        ),
    )


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
    check_specs=[
        dg.AssetCheckSpec(
            EXPORT_COMPLETE_CHECK,
            asset=EXPORTS_ASSET,
            description="No account of the date has dead-lettered requests: the export holds every row.",
        )
    ],
)
def exported_reports(
    context: dg.AssetExecutionContext, config: ExportConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """All accounts of one date: `exports/<report>/<date>.<ext>` and the `export_<report>` table."""
    unknown = [fmt for fmt in config.formats if fmt not in FORMATS]
    if unknown:
        raise ValueError(f"ExportConfig.formats: unknown {unknown} (allowed: {', '.join(FORMATS)})")
    date = context.partition_key
    zone = warehouse.landing_zone()
    names = config.reports if config.reports is not None else zone.reports_of_date(date)
    reports = [get_report(name) for name in names]
    missing = zone.dead_lettered(date, names)
    missing_labels = [f"{report} {account}" for report, accounts in missing.items() for account in accounts]
    if missing and not config.allow_incomplete:
        raise dg.Failure(
            description=(
                f"{date} is not exported: {len(missing_labels)} partition reports have dead-lettered requests "
                f"(e.g. {missing_labels[0]}), so their rows are missing. Fix the cause and run "
                "redrive_dead_letters (the sensors then reload and re-export the date), or export it as it is "
                "with allow_incomplete: true."
            ),
            metadata={"dead_lettered": dg.MetadataValue.json(missing_labels[:100])},
        )
    files: dict[str, str] = {}
    row_counts: dict[str, int] = {}
    with warehouse.connect() as db:
        for report in reports:
            row_counts[report.name], written = export_date(db, warehouse.exports_dir, report, date, config.formats)
            files.update(written)
    context.log.info(f"exported {sum(row_counts.values())} rows for {date}: {sorted(files.values())}")
    check = dg.AssetCheckResult(
        check_name=EXPORT_COMPLETE_CHECK,
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "every partition of the date is complete"
            if not missing
            else f"exported with allow_incomplete: the rows of {len(missing_labels)} partition reports are missing "
            f"(dead-lettered), e.g. {missing_labels[0]}"
        ),
        metadata={"missing": dg.MetadataValue.json(missing_labels[:100])},
    )
    return dg.MaterializeResult(
        check_results=[check],
        metadata={
            "rows": sum(row_counts.values()),
            "complete": not missing,
            "missing_partitions": dg.MetadataValue.json(missing_labels[:100]),
            "rows_by_report": dg.MetadataValue.json(row_counts),
            "files": dg.MetadataValue.json(files),
            **{f"path_{key}": dg.MetadataValue.path(path) for key, path in files.items()},
        },
    )
