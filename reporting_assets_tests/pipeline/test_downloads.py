"""A refresh is a new download: loaded whole once complete, the old one served until then, never mixed.

Real broker, Spark, consumers and sandbox. The sandbox's `revision` tells old rows from new ones: the
same keys with other numbers, as when Google revises a day's data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import pytest

from reporting_assets import definitions, runner
from reporting_assets.core.automation.downloads import DownloadState
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.keys import REFRESH_JOB, key_str
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


def enqueue_and_load(instance, resources, accounts: list[str], refresh: bool) -> dg.ExecuteInProcessResult:
    """report_requests and downloaded_reports in one run, as a UI backfill selecting both launches it."""
    return dg.materialize(
        [runner.report_requests, runner.downloaded_reports],
        resources=resources,
        instance=instance,
        tags=runner.range_tags([DATE], accounts),
        run_config=request_config(refresh=refresh),
        raise_on_error=False,
    )


def refused_as_on_its_way(result: dg.ExecuteInProcessResult) -> bool:
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return not result.success and any(
        "still have requests on the topic" in str(e.step_failure_data.error) for e in failures
    )


def first_download(instance, resources) -> tuple[list[str], dict[str, str]]:
    accounts = runner.discover_accounts(instance, resources)
    # Never downloaded before, loaded in the enqueue's run: refused too (not loaded empty and dropped
    # by the sensor as done), since its requests are on the topic.
    assert refused_as_on_its_way(enqueue_and_load(instance, resources, accounts, refresh=False))
    runner.download(instance, ConsumerTuning(consumers=1, **CONSUMERS))
    loaded = runner.load_and_export(instance, resources, [DATE], accounts)
    assert loaded.dead_lettered == 0 and not loaded.held
    return accounts, loaded.exports


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

    # The new downloads are on their way: nothing to load yet.
    assert refused_as_on_its_way(enqueue_and_load(instance, resources, accounts, refresh=True))
    assert export_rows(files) == original  # the old download stays served, whole
    kafka = resources["kafka"]
    zone = LandingZone(Path(pipeline_env["REPORTING_DATA_DIR"]) / "landing")
    cursor = None
    requests, cursor, _ = evaluate_downloads(instance, cursor, kafka.cluster(), zone, SETTINGS)
    assert requests == []  # the sensor waits for the new download too

    runner.download(instance, ConsumerTuning(consumers=1, **CONSUMERS))
    requests, cursor, _ = evaluate_downloads(instance, cursor, kafka.cluster(), zone, SETTINGS)
    assert len(requests) == 1 and DownloadState.from_cursor(cursor).pending_partitions == 0
    loaded = runner.load_and_export(instance, resources, [DATE], accounts)
    assert loaded.dead_lettered == 0 and export_rows(loaded.exports) == revised
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
    # The UI's way to refresh a range: the refresh_requests job (a backfill of it, or one run per range).
    refresh = definitions.defs().resolve_job_def(REFRESH_JOB)
    result = refresh.execute_in_process(instance=instance, tags=runner.range_tags([DATE], accounts))
    assert result.success
    assert result.get_asset_materialization_events()[0].materialization.metadata["refresh"].value is True
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


def test_a_group_whose_committed_offsets_vanished_refuses_to_download_everything_again(
    instance, resources, sandbox, pipeline_env
):
    # Before, a group whose offsets had expired (offsets.retention.minutes) or were deleted started again
    # at the earliest offset: every request on the topic was downloaded once more, without a word.
    first_download(instance, resources)
    kafka = resources["kafka"]
    admin = kafka.cluster().admin()
    try:
        admin.delete_groups([kafka.consumer_group])  # what expiry does to an empty group
    finally:
        admin.close()
    calls = sandbox.stats()["calls_total"]
    with pytest.raises(RuntimeError, match="download_requests run"):
        runner.download(instance, ConsumerTuning(consumers=1, **CONSUMERS))
    assert sandbox.stats()["calls_total"] == calls  # not one call
    failures = [
        str(record.dagster_event.step_failure_data.user_failure_data.description)
        for record in instance.all_logs(instance.get_runs(limit=1)[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    ]
    assert any("had committed offsets" in text and "offsets.retention.minutes" in text for text in failures)
