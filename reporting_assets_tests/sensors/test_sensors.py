"""Sensor and schedule ticks against the session broker, a real instance and a landing zone.

The daemon and UI test (reporting_assets_tests/ui) runs the same sensors for real; these pin down
the cursor logic: what is pending, when it is done, and that run keys are deterministic.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import dagster as dg
import pytest

from reporting_assets.core.automation.downloads import DownloadState, PendingDate, done_partitions
from reporting_assets.core.automation.ranges import missing_blocks, rectangles
from reporting_assets.core.downloads import partition_settled
from reporting_assets.core.keys import (
    CONSUMER_SENSOR,
    DEAD_LETTER_CHECK,
    DOWNLOAD_JOB,
    DOWNLOAD_ROLE,
    DOWNLOAD_SENSOR,
    ENQUEUE_SCHEDULE,
    EXPORT_SENSOR,
    LAG_CHECK,
    LAG_SENSOR,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REFRESH_SCHEDULE,
    ROLE_TAG,
    key_str,
    parse_key,
)
from reporting_assets.core.messages import DeadLetter
from reporting_assets.core.reports import load_catalog
from reporting_assets.defs.downloads.sensors import (
    build_consumer_sensor,
    build_download_sensor,
    evaluate_consumers,
    evaluate_downloads,
)
from reporting_assets.defs.exports.sensors import build_export_sensor, evaluate_exports
from reporting_assets.defs.partitions import account_date_partitions, partition_key
from reporting_assets.defs.requests.schedules import build_enqueue_schedule, enqueue_request
from reporting_assets.defs.requests.sensors import build_lag_sensor
from reporting_assets.settings import Settings
from reporting_assets_tests.sensors.conftest import ACCOUNTS, DATES

SETTINGS = Settings(lag_max_messages=0, lag_max_age_s=3600, landing_check_budget_s=5.0)


def keys_of(request: dg.RunRequest, instance: dg.DagsterInstance) -> set[str]:
    """Partition keys a range run request covers (the rectangle of its dimension ranges)."""
    keys = account_date_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]),
        dynamic_partitions_store=instance,
    )
    return {str(key) for key in keys}


def all_keys(dates, accounts) -> set[str]:
    return {key_str(d, a) for d in dates for a in accounts}


def build_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    builders = (build_consumer_sensor, build_download_sensor, build_export_sensor, build_lag_sensor)
    return [build(settings) for build in builders]


def sensor(name: str) -> dg.SensorDefinition:
    return next(s for s in build_sensors(SETTINGS) if s.name == name)


# -- pure parts -------------------------------------------------------------------------------------


def test_key_strings_match_dagsters_multi_partition_keys():
    for date in DATES:
        for account in ACCOUNTS:
            assert key_str(date, account) == str(partition_key(date, account))
            assert parse_key(str(partition_key(date, account))) == (date, account)


def test_rectangles_cover_done_partitions_exactly_with_few_ranges():
    order = [f"acct-{i:02d}" for i in range(10)]
    done = {
        "2026-11-01": set(order),
        "2026-11-02": set(order),
        "2026-11-03": set(order[:3]) | set(order[5:7]),  # two spans
        "2026-11-05": set(order),  # not consecutive with 11-02
    }
    rects = rectangles(done, order, max_partitions=100)
    covered = [
        (day, account)
        for r in rects
        for day in _days(r.first_date, r.last_date)
        for account in order[order.index(r.first_account) : order.index(r.last_account) + 1]
    ]
    assert len(covered) == len(set(covered))
    assert set(covered) == {(d, a) for d, accounts in done.items() for a in accounts}
    assert len(rects) == 4  # 11-01..11-02 x all, 11-03 x 2 spans, 11-05 x all
    small = rectangles({"2026-11-01": set(order), "2026-11-02": set(order)}, order, max_partitions=4)
    assert all(r.size <= 4 for r in small) and sum(r.size for r in small) == 20


def _days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def test_cursor_interns_account_sets_and_round_trips():
    accounts = frozenset(f"https://site-{i}.example.com/" for i in range(1000))
    state = DownloadState(
        folded_upto=42,
        pending={f"2026-11-{d:02d}": PendingDate({0: d, 1: 7}, 40 + d, accounts) for d in range(1, 31)},
    )
    cursor = state.to_cursor()
    assert len(json.loads(cursor)["sets"]) == 1
    assert len(cursor) < 60_000  # 30 dates of the same 1000 accounts: the accounts once
    again = DownloadState.from_cursor(cursor)
    assert again.folded_upto == 42 and again.pending == state.pending


def test_one_tick_of_10000_accounts_by_30_days_covers_every_partition():
    """Fold, decide and cover 300 000 pending partitions in one tick's pure work."""
    order = [f"https://site-{i:05d}.example.com/" for i in range(10_000)]
    dates = _days("2026-10-01", "2026-10-30")
    enqueued = {key_str(d, a): 1_000 + i for i, (d, a) in enumerate((d, a) for d in dates for a in order)}
    started = time.monotonic()
    state = DownloadState()
    state.fold(enqueued, {}, lambda key: {0: 5, 1: 5}, upto=400_000)
    cursor = state.to_cursor()
    state = DownloadState.from_cursor(cursor)
    done = done_partitions(state, {0: 5, 1: 5}, drained=True, settled=lambda d, a: True, budget_s=1)
    rects = rectangles(done, order, max_partitions=10_000)
    state.remove(done)
    elapsed = time.monotonic() - started
    assert len(rects) == 30 and sum(r.size for r in rects) == 300_000
    assert state.pending == {}
    assert len(cursor) < 1_000_000
    print(f"one tick over 300 000 partitions: {elapsed:.1f}s (timed in bench/sensors.py, not here)")


