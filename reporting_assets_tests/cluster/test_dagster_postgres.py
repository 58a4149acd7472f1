"""The production instance, for real: deploy/dagster.yaml on a PostgreSQL server, `dagster-webserver` and
`dagster-daemon run` as two processes, the session broker and the sandbox.

A backfill of 2 dates x 3 accounts launched through GraphQL ends, with no further action, in every
partition downloaded and both dates exported by the sensors; of the consumer sensor's download_requests
run and one the test submits at the same time, one waits in the QueuedRunCoordinator's queue until the
other has ended (no two download runs are ever in progress at once). Runs, events and ticks are read back
from Postgres (through Dagster and with psycopg2), none from SQLite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus  # no public name

from reporting_assets.core.keys import (
    CONSUMER_SENSOR,
    DOWNLOAD_JOB,
    DOWNLOAD_SENSOR,
    DOWNLOADS_ASSET,
    EXPORT_SENSOR,
    REQUESTS_ASSET,
    SENSOR_TAG,
)
from reporting_assets.defs.downloads.jobs import consumer_run_config
from reporting_assets.defs.partitions import partition_key
from reporting_assets.infra.ports import free_port, free_ports
from reporting_assets.infra.postgres import LocalPostgres, PostgresSettings
from reporting_assets.sandbox import SandboxConfig, SandboxServer
from reporting_assets.settings import Settings
from reporting_assets_tests.ui.helpers import LOCATION, REPO_ROOT, REPOSITORY, DagsterDev, wait_for
from reporting_assets_tests.ui.test_daemon_and_ui import (
    ACCOUNTS,
    DATES,
    EXPORT,
    SITES,
    Watch,
    exported,
    materialized_by,
    run_partitions,
    truth,
)

pytestmark = pytest.mark.timeout(600)

DEPLOY_YAML = REPO_ROOT / "deploy" / "dagster.yaml"
DAEMONS = {"SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    # Not under pytest's tmp dirs: they are root's alone (mode 0700), and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="reporting-pg-"))
    server = LocalPostgres(PostgresSettings(base, free_ports(1)[0]))
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Deployment(DagsterDev):
    """`dagster-webserver` and `dagster-daemon run`, each its own process group, on one DAGSTER_HOME:
    the production shape (`dagster dev` would run both under one parent)."""

    def __init__(self, home: Path, port: int, env: Mapping[str, str], log_dir: Path) -> None:
        super().__init__(home, port, env, log_dir / "webserver.log")
        self.daemon_log = log_dir / "daemon.log"
        self.daemon: subprocess.Popen | None = None

    @staticmethod
    def prepare_home(home: Path, overrides: str = "") -> None:
        (home / ".nux").mkdir(parents=True, exist_ok=True)
        (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        shutil.copy(DEPLOY_YAML, home / "dagster.yaml")

    def _spawn(self, command: list[str], log_path: Path) -> subprocess.Popen:
        with log_path.open("wb") as log:
            return subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self, timeout_s: float = 120) -> None:
        bin_dir = REPO_ROOT / ".venv" / "bin"
        self.daemon = self._spawn([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], self.daemon_log)
        self.process = self._spawn(
            [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            self.log_path,
        )
        wait_for(self._answers, timeout_s, f"dagster-webserver on {self.url} (log {self.log_path})")
        wait_for(self._location_loaded, timeout_s, f"code location {LOCATION} to load (log {self.log_path})")
        wait_for(self._daemons_healthy, timeout_s, f"the daemons {sorted(DAEMONS)} healthy (log {self.daemon_log})")

    def _daemons_healthy(self) -> bool:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise AssertionError(f"dagster-daemon exited with {self.daemon.returncode}:\n{self.daemon_log_tail()}")
        statuses = self.graphql("{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }")[
            "instance"
        ]["daemonHealth"]["allDaemonStatuses"]
        return DAEMONS <= {status["daemonType"] for status in statuses if status["healthy"]}

    def stop(self, timeout_s: float = 30) -> None:
        try:
            _stop_group(self.daemon, timeout_s)  # first: the runs are its code server's children
        finally:
            super().stop(timeout_s)

    def daemon_log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.daemon_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return f"{super().log_tail(lines // 2)}\n--- dagster-daemon ---\n{self.daemon_log_tail(lines)}"

    def launch_download(self, run_config: Mapping[str, Any]) -> str:
        """The launchpad's "Launch run" of download_requests with the sensor's run config; returns the run id."""
        result = self.graphql(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                 __typename ... on LaunchRunSuccess { run { runId status } }
                 ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }""",
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPOSITORY,
                        "jobName": DOWNLOAD_JOB,
                    },
                    "runConfigData": dict(run_config),
                    "mode": "default",
                }
            },
        )["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        assert result["run"]["status"] == "QUEUED", result  # the coordinator queues every submitted run
        return result["run"]["runId"]


def _stop_group(process: subprocess.Popen | None, timeout_s: float) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(seed=11, sites=SITES, per_site_qps=None, global_qps=None, faults=[])


@pytest.fixture
def env(
    kafka_broker: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    postgres: LocalPostgres,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    topic = unique_name("pg-requests")
    with SandboxServer(sandbox_config) as sandbox:
        values = {
            **postgres.settings.dagster_env(),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
            "REPORTING_REQUEST_TOPIC": topic,
            "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
            "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
            "REPORTING_CONSUMER_GROUP": unique_name("pg-group"),
            "PARTNER_API_ENDPOINT": sandbox.url,
            "PARTNER_NUM_RETRIES": "2",
            "REPORTING_DATA_DIR": str(tmp_path / "data"),
            "REPORTING_SENSOR_INTERVAL_S": "2",
            "REPORTING_SCHEDULES_RUNNING": "0",  # no cron tick may interfere
            "REPORTING_CONSUMERS": "2",
            "REPORTING_CONSUMER_QPS_PER_ACCOUNT": "2",
            "REPORTING_CONSUMER_IDLE_TIMEOUT_S": "3",
        }
        for name, value in postgres.settings.dagster_env().items():
            monkeypatch.setenv(name, value)  # this process reads the instance too (deploy/dagster.yaml)
        yield values


@pytest.fixture
def deployment(env: dict[str, str], tmp_path: Path) -> Iterator[Deployment]:
    home = tmp_path / "dagster_home"
    Deployment.prepare_home(home)
    deployment = Deployment(home, free_port(), env, tmp_path)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop(timeout_s=10)


def test_sensors_and_a_backfill_on_the_postgres_instance_with_the_real_daemon(
    deployment: Deployment, env: dict[str, str], sandbox_config: SandboxConfig, postgres: LocalPostgres
):
    dev = deployment
    watch = Watch(dev)  # DagsterInstance.from_config(DAGSTER_HOME): deploy/dagster.yaml, so Postgres
    try:
        storages = {
            type(s).__name__
            for s in (watch.instance.run_storage, watch.instance.event_log_storage, watch.instance.schedule_storage)
        }
        assert storages == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
        data_dir = Path(env["REPORTING_DATA_DIR"])

        # Accounts, then the enqueue backfill of 2 dates x 3 accounts; the sensors do the rest.
        accounts_run = dev.launch_assets(["accounts"])
        run = watch.until(lambda: watch.finished(accounts_run), 120, "the accounts run")
        assert run.status == dg.DagsterRunStatus.SUCCESS, dev.log_tail()
        assert sorted(watch.instance.get_dynamic_partitions("account")) == ACCOUNTS
        keys = [str(partition_key(date, account)) for date in DATES for account in ACCOUNTS]
        backfill = dev.launch_backfill(REQUESTS_ASSET, keys)

        # The consumer sensor's first download run, and a second one submitted before it ended: one of
        # them must wait in the queue (tag reporting_assets/role=download, limit 1) until the other ended.
        first = watch.until(
            lambda: next((r for r in watch.download_runs() if r.tags.get(SENSOR_TAG) == CONSUMER_SENSOR), None),
            240,
            "the consumer sensor's download run",
        )
        second = dev.launch_download(consumer_run_config(Settings.from_env(env).consumer))
        assert not watch.run(first.run_id).is_finished, (
            "the sensor's download run ended before the second was submitted"
        )

        watch.until(lambda: watch.materialized(EXPORT) == set(DATES), 300, "both dates exported by the sensors")
        watch.until(
            lambda: all(r.dagster_run.is_finished for r in watch.instance.get_run_records()), 180, "every run to end"
        )
        watch.until(lambda: dev.backfill_status(backfill) != "REQUESTED", 90, "the backfill to complete")
        assert dev.backfill_status(backfill) == "COMPLETED_SUCCESS"
        assert watch.instance.get_backfill(backfill).status == BulkActionStatus.COMPLETED_SUCCESS

        # Exactly the partner's rows, and every run succeeded.
        for date in DATES:
            assert exported(data_dir / "exports" / "search_analytics" / f"{date}.csv") == truth(sandbox_config, date)
        records = watch.instance.get_run_records()
        assert [r.dagster_run.run_id for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS] == []

        # The runs expected, and no other: the backfill's enqueued each key once ...
        backfill_runs = [
            r.dagster_run.run_id for r in records if r.dagster_run.tags.get("dagster/backfill") == backfill
        ]
        assert sorted(
            k for run_id in backfill_runs for k in materialized_by(watch.instance, REQUESTS_ASSET, run_id)
        ) == sorted(keys)
        # ... the download sensor downloaded each once, the export sensor exported each date once ...
        launched = {
            sensor: Counter(
                key
                for r in records
                if r.dagster_run.tags.get(SENSOR_TAG) == sensor
                for key in run_partitions(r.dagster_run, watch.instance)
            )
            for sensor in (DOWNLOAD_SENSOR, EXPORT_SENSOR)
        }
        assert launched == {DOWNLOAD_SENSOR: Counter(keys), EXPORT_SENSOR: Counter(DATES)}, launched
        for r in records:
            if r.dagster_run.tags.get(SENSOR_TAG) == DOWNLOAD_SENSOR:
                assert materialized_by(watch.instance, DOWNLOADS_ASSET, r.dagster_run.run_id) == sorted(
                    run_partitions(r.dagster_run, watch.instance)
                )
        # ... and besides the consumer sensor's download runs, only the test's own launches.
        consumer_runs = [r for r in records if r.dagster_run.tags.get(SENSOR_TAG) == CONSUMER_SENSOR]
        others = [r.dagster_run.run_id for r in records if SENSOR_TAG not in r.dagster_run.tags]
        assert sorted(others) == sorted([accounts_run, second, *backfill_runs])
        assert len(records) == len(others) + len(consumer_runs) + sum(
            1 for r in records if r.dagster_run.tags.get(SENSOR_TAG) in (DOWNLOAD_SENSOR, EXPORT_SENSOR)
        )

        # Every run went through the queue, and no two download runs were ever in progress at once.
        for r in records:
            enqueued = watch.instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
            assert len(enqueued) == 1, f"run {r.dagster_run.run_id} was not queued"
        downloads = sorted(
            (watch.instance.get_run_record_by_id(run.run_id) for run in watch.download_runs()),
            key=lambda r: r.start_time,
        )
        assert {first.run_id, second} <= {r.dagster_run.run_id for r in downloads}
        for earlier, later in zip(downloads, downloads[1:], strict=False):
            assert later.start_time >= earlier.end_time, (
                f"download runs {earlier.dagster_run.run_id} and {later.dagster_run.run_id} overlapped"
            )
        # Of the sensor's run and the test's (whichever the queue took first: the sensor creates its run
        # before it submits it), the other was in the queue while that one was in progress, and started
        # only after it had ended.
        ran, held = sorted(
            (watch.instance.get_run_record_by_id(i) for i in (first.run_id, second)), key=lambda r: r.start_time
        )
        assert held.create_timestamp.timestamp() < ran.end_time <= held.start_time, (ran, held)
        (enqueued,) = watch.instance.all_logs(held.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
        assert enqueued.timestamp < ran.end_time  # in the queue, not still being created by its sensor

        # Where it all lives: Postgres's tables, read without Dagster; no SQLite file in DAGSTER_HOME.
        connection = postgres.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT run_id, status FROM runs")
                assert dict(cursor.fetchall()) == {r.dagster_run.run_id: "SUCCESS" for r in records}
                cursor.execute(
                    "SELECT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
                    " AND asset_key = %s",
                    [dg.AssetKey(DOWNLOADS_ASSET).to_string()],
                )
                assert sorted(row[0] for row in cursor.fetchall()) == sorted(keys)
                # The daemon's ticks: the consumer, download and export sensors each had a tick that launched runs.
                cursor.execute(
                    "SELECT count(DISTINCT selector_id) FROM job_ticks WHERE type = 'SENSOR' AND status = 'SUCCESS'"
                )
                assert cursor.fetchone()[0] >= 3
        finally:
            connection.close()
        assert sorted(p.name for p in dev.home.rglob("*.db")) == []
        print("steps (s since start):", watch.steps, flush=True)
    finally:
        watch.instance.dispose()
