"""`python -m reporting_assets run`: bad settings give one clear line and exit 2 before anything is written."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import dagster as dg
import pytest
from kafka import KafkaProducer

from reporting_assets import cli
from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.reports import get_report
from reporting_assets.infra.ports import free_port
from reporting_assets.sandbox import FaultSpec, SandboxConfig, SandboxServer, SiteSpec, expected_rows
from reporting_assets.settings import build_resources
from reporting_assets_tests.helpers import KEY_ID, service_account_file, wait_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SITES = [SiteSpec("https://www.example.com/", 40), SiteSpec("https://shop.example.com/", 30)]


@pytest.fixture
def sandbox():
    with SandboxServer(SandboxConfig(seed=5, sites=SITES, per_site_qps=None, global_qps=None, faults=[])) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, kafka_broker: str, sandbox: SandboxServer, unique_name) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    topic = unique_name("requests")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "PARTNER_API_ENDPOINT": sandbox.url,
        "REPORTING_DATA_DIR": str(tmp_path / "data"),
        "REPORTING_REQUEST_TOPIC": topic,
        "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
        "REPORTING_CONSUMER_GROUP": unique_name("group"),
        "REPORTING_CONSUMER_IDLE_TIMEOUT_S": "2",  # each run ends 2 s after its topics drained, not 10
    }


def run_command() -> list[str]:
    """`run` for 2026-11-01 (a later --end-date given after it wins)."""
    return [sys.executable, "-m", "reporting_assets", "run", "--start-date", "2026-11-01", "--end-date", "2026-11-01"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*run_command(), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("env_changes", "args", "message"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:{closed}"}, [], "KAFKA_BOOTSTRAP_SERVERS"),
        (  # (no retries of sites.list: the client's backoff would make this case wait some 20 s)
            {"PARTNER_API_ENDPOINT": "http://127.0.0.1:{closed}/", "PARTNER_NUM_RETRIES": "0"},
            [],
            "PARTNER_API_ENDPOINT",
        ),
        (
            {"PARTNER_CREDENTIALS_FILE": "/nonexistent/key.json"},
            [],
            "credentials_file: cannot read /nonexistent/key.json",
        ),
        ({"PARTNER_CREDENTIALS_FILE": "{tmp}"}, [], "credentials_file: cannot read"),
        ({"REPORTING_TOPIC_PARTITIONS": "many"}, [], "REPORTING_TOPIC_PARTITIONS='many' is not an integer"),
        (
            {},
            ["--start-date", "2026-11-03", "--end-date", "2026-11-01"],
            "--start-date 2026-11-03 is after --end-date 2026-11-01",
        ),
        ({}, ["--start-date", "2026-13-01"], "--start-date '2026-13-01' is not a YYYY-MM-DD date"),
        ({}, ["--start-date", "2020-01-01"], "before the first daily partition"),
        ({}, ["--reports", "search_analytics,nope"], "--reports: unknown report 'nope'"),
        ({}, ["--qps", "-1"], "--qps must be > 0"),
        ({}, ["--quota-wait-s", "-5"], "--quota-wait-s must be >= 0"),
        ({}, ["--concurrency", "many"], "--concurrency: Input should be a valid integer"),
        ({}, ["--transient-waits-s", "30,-1"], "--transient-waits-s must be >= 0"),
        ({}, ["--row-limit", "0"], "--row-limit must be within 1..25000"),
        ({"REPORTING_ROW_LIMIT": "30000"}, [], "REPORTING_ROW_LIMIT=30000 must be <= 25000"),
        ({}, ["--accounts", "https://unknown.example.com/"], "--accounts: unknown or unreadable"),
    ],
)
def test_bad_settings_fail_with_one_line_and_write_nothing(
    env, tmp_path, env_changes, args, message, monkeypatch, capsys
):
    closed = str(free_port())
    changed = {k: v.format(closed=closed, tmp=tmp_path) for k, v in env_changes.items()}
    for name, value in {**env, **changed}.items():
        monkeypatch.setenv(name, value)
    argv = ["run", "--start-date", "2026-11-01", "--end-date", "2026-11-01", *args]
    assert cli.main(argv) == cli.EXIT_BAD_SETTING
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reporting_assets: error: "), lines
    assert message in lines[0]
    assert not (tmp_path / "data").exists()


def test_credentials_the_partner_refuses_are_one_line_naming_the_setting(env, sandbox, tmp_path, monkeypatch, capsys):
    # Before: the token refresh's RefreshError ended the command with a traceback.
    sandbox.update_config(refuse_tokens=True)
    key, fragment = service_account_file(tmp_path, f"{sandbox.url}token")
    for name, value in {**env, "PARTNER_CREDENTIALS_FILE": str(key)}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run", "--start-date", "2026-11-01", "--end-date", "2026-11-01"]) == cli.EXIT_BAD_SETTING
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "refused the credentials" in lines[0] and "PARTNER_CREDENTIALS_FILE" in lines[0], lines
    assert fragment not in lines[0] and KEY_ID not in lines[0]


def run_in_terminal(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`run` with its stdout a terminal (a pty, 120 columns): (exit code, what the terminal showed, stderr)."""
    master, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with subprocess.Popen([*run_command(), *args], env=env, stdout=replica, stderr=subprocess.PIPE) as process:
        os.close(replica)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        os.close(master)
        stderr = process.stderr.read().decode()
    return process.returncode, shown.decode(), stderr