# -- downloads ------------------------------------------------------------------------------------------


def test_downloads_wait_for_the_watermark_then_one_range_run_per_rectangle(pipeline, warehouse, instance):
    pipeline.enqueue(DATES, ACCOUNTS)
    zone = warehouse.landing_zone()
    requests, cursor, summary = evaluate_downloads(pipeline.instance, None, pipeline.kafka, zone, SETTINGS)
    assert requests == [] and "6 partitions wait" in summary
    state = DownloadState.from_cursor(cursor)
    assert state.pending_partitions == 6

    pipeline.commit()  # the consumers are done and the topic is drained
    requests, after, _ = evaluate_downloads(pipeline.instance, cursor, pipeline.kafka, zone, SETTINGS)
    assert len(requests) == 1
    assert keys_of(requests[0], instance) == all_keys(DATES, ACCOUNTS)
    assert requests[0].asset_selection == [dg.AssetKey("downloaded_reports")]
    # A daemon restarted before the cursor was saved asks for the very same run.
    again, _, _ = evaluate_downloads(pipeline.instance, cursor, pipeline.kafka, zone, SETTINGS)
    assert [r.run_key for r in again] == [r.run_key for r in requests]
    # Asked for once: nothing pending, nothing asked again.
    assert DownloadState.from_cursor(after).pending == {}
    assert evaluate_downloads(pipeline.instance, after, pipeline.kafka, zone, SETTINGS)[0] == []


def test_every_enqueued_report_of_a_partition_is_waited_for_not_only_the_default(pipeline, warehouse, instance):
    # Before, the sensor checked the landing zone for the default reports only: a partition enqueued with
    # a second report was loaded (and dropped as done) while that report's pages were still coming.
    zone = warehouse.landing_zone()
    date, account = "2026-11-01", ACCOUNTS[0]
    pipeline.enqueue([date], [account])
    pipeline.commit()
    pipeline.produce_other(3)  # the topic is busy: the landing zone must tell
    pipeline.land(date, account, [4])  # search_analytics: complete
    pipeline.land(date, account, [10], report="search_by_country")  # a full page: another one comes
    requests, cursor, _ = evaluate_downloads(pipeline.instance, None, pipeline.kafka, zone, SETTINGS)
    assert requests == [] and DownloadState.from_cursor(cursor).pending_partitions == 1
    pipeline.land(date, account, [10, 3], report="search_by_country")
    requests, _, _ = evaluate_downloads(pipeline.instance, cursor, pipeline.kafka, zone, SETTINGS)
    assert [keys_of(r, instance) for r in requests] == [{key_str(date, account)}]


