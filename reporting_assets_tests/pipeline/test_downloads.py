"""A refresh is a new download: loaded whole once complete, the old one served until then, never mixed.

Real broker, Spark, consumers and sandbox. The sandbox's `revision` tells old rows from new ones: the
same keys with other numbers, as when Google revises a day's data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import pytest

from reporting_assets import runner
from reporting_assets.core.automation.downloads import DownloadState
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.keys import key_str
from reporting_assets.core.landing import LandingZone
from reporting_assets.defs.downloads.sensors import evaluate_downloads
from reporting_assets.sandbox import FaultSpec, SandboxConfig, SiteSpec
from reporting_assets.settings import Settings
from reporting_assets_tests.pipeline.test_end_to_end import exported, truth
from reporting_assets_tests.sensors.test_sensors import keys_of

DATE = "2026-11-02"
SITES = [SiteSpec("https://a.example.com/", 260), SiteSpec("https://b.example.com/", 90)]
ROW_LIMIT = 100
CONSUMERS = {"idle_timeout_s": 2.0, "qps_per_account": 20.0, "max_runtime_s": 60.0}
SETTINGS = Settings(landing_check_budget_s=5.0)


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(seed=13, sites=SITES, per_site_qps=None, global_qps=None, faults=[])


def request_config(refresh: bool) -> dict:
    return {"ops": {"report_requests": {"config": {"row_limit": ROW_LIMIT, "refresh": refresh}}}}


def export_rows(files: dict[str, str]) -> set[tuple]:
    rows = exported(Path(files[f"{DATE}/search_analytics.csv"]))
    assert len(rows) == len(set(rows))
    return set(rows)


def first_download(instance, resources) -> tuple[list[str], dict[str, str]]:
    accounts = runner.discover_accounts(instance, resources)
    runner.enqueue(instance, resources, [DATE], accounts, request_config(refresh=False))
    runner.download(instance, ConsumerTuning(consumers=1, **CONSUMERS))
    _, dead, files = runner.load_and_export(instance, resources, [DATE], accounts)
    assert dead == 0
    return accounts, files


def test_a_refresh_loaded_in_the_same_run_as_its_enqueue_never_ships_the_old_rows(
    instance, resources, sandbox, sandbox_config, pipeline_env
):
    # A UI backfill selecting report_requests and downloaded_reports together, after Google revised
    # the day. Before, the load ran right after the enqueue and took the old, complete pages (stale),
    # the export shipped them, and the download sensor then dropped the partitions as done.
    accounts, files = first_download(instance, resources)
    original = truth(sandbox_config, accounts, [DATE])
    assert export_rows(files) == original
    revised_config = dataclasses.replace(sandbox_config, revision=1)
    sandbox.update_config(revision=1)
    revised = truth(revised_config, accounts, [DATE])
    assert revised != original

    together = dg.materialize(
        [runner.report_requests, runner.downloaded_reports],
        resources=resources,
        instance=instance,
        tags=runner.range_tags([DATE], accounts),
        run_config=request_config(refresh=True),
        raise_on_error=False,
    )
    assert not together.success  # the new downloads are on their way: nothing to load yet
    failure = next(e for e in together.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "still have requests on the topic" in str(failure.step_failure_data.error)
    assert export_rows(files) == original  # the old download stays served, whole
    kafka = resources["kafka"]
    zone = LandingZone(Path(pipeline_env["REPORTING_DATA_DIR"]) / "landing")
    cursor = None
    requests, cursor, _ = evaluate_downloads(instance, cursor, kafka.cluster(), zone, SETTINGS)
    assert requests == []  # the sensor waits for the new download too

    runner.download(instance, ConsumerTuning(consumers=1, **CONSUMERS))
    requests, cursor, _ = evaluate_downloads(instance, cursor, kafka.cluster(), zone, SETTINGS)
    assert len(requests) == 1 and DownloadState.from_cursor(cursor).pending_partitions == 0
    _, dead, files = runner.load_and_export(instance, resources, [DATE], accounts)
    assert dead == 0 and export_rows(files) == revised
    for account in accounts:  # the replaced download is removed once the new one is loaded
        assert len(zone.downloads("search_analytics", DATE, account)) == 1


def test_a_refreshed_first_page_parked_on_the_delay_topic_keeps_its_partition_waiting(
    instance, resources, sandbox, sandbox_config, pipeline_env
):
    # Before, a re-enqueued first page refused for quota looked done: its offset was committed (it waits
    # on the delay topic) and the old complete pages were still there, so the sensor loaded them.
    accounts, files = first_download(instance, resources)
    parked, flowing = SITES[0].url, SITES[1].url
    sandbox.update_config(revision=1, faults=[FaultSpec("daily_limit", site_url=parked)])
    runner.enqueue(instance, resources, [DATE], accounts, request_config(refresh=True))
    runner.download(instance, ConsumerTuning(consumers=1, **{**CONSUMERS, "max_runtime_s": 15.0}))
    kafka = resources["kafka"]
    assert kafka.lag(kafka.request_topic).total == 0 and kafka.lag(kafka.delay_topic).total == 1

    zone = LandingZone(Path(pipeline_env["REPORTING_DATA_DIR"]) / "landing")
    requests, cursor, _ = evaluate_downloads(instance, None, kafka.cluster(), zone, SETTINGS)
    asked = {key for request in requests for key in keys_of(request, instance)}
    assert asked == {key_str(DATE, flowing)}
    assert DownloadState.from_cursor(cursor).pending_partitions == 1
    hand_run = dg.materialize(
        [runner.downloaded_reports],
        resources=resources,
        instance=instance,
        tags=runner.range_tags([DATE], [parked]),
        raise_on_error=False,
    )
    assert not hand_run.success  # a load by hand refuses it too: the new download is not complete
    assert export_rows(files) == truth(sandbox_config, accounts, [DATE])

