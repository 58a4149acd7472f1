"""Fresh, then final: which (date, account) partitions to download again, and when.

A day Google still collects is landed provisional (`provisional` column). It is pulled again every
day until a pull comes back final: that last pull is the "once then". Google also revises final data
for a few days, so each day is pulled once more when it is `lateness + lookback` days old. Both are
decided from what is loaded (the warehouse), not from a saved list: nothing to keep in step.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

import duckdb

from reporting_assets.core.landing import LandingZone


def provisional_partitions(
    db: duckdb.DuckDBPyConnection, zone: LandingZone, reports: Iterable[str]
) -> dict[str, set[str]]:
    """Date -> accounts whose loaded download is provisional and still the newest (none on its way)."""
    tables = {row[0] for row in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    found: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        if report not in tables:
            continue
        loaded = db.execute(
            f'SELECT DISTINCT "date"::VARCHAR, account, download FROM "{report}" WHERE provisional'
        ).fetchall()
        for date, account, download in loaded:
            if zone.latest_download(report, date, account) == download:
                found[date].add(account)
    return dict(found)


def lookback_day(today: dt.date, lateness_days: int, lookback_days: int) -> str | None:
    """The day pulled once more today: `lateness + lookback` days old (None: no lookback)."""
    if lookback_days <= 0:
        return None
    return (today - dt.timedelta(days=lateness_days + lookback_days)).isoformat()
