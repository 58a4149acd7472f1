"""The real thing: `dagster dev` (webserver, daemon, code server), the session broker, the sandbox, Chromium.

A backfill of 2 dates x 3 accounts launched through the GraphQL API must end, with no further action,
in all 6 partitions downloaded and both dates exported: the sensors launch the consumers, the
downloads and the exports. Along the way: lag observations appear on `report_requests`, its lag
check fails while the consumer sensor is stopped and passes once the consumers caught up, and a
download run killed with SIGKILL is replaced by the sensor with the same final result, and one site whose
calls fail is dead-lettered: its dates are held, not exported, until one launch of redrive_dead_letters
after the fix, from which the sensors reload and export them by themselves. Then headless
Chromium loads the asset graph and the partitions page, and keeps screenshots under data/ui/.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import SCHEDULED_EXECUTION_TIME_TAG  # a hidden tag: no public name

from reporting_assets.core.keys import (
    ACCOUNTS_SCHEDULE,
    CONSUMER_SENSOR,
    DOWNLOAD_SENSOR,
    DOWNLOADS_ASSET,
    ENQUEUE_DAY_TAG,
    ENQUEUE_SCHEDULE,
    EXPORT_SENSOR,
    LAG_CHECK,
    LAG_SENSOR,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REDRIVE_JOB,
    REQUESTS_ASSET,
    SENSOR_TAG,
)
from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.reports import DEFAULT_REPORTS, get_report
from reporting_assets.defs.partitions import account_date_partitions, daily_partitions, partition_key, split_key
from reporting_assets.infra.ports import free_port
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.sandbox import FaultSpec, SandboxConfig, SandboxServer, SiteSpec, expected_rows
from reporting_assets_tests.consumer.test_loop import dead_letters
from reporting_assets_tests.ui.helpers import REPO_ROOT, Chromium, DagsterDev, kill_tree, wait_for

pytestmark = pytest.mark.timeout(600)

SITES = [
    SiteSpec("sc-domain:example.com", 120),
    SiteSpec("https://www.example.com/", 1250),  # 2 pages of 1000 rows a day
    SiteSpec("https://shop.example.com/", 2600),  # 3 pages a day
]
ACCOUNTS = sorted(site.url for site in SITES)
FAILING = "sc-domain:example.com"
DATES = ["2026-11-01", "2026-11-02"]
SCREENSHOTS = REPO_ROOT / "data" / "ui"
METRICS = ("clicks", "impressions", "ctr", "position")
LAG_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("report_requests"), LAG_CHECK)
EXPORT = ["exports", "search_analytics"]  # the default report's export asset
ROLE_TAG = {"reporting_assets/role": "download"}


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    Chromium.require()  # fails (never skips) with how to install it
    return Chromium(tmp_path_factory.mktemp("chromium"))


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(seed=11, sites=SITES, per_site_qps=None, global_qps=None, faults=[])


@pytest.fixture
def sandbox(sandbox_config: SandboxConfig) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config) as server:
        yield server


@pytest.fixture
def env(kafka_broker: str, unique_name: Callable[[str], str], tmp_path: Path, sandbox: SandboxServer) -> dict:
    topic = unique_name("ui-requests")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "REPORTING_REQUEST_TOPIC": topic,
        "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
        "REPORTING_CONSUMER_GROUP": unique_name("ui-group"),
        "PARTNER_API_ENDPOINT": sandbox.url,
        "PARTNER_NUM_RETRIES": "2",
        "REPORTING_DATA_DIR": str(tmp_path / "data"),
        # sensors tick fast; the lag check fails at any lag (held-off consumers show at once)
        "REPORTING_SENSOR_INTERVAL_S": "2",
        "REPORTING_LAG_MAX_MESSAGES": "0",
        "REPORTING_SCHEDULES_RUNNING": "0",  # no cron tick may interfere
        # consumers slow enough (a call every 2 s per account) to be killed in the middle of their work
        "REPORTING_CONSUMERS": "2",
        "REPORTING_CONSUMER_QPS_PER_ACCOUNT": "0.5",
        "REPORTING_CONSUMER_IDLE_TIMEOUT_S": "3",
        # a failing site is dead-lettered after its tries in memory, with no waits on the delay topic
        "REPORTING_CONSUMER_TRANSIENT_WAITS_S": "none",
        "REPORTING_CONSUMER_RETRY_BACKOFF_S": "0.2",
    }


@pytest.fixture
def dagster_dev(env: dict, tmp_path: Path) -> Iterator[DagsterDev]:
    home = tmp_path / "dagster_home"
    DagsterDev.prepare_home(home)
    dev = DagsterDev(home, free_port(), env, tmp_path / "dagster_dev.log")
    try:
        dev.start()
        yield dev
    finally:
        dev.stop(timeout_s=10)  # every run has ended; what is left after 10 s is killed


class Watch:
    """Reads the instance the server writes (same DAGSTER_HOME) and waits on conditions."""

    def __init__(self, dev: DagsterDev) -> None:
        self.dev = dev
        self.instance = dg.DagsterInstance.from_config(str(dev.home))
        self.started = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def until(self, condition: Callable[[], object], timeout_s: float, what: str) -> object:
        try:
            value = wait_for(condition, timeout_s, what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- dagster dev log ---\n{self.dev.log_tail(80)}") from None
        self.steps.append((what, round(time.monotonic() - self.started, 1)))
        return value

    def run(self, run_id: str) -> dg.DagsterRun:
        return self.instance.get_run_by_id(run_id)

    def finished(self, run_id: str) -> dg.DagsterRun | None:
        run = self.run(run_id)
        return run if run.is_finished else None

    def download_runs(self) -> list[dg.DagsterRun]:
        return [record.dagster_run for record in self.instance.get_run_records(dg.RunsFilter(tags=ROLE_TAG))]

    def materialized(self, asset: str | list[str]) -> set[str]:
        return set(self.instance.get_materialized_partitions(dg.AssetKey(asset)))

    def latest_observation(self) -> tuple[int, dict] | None:
        records = self.instance.fetch_observations(dg.AssetKey("report_requests"), limit=1).records
        if not records:
            return None
        return records[0].storage_id, {k: v.value for k, v in records[0].asset_observation.metadata.items()}

    def latest_lag_check(self) -> tuple[int, bool, str] | None:
        history = self.instance.event_log_storage.get_asset_check_execution_history(LAG_CHECK_KEY, limit=1)
        if not history or history[0].event is None:
            return None
        evaluation = history[0].event.dagster_event.event_specific_data
        return history[0].id, evaluation.passed, evaluation.description or ""

    def step_pids(self, run_id: str, op: str) -> dict[str, int]:
        """Step key -> pid of its step process, for the steps of `op` started so far (multiprocess executor)."""
        return {
            entry.dagster_event.step_key: entry.dagster_event.pid
            for entry in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED)
            if entry.dagster_event and (entry.dagster_event.step_key or "").startswith(f"{op}[")
        }

    def worker_pid(self, run_id: str) -> int | None:
        """Pid of the run worker (the parent of the consumer step processes), from its engine events."""
        for entry in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            message = entry.user_message or (entry.dagster_event.message if entry.dagster_event else "") or ""
            match = re.search(
                r"(?:Started process for run|multiprocess executor: parent process) \(pid: (\d+)\)", message
            )
            if match:
                return int(match.group(1))
        return None


def run_partitions(run: dg.DagsterRun, instance: dg.DagsterInstance) -> list[str]:
    """The partition keys a run was asked for: its partition range (a rectangle of dates x accounts), or its key."""
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        return list(
            account_date_partitions.get_partition_keys_in_range(
                dg.PartitionKeyRange(start, end), dynamic_partitions_store=instance
            )
        )
    return [run.tags["dagster/partition"]] if "dagster/partition" in run.tags else []


def materialized_by(instance: dg.DagsterInstance, asset: str, run_id: str) -> list[str]:
    """The partitions of `asset` that one run materialized, as often as it did."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return sorted(
        r.event_log_entry.dagster_event.partition
        for r in records
        if r.event_log_entry.dagster_event.asset_key == dg.AssetKey(asset)
    )