def test_busy_topic_downloads_only_partitions_whose_pages_all_landed(pipeline, warehouse, instance):
    zone = warehouse.landing_zone()
    pipeline.enqueue(["2026-11-01"], ACCOUNTS)
    pipeline.commit()
    pipeline.produce_other(3)  # lag from elsewhere: the topic is not drained
    a, b, c = ACCOUNTS
    pipeline.land("2026-11-01", a, [10, 10, 4])  # chain ends with a short page: complete
    pipeline.land("2026-11-01", b, [10])  # full page: its continuation is still on the topic
    # c landed nothing yet (its request was committed? not in this zone: still waiting)
    requests, cursor, _ = evaluate_downloads(pipeline.instance, None, pipeline.kafka, zone, SETTINGS)
    assert [keys_of(r, instance) for r in requests] == [{key_str("2026-11-01", a)}]
    pending = DownloadState.from_cursor(cursor).pending["2026-11-01"]
    assert pending.accounts == {b, c}

    pipeline.land("2026-11-01", b, [10, 0])  # the continuation came back empty
    requests, cursor, _ = evaluate_downloads(pipeline.instance, cursor, pipeline.kafka, zone, SETTINGS)
    assert [keys_of(r, instance) for r in requests] == [{key_str("2026-11-01", b)}]
    assert DownloadState.from_cursor(cursor).pending["2026-11-01"].accounts == {c}


def test_recorded_watermark_is_what_the_group_must_pass(pipeline, warehouse, instance):
    zone = warehouse.landing_zone()
    watermark = pipeline.enqueue(["2026-11-01"], ACCOUNTS[:1])
    pipeline.produce_other(5)  # enqueued later: beyond the recorded watermark
    _, cursor, _ = evaluate_downloads(pipeline.instance, None, pipeline.kafka, zone, SETTINGS)
    assert DownloadState.from_cursor(cursor).pending["2026-11-01"].watermark == watermark
    pipeline.land("2026-11-01", ACCOUNTS[0], [3])
    pipeline.commit(watermark)  # passed the watermark; the later requests are still there
    requests, _, _ = evaluate_downloads(pipeline.instance, cursor, pipeline.kafka, zone, SETTINGS)
    assert [keys_of(r, instance) for r in requests] == [{key_str("2026-11-01", ACCOUNTS[0])}]


def test_a_download_after_the_enqueue_clears_it_and_a_new_enqueue_brings_it_back(pipeline, warehouse):
    zone = warehouse.landing_zone()
    pipeline.enqueue(["2026-11-01"], ACCOUNTS[:2])
    _, cursor, _ = evaluate_downloads(pipeline.instance, None, pipeline.kafka, zone, SETTINGS)
    pipeline.materialize("downloaded_reports", "2026-11-01", ACCOUNTS[0])  # by hand, from the UI
    _, cursor, _ = evaluate_downloads(pipeline.instance, cursor, pipeline.kafka, zone, SETTINGS)
    assert DownloadState.from_cursor(cursor).pending["2026-11-01"].accounts == {ACCOUNTS[1]}
    pipeline.enqueue(["2026-11-01"], ACCOUNTS[:1])
    _, cursor, _ = evaluate_downloads(pipeline.instance, cursor, pipeline.kafka, zone, SETTINGS)
    assert DownloadState.from_cursor(cursor).pending["2026-11-01"].accounts == set(ACCOUNTS[:2])


def test_download_sensor_definition_ticks_with_its_resources(pipeline, warehouse, instance):
    pipeline.enqueue(DATES[:1], ACCOUNTS)
    pipeline.commit()
    download = sensor(DOWNLOAD_SENSOR)
    context = dg.build_sensor_context(
        instance=pipeline.instance, resources={"kafka": pipeline.kafka, "warehouse": warehouse}
    )
    result = download.evaluate_tick(context)
    assert len(result.run_requests) == 1
    assert keys_of(result.run_requests[0], instance) == all_keys(DATES[:1], ACCOUNTS)
    assert result.cursor and DownloadState.from_cursor(result.cursor).pending == {}


