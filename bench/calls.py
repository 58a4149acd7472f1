"""7. Calls against Google's recipe: a clean `python -m reporting_assets run` ÷ the fewest calls it needs.

Google's recipe for Search Console: one query per (day, search type), `startRow` stepped by the row
limit (25 000 at most) until a page comes back short. A (site, day) of r rows then needs
r // row_limit + 1 calls (a full page needs one more call to see the end; a short page ends it).
The run is the one a new user makes: the CLI as a subprocess, pointed at the bench's broker and a
sandbox, every setting but the endpoints, topics, group and folders at its default. A call beyond
the recipe's minimum is a repeat: the bench notes which consumer made each call and what the
group did meanwhile, so that a repeat can be explained from the logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.common import REPORT, Bench, site_urls, unique
from bench.split import minimum_calls
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.landing import DOWNLOAD_PREFIX, LandingZone, download_ids, page_chain, read_page
from reporting_assets.core.split import ROW_CAP, Split
from reporting_assets.demo import default_dates
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec, expected_row_count
from reporting_assets.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
QUERY_METHOD = "searchanalytics.query"  # the sandbox's name for searchAnalytics.query in calls_by_method
ROWS_PER_DAY = (50_000, 25_000, 1_234, 0, 7)  # the five sites: two, one and no full pages
COMPARISON_ROW_LIMIT = 1_000  # the old default
# Group coordination and the loop's own notes, into the event log of the consumers' steps.
PYTHON_LOGS = {"python_log_level": "INFO", "managed_python_loggers": ["kafka.coordinator", "reporting_assets"]}
CLI_TIMEOUT_S = 900
COORDINATION = re.compile(
    r"Successfully joined group .*<Generation (?P<generation>\d+)"
    r"|(?P<joining>\(Re-\)joining group)"
    r"|(?P<rebalancing>is rebalancing; rejoining)"
    r"|Revoking previously assigned partitions (?P<revoked>\{.*\})"
    r"|Setting newly assigned partitions (?P<assigned>\{.*\})"
)


def settings(bench: Bench) -> dict[str, Any]:
    defaults = Settings()
    return {
        "rows_per_day": dict(zip(site_urls(len(ROWS_PER_DAY)), ROWS_PER_DAY, strict=True)),
        "days": 3,
        "report": REPORT.name,
        "search_type": REPORT.search_type,
        "row_limit": defaults.row_limit,  # REPORTING_ROW_LIMIT's default
        "comparison_row_limit": COMPARISON_ROW_LIMIT,
        "runs_at_default": 1 if bench.quick else 3,
        "consumers": ConsumerTuning().consumers,
        "session_timeout_s": ConsumerTuning().session_timeout_s,  # heartbeats every quarter of it
        "topic_partitions": defaults.topic_partitions,
        "sandbox": {"per_site_qps": None, "global_qps": None, "latency_s": 0.0, "rows_jitter": 0.0, "faults": []},
        "command": "python -m reporting_assets run --start-date D1 --end-date D3 [--row-limit 1000]",
        "environment": "KAFKA_BOOTSTRAP_SERVERS, PARTNER_API_ENDPOINT, REPORTING_DATA_DIR, DAGSTER_HOME, "
        "topics and group of its own; nothing else set",
        "dagster_yaml": {"the repository's dagster.yaml plus": {"python_logs": PYTHON_LOGS}},
    }


def sandbox_config(config: dict[str, Any]) -> SandboxConfig:
    return SandboxConfig(
        seed=7, sites=[SiteSpec(url, rows) for url, rows in config["rows_per_day"].items()], **config["sandbox"]
    )


def day_rows(sandbox: SandboxConfig, dates: list[str]) -> list[int]:
    """The rows of each (site, day), from the sandbox's own truth, in the data state the report asks for
    (fresh data included: the days Google has not finished are part of what a run lands and exports)."""
    return [
        expected_row_count(
            sandbox, site.url, date, date, REPORT.dimensions, REPORT.search_type, data_state=REPORT.data_state
        )
        for site in sandbox.sites
        for date in dates
    ]


def recipe_minimum(sandbox: SandboxConfig, dates: list[str], row_limit: int, zone: LandingZone) -> int:
    """The recipe's calls: per (site, day), one per full page and one for the short (or empty) last page.

    A (site, day) at Google's row cap cannot be had by paging (the page past the cap is empty): there
    the minimum is its split's (`bench.split.minimum_calls`: the pages that showed the cap, then each
    slice's pages by the recipe), read from what the run landed.
    """
    total = 0
    for site in sandbox.sites:
        for date in dates:
            rows = expected_row_count(
                sandbox, site.url, date, date, REPORT.dimensions, REPORT.search_type, data_state=REPORT.data_state
            )
            if rows >= ROW_CAP and zone.latest_download(REPORT.name, date, site.url) is not None:
                total += minimum_calls(zone, site.url, row_limit, REPORT.name, date)[0]
            else:
                total += rows // row_limit + 1
    return total


# -- what the sandbox was asked, and by which process ---------------------------------------------------


def socket_owner(local_port: int, remote_port: int) -> int | None:
    """The pid holding the client end (local_port -> remote_port) of a loopback TCP connection, from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                ports = (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16))
                if ports == (local_port, remote_port):
                    inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not inodes:
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


