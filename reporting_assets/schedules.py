"""Daily schedules: discover accounts, then enqueue the latest complete day for every account.

Search Console data is late (2-3 days), so the enqueue schedule asks for the day
`REPORTING_LATENESS_DAYS` before the tick's date. It is one run (one Spark job) with a partition range
(date, first account)..(date, last account), or, when some accounts have the day enqueued already (a
second tick the same day, accounts added since), one per block of the others; the sensors take it
from there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import dagster as dg

from reporting_assets.automation_settings import AutomationSettings
from reporting_assets.partitions import account_partitions, daily_partitions
from reporting_assets.sensors import ACTIVE_STATUSES, RANGE_END_TAG, RANGE_START_TAG, key_str

REQUESTS_ASSET = dg.AssetKey("report_requests")
ACCOUNTS_ASSET = dg.AssetKey("accounts")
ENQUEUE_SCHEDULE = "enqueue_latest_complete_day"
ACCOUNTS_SCHEDULE = "discover_accounts_daily"
SCHEDULE_TAG = "reporting_assets/schedule"


def latest_complete_day(scheduled: dt.datetime, lateness_days: int) -> str:
    return (scheduled.date() - dt.timedelta(days=lateness_days)).isoformat()


ENQUEUE_DAY_TAG = "reporting_assets/enqueue_day"


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
    enqueued = instance.get_materialized_partitions(REQUESTS_ASSET)
    blocks = missing_blocks(accounts, lambda account: key_str(day, account) not in enqueued)
    if not blocks:
        return dg.SkipReason(f"{day} is enqueued already for all {len(accounts)} accounts")
    return [
        dg.RunRequest(
            run_key=f"enqueue-{day}" if len(blocks) == 1 else f"enqueue-{day}-{index}",
            asset_selection=[REQUESTS_ASSET],
            tags={
                RANGE_START_TAG: key_str(day, block[0]),
                RANGE_END_TAG: key_str(day, block[-1]),
                SCHEDULE_TAG: ENQUEUE_SCHEDULE,
                ENQUEUE_DAY_TAG: day,
            },
        )
        for index, block in enumerate(blocks)
    ]


def missing_blocks(accounts: list[str], missing: Callable[[str], bool]) -> list[list[str]]:
    """Runs of consecutive missing accounts, in the dynamic partitions' order (a range's order)."""
    blocks: list[list[str]] = []
    extend = False
    for account in accounts:
        if missing(account):
            if not extend:
                blocks.append([])
            blocks[-1].append(account)
            extend = True
        else:
            extend = False
    return blocks


def build_schedules(settings: AutomationSettings) -> list[dg.ScheduleDefinition]:
    status = dg.DefaultScheduleStatus.RUNNING if settings.schedules_running else dg.DefaultScheduleStatus.STOPPED

    @dg.schedule(
        name=ENQUEUE_SCHEDULE,
        cron_schedule=settings.enqueue_cron,
        execution_timezone=settings.schedule_timezone,
        target=[REQUESTS_ASSET],
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

    @dg.schedule(
        name=ACCOUNTS_SCHEDULE,
        cron_schedule=settings.accounts_cron,
        execution_timezone=settings.schedule_timezone,
        target=[ACCOUNTS_ASSET],
        default_status=status,
        description="Refresh the account partitions from the partner before the daily enqueue.",
    )
    def discover_accounts_daily(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(run_key=f"accounts-{context.scheduled_execution_time.date().isoformat()}")

    return [enqueue_latest_complete_day, discover_accounts_daily]