# -- exports ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_scan", [False, True], ids=["by-key", "whole-asset"])
def test_export_once_every_account_of_the_date_is_downloaded_and_again_after_a_new_download(
    pipeline, monkeypatch, full_scan
):
    if full_scan:  # how a cold start after a big backfill looks the downloads up
        monkeypatch.setattr("reporting_assets.defs.exports.sensors.FULL_SCAN_PARTITIONS", 0)
    instance = pipeline.instance
    for account in ACCOUNTS:
        pipeline.materialize("downloaded_reports", DATES[0], account)
    for account in ACCOUNTS[:2]:
        pipeline.materialize("downloaded_reports", DATES[1], account)
    requests, cursor, _ = evaluate_exports(instance, None, SETTINGS)
    assert [r.partition_key for r in requests] == [DATES[0]]
    # Without a landing zone to say which reports the date has, every export asset is asked for.
    assert requests[0].asset_selection == [dg.AssetKey(["exports", name]) for name in sorted(load_catalog().reports)]
    again, _, _ = evaluate_exports(instance, None, SETTINGS)
    assert [r.run_key for r in again] == [r.run_key for r in requests]  # deterministic
    assert evaluate_exports(instance, cursor, SETTINGS)[0] == []

    pipeline.materialize("downloaded_reports", DATES[1], ACCOUNTS[2])
    requests, cursor, _ = evaluate_exports(instance, cursor, SETTINGS)
    assert [r.partition_key for r in requests] == [DATES[1]]

    pipeline.materialize(["exports", "search_analytics"], DATES[0])
    pipeline.materialize(["exports", "search_analytics"], DATES[1])
    assert evaluate_exports(instance, cursor, SETTINGS)[0] == []
    pipeline.materialize("downloaded_reports", DATES[0], ACCOUNTS[1])  # re-downloaded: export again
    requests, cursor, _ = evaluate_exports(instance, cursor, SETTINGS)
    assert [r.partition_key for r in requests] == [DATES[0]]


def test_a_date_with_dead_lettered_partitions_is_held_until_their_redrive_is_downloaded(pipeline, warehouse):
    # Before, the sensor only checked that every account had a download: the date shipped to analysts
    # without the dead-lettered rows, and nothing exported it again after the re-drive.
    zone = warehouse.landing_zone()
    broken = pipeline.first_request(DATES[0], ACCOUNTS[1]).in_download("20261101T000000000000Z-0a")
    for account in ACCOUNTS:
        pipeline.land(DATES[0], account, [4], download="20261101T000000000000Z-0a")
        pipeline.materialize("downloaded_reports", DATES[0], account)
    letter = DeadLetter("permission_denied", "HTTP 403", 1, "t", 0, 0, broken.to_json(), None, "now", 403)
    zone.mark_dead_letter(broken, letter)
    requests, cursor, summary = evaluate_exports(pipeline.instance, None, SETTINGS, zone)
    assert requests == [] and "dead-lettered" in summary and DATES[0] in summary
    assert evaluate_exports(pipeline.instance, cursor, SETTINGS, zone)[0] == []  # still held, not asked again

    pipeline.land(DATES[0], ACCOUNTS[1], [4], download="20261101T000000000000Z-0a")  # the re-drive landed
    pipeline.materialize("downloaded_reports", DATES[0], ACCOUNTS[1])  # and the download sensor reloaded it
    requests, _, _ = evaluate_exports(pipeline.instance, cursor, SETTINGS, zone)
    assert [r.partition_key for r in requests] == [DATES[0]]


def test_export_cold_start_skips_dates_exported_after_their_downloads(pipeline):
    for account in ACCOUNTS:
        pipeline.materialize("downloaded_reports", DATES[0], account)
    pipeline.materialize(["exports", "search_analytics"], DATES[0])
    assert evaluate_exports(pipeline.instance, None, SETTINGS)[0] == []


