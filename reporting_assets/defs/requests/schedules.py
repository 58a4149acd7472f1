"""`enqueue_latest_complete_day`: enqueue the latest complete day for every account, in one run.

Search Console data is late (2-3 days), so the schedule asks for the day `REPORTING_LATENESS_DAYS`
before the tick's date. It is one run (one Spark job) with a partition range (date, first
account)..(date, last account), or, when some accounts have the day enqueued already (a second tick
the same day, accounts added since), one per block of the others; the sensors take it from there.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from reporting_assets.core.automation.ranges import missing_blocks
from reporting_assets.core.keys import (
    ENQUEUE_DAY_TAG,
    ENQUEUE_SCHEDULE,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REQUESTS_ASSET,
    SCHEDULE_TAG,
    key_str,
)
from reporting_assets.defs.partitions import account_partitions, daily_partitions
from reporting_assets.defs.runs import ACTIVE_STATUSES, schedule_status
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


@dg.definitions
def schedules() -> dg.Definitions:
    return dg.Definitions(schedules=[build_enqueue_schedule(load_settings())])
