"""The code location: everything under `defs/`, autoloaded, with resources from the environment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from reporting_assets.core.keys import DOWNLOAD_JOB


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # Asset runs are one or two steps each: a subprocess per step only adds seconds. The consumer
        # job keeps its multiprocess executor (one process per consumer).
        dg.Definitions(executor=dg.in_process_executor),
    )


def download_requests_job() -> dg.JobDefinition:
    """Reconstructable handle of the consumer job, for executing it out of process (demo, tests)."""
    return defs().resolve_job_def(DOWNLOAD_JOB)