def test_a_date_asks_for_the_exports_of_its_reports_and_waits_until_each_is_exported(pipeline, warehouse):
    # Each report is its own asset: the run exports the reports downloaded that date, and a date
    # is done only when every one of them was exported after its newest download.
    zone = warehouse.landing_zone()
    for account in ACCOUNTS:
        pipeline.land(DATES[0], account, [3])
        pipeline.land(DATES[0], account, [2], report="by_device")
        pipeline.materialize("downloaded_reports", DATES[0], account)
    requests, cursor, _ = evaluate_exports(pipeline.instance, None, SETTINGS, zone)
    assert [r.partition_key for r in requests] == [DATES[0]]
    assert requests[0].asset_selection == [
        dg.AssetKey(["exports", "by_device"]),
        dg.AssetKey(["exports", "search_analytics"]),
    ]
    pipeline.materialize(["exports", "search_analytics"], DATES[0])  # one of the two exported (by hand)
    requests, _, _ = evaluate_exports(pipeline.instance, None, SETTINGS, zone)
    assert [r.partition_key for r in requests] == [DATES[0]]
    pipeline.materialize(["exports", "by_device"], DATES[0])
    assert evaluate_exports(pipeline.instance, None, SETTINGS, zone)[0] == []


# -- consumers ----------------------------------------------------------------------------------------


def _add_download_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    run = dg.DagsterRun(job_name=DOWNLOAD_JOB, status=status, tags={ROLE_TAG: DOWNLOAD_ROLE})
    instance.add_run(run)
    return run.run_id


def test_consumers_launch_on_lag_once_and_after_a_failed_run(pipeline):
    instance = pipeline.instance
    assert isinstance(evaluate_consumers(instance, pipeline.kafka, SETTINGS), dg.SkipReason)  # no lag
    pipeline.enqueue(DATES[:1], ACCOUNTS[:1], record=False)
    first = evaluate_consumers(instance, pipeline.kafka, SETTINGS)
    assert isinstance(first, dg.RunRequest) and first.run_key == "consumers-after-none"
    assert first.job_name == "download_requests"
    assert first.run_config["ops"]["plan_consumers"]["config"]["consumers"] == SETTINGS.consumer.consumers

    running = _add_download_run(instance, dg.DagsterRunStatus.STARTED)
    skipped = evaluate_consumers(instance, pipeline.kafka, SETTINGS)
    assert isinstance(skipped, dg.SkipReason) and running in skipped.skip_message

    instance.report_run_failed(instance.get_run_by_id(running))  # e.g. killed, marked failed
    replacement = evaluate_consumers(instance, pipeline.kafka, SETTINGS)
    assert isinstance(replacement, dg.RunRequest) and replacement.run_key == f"consumers-after-{running}"
    pipeline.commit()
    assert isinstance(evaluate_consumers(instance, pipeline.kafka, SETTINGS), dg.SkipReason)


def test_consumer_sensor_definition_targets_the_download_job(pipeline):
    pipeline.enqueue(DATES[:1], ACCOUNTS[:1], record=False)
    consumers = sensor(CONSUMER_SENSOR)
    result = consumers.evaluate_tick(
        dg.build_sensor_context(instance=pipeline.instance, resources={"kafka": pipeline.kafka})
    )
    assert [r.job_name for r in result.run_requests] == ["download_requests"]


# -- lag observation and checks -------------------------------------------------------------------------


def _evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)}


def test_lag_sensor_observes_lag_and_fails_the_check_until_consumers_catch_up(pipeline):
    lag_sensor = sensor(LAG_SENSOR)
    context = lambda: dg.build_sensor_context(instance=pipeline.instance, resources={"kafka": pipeline.kafka})  # noqa: E731
    pipeline.enqueue(DATES, ACCOUNTS, record=False)
    result = lag_sensor.evaluate_tick(context())
    (observed,) = [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]
    assert observed.asset_key == dg.AssetKey("report_requests")
    assert observed.metadata["lag_total"].value == 6
    assert sum(p["lag"] for p in observed.metadata["lag_by_partition"].value.values()) == 6
    assert observed.metadata["oldest_request_age_s"].value >= 0
    checks = _evaluations(result)
    assert not checks[LAG_CHECK].passed and "launch_consumers_on_lag" in checks[LAG_CHECK].description
    assert checks[DEAD_LETTER_CHECK].passed

    pipeline.commit()
    checks = _evaluations(lag_sensor.evaluate_tick(context()))
    assert checks[LAG_CHECK].passed


