"""`discover_accounts_daily`: refresh the account partitions before the daily enqueue."""

from __future__ import annotations

import dagster as dg

from reporting_assets.core.keys import ACCOUNTS_ASSET, ACCOUNTS_SCHEDULE
from reporting_assets.defs.runs import schedule_status
from reporting_assets.settings import Settings, load_settings


def build_accounts_schedule(settings: Settings) -> dg.ScheduleDefinition:
    status = schedule_status(settings.schedules_running)

    @dg.schedule(
        name=ACCOUNTS_SCHEDULE,
        cron_schedule=settings.accounts_cron,
        execution_timezone=settings.schedule_timezone,
        target=[dg.AssetKey(ACCOUNTS_ASSET)],
        default_status=status,
        description="Refresh the account partitions from the partner before the daily enqueue.",
    )
    def discover_accounts_daily(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(run_key=f"accounts-{context.scheduled_execution_time.date().isoformat()}")

    return discover_accounts_daily


@dg.definitions
def schedules() -> dg.Definitions:
    return dg.Definitions(schedules=[build_accounts_schedule(load_settings())])
