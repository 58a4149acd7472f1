"""The code location: assets, jobs, sensors and schedules, with resources from the environment."""

from __future__ import annotations

import dagster as dg

from reporting_assets.assets.accounts import accounts
from reporting_assets.assets.downloads import downloaded_reports
from reporting_assets.assets.exports import exported_reports
from reporting_assets.assets.requests import report_requests
from reporting_assets.automation_settings import AutomationSettings
from reporting_assets.checks import build_request_topic_checks
from reporting_assets.consumer.ops import download_requests, redrive_dead_letters
from reporting_assets.schedules import build_schedules
from reporting_assets.sensors import build_sensors
from reporting_assets.settings import build_resources

automation = AutomationSettings.from_env()

defs = dg.Definitions(
    assets=[accounts, report_requests, downloaded_reports, exported_reports],
    asset_checks=[build_request_topic_checks(automation)],
    jobs=[download_requests, redrive_dead_letters],
    sensors=build_sensors(automation),
    schedules=build_schedules(automation),
    resources=build_resources(),
    # Asset runs are one or two steps each: a subprocess per step only adds seconds. The consumer
    # job keeps its multiprocess executor (one process per consumer).
    executor=dg.in_process_executor,
)


def download_requests_job() -> dg.JobDefinition:
    """Reconstructable handle of the consumer job, for executing it out of process (demo, tests)."""
    return defs.resolve_job_def("download_requests")