def test_dead_letter_check_fails_until_redriven(pipeline):
    kafka = pipeline.kafka
    producer = kafka.producer()
    try:
        producer.send(kafka.dead_letter_topic, key=b"x", value=b"{}").get(timeout=30)
    finally:
        producer.close()
    checks = _evaluations(
        sensor(LAG_SENSOR).evaluate_tick(
            dg.build_sensor_context(instance=pipeline.instance, resources={"kafka": kafka})
        )
    )
    assert not checks[DEAD_LETTER_CHECK].passed
    assert "redrive_dead_letters" in checks[DEAD_LETTER_CHECK].description
    from reporting_assets.core.consumer.redrive import redrive

    redrive(kafka)
    checks = _evaluations(
        sensor(LAG_SENSOR).evaluate_tick(
            dg.build_sensor_context(instance=pipeline.instance, resources={"kafka": kafka})
        )
    )
    assert checks[DEAD_LETTER_CHECK].passed


def test_lag_age_threshold(pipeline):
    settings = Settings(lag_max_messages=1_000, lag_max_age_s=0)
    lag_sensor = next(s for s in build_sensors(settings) if s.name == LAG_SENSOR)
    pipeline.enqueue(DATES[:1], ACCOUNTS[:1], record=False)
    time.sleep(0.01)
    checks = _evaluations(
        lag_sensor.evaluate_tick(
            dg.build_sensor_context(instance=pipeline.instance, resources={"kafka": pipeline.kafka})
        )
    )
    assert not checks[LAG_CHECK].passed and "old" in checks[LAG_CHECK].description


# -- schedule -------------------------------------------------------------------------------------------


def test_schedule_enqueues_the_latest_complete_day_for_every_account_in_one_range_run(instance):
    schedule = build_enqueue_schedule(Settings(lateness_days=3))
    tick = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert keys_of(request, instance) == all_keys(["2026-11-17"], ACCOUNTS)
    assert request.run_key == "enqueue-2026-11-17"
    assert request.asset_selection == [dg.AssetKey("report_requests")]


def test_schedule_never_enqueues_an_account_day_twice(instance):
    day = "2026-11-17"
    (first,) = enqueue_request(instance, day)
    # The first run is under way: a second tick the same day (an hourly cron, a restart) waits for it.
    run = dg.DagsterRun(
        job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), tags=first.tags, status=dg.DagsterRunStatus.STARTED
    )
    instance.add_run(run)
    skip = enqueue_request(instance, day)
    assert isinstance(skip, dg.SkipReason) and "in progress" in skip.skip_message
    instance.report_run_failed(run)  # after it had enqueued every account but the 2nd
    for account in ACCOUNTS:
        if account != ACCOUNTS[1]:
            instance.report_runless_asset_event(
                dg.AssetMaterialization("report_requests", partition=str(partition_key(day, account)))
            )
    (again,) = enqueue_request(instance, day)  # only the account left out
    assert keys_of(again, instance) == all_keys([day], [ACCOUNTS[1]])
    instance.report_runless_asset_event(
        dg.AssetMaterialization("report_requests", partition=str(partition_key(day, ACCOUNTS[1])))
    )
    done = enqueue_request(instance, day)
    assert isinstance(done, dg.SkipReason) and "already" in done.skip_message


def test_missing_accounts_are_enqueued_in_contiguous_blocks():
    missing = {"b", "c", "e"}
    assert missing_blocks(list("abcdef"), missing.__contains__) == [["b", "c"], ["e"]]
    assert missing_blocks(list("abc"), lambda _: False) == []


