"""Exported reports: one asset per report of the catalog, partitioned by date (every account's rows)."""

import dagster as dg
from pydantic import Field

from reporting_assets.core.exports import FORMATS, export_date, export_summary
from reporting_assets.core.keys import (
    DATE_DIMENSION,
    DOWNLOADS_ASSET,
    EXPORT_COMPLETE_CHECK,
    EXPORTS_ASSET,
    export_asset_path,
    export_report,
)
from reporting_assets.core.reports import Catalog, ReportSpec, load_catalog
from reporting_assets.defs.partitions import daily_partitions
from reporting_assets.resources.warehouse import WarehouseResource

# The export of a date reads every account's download of that date.
FROM_DOWNLOADS = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIMENSION)


class ExportConfig(dg.Config):
    formats: list[str] = Field(default=["csv", "parquet", "json"], description="Any of csv, parquet, json.")
    allow_incomplete: bool = Field(
        default=False,
        description=(
            "Export a date even though some of its partitions have dead-lettered requests (their rows are "
            "missing); the export's metadata and its export_complete check then name them. By default such a "
            "date is refused: fix the cause and run redrive_dead_letters, and the sensors re-export it."
        ),
    )


def export_key(report: str) -> dg.AssetKey:
    return dg.AssetKey(export_asset_path(report))


def export_spec(report: ReportSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        export_key(report.name),
        deps=[dg.AssetDep(DOWNLOADS_ASSET, partition_mapping=FROM_DOWNLOADS)],
        description=report.description or f"The {report.name} report of every account, per date.",
        group_name="reporting",
        kinds={"csv", "parquet", "json", "duckdb"},
        # A report nobody downloaded for the date is not exported (nor marked exported with 0 rows).
        skippable=True,
        metadata={
            "dimensions": ", ".join(report.dimensions),
            "search_type": report.search_type,
            "data_state": report.data_state,
            "aggregation_type": report.aggregation_type,
            **({"filters": dg.MetadataValue.json(report.filters)} if report.filters else {}),
            "table": f"export_{report.name}",
        },
    )


def build_exports(catalog: Catalog) -> dg.AssetsDefinition:
    """`exported_reports`: one multi-asset with an `exports/<report>` asset per catalog report."""
    specs = [export_spec(report) for report in catalog.reports.values()]
    checks = [
        dg.AssetCheckSpec(
            EXPORT_COMPLETE_CHECK,
            asset=spec.key,
            description="No account of the date has dead-lettered requests: the export holds every row.",
        )
        for spec in specs
    ]

    @dg.multi_asset(
        name=EXPORTS_ASSET,
        specs=specs,
        check_specs=checks,
        partitions_def=daily_partitions,
        can_subset=True,
    )
    def exported_reports(context: dg.AssetExecutionContext, config: ExportConfig, warehouse: WarehouseResource):
        """The selected reports of one date: `exports/<report>/<date>.<ext>` and the `export_<report>` table.

        A report without a download on the date is skipped; one with dead-lettered partitions is refused
        (the run fails, naming them) unless `allow_incomplete`.
        """
        unknown = [fmt for fmt in config.formats if fmt not in FORMATS]
        if unknown:
            raise ValueError(f"ExportConfig.formats: unknown {unknown} (allowed: {', '.join(FORMATS)})")
        date = context.partition_key
        zone = warehouse.landing_zone()
        downloaded = set(zone.reports_of_date(date))
        selected = sorted(export_report(key.path) for key in context.selected_asset_keys)
        names = [name for name in selected if name in downloaded]
        skipped = [name for name in selected if name not in downloaded]
        if skipped:
            context.log.info(f"{date}: no download of {', '.join(skipped)}: not exported")
        missing = zone.dead_lettered(date, names)
        if missing and not config.allow_incomplete:
            labels = [f"{report} {account}" for report, accounts in missing.items() for account in accounts]
            raise dg.Failure(
                description=(
                    f"{date} is not exported: {len(labels)} partition reports have dead-lettered requests "
                    f"(e.g. {labels[0]}), so their rows are missing. Fix the cause and run "
                    "redrive_dead_letters (the sensors then reload and re-export the date), or export it as "
                    "it is with allow_incomplete: true."
                ),
                metadata={"dead_lettered": dg.MetadataValue.json(labels[:100])},
            )
        with warehouse.connect() as db:
            for name in names:
                report = catalog.get(name)
                rows, files = export_date(db, warehouse.exports_dir, report, date, config.formats)
                state = export_summary(db, zone, report, date)
                dead = missing.get(name, [])
                context.log.info(f"exported {rows} rows of {name} for {date}: {sorted(files.values())}")
                yield dg.MaterializeResult(
                    asset_key=export_key(name),
                    metadata={
                        "rows": rows,
                        "accounts_with_rows": state.accounts,
                        "complete": not dead,
                        "missing_accounts": dg.MetadataValue.json(dead[:100]),
                        # Google still collects the day for these accounts: exported again once final.
                        "data_state": state.data_state,
                        "provisional_accounts": state.provisional_accounts,
                        "provisional_rows": state.provisional_rows,
                        "split_past_row_cap": state.split,
                        "truncated_slices": state.truncated,
                        "coverage": dg.MetadataValue.json(state.coverage),
                        "files": dg.MetadataValue.json(files),
                        **{f"path_{fmt}": dg.MetadataValue.path(path) for fmt, path in _by_format(files).items()},
                    },
                )
                yield dg.AssetCheckResult(
                    asset_key=export_key(name),
                    check_name=EXPORT_COMPLETE_CHECK,
                    passed=not dead,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=(
                        "every account of the date is complete"
                        if not dead
                        else f"exported with allow_incomplete: the rows of {len(dead)} accounts are missing "
                        f"(dead-lettered), e.g. {dead[0]}"
                    ),
                    metadata={"missing": dg.MetadataValue.json(dead[:100])},
                )

    return exported_reports


def _by_format(files: dict[str, str]) -> dict[str, str]:
    """`<report>.<fmt>` -> path, as fmt -> path (one report per asset)."""
    return {name.rsplit(".", 1)[1]: path for name, path in files.items()}


@dg.definitions
def exports() -> dg.Definitions:
    return dg.Definitions(assets=[build_exports(load_catalog())])
