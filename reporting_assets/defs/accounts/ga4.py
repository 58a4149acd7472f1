"""GA4's accounts: the properties the credentials can read, discovered with the Admin API."""

import datetime as dt

import dagster as dg

from reporting_assets.core.ga4 import build_clients, list_properties
from reporting_assets.core.keys import GA4_PROPERTIES_ASSET, partitionable
from reporting_assets.defs.partitions import add_discovered, property_partitions
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.resources.warehouse import WarehouseResource


@dg.asset(name=GA4_PROPERTIES_ASSET, group_name="reporting", kinds={"duckdb", "googleanalytics"})
def ga4_properties(
    context: dg.AssetExecutionContext, partner: PartnerResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """GA4 properties (accountSummaries.list, every page), stored in DuckDB and added as `property` partitions."""
    found = list_properties(build_clients(partner.partner()).admin, num_retries=partner.num_retries)
    names = [prop.name for prop in found if partitionable(prop.name)]
    new, gone = add_discovered(context.instance, property_partitions, names, {prop.name for prop in found})
    seen_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with warehouse.connect() as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS ga4_properties (property VARCHAR PRIMARY KEY, display_name VARCHAR,"
            " account VARCHAR, account_name VARCHAR, last_seen_at TIMESTAMP)"
        )
        db.executemany(
            "INSERT OR REPLACE INTO ga4_properties VALUES (?, ?, ?, ?, ?)",
            [(p.name, p.display_name, p.account, p.account_name, seen_at) for p in found],
        )
    if gone:
        context.log.warning(f"{len(gone)} property partitions are no longer listed by GA4: {gone[:10]}")
    return dg.MaterializeResult(
        metadata={
            "properties": len(found),
            "new_partitions": len(new),
            "no_longer_listed": dg.MetadataValue.json(gone),
        }
    )