def test_schedule_skips_without_accounts_or_before_the_first_partition(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as empty:
        assert isinstance(enqueue_request(empty, "2026-11-17"), dg.SkipReason)
        empty.add_dynamic_partitions("account", ACCOUNTS)
        assert isinstance(enqueue_request(empty, "2020-01-01"), dg.SkipReason)


@pytest.mark.parametrize("name", [CONSUMER_SENSOR, DOWNLOAD_SENSOR, EXPORT_SENSOR, LAG_SENSOR])
def test_sensor_settings_come_from_the_environment(name):
    settings = Settings.from_env({"REPORTING_SENSOR_INTERVAL_S": "3", "REPORTING_SENSORS_RUNNING": "0"})
    defn = next(s for s in build_sensors(settings) if s.name == name)
    assert defn.minimum_interval_seconds == 3
    assert defn.default_status == dg.DefaultSensorStatus.STOPPED


def test_bad_settings_name_the_variable():
    from reporting_assets.settings import SettingError

    with pytest.raises(SettingError, match="REPORTING_LATENESS_DAYS"):
        Settings.from_env({"REPORTING_LATENESS_DAYS": "soon"})
    with pytest.raises(SettingError, match="REPORTING_ENQUEUE_CRON"):
        Settings.from_env({"REPORTING_ENQUEUE_CRON": "daily"})


def test_requests_parked_on_the_delay_topic_are_work_not_done(pipeline, warehouse, instance):
    """A load-quota refusal parks the request on the delay topic and commits it on the request topic."""
    zone = warehouse.landing_zone()
    kafka = pipeline.kafka
    pipeline.enqueue(["2026-11-01"], ACCOUNTS[:1])
    pipeline.commit()  # the request topic is drained...
    producer = kafka.producer()
    try:  # ...but its request waits on the delay topic, uncommitted
        request = pipeline.first_request("2026-11-01", ACCOUNTS[0])
        producer.send(kafka.delay_topic, key=request.key(), value=request.encode()).get(timeout=30)
    finally:
        producer.close()
    requests, cursor, _ = evaluate_downloads(instance, None, kafka, zone, SETTINGS)
    assert requests == [] and DownloadState.from_cursor(cursor).pending_partitions == 1
    launch = evaluate_consumers(instance, kafka, SETTINGS)
    assert isinstance(launch, dg.RunRequest)  # only the delay topic has lag: consumers still needed
    pipeline.land("2026-11-01", ACCOUNTS[0], [4])  # released, called and landed later
    requests, _, _ = evaluate_downloads(instance, cursor, kafka, zone, SETTINGS)
    assert [keys_of(r, instance) for r in requests] == [{key_str("2026-11-01", ACCOUNTS[0])}]


def test_a_partition_downloaded_again_is_settled_only_once_its_new_download_has_landed(pipeline, warehouse):
    zone = warehouse.landing_zone()
    date, account = "2026-11-01", ACCOUNTS[0]
    old, new = "20261101T120000000000Z-0a", "20261102T120000000000Z-0b"  # the later enqueue sorts last
    pipeline.land(date, account, [10, 4], download=old)
    assert partition_settled(zone, date, account)
    zone.begin_downloads([("search_analytics", date, account)], new)  # enqueued again, nothing landed yet
    assert not partition_settled(zone, date, account)
    pipeline.land(date, account, [10], download=new)  # its first page, full: another one comes
    assert not partition_settled(zone, date, account)
    pipeline.land(date, account, [10, 4], download=new)
    assert partition_settled(zone, date, account)
    assert zone.completeness("search_analytics", date, account).download == new


def test_the_code_location_registers_the_sensors_schedules_and_request_topic_checks():
    from reporting_assets.definitions import defs

    repository = defs().get_repository_def()
    assert {s.name for s in repository.sensor_defs} == {CONSUMER_SENSOR, DOWNLOAD_SENSOR, EXPORT_SENSOR, LAG_SENSOR}
    assert {s.name for s in repository.schedule_defs} == {ENQUEUE_SCHEDULE, REFRESH_SCHEDULE, "discover_accounts_daily"}
    checks = {(key.asset_key.to_user_string(), key.name) for key in repository.asset_graph.asset_check_keys}
    assert {("report_requests", LAG_CHECK), ("report_requests", DEAD_LETTER_CHECK)} <= checks
