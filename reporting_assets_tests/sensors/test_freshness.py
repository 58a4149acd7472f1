"""`refresh_provisional_days`: provisional partitions until final, and the lookback day once more."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from reporting_assets.core.automation.freshness import lookback_day, provisional_partitions
from reporting_assets.core.downloads import ensure_table, load_partition, survey
from reporting_assets.core.keys import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    REFRESH_SCHEDULE,
    REFRESH_TAG,
    SCHEDULE_TAG,
    key_str,
)
from reporting_assets.core.messages import new_download_id
from reporting_assets.core.reports import get_report
from reporting_assets.defs.partitions import account_date_partitions, partition_key
from reporting_assets.defs.requests.schedules import build_refresh_schedule
from reporting_assets.settings import Settings
from reporting_assets_tests.sensors.conftest import ACCOUNTS

SETTINGS = Settings(lateness_days=3, lookback_days=4)
TODAY = dt.date(2026, 11, 20)
FRESH = "2026-11-17"  # the daily enqueue's day (lateness 3)
LOOKBACK = "2026-11-13"  # 3 + 4 days old: pulled once more
ROW = {
    "keys": ["2026-11-17", "buy shoes", "https://a.example.com/p", "usa", "MOBILE"],
    "clicks": 1,
    "impressions": 2,
    "ctr": 0.5,
    "position": 3.0,
}


def land_and_load(warehouse, date: str, account: str, provisional: bool) -> str:
    """One (search_analytics, date, account) download, landed and loaded as a load run does."""
    zone = warehouse.landing_zone()
    download = new_download_id()
    request = get_report("search_analytics").first_request(account, date, 10).in_download(download)
    zone.land_page(request, [{**ROW, "keys": [date, *ROW["keys"][1:]]}], provisional=provisional)
    with warehouse.connect() as db:
        ensure_table(db, "search_analytics")
        for load in survey(zone, [key_str(date, account)], ["search_analytics"]):
            load_partition(db, load)
    return download


def keys_of(request: dg.RunRequest, instance: dg.DagsterInstance) -> set[str]:
    keys = account_date_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]),
        dynamic_partitions_store=instance,
    )
    return {str(key) for key in keys}


def tick(instance, warehouse) -> list[dg.RunRequest] | dg.SkipReason:
    schedule = build_refresh_schedule(SETTINGS)
    # Closed, so the instance it opens from the ref is disposed now, not at garbage collection (which
    # would put that dead instance's state storage back as current in whatever test is running then).
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=dt.datetime.combine(TODAY, dt.time(7), tzinfo=dt.UTC),
        resources={"warehouse": warehouse},
    ) as context:
        result = schedule.evaluate_tick(context)
    return result.run_requests or dg.SkipReason(result.skip_message)


def test_the_lookback_day_is_lateness_plus_lookback_days_old():
    assert lookback_day(TODAY, 3, 4) == LOOKBACK
    assert lookback_day(TODAY, 3, 0) is None


def test_provisional_partitions_are_the_loaded_provisional_ones_with_no_newer_download(warehouse):
    land_and_load(warehouse, FRESH, ACCOUNTS[0], provisional=True)
    land_and_load(warehouse, FRESH, ACCOUNTS[1], provisional=False)
    land_and_load(warehouse, FRESH, ACCOUNTS[2], provisional=True)
    # A newer download of the third is on its way already: not asked for again.
    zone = warehouse.landing_zone()
    zone.begin_downloads([("search_analytics", FRESH, ACCOUNTS[2])], new_download_id())
    with warehouse.connect(read_only=True) as db:
        assert provisional_partitions(db, zone, ["search_analytics", "by_device"]) == {FRESH: {ACCOUNTS[0]}}


def test_the_schedule_refreshes_provisional_partitions_and_the_lookback_day_in_range_runs(instance, warehouse):
    assert isinstance(tick(instance, warehouse), dg.SkipReason)  # nothing loaded yet
    land_and_load(warehouse, FRESH, ACCOUNTS[0], provisional=True)
    land_and_load(warehouse, FRESH, ACCOUNTS[1], provisional=True)
    land_and_load(warehouse, FRESH, ACCOUNTS[2], provisional=False)
    for account in ACCOUNTS[1:]:  # downloaded on the lookback day: the first account never was
        instance.report_runless_asset_event(
            dg.AssetMaterialization("downloaded_reports", partition=str(partition_key(LOOKBACK, account)))
        )
    requests = tick(instance, warehouse)
    assert not isinstance(requests, dg.SkipReason)
    covered = [keys_of(request, instance) for request in requests]
    assert sorted(k for keys in covered for k in keys) == sorted(
        [
            key_str(FRESH, ACCOUNTS[0]),
            key_str(FRESH, ACCOUNTS[1]),
            key_str(LOOKBACK, ACCOUNTS[1]),
            key_str(LOOKBACK, ACCOUNTS[2]),
        ]
    )
    assert all(r.tags[REFRESH_TAG] == "true" and r.tags[SCHEDULE_TAG] == REFRESH_SCHEDULE for r in requests)
    assert all(r.asset_selection == [dg.AssetKey("report_requests")] for r in requests)

    # Pulled again and final now: only the lookback day is left for today's tick.
    land_and_load(warehouse, FRESH, ACCOUNTS[0], provisional=False)
    land_and_load(warehouse, FRESH, ACCOUNTS[1], provisional=False)
    (request,) = tick(instance, warehouse)
    assert keys_of(request, instance) == {key_str(LOOKBACK, ACCOUNTS[1]), key_str(LOOKBACK, ACCOUNTS[2])}
