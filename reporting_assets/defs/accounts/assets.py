"""The partner's accounts (Search Console sites), discovered at run time."""

import datetime as dt

import dagster as dg

from reporting_assets.core.keys import ACCOUNTS_ASSET, partitionable
from reporting_assets.defs.partitions import account_partitions, add_discovered
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.resources.warehouse import WarehouseResource


@dg.asset(name=ACCOUNTS_ASSET, group_name="reporting", kinds={"duckdb", "googlesearchconsole"})
def accounts(
    context: dg.AssetExecutionContext, partner: PartnerResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Sites the credentials can read, stored in DuckDB and added as `account` partitions."""
    sites = partner.client().list_sites()
    readable = [site.url for site in sites if site.readable and partitionable(site.url)]
    refused = [site.url for site in sites if site.readable and not partitionable(site.url)]
    if refused:
        context.log.warning(
            f"{len(refused)} readable accounts cannot be Dagster partition keys (they contain "
            f"'|', '...' or control characters) and are left out: {refused[:10]}"
        )
    new, gone = add_discovered(context.instance, account_partitions, readable, {site.url for site in sites})
    seen_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with warehouse.connect() as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS accounts ("
            " site_url VARCHAR PRIMARY KEY, permission_level VARCHAR, readable BOOLEAN, last_seen_at TIMESTAMP)"
        )
        db.executemany(
            "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?)",
            [(site.url, site.permission_level, site.readable, seen_at) for site in sites],
        )
    if gone:
        context.log.warning(f"{len(gone)} account partitions are no longer listed by the partner: {gone[:10]}")
    return dg.MaterializeResult(
        metadata={
            "accounts": len(sites),
            "readable": len(readable),
            "new_partitions": len(new),
            "unreadable": dg.MetadataValue.json([s.url for s in sites if not s.readable]),
            "not_partitionable": dg.MetadataValue.json(refused),
            "no_longer_listed": dg.MetadataValue.json(gone),
        }
    )
