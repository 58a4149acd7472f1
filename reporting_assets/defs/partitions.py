"""Partitions: one per (date, account); dates alone for exports. Accounts are discovered (dynamic)."""

from __future__ import annotations

import dagster as dg

from reporting_assets.core.keys import ACCOUNT_DIMENSION, DATE_DIMENSION, PROPERTY_DIMENSION
from reporting_assets.settings import load_settings

account_partitions = dg.DynamicPartitionsDefinition(name=ACCOUNT_DIMENSION)
property_partitions = dg.DynamicPartitionsDefinition(name=PROPERTY_DIMENSION)  # GA4's, by `ga4_properties`
daily_partitions = dg.DailyPartitionsDefinition(start_date=load_settings().start_date.isoformat(), end_offset=0)
account_date_partitions = dg.MultiPartitionsDefinition(
    {DATE_DIMENSION: daily_partitions, ACCOUNT_DIMENSION: account_partitions}
)


def partition_key(date: str, account: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIMENSION: date, ACCOUNT_DIMENSION: account})


def split_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(date, account) of a multi-partition key; account keys may contain anything but '|'."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
    else:
        dims = account_date_partitions.get_partition_key_from_str(key).keys_by_dimension
    return dims[DATE_DIMENSION], dims[ACCOUNT_DIMENSION]


def add_discovered(
    instance: dg.DagsterInstance, partitions: dg.DynamicPartitionsDefinition, keys: list[str], listed: set[str]
) -> tuple[list[str], list[str]]:
    """Add the discovered `keys` that are not partitions yet; (added, partitions no longer `listed`)."""
    assert partitions.name is not None
    known = set(instance.get_dynamic_partitions(partitions.name))
    new = [key for key in keys if key not in known]
    if new:
        instance.add_dynamic_partitions(partitions.name, new)
    return new, sorted(known - listed)