def last_progress(stdout: str) -> str:
    """The last progress line printed off a terminal."""
    lines = [line for line in stdout.splitlines() if line.startswith("download: ")]
    assert lines, stdout
    return lines[-1]


def test_a_run_for_one_account_and_day_exports_it_with_its_progress_in_a_terminal(env, tmp_path):
    code, shown, stderr = run_in_terminal(env, "--accounts", "https://shop.example.com/", "--consumers", "1")
    assert code == 0, stderr[-3000:]
    frames = [f.strip() for f in re.split(r"[\r\n]", ANSI.sub("", shown)) if f.strip()]
    bars = [frame for frame in frames if frame.startswith("download ━")]
    assert bars and "1/1 requests" in bars[-1], frames  # the bar ends complete
    assert "0 x 429" in bars[-1] and "0 dead letters" in bars[-1], bars[-1]
    summary = next(frame for frame in frames if frame.startswith("enqueued "))
    assert summary.startswith("enqueued 1 requests, 1 API calls, 30 rows, 0 dead letters"), summary
    csv = tmp_path / "data" / "exports" / "search_analytics" / "2026-11-01.csv"
    lines = csv.read_text().splitlines()
    assert len(lines) == 1 + 30 and all("shop.example.com" in line for line in lines[1:])
    # Quiet: nothing of Dagster, Spark or Kafka on the console; it is in the log the summary names.
    assert stderr == "", stderr[-3000:]
    log = Path(shown.rsplit("log (Dagster, Spark, Kafka): ", 1)[1].split()[0])
    noise = log.read_text()
    assert "STEP_WORKER_STARTED" in noise and "BetaWarning" in noise and " WARN " in noise, noise[-3000:]


