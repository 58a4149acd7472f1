"""The code location: assets, jobs, sensors and schedules, with resources from the environment."""

from __future__ import annotations

import dagster as dg

from reporting_assets.assets.accounts import accounts
from reporting_assets.assets.downloads import downloaded_reports
from reporting_assets.assets.exports import exported_reports
from reporting_assets.assets.requests import report_requests
from reporting_assets.consumer.ops import download_requests, redrive_dead_letters
from reporting_assets.settings import build_resources

defs = dg.Definitions(
    assets=[accounts, report_requests, downloaded_reports, exported_reports],
    jobs=[download_requests, redrive_dead_letters],
    resources=build_resources(),
)


def download_requests_job() -> dg.JobDefinition:
    """Reconstructable handle of the consumer job, for executing it out of process (demo, tests)."""
    return defs.resolve_job_def("download_requests")
