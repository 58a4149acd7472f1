"""`enqueue_latest_complete_day`: enqueue the latest complete day for every account, in one run.

Search Console data is late (2-3 days), so the schedule asks for the day `REPORTING_LATENESS_DAYS`
before the tick's date. It is one run (one Spark job) with a partition range (date, first
account)..(date, last account), or, when some accounts have the day enqueued already (a second tick
the same day, accounts added since), one per block of the others; the sensors take it from there.

`refresh_provisional_days`: fresh, then final. Every day, the partitions loaded provisional (Google
still collected them) and the lookback day (`REPORTING_LOOKBACK_DAYS` after the enqueue's day, as
Google revises final data) are downloaded anew, in as few range runs as the partitions allow.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from reporting_assets.core.automation.freshness import lookback_day, provisional_partitions
from reporting_assets.core.automation.ranges import missing_blocks, rectangles
from reporting_assets.core.keys import (
    DOWNLOADS_ASSET,
    ENQUEUE_DAY_TAG,
    ENQUEUE_SCHEDULE,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REFRESH_SCHEDULE,
    REFRESH_TAG,
    REQUESTS_ASSET,
    SCHEDULE_TAG,
    key_str,
)
from reporting_assets.defs.partitions import account_partitions, daily_partitions
from reporting_assets.defs.runs import ACTIVE_STATUSES, schedule_status
from reporting_assets.resources.warehouse import WarehouseResource
from reporting_assets.settings import Settings, load_settings


def latest_complete_day(scheduled: dt.datetime, lateness_days: int) -> str:
    return (scheduled.date() - dt.timedelta(days=lateness_days)).isoformat()


def enqueue_request(instance: dg.DagsterInstance, day: str) -> list[dg.RunRequest] | dg.SkipReason:
    """One range run for the day's accounts not enqueued yet (one per contiguous block of them).

    A schedule's run key only dedupes within one tick, so a cron that ticks more than once a day, or a
    tick after accounts were added, must not enqueue an account's day twice (twice the API calls).
    """
    accounts = list(instance.get_dynamic_partitions(account_partitions.name))
    if not accounts:
        return dg.SkipReason("no account partitions yet: materialize `accounts` first (discover_accounts_daily does)")
    first_day = daily_partitions.start.date().isoformat()
    if day < first_day:
        return dg.SkipReason(f"{day} is before the first daily partition {first_day} (REPORTING_START_DATE)")
    if instance.get_runs(dg.RunsFilter(tags={ENQUEUE_DAY_TAG: day}, statuses=ACTIVE_STATUSES), limit=1):
        return dg.SkipReason(f"an enqueue run for {day} is still in progress")
    enqueued = instance.get_materialized_partitions(dg.AssetKey(REQUESTS_ASSET))
    blocks = missing_blocks(accounts, lambda account: key_str(day, account) not in enqueued)
    if not blocks:
        return dg.SkipReason(f"{day} is enqueued already for all {len(accounts)} accounts")
    return [
        dg.RunRequest(
            run_key=f"enqueue-{day}" if len(blocks) == 1 else f"enqueue-{day}-{index}",
            asset_selection=[dg.AssetKey(REQUESTS_ASSET)],
            tags={
                RANGE_START_TAG: key_str(day, block[0]),
                RANGE_END_TAG: key_str(day, block[-1]),
                SCHEDULE_TAG: ENQUEUE_SCHEDULE,
                ENQUEUE_DAY_TAG: day,
            },
        )
        for index, block in enumerate(blocks)
    ]


def build_enqueue_schedule(settings: Settings) -> dg.ScheduleDefinition:
    status = schedule_status(settings.schedules_running)

    @dg.schedule(
        name=ENQUEUE_SCHEDULE,
        cron_schedule=settings.enqueue_cron,
        execution_timezone=settings.schedule_timezone,
        target=[dg.AssetKey(REQUESTS_ASSET)],
        default_status=status,
        description=(
            f"Enqueue report requests for the latest complete day (tick date minus {settings.lateness_days} days, "
            "REPORTING_LATENESS_DAYS) for every account, in one run."
        ),
    )
    def enqueue_latest_complete_day(context: dg.ScheduleEvaluationContext):
        return enqueue_request(
            context.instance, latest_complete_day(context.scheduled_execution_time, settings.lateness_days)
        )

    return enqueue_latest_complete_day


def refresh_requests_for(
    instance: dg.DagsterInstance, warehouse: WarehouseResource, settings: Settings, today: dt.date, tick: str
) -> list[dg.RunRequest] | dg.SkipReason:
    """Range runs (tagged refresh) for the provisional partitions and the lookback day's downloaded ones."""
    if instance.get_runs(dg.RunsFilter(tags={SCHEDULE_TAG: REFRESH_SCHEDULE}, statuses=ACTIVE_STATUSES), limit=1):
        return dg.SkipReason("a refresh run is still in progress")
    accounts = list(instance.get_dynamic_partitions(account_partitions.name))
    if not warehouse.database_path.exists():
        again: dict[str, set[str]] = {}
    else:
        with warehouse.connect(read_only=True) as db:
            again = provisional_partitions(db, warehouse.landing_zone(), settings.report_names())
    provisional = sum(len(found) for found in again.values())
    day = lookback_day(today, settings.lateness_days, settings.lookback_days)
    if day is not None and day >= daily_partitions.start.date().isoformat():
        downloaded = instance.get_materialized_partitions(dg.AssetKey(DOWNLOADS_ASSET))
        again.setdefault(day, set()).update(a for a in accounts if key_str(day, a) in downloaded)
    again = {date: found for date, found in again.items() if found}
    if not again:
        return dg.SkipReason(f"nothing provisional, nothing downloaded for the lookback day {day}")
    runs = rectangles(again, accounts, settings.download_max_partitions_per_run)
    return [
        dg.RunRequest(
            run_key=f"refresh-{tick}-{index}",
            asset_selection=[dg.AssetKey(REQUESTS_ASSET)],
            tags={**rect.tags, REFRESH_TAG: "true", SCHEDULE_TAG: REFRESH_SCHEDULE},
        )
        for index, rect in enumerate(runs)
    ] or dg.SkipReason(f"{provisional} provisional partitions, none of a known account")


def build_refresh_schedule(settings: Settings) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=REFRESH_SCHEDULE,
        cron_schedule=settings.refresh_cron,
        execution_timezone=settings.schedule_timezone,
        target=[dg.AssetKey(REQUESTS_ASSET)],
        default_status=schedule_status(settings.schedules_running),
        description=(
            "Download again what is loaded provisional (Google still collected those days) until it is final, "
            f"and each day once more {settings.lookback_days} days after the daily enqueue's day "
            "(REPORTING_LOOKBACK_DAYS): Google revises final data."
        ),
    )
    def refresh_provisional_days(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
        scheduled = context.scheduled_execution_time
        return refresh_requests_for(context.instance, warehouse, settings, scheduled.date(), scheduled.isoformat())

    return refresh_provisional_days


@dg.definitions
def schedules() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(schedules=[build_enqueue_schedule(settings), build_refresh_schedule(settings)])
