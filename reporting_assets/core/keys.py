"""Names shared by the Dagster wiring and the engine: asset keys, partition keys, run tags.

Multi-partition keys of (date, account) print with their dimensions sorted by name and joined
with '|': `account|date`. Account ids are never allowed to contain '|' (see `partitionable`).
"""

from __future__ import annotations

# Assets, as their key strings.
ACCOUNTS_ASSET = "accounts"
GA4_PROPERTIES_ASSET = "ga4_properties"  # GA4's accounts: its properties, discovered like sites
REQUESTS_ASSET = "report_requests"
DOWNLOADS_ASSET = "downloaded_reports"
EXPORTS_ASSET = "exported_reports"  # the multi-asset (its op) of the exports, one asset per report:
EXPORTS_PREFIX = "exports"  # `exports/<report>`

# Partition dimensions of downloads and requests; dates alone partition the exports.
ACCOUNT_DIMENSION = "account"
PROPERTY_DIMENSION = "property"  # GA4's properties, a dynamic partitions definition of their own
DATE_DIMENSION = "date"

# Asset checks.
LAG_CHECK = "request_lag_within_limits"
DEAD_LETTER_CHECK = "dead_letter_topic_empty"
COMPLETE_CHECK = "all_requests_landed"
COVERAGE_CHECK = "within_row_cap"  # no slice of a split download still at the row cap
EXPORT_COMPLETE_CHECK = "export_complete"

# Sensors and schedules.
CONSUMER_SENSOR = "launch_consumers_on_lag"
DOWNLOAD_SENSOR = "download_when_requests_done"
EXPORT_SENSOR = "export_when_date_downloaded"
LAG_SENSOR = "observe_request_lag"
ENQUEUE_SCHEDULE = "enqueue_latest_complete_day"
REFRESH_SCHEDULE = "refresh_provisional_days"
ACCOUNTS_SCHEDULE = "discover_accounts_daily"

# Jobs.
DOWNLOAD_JOB = "download_requests"
REDRIVE_JOB = "redrive_dead_letters"
REFRESH_JOB = "refresh_requests"

# Run tags: ours, and Dagster's own that the sensors and schedules set.
SENSOR_TAG = "reporting_assets/sensor"
SCHEDULE_TAG = "reporting_assets/schedule"
ROLE_TAG = "reporting_assets/role"
DOWNLOAD_ROLE = "download"
ENQUEUE_DAY_TAG = "reporting_assets/enqueue_day"
REFRESH_TAG = "reporting_assets/refresh"  # "true": report_requests downloads anew (as its refresh config)
PROGRESS_TAG = "reporting_assets/progress"  # a token the console finds its download run by
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
MAX_RETRIES_TAG = "dagster/max_retries"
MAX_RUNTIME_TAG = "dagster/max_runtime"

# Dagster's multi-partition keys join dimensions with '|' and refuse '...' and control characters.
FORBIDDEN_IN_KEYS = ("|", "...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def export_asset_path(report: str) -> list[str]:
    """The asset key path of a report's export."""
    return [EXPORTS_PREFIX, report]


def export_report(path: list[str] | tuple[str, ...]) -> str:
    """The report of an export's asset key path."""
    if len(path) != 2 or path[0] != EXPORTS_PREFIX:
        raise ValueError(f"not an export asset key: {'/'.join(path)}")
    return path[1]


def partitionable(account: str) -> bool:
    """Whether an account id can be a dynamic partition key of the (date, account) partitions."""
    return bool(account) and not any(part in account for part in FORBIDDEN_IN_KEYS)


def key_str(date: str, account: str) -> str:
    """String form of the (date, account) multi-partition key: dimensions sorted by name, '|'-joined."""
    return f"{account}|{date}"


def parse_key(key: str) -> tuple[str, str]:
    """(date, account) of a key string; account ids never contain '|'."""
    account, _, date = key.rpartition("|")
    return date, account