def status_lines_now(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 0
    return capsys.readouterr().out


def files(root: Path) -> dict[str, float]:
    return {str(path): path.stat().st_mtime for path in root.rglob("*")}


def test_status_names_a_dead_letter_and_plan_says_what_a_run_would_call_and_both_write_nothing(
    env, sandbox, tmp_path, monkeypatch, capsys
):
    # www's calls fail (503, no waits on the delay topic): its request is dead-lettered and the date held;
    # shop's 2026-11-01 (30 rows) is downloaded, its one call held 6 s by the partner.
    shop, www = "https://shop.example.com/", "https://www.example.com/"
    held = FaultSpec("slow", site_url=shop, slow_s=6, times=1)
    sandbox.update_config(faults=[FaultSpec("http_503", site_url=www), held])
    failing = {**env, "REPORTING_CONSUMER_TRANSIENT_WAITS_S": "none", "REPORTING_CONSUMER_RETRY_BACKOFF_S": "0.05"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status_argv = ["status", "--start-date", "2026-11-01", "--end-date", "2026-11-01", "--accounts", shop]
    with subprocess.Popen(
        [*run_command(), "--consumers", "1"], env=failing, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:

        def shop_downloading() -> bool:  # while the partner holds shop's call, its consumer reports
            assert process.poll() is None, "the run ended before status saw it downloading"
            assert cli.main(status_argv) == 0
            return "downloading: 1 requests left" in capsys.readouterr().out

        wait_for(shop_downloading, 60, "status saying shop is downloading", every_s=0.5)
        stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    # The progress ends at the partner's count: www's call and its retries, shop's one call.
    calls = query_calls(sandbox)
    assert calls > 2 and f"{calls} API calls" in stdout, (calls, stdout)
    assert last_progress(stdout).startswith(f"download: 2/2 requests, {calls} calls"), stdout
    assert last_progress(stdout).endswith("0 throttled (429), 0 delayed, 1 dead letters"), stdout
    # The same figures in the Dagster UI: observations of report_requests by the download run, plotted.
    with dg.DagsterInstance.get() as instance:
        (download_run,) = instance.get_run_records(dg.RunsFilter(job_name="download_requests"))
        observations = instance.get_records_for_run(
            download_run.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION
        ).records
    assert len(observations) >= 2, observations  # during the run (shop's held call) and at its end
    last = observations[-1].event_log_entry.asset_observation
    assert last.asset_key == dg.AssetKey("report_requests")
    figures = {key: value.value for key, value in last.metadata.items()}
    assert figures["consumer_0_api_calls"] == calls and figures["consumer_0_dead_lettered"] == 1, figures
    assert figures["consumer_0_landed"] == 1 and figures["consumer_0_rows"] == 30, figures
    assert figures["lag_total"] == 0, figures
    assert "downloading" not in status_lines_now(status_argv, capsys)  # the run is over: nothing under way
    written = files(tmp_path)

    assert cli.main(["status", "--start-date", "2026-11-01", "--end-date", "2026-11-02"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    by_partition = {tuple(line.split()[:3]): line for line in lines[:-1]}
    assert len(by_partition) == 4, lines
    www = by_partition[("search_analytics", "2026-11-01", "https://www.example.com/")]
    assert "dead-lettered: 1 server_error (HTTP 503)" in www and "not exported" in www, www
    shop = by_partition[("search_analytics", "2026-11-01", "https://shop.example.com/")]
    assert "downloaded: final, 1 pages, 30 rows landed" in shop and "not exported" in shop, shop
    for account in ("https://www.example.com/", "https://shop.example.com/"):
        assert "not enqueued" in by_partition[("search_analytics", "2026-11-02", account)]
    assert lines[-1] == "4 partitions: 2 not enqueued, 1 dead-lettered, 1 downloaded; 0 exported", lines[-1]
    assert files(tmp_path) == written

    # plan: one partition still on the request topic (www, 2026-11-02), shop's 11-01 downloaded.
    on_the_topic = ReportRequest("search_analytics", "https://www.example.com/", "2026-11-02", ("date", "query"))
    producer = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    producer.send(env["REPORTING_REQUEST_TOPIC"], on_the_topic.encode()).get(timeout=30)
    producer.close()
    kafka = build_resources()["kafka"]
    offsets, written = kafka.end_offsets(kafka.request_topic), files(tmp_path)
    argv = ["plan", "--start-date", "2026-11-01", "--end-date", "2026-11-02", "--row-limit", "10", "--qps", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 accounts x 1 reports (search_analytics): 4 partitions" in out, out
    assert "to enqueue          : 2 requests" in out  # www 11-01 (its download ended dead-lettered), shop 11-02
    # shop's 30 rows a day at 10 a page: 4 calls (the last one empty); www has no complete history: 1 at least
    assert "calls               : 2 at least (one page each), about 5 as earlier downloads went" in out, out
    assert "about 2 s (2 calls/s per account;" in out, out  # shop's 4 calls at 2 calls/s
    assert "continued           : 1 partitions" in out and "already downloaded  : 1 partitions" in out, out
    # Every consumer knob is a flag: a project-wide budget of 1 call/s makes the 5 calls take 5 s.
    assert cli.main([*argv, "--global-qps", "1"]) == 0
    assert "about 5 s (2 calls/s per account, 1 calls/s in all;" in capsys.readouterr().out
    assert cli.main([*argv, "--refresh"]) == 0
    assert "to enqueue          : 4 requests" in capsys.readouterr().out
    # Hours older than Google's last 10 days (these dates, a month back and more): never asked for.
    assert cli.main([*argv, "--reports", "hourly,search_analytics"]) == 0
    out = capsys.readouterr().out
    assert "to enqueue          : 2 requests" in out, out  # search_analytics' as before, no hourly one
    assert (
        "not available from Google: hourly on 2026-11-01..2026-11-02: Google keeps hourly data for the last 10 days"
        in out
    ), out
    # Nothing written: the topic, the data folder and the instance are as they were.
    assert kafka.end_offsets(kafka.request_topic) == offsets
    assert files(tmp_path) == written


PAGED_SITES = [
    SiteSpec("https://paging.example.com/", 1_500),  # 16 pages a day at --row-limit 100
    SiteSpec("https://www.example.com/", 800),
    SiteSpec("https://tiny.example.com/", 50),
]
IN_FLIGHT_BOUND = 2 * 4  # calls a killed run may have started and not committed: consumers × concurrency


def query_calls(sandbox: SandboxServer) -> int:
    return sandbox.stats()["calls_by_method"].get("searchanalytics.query", 0)


def exported_rows(data_dir: Path, day: str) -> list[tuple]:
    with (data_dir / "exports" / "search_analytics" / f"{day}.csv").open(newline="") as export:
        return sorted(
            (r["account"], r["date"], r["query"], r["page"], r["country"], r["device"], int(r["clicks"]))
            for r in csv.DictReader(export)
        )


def partner_rows(config: SandboxConfig, day: str) -> list[tuple]:
    spec = get_report("search_analytics")
    return sorted(
        (site.url, *row["keys"], int(row["clicks"]))
        for site in PAGED_SITES
        for row in expected_rows(config, site.url, day, day, list(spec.dimensions), data_state=spec.data_state)
    )


def test_the_command_rerun_after_a_kill_continues_and_makes_no_call_twice_but_those_in_flight(
    kafka_broker, unique_name, tmp_path
):
    # Before: the rerun enqueued every first page again under a new chain, so what the first run had
    # downloaded was downloaded again (the issue measured 2.0x the calls of one clean run).
    config = SandboxConfig(
        seed=8, sites=PAGED_SITES, per_site_qps=None, global_qps=None, faults=[], latency_s=0.05, rows_jitter=0.0
    )
    args = ["--end-date", "2026-11-02", "--row-limit", "100"]
    clean_calls = 2 * (16 + 9 + 1)  # what one uninterrupted run of the 2 days makes: every page once
    topic = unique_name("requests")
    data_dir = tmp_path / "data"
    (tmp_path / "home").mkdir()
    with SandboxServer(config) as sandbox:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(tmp_path / "home"),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
            "PARTNER_API_ENDPOINT": sandbox.url,
            "REPORTING_DATA_DIR": str(data_dir),
            "REPORTING_REQUEST_TOPIC": topic,
            "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
            "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
            "REPORTING_CONSUMER_GROUP": unique_name("group"),
            "REPORTING_CONSUMER_IDLE_TIMEOUT_S": "2",
        }
        command = [sys.executable, "-m", "reporting_assets", "run", "--start-date", "2026-11-01", *args]
        process = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for(lambda: query_calls(sandbox) >= clean_calls // 2, 240, "half of the calls")
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the command's whole process group: every consumer too
            process.wait()
        at_kill = query_calls(sandbox)
        assert at_kill < clean_calls, "the kill came too late to test a rerun"

        rerun = run(env, *args)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "enqueued 0 requests" in rerun.stdout  # every partition was on its way: continued
        assert query_calls(sandbox) <= clean_calls + IN_FLIGHT_BOUND, (at_kill, query_calls(sandbox))
        for day in ("2026-11-01", "2026-11-02"):  # the partner's rows, none lost, none twice
            assert exported_rows(data_dir, day) == partner_rows(config, day), day

        # Run once more, widened by a day: the downloaded days are neither enqueued nor called again,
        # the new day is (Spark leaves the downloaded partitions out).
        sandbox.reset_stats()
        wider = run(env, "--end-date", "2026-11-03", "--row-limit", "100")
        assert wider.returncode == 0 and "enqueued 3 requests, 26 API calls" in wider.stdout, wider.stdout
        # Off a terminal, progress lines; the last has the partner's count: each page called once.
        assert last_progress(wider.stdout).startswith("download: 26/26 requests, 26 calls"), wider.stdout
        assert query_calls(sandbox) == clean_calls // 2
        assert exported_rows(data_dir, "2026-11-03") == partner_rows(config, "2026-11-03")

        # The partner revised its data: --refresh downloads it all anew, and the exports say the new numbers.
        sandbox.reset_stats()
        sandbox.update_config(revision=1)
        refreshed = run(env, *args, "--refresh")
        assert refreshed.returncode == 0 and f"enqueued {2 * 3} requests" in refreshed.stdout, refreshed.stdout
        assert query_calls(sandbox) == clean_calls
        for day in ("2026-11-01", "2026-11-02"):
            revised = partner_rows(sandbox.config, day)
            assert exported_rows(data_dir, day) == revised != partner_rows(config, day), day