def every_value(env: dict, topic: str) -> list[bytes]:
    """Every message value on `topic`, from its first offset to its end offsets as they are now."""
    cluster = KafkaResource(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], request_topic=topic).cluster()
    # Read from a group that never commits (read without joining it): from offset 0, all of it.
    return [value for _, value in cluster.uncommitted_values([topic], group_id=f"{topic}.test-reader")]


def landed_pages(data_dir: Path) -> int:
    return sum(1 for _ in (data_dir / "landing").rglob("*.parquet")) if (data_dir / "landing").exists() else 0


def truth(config: SandboxConfig, date: str) -> list[tuple]:
    """The partner's rows of the date as the report asks for them: a day the schedule enqueues is
    recent, so Google still collects it (fresh data, provisional) and the export holds what it has."""
    spec = get_report("search_analytics")
    rows = []
    for account in ACCOUNTS:
        for row in expected_rows(config, account, date, date, list(spec.dimensions), data_state=spec.data_state):
            keys = dict(zip(spec.dimensions, row["keys"], strict=True))
            rows.append(
                (
                    account,
                    keys["date"],
                    keys["query"],
                    keys["page"],
                    keys["country"],
                    keys["device"],
                    *(float(row[m]) for m in METRICS),
                )
            )
    return sorted(rows)


