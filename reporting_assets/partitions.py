"""Partitions: one per (date, account). Accounts are discovered from the partner (dynamic)."""

from __future__ import annotations

import os

import dagster as dg

ACCOUNT_DIMENSION = "account"
DATE_DIMENSION = "date"
DEFAULT_START_DATE = "2026-10-01"

account_partitions = dg.DynamicPartitionsDefinition(name="account")
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.getenv("REPORTING_START_DATE", DEFAULT_START_DATE), end_offset=0
)
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