class CallLog:
    """Every searchAnalytics.query the sandbox answered: when, from which process, which page, what status.

    The sandbox counts repeats but does not say which calls they were. Each keep-alive connection is
    one worker thread's client; its owner is looked up in /proc once, on a thread of its own (the
    connection stays open, and the answer is not held up).
    """

    def __init__(self, sandbox_port: int) -> None:
        self.calls: list[dict[str, Any]] = []
        self.owners: dict[int, int | None] = {}  # client port -> pid
        self._sandbox_port = sandbox_port
        self._lock = threading.Lock()

    def wrap(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(method: str, raw_path: str, body: bytes, headers: Any = None) -> Any:
            started = time.time()
            response = handle(method, raw_path, body, headers)
            if raw_path.split("?", 1)[0].endswith("/searchAnalytics/query"):
                handler = sys._getframe(1).f_locals.get("self")  # the sandbox's request handler
                port = int(handler.client_address[1]) if hasattr(handler, "client_address") else 0
                self._note(raw_path, body, response.status, started, port)
            return response

        return recorded

    def _note(self, raw_path: str, body: bytes, status: int, started: float, port: int) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        site = raw_path.split("/sites/", 1)[-1].split("/searchAnalytics", 1)[0]
        call = {
            "at": started,
            "took_s": time.time() - started,
            "port": port,
            "site": urllib.parse.unquote(site),
            "date": payload.get("startDate"),
            "start_row": payload.get("startRow", 0),
            "row_limit": payload.get("rowLimit"),
            "status": status,
        }
        with self._lock:
            self.calls.append(call)
            new = port not in self.owners
            if new:
                self.owners[port] = None
        if new:
            threading.Thread(target=self._resolve, args=(port,), daemon=True).start()

    def _resolve(self, port: int) -> None:
        owner = socket_owner(port, self._sandbox_port)
        with self._lock:
            self.owners[port] = owner

    def repeats(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(first call, repeat) for every call whose page (site, date, startRow, rowLimit) was asked before."""
        first: dict[tuple[Any, ...], dict[str, Any]] = {}
        repeated = []
        for call in sorted(self.calls, key=lambda c: c["at"]):
            key = (call["site"], call["date"], call["start_row"], call["row_limit"])
            if key in first:
                repeated.append((first[key], call))
            else:
                first[key] = call
        return repeated


@contextlib.contextmanager
def recorded_sandbox(config: SandboxConfig) -> Iterator[tuple[SandboxServer, CallLog]]:
    with SandboxServer(config) as sandbox:
        calls = CallLog(sandbox.port)
        app = sandbox._app  # the bench's own sandbox: its HTTP handler looks `handle` up on every request
        app.handle = calls.wrap(app.handle)  # type: ignore[method-assign]
        yield sandbox, calls


# -- the run, as a new user makes it --------------------------------------------------------------------


def variable(field: str) -> str:
    """The environment variable of a Settings field (declared there once, listed in .env.example)."""
    alias = Settings.model_fields[field].validation_alias
    assert alias is not None
    return str(alias.choices[0])


def dagster_home(path: Path) -> Path:
    """What `make setup` makes ($DAGSTER_HOME with the repository's dagster.yaml), plus python_logs."""
    path.mkdir(parents=True)
    lines = ["", "python_logs:", f"  python_log_level: {PYTHON_LOGS['python_log_level']}", "  managed_python_loggers:"]
    lines += [f"    - {name}" for name in PYTHON_LOGS["managed_python_loggers"]]
    (path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text() + "\n".join(lines) + "\n")
    return path


def cli_kafka(bench: Bench, label: str) -> KafkaResource:
    """Topics and a group of the run's own (the CLI makes the topics)."""
    topic = unique(label)
    return KafkaResource(
        bootstrap_servers=bench.bootstrap,
        request_topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        delay_topic=f"{topic}.delayed",
        consumer_group=f"{topic}-group",
    )


def cli_env(bench: Bench, home: Path, data_dir: Path, kafka: KafkaResource, sandbox_url: str) -> dict[str, str]:
    """A new user's environment: the bench's broker, the sandbox, folders, topics and group; nothing else set."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        variable("kafka_bootstrap_servers"): bench.bootstrap,
        variable("partner_api_endpoint"): sandbox_url,
        variable("data_dir"): str(data_dir),
        variable("request_topic"): kafka.request_topic,
        variable("dead_letter_topic"): kafka.dead_letter_topic,
        variable("delay_topic"): kafka.delay_topic,
        variable("consumer_group"): kafka.consumer_group,
    }


def cli_summary(stdout: str) -> str:
    """The command's summary line (`enqueued N requests, ...`), after its progress lines."""
    return next((line for line in stdout.splitlines() if line.startswith("enqueued ")), "")


def start_cli(env: dict[str, str], args: list[str], log: TextIO, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    """`python -m reporting_assets run` in a process group of its own (its Dagster step processes with it)."""
    command = [sys.executable, "-m", "reporting_assets", "run", *args]
    log.write(" ".join(command) + "\n")
    log.flush()
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=log, text=True, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the command's whole process group: the CLI and every step process (consumer) it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_cli(env: dict[str, str], args: list[str], log_path: Path) -> tuple[int, float, str]:
    """The CLI to its end (see start_cli); rc, wall s, stdout."""
    started = time.monotonic()
    with log_path.open("w") as log:
        process = start_cli(env, args, log)
        try:
            stdout, _ = process.communicate(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_group(process)
            process.communicate()
            raise TimeoutError(
                f"the CLI run took more than {CLI_TIMEOUT_S} s and was killed (log: {log_path})"
            ) from None
        finally:
            kill_group(process)  # a step process left behind
        log.write(stdout)
    return process.returncode, time.monotonic() - started, stdout


@dataclass(frozen=True)
class Entry:
    at: float  # epoch seconds
    step: str  # e.g. consume_requests[consumer_0]
    text: str


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def download_run(home: Path) -> tuple[list[Entry], dict[int, str], float | None]:
    """The download_requests run's log entries, its steps' pids, and its duration."""
    import dagster as dg

    entries, pids, seconds = [], {}, None
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = [run for run in instance.get_runs() if run.job_name == "download_requests"]
        if not runs:
            return entries, pids, seconds
        stats = instance.get_run_stats(runs[0].run_id)
        if stats.start_time and stats.end_time:
            seconds = stats.end_time - stats.start_time
        for entry in instance.all_logs(runs[0].run_id):
            event = entry.dagster_event
            text = entry.user_message or (event.message if event else "") or ""
            if event is not None and event.pid and text.startswith("Executing step"):
                pids[event.pid] = entry.step_key or ""
            entries.append(Entry(entry.timestamp, entry.step_key or "run", text))
    return entries, pids, seconds


def write_logs(entries: list[Entry], pids: dict[int, str], logs: Path, label: str) -> list[str]:
    """One file per step of the download run (the consumers' group coordination among it)."""
    by_step: dict[str, list[str]] = {}
    for entry in entries:
        by_step.setdefault(entry.step, []).append(f"{_clock(entry.at)} {entry.text}")
    written = []
    logs.mkdir(parents=True, exist_ok=True)
    for step, lines in by_step.items():
        pid = next((f" (pid {p})" for p, s in pids.items() if s == step), "")
        path = logs / f"{label}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', step).strip('_')}.log"
        path.write_text(f"# {step}{pid}\n" + "\n".join(lines) + "\n")
        written.append(str(path.relative_to(ROOT)))
    return written


def _request_partitions(text: str, request_topic: str) -> list[int]:
    """The request topic's partitions in kafka-python's printed set of TopicPartitions."""
    return sorted(int(p) for t, p in re.findall(r"topic='([^']*)', partition=(\d+)", text) if t == request_topic)


def coordination(entries: list[Entry], request_topic: str, since: float, until: float) -> list[str]:
    """The consumers' group events between two times, in one line each."""
    lines = []
    for entry in entries:
        match = COORDINATION.search(entry.text)
        if match is None or not since <= entry.at <= until:
            continue
        who = entry.step.removeprefix("consume_requests[").removesuffix("]")
        if match["generation"]:
            what = f"joined generation {match['generation']}"
        elif match["joining"]:
            what = "sent JoinGroup"
        elif match["rebalancing"]:
            what = "heard the group is rebalancing"
        elif match["revoked"]:
            what = f"revoked request partitions {_request_partitions(match['revoked'], request_topic)}"
        else:
            what = f"assigned request partitions {_request_partitions(match['assigned'], request_topic)}"
        lines.append(f"{_clock(entry.at)} {who} {what}")
    return lines


def _last_join(entries: list[Entry], before: float) -> float:
    """The last time a consumer joined a generation before a call (3 s before it if none did)."""
    joins = [e.at for e in entries if e.at <= before and (m := COORDINATION.search(e.text)) and m["generation"]]
    return max(joins, default=before - 3.0)


def explain_repeats(
    calls: CallLog,
    entries: list[Entry],
    pids: dict[int, str],
    on_topic: list[dict[str, Any]],
    request_topic: str,
    partitions: int,
) -> list[dict[str, Any]]:
    """Each repeated call: who made it first and again, when its next page went on the topic (the answer
    was in and the page about to land), and what the group did from the first call to the repeat."""

    def who(call: dict[str, Any]) -> str:
        pid = calls.owners.get(call["port"])
        step = pids.get(pid or -1, "")
        name = step.removeprefix("consume_requests[").removesuffix("]") or "unknown process"
        return f"{name} (pid {pid})" if pid else name

    explained = []
    for first, again in calls.repeats():
        partition = partition_of(first["site"], partitions)
        page = (first["site"], first["date"], first["start_row"] + (first["row_limit"] or 0), first["row_limit"])
        sent = sorted(r["at"] for r in on_topic if (r["site"], r["date"], r["start_row"], r["row_limit"]) == page)
        explained.append(
            {
                "call": f"{first['site']} {first['date']} startRow {first['start_row']} (request partition {partition})",
                "first": f"{_clock(first['at'])}–{_clock(first['at'] + first['took_s'])} by {who(first)} "
                f"({first['status']})",
                "again": f"{_clock(again['at'])} by {who(again)} ({again['status']})",
                "next_page_sent": ", ".join(_clock(at) for at in sent) or "none (a short page)",
                "group": coordination(entries, request_topic, _last_join(entries, first["at"]), again["at"]),
            }
        )
    return explained


def partition_of(site: str, partitions: int) -> int:
    """The request partition of an account's requests (keyed by account, default partitioner)."""
    from kafka.partitioner.default import murmur2

    return (murmur2(site.encode()) & 0x7FFFFFFF) % partitions


def before_settled(
    calls: CallLog, entries: list[Entry], pids: dict[int, str], request_topic: str, partitions: int
) -> dict[str, Any]:
    """Calls started before the group's last assignment (before the consumers began to leave), and those
    of them on a partition that then belonged to another consumer: what a rebalance can hand over."""
    closing = min((e.at for e in entries if "on close" in e.text), default=float("inf"))
    owners: dict[str, set[int]] = {}
    settled = 0.0
    for entry in entries:
        match = COORDINATION.search(entry.text)
        if match and match["assigned"] and entry.at < closing:
            owners[entry.step] = set(_request_partitions(match["assigned"], request_topic))
            settled = entry.at
    early = [c for c in calls.calls if c["at"] < settled]
    moved = [
        c
        for c in early
        if partition_of(c["site"], partitions) not in owners.get(pids.get(calls.owners.get(c["port"]) or -1, ""), set())
    ]
    return {"settled_at": settled, "calls": len(early), "moved": len(moved)}


def topic_requests(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every request on the request topic (first pages from the enqueue, continuations from the consumers),
    with its producer timestamp: a continuation is sent once its page's answer is in, just before it lands."""
    from kafka import KafkaConsumer, TopicPartition

    from reporting_assets.core.messages import InvalidRequestError, ReportRequest

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    with contextlib.suppress(InvalidRequestError):
                        request = ReportRequest.decode(record.value)
                        found.append(
                            {
                                "site": request.account,
                                "date": request.date,
                                "start_row": request.start_row,
                                "row_limit": request.row_limit,
                                "at": record.timestamp / 1000,
                                "partition": tp.partition,
                                "offset": record.offset,
                            }
                        )
        return found
    finally:
        consumer.close()


def landed_rows(data_dir: Path) -> tuple[int, int]:
    """(pages, rows): every Parquet file landed (one per page), and the rows a load takes of each
    partition's newest download (one split past the row cap: its slices', not its split chain's own)."""
    files = [p for p in (data_dir / "landing").rglob("*.parquet") if not p.name.startswith(".")]
    rows = 0
    for account_dir in (data_dir / "landing").glob("*/date=*/account=*"):
        downloads = download_ids(account_dir)
        if not downloads:
            continue
        folder = account_dir / f"{DOWNLOAD_PREFIX}{downloads[-1]}"
        pages = [read_page(path) for path in sorted(folder.glob("*.parquet")) if not path.name.startswith(".")]
        splits = {
            path.name.removesuffix(".split.json"): Split.decode(path.read_bytes())
            for path in folder.glob("*.split.json")
        }
        rows += sum(page.rows for page in page_chain(pages, splits).pages)
    return len(files), rows


def exported_rows(data_dir: Path) -> int:
    """Rows in the CSV exports (one file per report and date, with a header)."""
    files = sorted((data_dir / "exports" / REPORT.name).glob("*.csv"))
    return sum(max(0, sum(1 for _ in p.open()) - 1) for p in files)


def run_once(
    bench: Bench, config: dict[str, Any], dates: list[str], row_limit: int | None, label: str
) -> dict[str, Any]:
    """One CLI run on a fresh sandbox, topics, group, Dagster home and data folder."""
    sandbox_settings = sandbox_config(config)
    scratch = bench.scratch(f"calls-{label}")
    home = dagster_home(scratch / "dagster_home")
    kafka = cli_kafka(bench, f"calls-{label}")
    args = ["--start-date", dates[0], "--end-date", dates[-1]]
    if row_limit is not None:
        args += ["--row-limit", str(row_limit)]
    bench.logs.mkdir(parents=True, exist_ok=True)
    try:
        with recorded_sandbox(sandbox_settings) as (sandbox, calls):
            env = cli_env(bench, home, scratch / "data", kafka, sandbox.url)
            returncode, wall_s, stdout = run_cli(env, args, bench.logs / f"calls-{label}-cli.log")
            stats = sandbox.stats()
        on_topic = topic_requests(bench.bootstrap, kafka.request_topic)
        dead_letters = sum(kafka.end_offsets(kafka.dead_letter_topic).values())
        lag_after = kafka.lag(kafka.request_topic).total
    finally:
        bench.delete_topics(kafka)
    entries, pids, download_s = download_run(home)
    logs = write_logs(entries, pids, bench.logs, f"calls-{label}")
    ordered = sorted(calls.calls, key=lambda c: c["at"])
    for call in ordered:
        call["pid"] = calls.owners.get(call["port"])
    (bench.logs / f"calls-{label}-sandbox-calls.json").write_text(json.dumps(ordered, indent=1) + "\n")
    pages, rows = landed_rows(scratch / "data")
    effective = row_limit or config["row_limit"]
    return {
        "label": label,
        "row_limit": effective,
        "returncode": returncode,
        "cli_summary": cli_summary(stdout),
        "wall_s": wall_s,
        "download_s": download_s,
        "calls_total": stats["calls_total"],
        "calls_by_method": stats["calls_by_method"],
        "query_calls": stats["calls_by_method"].get(QUERY_METHOD, 0),
        "minimum": recipe_minimum(sandbox_settings, dates, effective, LandingZone(scratch / "data" / "landing")),
        "repeat_calls": stats["repeat_calls"],
        "repeat_successes": stats["repeat_successes"],
        "rate_limited": stats["rate_limited"],
        "status_counts": stats["status_counts"],
        "landed_pages": pages,
        "landed_rows": rows,
        "exported_rows": exported_rows(scratch / "data"),
        "expected_rows": sum(day_rows(sandbox_settings, dates)),
        "dead_letters": dead_letters,
        "lag_after": lag_after,
        "consumer_pids": {pid: step for pid, step in pids.items() if step.startswith("consume_requests")},
        "before_settled": before_settled(calls, entries, pids, kafka.request_topic, config["topic_partitions"]),
        "repeats": explain_repeats(calls, entries, pids, on_topic, kafka.request_topic, config["topic_partitions"]),
        "logs": logs,
    }


def _complete(r: dict[str, Any]) -> bool:
    return (
        r["returncode"] == 0
        and r["landed_rows"] == r["expected_rows"]
        and r["exported_rows"] == r["expected_rows"]
        and r["dead_letters"] == 0
        and r["lag_after"] == 0
    )


def _name(r: dict[str, Any], defaults: list[dict[str, Any]]) -> str:
    limit = f"{r['row_limit']:,}".replace(",", " ")
    return f"{limit} (run {defaults.index(r) + 1})" if r in defaults else limit


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    dates = default_dates(config["days"])
    config["dates"] = dates
    defaults = [run_once(bench, config, dates, None, f"default-{n + 1}") for n in range(config["runs_at_default"])]
    comparison = run_once(bench, config, dates, COMPARISON_ROW_LIMIT, f"rows-{COMPARISON_ROW_LIMIT}")
    every = [*defaults, comparison]
    recipe = defaults[0]["minimum"]  # the recipe's minimum is at the most rows a page may hold
    rows = [
        [
            _name(r, defaults),
            str(r["calls_total"]),
            " + ".join(f"{count} {method}" for method, count in sorted(r["calls_by_method"].items())),
            str(r["minimum"]),
            f"{r['query_calls'] / recipe:.2f}",
            f"{r['repeat_calls']} / {r['repeat_successes']}",
            f"{r['before_settled']['calls']} ({r['before_settled']['moved']})",
            str(r["rate_limited"]),
            f"{r['landed_rows']} / {r['exported_rows']} of {r['expected_rows']}",
            f"{r['wall_s']:.1f}",
            "" if r["download_s"] is None else f"{r['download_s']:.1f}",
        ]
        for r in every
    ]
    repeats = [
        [_name(r, defaults), x["call"], x["first"], x["next_page_sent"], x["again"], "; ".join(x["group"])]
        for r in every
        for x in r["repeats"]
    ]
    return {
        "title": "7. Calls against Google's recipe (clean CLI run at the defaults)",
        "settings": config,
        "columns": [
            "row limit",
            "calls",
            "by method",
            "recipe minimum at this limit",
            f"query calls ÷ minimum at {config['row_limit']}",
            "repeat calls / successes",
            "calls before the group settled (on partitions that moved)",
            "429",
            "rows landed / exported of expected",
            "wall s (CLI)",
            "download run s",
        ],
        "rows": rows,
        "tables": [
            {
                "title": "Repeated calls (the sandbox's record of each query, the calling process found from its "
                "connection, the consumers' group coordination from the first call to the repeat)",
                "columns": [
                    "run",
                    "call",
                    "first (start–end at the sandbox, by)",
                    "its next page put on the topic",
                    "again",
                    "group meanwhile",
                ],
                "rows": repeats or [["", "none", "", "", "", ""]],
            }
        ],
        "baseline": f"Google's recipe: per (site, day), rows // row_limit + 1 calls; {recipe} at "
        f"{config['row_limit']} rows a page for this workload (from the sandbox's row counts)",
        "notes": [
            f"{len(ROWS_PER_DAY)} sites with {', '.join(str(n) for n in ROWS_PER_DAY)} rows a day × {config['days']} days "
            f"({dates[0]}..{dates[-1]}), {config['consumers']} consumers, every consumer setting at its default. "
            "`calls` is every API call the sandbox answered: the searchAnalytics.query calls and the sites.list of "
            "the CLI's preflight and of the account discovery.",
            f"At {COMPARISON_ROW_LIMIT} rows a page (the old default) the recipe needs {comparison['minimum']} calls: "
            f"{comparison['query_calls']} made, {comparison['query_calls'] / comparison['minimum']:.3f} of that minimum "
            f"and {comparison['query_calls'] / recipe:.2f} of the minimum at {config['row_limit']}.",
            "Calls before the group settled: calls started before the group's last assignment (the consumers join "
            "one after the other, and the first starts calling as soon as it holds partitions); in brackets those "
            "on a request partition that then belonged to the other consumer. Such a call is repeated when the "
            "rebalance comes before its consumer has landed the page and committed: the new owner fetches the "
            "request again from the last commit and finds no page landed.",
            "Logs of each run in `bench/out/logs-<mode>/`: `calls-<run>-cli.log` (the CLI's output), "
            "`calls-<run>-consume_requests_consumer_<i>.log` (each consumer's step: group coordination, commits), "
            "`calls-<run>-sandbox-calls.json` (every query: time, client port and pid, page, status).",
        ],
        "targets": [
            {
                "target": f"query calls ÷ recipe minimum at {config['row_limit']} rows, clean run at the defaults: 1.00",
                "value": ", ".join(f"{r['query_calls'] / recipe:.2f}" for r in defaults)
                + f" ({', '.join(str(r['query_calls']) for r in defaults)} of {recipe}; repeats "
                + ", ".join(str(r["repeat_calls"]) for r in defaults)
                + f"; at {COMPARISON_ROW_LIMIT} rows {comparison['query_calls'] / recipe:.2f})",
                "met": all(r["query_calls"] == recipe for r in defaults),
            },
            {
                "target": "every row landed and exported, no dead letters, no lag left",
                "value": "; ".join(
                    f"{r['landed_rows']}/{r['exported_rows']} of {r['expected_rows']} rows, {r['dead_letters']} dead, "
                    f"lag {r['lag_after']}"
                    for r in every
                ),
                "met": all(_complete(r) for r in every),
            },
        ],
        "raw": every,
    }