def exported(path: Path) -> list[tuple]:
    with path.open(newline="") as handle:
        return sorted(
            (r["account"], r["date"], r["query"], r["page"], r["country"], r["device"], *(float(r[m]) for m in METRICS))
            for r in csv.DictReader(handle)
        )


def test_backfill_through_graphql_is_finished_by_the_sensors_and_shown_in_the_ui(
    dagster_dev: DagsterDev, env: dict, sandbox: SandboxServer, sandbox_config: SandboxConfig, chromium: Chromium
):
    dev = dagster_dev
    # One site's calls fail until the fault is "fixed" below: its requests end in the dead-letter topic.
    sandbox.update_config(faults=[FaultSpec("http_503", site_url=FAILING)])
    watch = Watch(dev)
    data_dir = Path(env["REPORTING_DATA_DIR"])
    kafka = KafkaResource(
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        request_topic=env["REPORTING_REQUEST_TOPIC"],
        dead_letter_topic=env["REPORTING_DEAD_LETTER_TOPIC"],
        delay_topic=env["REPORTING_DELAY_TOPIC"],
        consumer_group=env["REPORTING_CONSUMER_GROUP"],
    )

    # Consumers held off: the UI's toggle of the consumer sensor, through GraphQL.
    dev.stop_sensor(CONSUMER_SENSOR)
    assert dev.sensor_status(CONSUMER_SENSOR) == "STOPPED"

    # Accounts first (the "Materialize" button of `accounts`), then the backfill of 2 dates x 3 accounts.
    accounts_run = dev.launch_assets(["accounts"])
    run = watch.until(lambda: watch.finished(accounts_run), 120, "the accounts run")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert sorted(watch.instance.get_dynamic_partitions("account")) == ACCOUNTS
    keys = [str(partition_key(date, account)) for date in DATES for account in ACCOUNTS]
    backfill = dev.launch_backfill("report_requests", keys)
    # (The backfill daemon updates the backfill's own status every 30 s: wait on what it produces.)
    watch.until(lambda: watch.materialized("report_requests") == set(keys), 240, "the enqueue backfill's runs")
    enqueued_at = watch.latest_observation()[0] if watch.latest_observation() else 0

    # Lag observed on report_requests, and its lag check fails while nobody consumes.
    watch.until(
        lambda: (o := watch.latest_observation()) and o[0] > enqueued_at and o[1]["lag_total"] == len(keys),
        60,
        "a lag observation of the 6 enqueued requests",
    )
    failing = watch.until(lambda: (c := watch.latest_lag_check()) and not c[1] and c, 60, "the lag check to fail")
    assert "launch_consumers_on_lag" in failing[2]
    assert watch.download_runs() == []  # held off indeed

    # Let the consumers go, and kill the first download run in the middle of its work.
    dev.start_sensor(CONSUMER_SENSOR)
    first = watch.until(lambda: (runs := watch.download_runs()) and runs[0], 60, "the consumer sensor's download run")
    assert first.tags["dagster/run_key"] == "consumers-after-none"
    pid = watch.until(lambda: watch.worker_pid(first.run_id), 90, "the download run's worker process")
    consumers = int(env["REPORTING_CONSUMERS"])
    steps = watch.until(
        lambda: len(found := watch.step_pids(first.run_id, "consume_requests")) == consumers and found,
        90,
        f"the download run's {consumers} consumer step processes",
    )
    watch.until(lambda: landed_pages(data_dir) >= 1, 90, "the first landed page")
    assert kafka.lag(kafka.request_topic).total > 0, "the download run finished before it could be killed"
    killed = kill_tree(pid)  # the pids confirmed dead
    assert {pid, *steps.values()} <= set(killed), f"run worker {pid} and consumers {steps}: dead {killed}"
    run = watch.until(lambda: watch.finished(first.run_id), 60, "the killed run to be marked finished")
    assert run.status == dg.DagsterRunStatus.FAILURE

    # The sensor replaces it; then downloads and exports follow from the sensors alone.
    replacement = watch.until(
        lambda: next((r for r in watch.download_runs() if r.run_id != first.run_id), None),
        60,
        "a replacement download run",
    )
    assert replacement.tags["dagster/run_key"] == f"consumers-after-{first.run_id}"
    run = watch.until(lambda: watch.finished(replacement.run_id), 180, "the replacement download run")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert kafka.lag(kafka.request_topic).total == 0
    watch.until(lambda: watch.materialized("downloaded_reports") == set(keys), 180, "all 6 partitions downloaded")

    # Both dates miss the failing site's rows: held, not exported (before, they shipped without them).
    # (A letter may be there twice when a kill came between the dead letter and its commit.)
    lettered = {(d.request["date"], d.request["account"]) for d in dead_letters(kafka)}
    assert lettered == {(date, FAILING) for date in DATES}
    watch.until(
        lambda: any("held with dead-lettered" in (t["skipReason"] or "") for t in dev.ticks("sensor", EXPORT_SENSOR)),
        60,
        "the export sensor to hold the dates",
    )
    assert watch.materialized(EXPORT) == set()
    # The fault is fixed; one click on redrive_dead_letters, and the sensors do the rest by themselves.
    sandbox.update_config(faults=[])
    redrive = dev.launch_job(REDRIVE_JOB)
    assert watch.until(lambda: watch.finished(redrive), 120, "the re-drive run").status == dg.DagsterRunStatus.SUCCESS
    watch.until(lambda: watch.materialized(EXPORT) == set(DATES), 240, "both dates exported")

    # Caught up: lag 0 observed and the lag check passes again.
    watch.until(lambda: (o := watch.latest_observation()) and o[1]["lag_total"] == 0, 60, "a lag observation of 0")
    watch.until(lambda: (c := watch.latest_lag_check()) and c[1], 60, "the lag check to pass")

    watch.until(lambda: dev.backfill_status(backfill) != "REQUESTED", 60, "the backfill to complete")
    assert dev.backfill_status(backfill) == "COMPLETED_SUCCESS"

    # Same result as an uninterrupted run: exactly the partner's rows, none twice.
    for date in DATES:
        rows = exported(data_dir / "exports" / "search_analytics" / f"{date}.csv")
        assert rows == truth(sandbox_config, date)
    records = watch.instance.get_run_records()
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    assert failed == [first.run_id], f"only the killed run may fail: {failed}"
    # Every run the sensors launched, and none twice. The consumer sensor: the killed run, its replacement,
    # the one for the re-driven requests, each keyed by the run before it.
    consumer_runs = [r.dagster_run for r in reversed(watch.instance.get_run_records(dg.RunsFilter(tags=ROLE_TAG)))]
    assert [(r.tags.get(SENSOR_TAG), r.tags["dagster/run_key"]) for r in consumer_runs] == [
        (CONSUMER_SENSOR, run_key)
        for run_key in (
            "consumers-after-none",
            f"consumers-after-{first.run_id}",
            f"consumers-after-{replacement.run_id}",
        )
    ]
    # The download sensor: runs whose partition ranges cover the 6 partitions once each, then once the
    # re-drive enqueued them again, the failing site's 2 (however a tick grouped them into ranges).
    redriven_at = watch.instance.get_run_record_by_id(redrive).create_timestamp
    downloads = [r for r in records if r.dagster_run.tags.get(SENSOR_TAG) == DOWNLOAD_SENSOR]
    covered = {
        phase: Counter(
            key
            for r in downloads
            if (r.create_timestamp > redriven_at) == phase
            for key in run_partitions(r.dagster_run, watch.instance)
        )
        for phase in (False, True)
    }
    assert covered == {False: Counter(keys), True: Counter(str(partition_key(d, FAILING)) for d in DATES)}, covered
    for r in downloads:  # each materialized its range, once
        asked = sorted(run_partitions(r.dagster_run, watch.instance))
        assert materialized_by(watch.instance, DOWNLOADS_ASSET, r.dagster_run.run_id) == asked, r.dagster_run.tags
    # The export sensor: one run per date, after the re-drive (the dates were held until then).
    exports = [r for r in records if r.dagster_run.tags.get(SENSOR_TAG) == EXPORT_SENSOR]
    assert sorted(key for r in exports for key in run_partitions(r.dagster_run, watch.instance)) == DATES
    assert all(r.create_timestamp > redriven_at for r in exports)
    # And no other run: the test's own launches are the accounts run, the backfill's, and the re-drive.
    backfill_runs = [r.dagster_run.run_id for r in records if r.dagster_run.tags.get("dagster/backfill") == backfill]
    enqueued_by_backfill = [
        k for run_id in backfill_runs for k in materialized_by(watch.instance, REQUESTS_ASSET, run_id)
    ]
    assert sorted(enqueued_by_backfill) == sorted(keys)
    others = [r.dagster_run for r in records if SENSOR_TAG not in r.dagster_run.tags]
    assert sorted(r.run_id for r in others) == sorted([accounts_run, redrive, *backfill_runs]), [
        (r.job_name, r.tags) for r in others
    ]
    assert len(records) == len(others) + len(consumer_runs) + len(downloads) + len(exports)

    # The UI, in a real browser: the asset graph, the catalog, the partitions and the lag check pages.
    # Each page is rendered again until its queries have answered (a loaded machine can be slower than one render).
    # every report of the catalog is an export asset of its own, downstream of downloaded_reports
    assets = (
        "accounts",
        "ga4_properties",
        "report_requests",
        "downloaded_reports",
        "search_analytics",
        "by_search_appearance",
    )
    chromium.page_text(
        f"{dev.url}/asset-groups/reporting",
        SCREENSHOTS / "asset_graph.png",
        lambda text: all(asset in text for asset in assets),
    )
    days = len(daily_partitions.get_partition_keys())  # grows by one every day (and maybe at midnight)
    chromium.page_text(
        f"{dev.url}/assets",
        SCREENSHOTS / "catalog.png",
        lambda text: any(f"{3 * d} partitions" in text and f"{d} partitions" in text for d in (days, days + 1)),
    )
    # both dimensions listed: the accounts, and the dates
    chromium.page_text(
        f"{dev.url}/assets/downloaded_reports?view=partitions",
        SCREENSHOTS / "partitions.png",
        lambda text: (
            "Materialized (6)" in text
            and "Failed (0)" in text
            and all(account in text for account in ACCOUNTS)
            # the newest dates head the list (it shows some 20 of them): the newest, or the one before at midnight
            and any(date in text for date in daily_partitions.get_partition_keys()[-2:])
        ),
    )
    chromium.page_text(
        f"{dev.url}/assets/report_requests?view=checks&checkDetail={LAG_CHECK}",
        SCREENSHOTS / "lag_check.png",
        lambda text: LAG_CHECK in text and "lag_total" in text,
        window="1400,1250",  # down to the lag plot
    )
    for name in ("asset_graph", "catalog", "partitions", "lag_check"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
    print("steps (s since start):", watch.steps, "killed pids:", killed, flush=True)
    watch.instance.dispose()


@pytest.fixture
def schedule_env(env: dict) -> dict:
    return {
        **env,
        "REPORTING_SCHEDULES_RUNNING": "1",
        "REPORTING_ACCOUNTS_CRON": "* * * * *",  # the daemon ticks within a minute or two
        "REPORTING_ENQUEUE_CRON": "* * * * *",
        "REPORTING_LATENESS_DAYS": "2",
        "REPORTING_CONSUMER_QPS_PER_ACCOUNT": "10",
    }


@pytest.mark.timeout(900)
def test_daily_schedule_ticks_in_the_daemon_and_a_restarted_daemon_launches_nothing_twice(
    schedule_env: dict, sandbox_config: SandboxConfig, tmp_path: Path
):
    """One Spark run for a dates × accounts rectangle from the UI's launchpad (the partition-range tags:
    Dagster's backfills split a rectangle into one run per date), and the enqueue schedule as the daemon
    runs it: one run for the latest complete day; the sensors download and export both. Then `dagster
    dev` is restarted on the same instance: every sensor and the schedule tick again, and nothing is
    launched twice (cursors, and the schedule's check of what is enqueued, survive the restart): over the
    whole test, each (date, account, report) first page is on the request topic once, each partition is
    enqueued and downloaded by one run, each date exported by one. The days are the runs' own, so midnight
    passing changes what is expected, not whether it is checked."""
    home = tmp_path / "dagster_home"
    DagsterDev.prepare_home(home)
    data_dir = Path(schedule_env["REPORTING_DATA_DIR"])
    dev = DagsterDev(home, free_port(), schedule_env, tmp_path / "dagster_dev.log")
    dev.start()
    watch = Watch(dev)
    try:

        def schedule_runs(name: str) -> list[dg.DagsterRun]:
            records = watch.instance.get_run_records(dg.RunsFilter(tags={"dagster/schedule_name": name}))
            return [record.dagster_run for record in records]

        # The `accounts` Materialize button, then the launchpad: report_requests with a range of 2 dates x 3 accounts.
        accounts_run = dev.launch_assets(["accounts"])
        assert (
            watch.until(lambda: watch.finished(accounts_run), 120, "the accounts run").status
            == dg.DagsterRunStatus.SUCCESS
        )
        accounts = list(watch.instance.get_dynamic_partitions("account"))
        assert sorted(accounts) == ACCOUNTS
        range_run = dev.launch_assets(
            ["report_requests"],
            tags={
                "dagster/asset_partition_range_start": str(partition_key(DATES[0], accounts[0])),
                "dagster/asset_partition_range_end": str(partition_key(DATES[1], accounts[-1])),
            },
        )
        run = watch.until(lambda: watch.finished(range_run), 240, "the launchpad's range run")
        assert run.status == dg.DagsterRunStatus.SUCCESS, dev.log_tail(80)
        materializations = watch.instance.fetch_materializations(dg.AssetKey("report_requests"), limit=100).records
        assert {r.partition_key for r in materializations if r.run_id == range_run} == {
            str(partition_key(date, account)) for date in DATES for account in ACCOUNTS
        }

        enqueue = watch.until(
            lambda: (runs := schedule_runs("enqueue_latest_complete_day")) and watch.finished(runs[0].run_id),
            420,
            "the enqueue schedule's run (after the accounts schedule's)",
        )
        assert enqueue.status == dg.DagsterRunStatus.SUCCESS, dev.log_tail(80)
        day = enqueue.tags["dagster/run_key"].removeprefix("enqueue-")
        assert (
            day
            == (
                dt.date.fromisoformat(enqueue.tags[SCHEDULED_EXECUTION_TIME_TAG][:10]) - dt.timedelta(days=2)
            ).isoformat()
        )
        watch.until(
            lambda: schedule_runs(ACCOUNTS_SCHEDULE), 120, "the accounts schedule's run"
        )  # (all succeed: below)
        keys = {str(partition_key(day, account)) for account in ACCOUNTS}
        # One run enqueued the day for every account (one Spark job).
        materializations = watch.instance.fetch_materializations(dg.AssetKey("report_requests"), limit=100).records
        assert {r.partition_key for r in materializations if r.run_id == enqueue.run_id} == keys

        watch.until(
            lambda: watch.materialized(EXPORT) >= {day, *DATES},
            300,
            f"{day} and {', '.join(DATES)} exported by the sensors",
        )
        assert watch.materialized("downloaded_reports") == keys | {
            str(partition_key(date, account)) for date in DATES for account in ACCOUNTS
        }
        for date in (day, *DATES):
            assert exported(data_dir / "exports" / "search_analytics" / f"{date}.csv") == truth(sandbox_config, date)

        # Restart on the same instance, once every run has ended.
        watch.until(
            lambda: all(r.dagster_run.is_finished for r in watch.instance.get_run_records()),
            120,
            "every run to end before the restart",
        )
        before = {r.dagster_run.run_id for r in watch.instance.get_run_records()}
        dev.stop(timeout_s=30)
        restarted_at = time.time()
        dev.start()
        sensors = (CONSUMER_SENSOR, DOWNLOAD_SENSOR, EXPORT_SENSOR, LAG_SENSOR)
        for name in sensors:
            watch.until(
                lambda name=name: len([t for t in dev.ticks("sensor", name) if t["timestamp"] > restarted_at]) >= 3,
                120,
                f"3 ticks of {name} after the restart",
            )
        schedule_tick = watch.until(
            lambda: next(
                (
                    t
                    for t in dev.ticks("schedule", "enqueue_latest_complete_day")
                    if t["timestamp"] > restarted_at and t["status"] != "STARTED"
                ),
                None,
            ),
            150,
            "a tick of the enqueue schedule after the restart",
        )
        # From here on nothing new starts: both schedules off (the UI's toggles) once their ticks in progress
        # ended; then every enqueue run, finished or not, is waited for.
        for name in (ENQUEUE_SCHEDULE, ACCOUNTS_SCHEDULE):
            dev.stop_schedule(name)
            watch.until(
                lambda name=name: all(t["status"] != "STARTED" for t in dev.ticks("schedule", name, limit=1)),
                120,
                f"the last tick of {name} to end",
            )
        enqueue_runs = [watch.run(range_run), *reversed(schedule_runs(ENQUEUE_SCHEDULE))]
        watch.until(lambda: all(watch.finished(r.run_id) for r in enqueue_runs), 300, "every enqueue run to finish")
        # What was asked for: the range run's rectangle, and each schedule run's day (today's, and the next
        # day's too if midnight passed meanwhile) for the accounts not enqueued yet. No key asked twice.
        asked = Counter(key for r in enqueue_runs for key in run_partitions(r, watch.instance))
        assert max(asked.values()) == 1, asked
        expected = set(asked)
        days = {split_key(key)[0] for key in expected}
        days_before = {
            split_key(key)[0] for r in enqueue_runs if r.run_id in before for key in run_partitions(r, watch.instance)
        }
        assert {day, *DATES} <= days_before <= days, (days, days_before)
        for r in enqueue_runs[1:]:  # a schedule run enqueues its own day
            assert {split_key(key)[0] for key in run_partitions(r, watch.instance)} == {r.tags[ENQUEUE_DAY_TAG]}
        assert expected == {str(partition_key(d, account)) for d in days for account in ACCOUNTS}
        # Each partition enqueued once (one materialization of report_requests, by the run that asked for it) ...
        materializations = watch.instance.fetch_materializations(dg.AssetKey(REQUESTS_ASSET), limit=10_000).records
        assert sorted((r.partition_key, r.run_id) for r in materializations) == sorted(
            (key, r.run_id) for r in enqueue_runs for key in run_partitions(r, watch.instance)
        )
        # ... and on the request topic, every (date, account, report) first page exactly once.
        first_pages = Counter(
            (request.date, request.account, request.report)
            for request in map(ReportRequest.decode, every_value(schedule_env, schedule_env["REPORTING_REQUEST_TOPIC"]))
            if request.start_row == 0
        )
        assert first_pages == Counter((*split_key(key), report) for key in expected for report in DEFAULT_REPORTS), (
            first_pages
        )

        # The sensors finish what was enqueued (a new day's too), and nothing twice: each partition downloaded
        # by one run, each date exported by one; every run of the test succeeded.
        watch.until(
            lambda: (
                watch.materialized(EXPORT) >= days
                and all(r.dagster_run.is_finished for r in watch.instance.get_run_records())
            ),
            300,
            f"{sorted(days)} exported and every run ended",
        )
        records = watch.instance.get_run_records()
        assert [r.dagster_run.run_id for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS] == []
        assert watch.materialized("downloaded_reports") == expected
        assert watch.materialized(EXPORT) == days
        launched = {
            sensor: Counter(
                key
                for r in records
                if r.dagster_run.tags.get(SENSOR_TAG) == sensor
                for key in run_partitions(r.dagster_run, watch.instance)
            )
            for sensor in (DOWNLOAD_SENSOR, EXPORT_SENSOR)
        }
        assert launched == {DOWNLOAD_SENSOR: Counter(expected), EXPORT_SENSOR: Counter(days)}, launched
        # What the restarted daemon launched: the accounts schedule's run of each tick (its run key dedupes
        # within a tick only, and a refresh of the accounts changes nothing), and work on new days only.
        new_days = days - days_before
        for run in (r.dagster_run for r in records if r.dagster_run.run_id not in before):
            kind = run.tags.get("dagster/schedule_name") or run.tags.get(SENSOR_TAG)
            if kind == ACCOUNTS_SCHEDULE:
                continue
            assert new_days, f"the restarted daemon launched a {kind} run with no new day to work on: {run.tags}"
            assert {split_key(key)[0] for key in run_partitions(run, watch.instance)} <= new_days, run.tags
        print("schedule tick after restart:", schedule_tick, "steps:", watch.steps, flush=True)
    finally:
        dev.stop(timeout_s=10)
        watch.instance.dispose()
