"""A killed download resumes from committed offsets; a request that always fails is dead-lettered."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from reporting_assets import runner
from reporting_assets.core.automation.downloads import DownloadState
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.keys import COMPLETE_CHECK, COVERAGE_CHECK, EXPORT_COMPLETE_CHECK, RANGE_START_TAG, key_str
from reporting_assets.core.landing import LandingZone
from reporting_assets.defs.downloads.jobs import redrive_dead_letters
from reporting_assets.defs.downloads.sensors import evaluate_downloads
from reporting_assets.sandbox import FaultSpec, SandboxConfig, SiteSpec
from reporting_assets.settings import Settings
from reporting_assets_tests import helpers
from reporting_assets_tests.pipeline.test_end_to_end import exported, truth

wait_for = functools.partial(helpers.wait_for, every_s=0.1)

DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
SITES = [
    SiteSpec("https://a.example.com/", 260),
    SiteSpec("https://b.example.com/", 180),
    SiteSpec("https://c.example.com/", 90),
]
ROW_LIMIT = {"ops": {"report_requests": {"config": {"row_limit": 100}}}}
# No waits for transient failures: the dead-letter test's 503s go straight to the dead-letter topic.
CONSUMERS = {"idle_timeout_s": 2.0, "qps_per_account": 4.0, "retry_backoff_s": 0.01, "transient_waits_s": []}


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(seed=11, sites=SITES, per_site_qps=None, global_qps=None, faults=[], latency_s=0.1)


def landed_files(data_dir: Path) -> int:
    return sum(1 for _ in (data_dir / "landing").rglob("*.parquet"))


DOWNLOAD_SCRIPT = """
import dagster as dg
from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
runner.download(dg.DagsterInstance.get(), ConsumerTuning(consumers=2, **{config!r}))
"""


def test_a_killed_download_run_resumes_to_the_same_exports(instance, resources, sandbox, sandbox_config, pipeline_env):
    data_dir = Path(pipeline_env["REPORTING_DATA_DIR"])
    accounts = runner.discover_accounts(instance, resources)
    enqueued = runner.enqueue(instance, resources, DATES, accounts, ROW_LIMIT)
    total_pages = 3 * 3 + 2 * 3 + 1 * 3  # 260 rows -> 3 pages, 180 -> 2, 90 -> 1; per date

    env = {**os.environ, "DAGSTER_HOME": instance.root_directory}
    process = subprocess.Popen(
        [sys.executable, "-c", DOWNLOAD_SCRIPT.format(config=CONSUMERS)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: landed_files(data_dir) >= 5, 120, "the first landed pages")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    landed_at_kill = landed_files(data_dir)
    assert landed_at_kill < total_pages, "the kill came too late to test a resume"

    runner.download(instance, ConsumerTuning(consumers=2, **CONSUMERS))
    kafka = resources["kafka"]
    zone = LandingZone(data_dir / "landing")
    state = {(d, s.url): zone.completeness("search_analytics", d, s.url) for d in DATES for s in SITES}
    assert landed_files(data_dir) == total_pages, (
        kafka.lag(kafka.request_topic),
        {k: (len(v.pages), v.missing_start_rows) for k, v in state.items() if not v.complete},
    )
    loaded = runner.load_and_export(instance, resources, DATES, accounts)
    urls = [site.url for site in SITES]
    expected = truth(sandbox_config, urls, DATES)
    seen = [row for date in DATES for row in exported(Path(loaded.exports[f"{date}/search_analytics.csv"]))]
    assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected
    assert loaded.dead_lettered == 0 and not loaded.held and enqueued == 9
    # Only calls in flight at the kill were made twice.
    assert sandbox.stats()["repeat_successes"] <= 2 * 4 + 2


def test_a_request_that_always_fails_ends_in_the_dead_letter_topic_and_fails_the_check(
    instance, resources, sandbox, sandbox_config, pipeline_env
):
    sandbox.update_config(faults=[FaultSpec("http_503", site_url="https://a.example.com/", start_row=100)])
    accounts = runner.discover_accounts(instance, resources)
    runner.enqueue(instance, resources, DATES[:1], accounts, ROW_LIMIT)
    summary = runner.download(instance, ConsumerTuning(consumers=1, **CONSUMERS))
    assert summary["dead_lettered"] == 1

    result = dg.materialize(
        [runner.downloaded_reports],
        resources=resources,
        instance=instance,
        tags=runner.range_tags(DATES[:1], accounts),
    )
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [(COMPLETE_CHECK, False), (COVERAGE_CHECK, True)]
    assert "re-drive" in checks[0].description.lower() or "redrive" in checks[0].description
    zone = LandingZone(Path(pipeline_env["REPORTING_DATA_DIR"]) / "landing")
    broken = zone.completeness("search_analytics", DATES[0], "https://a.example.com/")
    assert broken.rows == 100 and broken.dead_letters[0].status == 503
    for site in ("https://b.example.com/", "https://c.example.com/"):
        assert zone.completeness("search_analytics", DATES[0], site).complete

    # The date is not exported with rows missing: held, saying which partition and what to do...
    held = runner.load_and_export(instance, resources, DATES[:1], accounts)
    assert held.exports == {} and list(held.held) == DATES[:1]
    assert "https://a.example.com/" in held.held[DATES[0]] and "redrive_dead_letters" in held.held[DATES[0]]
    # ...unless asked for as it is: then its check and metadata name what is missing.
    incomplete = dg.materialize(
        [runner.export_assets()],
        resources=resources,
        instance=instance,
        partition_key=DATES[0],
        run_config={"ops": {"exported_reports": {"config": {"allow_incomplete": True}}}},
    )
    # Only the report downloaded is exported (the catalog's others are skipped), its check naming the account.
    (check,) = incomplete.get_asset_check_evaluations()
    assert (check.asset_key, check.check_name, check.passed) == (
        dg.AssetKey(["exports", "search_analytics"]),
        EXPORT_COMPLETE_CHECK,
        False,
    )
    assert check.metadata["missing"].value == ["https://a.example.com/"]
    (materialization,) = incomplete.get_asset_materialization_events()
    metadata = materialization.step_materialization_data.materialization.metadata
    assert metadata["complete"].value is False and metadata["accounts_with_rows"].value == 3

    # Once the fault is gone, re-driving the dead letter completes the partition, and puts it back
    # among the partitions the download sensor waits for.
    sandbox.update_config(faults=[])
    redrive = redrive_dead_letters.execute_in_process(resources=resources, instance=instance)
    assert redrive.success
    assert redrive.output_for_node("redrive_dead_letter_requests")["redriven"] == 1
    cluster = resources["kafka"].cluster()
    settings = Settings(landing_check_budget_s=5.0)
    requests, cursor, _ = evaluate_downloads(instance, None, cluster, zone, settings)
    pending = DownloadState.from_cursor(cursor).pending
    assert requests == [] and list(pending) == DATES[:1] and pending[DATES[0]].accounts == {"https://a.example.com/"}
    runner.download(instance, ConsumerTuning(consumers=1, **CONSUMERS))
    assert zone.completeness("search_analytics", DATES[0], "https://a.example.com/").complete
    requests, cursor, _ = evaluate_downloads(instance, cursor, cluster, zone, settings)
    assert [r.tags[RANGE_START_TAG] for r in requests] == [key_str(DATES[0], "https://a.example.com/")]
    loaded = runner.load_and_export(instance, resources, DATES[:1], accounts)
    assert loaded.dead_lettered == 0 and not loaded.held
    assert loaded.rows == len(truth(sandbox_config, [s.url for s in SITES], DATES[:1]))
