"""Seeded crash trials: real consumer processes, SIGKILLed at seeded moments, restarted until done.

A trial (`run_trial`) enqueues a fixed workload on a fresh topic, runs `Workload.consumers`
consumer processes (each the project's `DownloadLoop` against the real broker and the sandbox),
SIGKILLs one or all of them whenever the landing zone reaches a seeded number of files, starts
them again, and repeats until the topic is drained. `check_trial` then proves:

* **nothing lost, nothing doubled** -- the landed page chains, read by DuckDB, hold exactly the
  sandbox's `expected_rows`, row for row; and the exports made by the real `downloaded_reports` and
  `exported_reports` assets are byte-identical to those of a clean (never killed) run;
* **re-issued calls are exactly what was in flight** -- every call the sandbox answered with data
  a second time was of a page in flight, measured from outside the consumers
  (`in_flight.py`), at a moment between the two calls when its partition could change hands:

  - a **kill**, measured right after the victims are dead: the calls the sandbox had received and
    not answered, those answered whose page had not landed, and the pages landed, each with its
    request message at or beyond its partition's committed offset (read with the admin client);
  - a **rebalance** (a restarted consumer joining, the group noticing a dead member, a join, a
    leave, the start): `in_flight.GroupWindows` watches the group from outside (DescribeGroups and
    the committed offsets every 250 ms); over a window from the last sample before the group changed
    to the first that finds it Stable again, the pages received by its end whose message was not
    committed at its start.

  The new owner restarts from the committed offset, so these are the only calls it may repeat.
  A repeat of any other page (a duplicate continuation page cascading down a chain, an offset
  committed too early and re-done, a page called by two owners) fails the trial, whatever the count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from reporting_assets.core.connectors.ga4 import STANDARD_REPORTS, report_body
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.reports import get_report
from reporting_assets.defs.partitions import account_partitions
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.warehouse import WarehouseResource
from reporting_assets.sandbox import (
    PropertySpec,
    SandboxConfig,
    SandboxServer,
    SiteSpec,
    expected_row_count,
    expected_rows,
)
from reporting_assets.sandbox.ga4 import METRICS as GA4_METRICS
from reporting_assets.sandbox.ga4 import expected_report
from reporting_assets_tests import helpers
from reporting_assets_tests.reliability import in_flight, worker

REPORT = get_report("search_analytics")
GA4_REPORT = STANDARD_REPORTS[1]  # GA4 landing pages: the standard report with the most rows
log = logging.getLogger(__name__)


class TrialError(AssertionError):
    pass


# ---- workloads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    sites: tuple[tuple[str, int], ...]  # (site url, rows a day)
    dates: tuple[str, ...]
    row_limit: int = 50
    partitions: int = 4
    consumers: int = 2
    concurrency: int = 2
    latency_s: float = 0.02
    per_site_qps: float | None = 8.0  # the sandbox's limit: bursts above it get 429 + Retry-After
    burst: float | None = 2.0
    qps_per_account: float = 12.0  # the consumers' starting pace, above the limit: a few 429s
    session_timeout_s: float = 2.0
    idle_timeout_s: float = 1.5
    max_kills: int = 3
    sandbox_seed: int = 17
    # GA4 properties (id, rows a day) whose report goes on the same topic as Search Console's.
    properties: tuple[tuple[str, int], ...] = ()

    def sandbox_config(self) -> SandboxConfig:
        return SandboxConfig(
            seed=self.sandbox_seed,
            sites=[SiteSpec(url, rows) for url, rows in self.sites],
            per_site_qps=self.per_site_qps,
            global_qps=None,
            burst=self.burst,
            latency_s=self.latency_s,
            faults=[],
            rows_jitter=0.0,
            ga4_properties=[PropertySpec(id, "111", rows_per_day=rows) for id, rows in self.properties],
        )

    @property
    def accounts(self) -> list[str]:
        return sorted(url for url, _ in self.sites)

    @property
    def property_names(self) -> list[str]:
        return sorted(f"properties/{id}" for id, _ in self.properties)

    def first_requests(self) -> list[ReportRequest]:
        search = [
            REPORT.first_request(url, date, row_limit=self.row_limit) for date in self.dates for url, _ in self.sites
        ]
        ga4 = [
            GA4_REPORT.first_request(name, date, self.row_limit) for date in self.dates for name in self.property_names
        ]
        return [*search, *ga4]

    def pages(self) -> int:
        """API calls of a perfect run: a Search Console chain ends at its first page with fewer than row_limit
        rows; a GA4 report at the page that reaches its rowCount (one page for an empty report)."""
        config = self.sandbox_config()
        search = sum(
            expected_row_count(config, url, date, date, list(REPORT.dimensions)) // self.row_limit + 1
            for url, _ in self.sites
            for date in self.dates
        )
        ga4 = sum(
            max(1, math.ceil(len(ga4_truth(config, name, date)) / self.row_limit))
            for name in self.property_names
            for date in self.dates
        )
        return search + ga4

    def consumer_settings(self) -> dict[str, Any]:
        return {
            "idle_timeout_s": self.idle_timeout_s,
            "join_grace_s": self.session_timeout_s + 3.0,
            "max_runtime_s": 300.0,
            "qps_per_account": self.qps_per_account,
            "concurrency": self.concurrency,
            "retry_backoff_s": 0.01,
        }


# Site names are chosen so that each lands on its own Kafka partition (murmur2 of the account key).
SMALL = Workload(
    name="small",
    sites=(
        ("https://a.example.com/", 230),  # partition 2 of 4: 5 pages of 50 rows a day
        ("https://d.example.com/", 160),  # partition 0: 4 pages
        ("https://e.example.com/", 110),  # partition 1: 3 pages
        ("https://c.example.com/", 30),  # partition 3: 1 page
    ),
    dates=("2026-11-01", "2026-11-02"),
)

BIG = Workload(
    name="big",
    sites=(
        ("https://a.example.com/", 430),  # partition 0 of 6: 9 pages of 50 rows a day
        ("https://l.example.com/", 260),  # partition 1: 6 pages
        ("https://w.example.com/", 160),  # partition 2: 4 pages
        ("https://k.example.com/", 100),  # partition 3: 3 pages (2 full ones and an empty one)
        ("https://f.example.com/", 30),  # partition 4: 1 page
        ("https://c.example.com/", 75),  # partition 5: 2 pages
    ),
    dates=("2026-11-01", "2026-11-02", "2026-11-03"),
    partitions=6,
    consumers=3,
    max_kills=5,
)


# ---- consumer processes --------------------------------------------------------------------------


def process_context() -> multiprocessing.context.BaseContext:
    """Fork server with the consumer's imports done once: a consumer process starts in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["reporting_assets_tests.reliability.worker"])
    return context


class Fleet:
    """The consumer processes of one group; every process it started is SIGKILLed by `close`."""

    def __init__(self, spec: dict[str, Any], events_dir: Path, size: int, context: Any = None) -> None:
        self.spec = spec
        self.events_dir = events_dir
        self.size = size
        self.context = context or process_context()
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.kills = 0
        self.stopped: set[str] = set()  # asked to stop by the trial (SIGTERM): their exit is planned
        events_dir.mkdir(parents=True, exist_ok=True)

    def start(self, count: int = 1, **overrides: Any) -> list[Any]:
        started = []
        for _ in range(count):
            name = f"consumer-{len(self.processes)}"
            spec = {**self.spec, **overrides, "name": name, "events_path": str(self.events_dir / f"{name}.jsonl")}
            process = self.context.Process(target=worker.run_consumer, args=(spec,), name=name, daemon=True)
            process.start()
            self.processes.append(process)
            started.append(process)
        return started

    def alive(self) -> list[Any]:
        return [process for process in self.processes if process.is_alive()]

    def top_up(self) -> list[Any]:
        return self.start(self.size - len(self.alive()))

    def kill(self, victims: list[Any]) -> None:
        for process in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        for process in victims:
            process.join(30)
            if process.is_alive():
                raise TrialError(f"consumer {process.name} (pid {process.pid}) survived SIGKILL")
        self.kills += len(victims)

    def stop(self, process: Any, timeout_s: float) -> None:
        """Ask one consumer to stop (SIGTERM: it finishes its calls in flight, commits, leaves the group)."""
        self.stopped.add(process.name)
        os.kill(process.pid, signal.SIGTERM)
        process.join(timeout_s)
        if process.exitcode != 0:
            raise TrialError(f"consumer {process.name} did not stop cleanly on SIGTERM (exit {process.exitcode})")

    def ended_on_their_own(self) -> set[str]:
        """Consumers that stopped by themselves (exit 0: drained, or out of time), not stopped or killed."""
        return {p.name for p in self.processes if p.exitcode == 0 and p.name not in self.stopped}

    def crashed(self) -> list[str]:
        """Consumers that ended with an error (not killed by us, not a clean stop)."""
        return [f"{p.name}: exit {p.exitcode}" for p in self.processes if p.exitcode not in (None, 0, -signal.SIGKILL)]

    def events(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.events_dir.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def close(self) -> None:
        alive = self.alive()
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.join(30)


# ---- observing from outside ---------------------------------------------------------------------


def landed_count(landing_dir: Path) -> int:
    return len(in_flight.landed_ids(landing_dir))


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05) -> None:
    helpers.wait_for(condition, timeout_s, what, every_s, error=TrialError)


# ---- one trial -----------------------------------------------------------------------------------


@dataclass
class Kill:
    mode: str  # one | all
    at_landed: int  # landed pages when the kill came
    consumers_alive: int
    victims: int
    signalled: float  # time.monotonic as the SIGKILLs went (the sandbox's clock)
    at: float  # once the victims were dead
    at_ms: float  # the same moment in epoch ms (the messages' timestamps)
    committed: dict[int, int]  # the group's committed offsets then
    landed: set[str]  # request ids of the pages landed then
    repeat_successes_before: int
    in_flight: dict[str, int] = field(default_factory=dict)  # counted from outside at the end (`in_flight.py`)


@dataclass
class BrokerRestart:
    how: str  # stop (SIGTERM, controlled shutdown) | kill (SIGKILL)
    at_landed: int
    outage_s: float
    consumers_alive_after: int  # consumer processes still running when the broker answered again


@dataclass
class TrialResult:
    seed: int | None
    workload: Workload
    data_dir: Path
    pages: int
    kills: list[Kill] = field(default_factory=list)
    joins: int = 0  # consumers started into a running group on purpose
    leaves: int = 0  # consumers asked to stop (SIGTERM) mid-run
    broker_restarts: list[BrokerRestart] = field(default_factory=list)
    handovers: int = 0  # rebalances in which a live consumer gave partitions away (its own report)
    handover_exposure: int = 0  # calls those consumers said they had started beyond the committed offsets
    windows: int = 0  # rebalance windows seen from outside (`in_flight.GroupWindows`)
    window_in_flight: int = 0  # pages in flight over those windows, summed
    reissued: list[in_flight.Reissue] = field(default_factory=list)  # calls answered with data again
    restarts: int = 0  # consumers started again after a kill or an early exit
    early_exits: int = 0  # consumer processes that stopped before the topic was drained
    crashed: list[str] = field(default_factory=list)
    consumer_stats: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # what the consumer processes reported
    sandbox_stats: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    rows_expected: int = 0
    rows_lost: int = -1
    rows_doubled: int = -1
    export_digests: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def repeat_successes(self) -> int:
        return int(self.sandbox_stats.get("repeat_successes", 0))

    @property
    def in_flight_bound(self) -> int:
        """Pages in flight at the kills and over the rebalance windows, summed (measured from outside)."""
        return sum(kill.in_flight.get("pages", 0) for kill in self.kills) + self.window_in_flight

    @property
    def unexplained(self) -> list[in_flight.Reissue]:
        """Calls made again of a page not in flight at any kill or rebalance between its two calls."""
        return [reissue for reissue in self.reissued if reissue.moment is None]

    @property
    def throttled(self) -> int:
        return int(self.sandbox_stats.get("rate_limited", 0))

    @property
    def faults(self) -> int:
        """Faults injected: SIGKILLed consumers, broker restarts, joins, leaves, 429s served."""
        return (
            sum(kill.victims for kill in self.kills)
            + len(self.broker_restarts)
            + self.joins
            + self.leaves
            + self.throttled
        )


ACTIONS = ("kill_one", "kill_all", "join", "leave", "broker_stop", "broker_kill")


@dataclass(frozen=True)
class Step:
    at_landed: int  # act once this many pages have landed
    action: str  # one of ACTIONS
    pick: int = 0  # which consumer (modulo the live ones), for kill_one and leave

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()

    @classmethod
    def seeded(cls, seed: int, workload: Workload, pages: int) -> Plan:
        """1..max_kills kills, each of one or all consumers, at seeded landed-page counts."""
        rng = random.Random(seed)
        count = rng.randint(1, workload.max_kills)
        targets = sorted(rng.sample(range(1, pages), min(count, pages - 1)))
        return cls(
            tuple(Step(target, rng.choice(("kill_one", "kill_all")), rng.randrange(1 << 30)) for target in targets)
        )


class TrialEnv:
    """What trials share: the broker, a scratch folder, the fork server, a Dagster instance for exports."""

    def __init__(
        self, bootstrap: str, root: Path, instance: dg.DagsterInstance | None = None, broker: Any = None
    ) -> None:
        self.bootstrap = bootstrap
        self.root = root
        self.instance = instance
        self.broker = broker  # a LocalKafkaBroker the trial may stop and start (broker_* steps)
        self.context = process_context()

    def kafka(self, workload: Workload, tag: str) -> KafkaResource:
        topic = f"crash-{tag}-{uuid.uuid4().hex[:8]}"
        return KafkaResource(
            bootstrap_servers=self.bootstrap,
            request_topic=topic,
            dead_letter_topic=f"{topic}.dead-letter",
            delay_topic=f"{topic}.delayed",
            topic_partitions=workload.partitions,
            consumer_group=f"{topic}-group",
        )


def enqueue(kafka: KafkaResource, requests: list[ReportRequest]) -> None:
    producer = kafka.producer()
    try:
        for request in requests:
            producer.send(kafka.request_topic, key=request.key(), value=request.encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def fleet_spec(kafka: KafkaResource, workload: Workload, sandbox_url: str, landing_dir: Path) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": kafka.bootstrap_servers,
            "request_topic": kafka.request_topic,
            "dead_letter_topic": kafka.dead_letter_topic,
            "delay_topic": kafka.delay_topic,
            "topic_partitions": kafka.topic_partitions,
            "consumer_group": kafka.consumer_group,
        },
        "settings": workload.consumer_settings(),
        "sandbox_url": sandbox_url,
        "num_retries": 3,
        "landing_dir": str(landing_dir),
        "session_timeout_s": workload.session_timeout_s,
    }


def drained(kafka: KafkaResource, topic: str) -> bool:
    """Committed offsets read *before* the end offsets: a continuation written before a commit counts."""
    committed = kafka.committed_offsets(topic)
    end = kafka.end_offsets(topic)
    return all(committed[p] >= end[p] for p in end)


def complete(landing: LandingZone, workload: Workload) -> bool:
    return all(
        landing.completeness(report, date, account).complete for report, date, account in workload_downloads(workload)
    )


def workload_downloads(workload: Workload) -> list[tuple[str, str, str]]:
    """(report, date, account) of every download the workload enqueues, both partners'."""
    return [
        *((REPORT.name, date, account) for account in workload.accounts for date in workload.dates),
        *((GA4_REPORT.name, date, name) for name in workload.property_names for date in workload.dates),
    ]


class Trial:
    """One run of a workload through a plan of attacks; `run()` returns what happened."""

    def __init__(
        self,
        env: TrialEnv,
        workload: Workload,
        seed: int | None,
        plan: Plan,
        timeout_s: float,
        exports: bool,
        first: dict[str, Any] | None = None,
    ) -> None:
        self.env = env
        self.first = first  # spec overrides for the very first consumer (e.g. die_after_landing)
        self.workload = workload
        self.plan = plan
        self.timeout_s = timeout_s
        self.exports = exports
        tag = "clean" if seed is None else f"s{seed}"
        self.data_dir = env.root / f"{workload.name}-{tag}-{uuid.uuid4().hex[:6]}"
        self.landing_dir = self.data_dir / "landing"
        self.landing = LandingZone(self.landing_dir)
        self.result = TrialResult(seed=seed, workload=workload, data_dir=self.data_dir, pages=workload.pages())
        self.kafka = env.kafka(workload, tag)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self) -> TrialResult:
        started = time.monotonic()
        self.deadline = started + self.timeout_s
        self.kafka.ensure_topics()
        enqueue(self.kafka, self.workload.first_requests())
        with contextlib.ExitStack() as stack:
            self.sandbox = stack.enter_context(SandboxServer(self.workload.sandbox_config()))
            self.group_windows = stack.enter_context(in_flight.GroupWindows(self.kafka))
            spec = fleet_spec(self.kafka, self.workload, self.sandbox.url, self.landing_dir)
            self.fleet = Fleet(spec, self.data_dir / "events", self.workload.consumers, self.env.context)
            stack.callback(self.fleet.close)
            if self.first:
                self.fleet.start(1, **self.first)
            self.fleet.top_up()
            for step in self.plan.steps:
                wait_for(
                    lambda step=step: landed_count(self.landing_dir) >= step.at_landed or not self.fleet.alive(),
                    self.remaining(),
                    f"{step.at_landed} landed pages",
                )
                if not self.fleet.alive():
                    self.result.notes.append(f"the topic drained before step {step}")
                    break
                getattr(self, step.action)(step)
            self.finish()
        self.hold_to_in_flight()
        count_rows(self.result, self.landing, self.workload)
        if self.exports:
            self.result.export_digests = export_digests(self.env, self.data_dir, self.workload, self.kafka)
        self.result.elapsed_s = time.monotonic() - started
        return self.result

    # ---- steps ----

    def kill_one(self, step: Step) -> None:
        alive = self.fleet.alive()
        self._kill("one", [alive[step.pick % len(alive)]], len(alive))

    def kill_all(self, step: Step) -> None:
        alive = self.fleet.alive()
        self._kill("all", alive, len(alive))

    def _kill(self, mode: str, victims: list[Any], alive: int) -> None:
        repeats_before = self.sandbox.stats()["repeat_successes"]
        at_landed = landed_count(self.landing_dir)
        signalled = time.monotonic()
        self.fleet.kill(victims)
        # In flight at the kill, from outside (counted at the end, once the topic is whole): the moment,
        # the committed offsets and the landed pages now that nothing of the victims moves any more.
        at, at_ms = time.monotonic(), time.time() * 1000
        committed = self.kafka.committed_offsets(self.kafka.request_topic)
        self.result.kills.append(
            Kill(
                mode=mode,
                at_landed=at_landed,
                consumers_alive=alive,
                victims=len(victims),
                signalled=signalled,
                at=at,
                at_ms=at_ms,
                committed=committed,
                landed=in_flight.landed_ids(self.landing_dir),
                repeat_successes_before=repeats_before,
            )
        )
        self.result.restarts += len(self.fleet.top_up())

    def join(self, step: Step) -> None:
        self.fleet.size += 1
        self.fleet.top_up()
        self.result.joins += 1

    def leave(self, step: Step) -> None:
        alive = self.fleet.alive()
        self.fleet.size -= 1
        self.fleet.stop(alive[step.pick % len(alive)], self.remaining())
        self.result.leaves += 1

    def broker_stop(self, step: Step) -> None:
        self._restart_broker("stop")

    def broker_kill(self, step: Step) -> None:
        self._restart_broker("kill")

    def _restart_broker(self, how: str) -> None:
        broker = self.env.broker
        assert broker is not None, "broker steps need a broker of the trial's own"
        at_landed = landed_count(self.landing_dir)
        down = time.monotonic()
        if how == "stop":
            broker.stop()
        else:
            pid = broker.pid
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not broker.is_running(), self.remaining(), "the broker JVM to die")
        broker.start(timeout_s=max(self.remaining(), 1))
        self.result.broker_restarts.append(
            BrokerRestart(
                how=how,
                at_landed=at_landed,
                outage_s=time.monotonic() - down,
                consumers_alive_after=len(self.fleet.alive()),
            )
        )

    # ---- the end ----

    def finish(self) -> None:
        """Run to the end; consumers that stopped while work was left are counted, and started again."""
        counted: set[str] = set()
        while True:
            wait_for(lambda: not self.fleet.alive(), self.remaining(), "the consumers to finish", every_s=0.1)
            if self.fleet.crashed():
                raise TrialError(f"consumer processes failed: {self.fleet.crashed()}")
            if drained(self.kafka, self.kafka.request_topic) and complete(self.landing, self.workload):
                break
            # Only those that ended by themselves: a consumer the trial killed (or that killed itself on
            # the trial's orders) leaves work behind by design.
            early = self.fleet.ended_on_their_own() - counted
            self.result.early_exits += len(early)
            counted |= early
            self.result.restarts += len(self.fleet.top_up())
        result = self.result
        result.sandbox_stats = self.sandbox.stats()
        self.calls = self.sandbox.calls()
        events = result.events = self.fleet.events()
        # Partitions given away by live consumers: at a rebalance (revoked at its start, released at its
        # end), or when one stops (its last commit may fail if a rebalance is under way; normally it
        # commits everything and exposes nothing). Each started call is counted once.
        handovers = [event for event in events if event["event"] in ("handover", "revoked", "exit")]
        result.handovers = sum(1 for event in handovers if event["event"] == "handover")
        result.handover_exposure = sum(event.get("exposure") or 0 for event in handovers)
        result.consumer_stats = [event["stats"] for event in events if event["event"] == "exit"]
        result.crashed = self.fleet.crashed()
        if not drained(self.kafka, self.kafka.delay_topic):
            result.notes.append("incomplete: the delay topic is not drained")
        dead = sum(self.kafka.end_offsets(self.kafka.dead_letter_topic).values())
        if dead:
            result.notes.append(f"incomplete: {dead} dead letters")

    def hold_to_in_flight(self) -> None:
        """Every call answered with data again, with the kill or rebalance window that explains it."""
        result, calls = self.result, self.calls
        on_topic = in_flight.messages(self.kafka, self.kafka.request_topic)
        moments = []
        for kill in result.kills:
            measured = in_flight.measure(
                calls, kill.signalled, kill.at, on_topic, kill.committed, kill.landed, kill.at_ms
            )
            kill.in_flight = measured.counts()
            moments.append(measured)
        windows = [
            in_flight.measure(calls, w.start, w.end, on_topic, w.committed, set(), w.end_ms)
            for w in self.group_windows.windows
        ]
        result.windows = len(windows)
        result.window_in_flight = sum(len(w.pages) for w in windows)
        result.reissued = in_flight.reissues(calls, moments + windows, statuses=frozenset({200}))
        if calls["dropped"]:
            result.notes.append(f"incomplete: the sandbox's timeline dropped {calls['dropped']} calls")


def run_trial(
    env: TrialEnv,
    workload: Workload,
    seed: int | None,
    plan: Plan | None = None,
    timeout_s: float = 180.0,
    exports: bool = True,
    first: dict[str, Any] | None = None,
) -> TrialResult:
    """One trial; `seed=None` and no plan is the clean run (no attacks)."""
    if plan is None:
        plan = Plan() if seed is None else Plan.seeded(seed, workload, workload.pages())
    return Trial(env, workload, seed, plan, timeout_s, exports, first).run()


# ---- checks --------------------------------------------------------------------------------------

METRICS = ("clicks", "impressions", "ctr", "position")


def truth_rows(workload: Workload) -> Counter[tuple]:
    config = workload.sandbox_config()
    rows: Counter[tuple] = Counter()
    for account in workload.accounts:
        for date in workload.dates:
            for number, row in enumerate(expected_rows(config, account, date, date, list(REPORT.dimensions))):
                keys = dict(zip(REPORT.dimensions, row["keys"], strict=True))
                rows[
                    (
                        account,
                        keys["date"],
                        number,
                        keys["query"],
                        keys["page"],
                        keys["country"],
                        keys["device"],
                        int(row["clicks"]),
                        int(row["impressions"]),
                        float(row["ctr"]),
                        float(row["position"]),
                    )
                ] += 1
    return rows


def count_rows(result: TrialResult, landing: LandingZone, workload: Workload) -> None:
    """Landed rows against the sandbox's truth.

    Lost: what `downloaded_reports` would load (each partition's newest download, its page chain) misses.
    Doubled: what any reader of the zone would find twice: every landed file of every download, so a
    page landed again under a second download (a first page taken for a new download) shows too.
    """
    chains: dict[str, list[str]] = {REPORT.name: [], GA4_REPORT.name: []}
    for report, date, account in workload_downloads(workload):
        state = landing.completeness(report, date, account)
        if not state.complete:
            result.notes.append(f"incomplete: {date} {account}: {state.missing_start_rows} {state.dead_letters}")
        chains[report].extend(str(page.path) for page in state.pages)
        downloads = landing.downloads(report, date, account)
        if len(downloads) > 1:
            result.notes.append(f"doubled: {len(downloads)} downloads of {date} {account}, enqueued once")
    every = [str(path) for path in landing.root.rglob("*.parquet") if not path.name.startswith(".")]
    # Each partner's files in its own schema: every file under the report's folder.
    every_search = [path for path in every if Path(path).relative_to(landing.root).parts[0] == REPORT.name]
    every_ga4 = [path for path in every if path not in set(every_search)]
    expected, expected_ga4 = truth_rows(workload), ga4_truth_rows(workload)
    result.rows_expected = sum(expected.values()) + sum(expected_ga4.values())
    result.rows_lost = sum((expected - landed_rows(chains[REPORT.name])).values()) + sum(
        (expected_ga4 - ga4_landed_rows(chains[GA4_REPORT.name])).values()
    )
    result.rows_doubled = sum((landed_rows(every_search) - expected).values()) + sum(
        (ga4_landed_rows(every_ga4) - expected_ga4).values()
    )


def ga4_truth(config: SandboxConfig, name: str, date: str) -> list[dict[str, Any]]:
    return expected_report(config, name, report_body(GA4_REPORT.first_request(name, date)))


def ga4_truth_rows(workload: Workload) -> Counter[tuple]:
    """The GA4 report's rows the sandbox serves, as landed: (property, date, row number, dimensions..., metrics...)."""
    config = workload.sandbox_config()
    rows: Counter[tuple] = Counter()
    for name in workload.property_names:
        for date in workload.dates:
            for number, row in enumerate(ga4_truth(config, name, date)):
                values = [v["value"] for v in row["dimensionValues"][1:]]  # after `date`, its own column
                metrics = [
                    int(v["value"]) if GA4_METRICS[m] == "TYPE_INTEGER" else float(v["value"])
                    for m, v in zip(GA4_REPORT.metrics, row["metricValues"], strict=True)
                ]
                rows[(name, date, number, *values, *metrics)] += 1
    return rows


def ga4_landed_rows(files: list[str]) -> Counter[tuple]:
    """The rows of these GA4 page files, counted, with the same tuple shape as `ga4_truth_rows`."""
    rows: Counter[tuple] = Counter()
    columns = [d for d in GA4_REPORT.dimensions if d != "date"] + list(GA4_REPORT.metrics)
    for path in files:
        for record in pq.read_table(path).to_pylist():
            rows[
                (record["account"], record["date"].isoformat(), record["row_number"], *(record[c] for c in columns))
            ] += 1
    return rows


def landed_rows(files: list[str]) -> Counter:
    """The rows of these page files as truth tuples, counted (DuckDB reads them as the load does)."""
    if not files:
        return Counter()
    with duckdb.connect() as db:
        return Counter(
            (account, str(date), number, query, page, country, device, clicks, impressions, ctr, position)
            for account, date, number, query, page, country, device, clicks, impressions, ctr, position in db.execute(
                "SELECT account, date, row_number, query, page, country, device, clicks, impressions, ctr, position "
                "FROM read_parquet(?, hive_partitioning = false)",
                [files],
            ).fetchall()
        )


def export_digests(env: TrialEnv, data_dir: Path, workload: Workload, kafka: KafkaResource) -> dict[str, str]:
    """Run the real `downloaded_reports` and `exported_reports` assets; sha256 of every export file."""
    from reporting_assets import runner  # Dagster definitions: imported only when exports are wanted

    assert env.instance is not None, "exports need a Dagster instance"
    instance = env.instance
    known = set(instance.get_dynamic_partitions(account_partitions.name))
    missing = [account for account in workload.accounts if account not in known]
    if missing:
        instance.add_dynamic_partitions(account_partitions.name, missing)
    # The load reads the topics too: nothing of the trial's may be left on them.
    resources = {"warehouse": WarehouseResource(data_dir=str(data_dir)), "kafka": kafka}
    loaded = dg.materialize(
        [runner.downloaded_reports],
        resources=resources,
        instance=instance,
        tags=runner.range_tags(list(workload.dates), workload.accounts),
        run_config=runner.quiet(None, "ERROR"),
    )
    if not loaded.success:
        raise TrialError("downloaded_reports failed")
    digests = {}
    for date in workload.dates:
        exported = dg.materialize(
            [runner.export_assets()],
            resources=resources,
            instance=instance,
            partition_key=date,
            run_config=runner.quiet(None, "ERROR"),
        )
        if not exported.success:
            raise TrialError(f"exported_reports {date} failed")
    for path in sorted((data_dir / "exports").rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            digests[str(path.relative_to(data_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def problems(result: TrialResult, reference: TrialResult | None) -> list[str]:
    """Everything wrong with a trial (empty: it passed)."""
    found = []
    if result.rows_lost or result.rows_doubled:
        found.append(f"{result.rows_lost} rows lost, {result.rows_doubled} doubled of {result.rows_expected}")
    found.extend(note for note in result.notes if note.startswith(("incomplete", "doubled")))
    if result.crashed:
        found.append(f"consumer processes failed: {result.crashed}")
    if result.early_exits:
        # Stopped as "drained" (or at their runtime limit) with work left: a run would end short.
        found.append(f"{result.early_exits} consumers stopped while requests were left")
    if result.unexplained:
        found.append(
            f"{len(result.unexplained)} calls re-issued of pages not in flight at any kill or rebalance: "
            f"{[r.page for r in result.unexplained]} (kills: {[(k.mode, k.in_flight) for k in result.kills]}, "
            f"{result.windows} rebalance windows with {result.window_in_flight} pages in flight)"
        )
    if len(result.reissued) != result.repeat_successes:
        found.append(
            f"the sandbox's timeline has {len(result.reissued)} calls re-issued, its counter {result.repeat_successes}"
        )
    if reference is not None and result.export_digests and result.export_digests != reference.export_digests:
        differing = sorted(
            name
            for name in set(result.export_digests) | set(reference.export_digests)
            if result.export_digests.get(name) != reference.export_digests.get(name)
        )
        found.append(f"exports differ from the clean run's: {differing}")
    return found


def describe(result: TrialResult) -> str:
    kills = ", ".join(f"{k.mode}@{k.at_landed}" for k in result.kills) or "none"
    extra = ""
    if result.joins or result.leaves:
        extra += f", joins {result.joins}, leaves {result.leaves}"
    if result.broker_restarts:
        extra += ", broker " + ", ".join(
            f"{b.how}@{b.at_landed} ({b.outage_s:.1f}s down, {b.consumers_alive_after} consumers still up)"
            for b in result.broker_restarts
        )
    return (
        f"seed {result.seed}: {result.pages} pages, kills [{kills}]{extra}, restarts {result.restarts}, "
        f"early exits {result.early_exits}, 429s {result.throttled}, rebalance windows {result.windows}, "
        f"re-issued {result.repeat_successes} of {result.in_flight_bound} in flight "
        f"({len(result.unexplained)} not in flight), "
        f"rows lost {result.rows_lost} doubled {result.rows_doubled}, {result.elapsed_s:.1f}s"
    )


def summary_rows(results: list[TrialResult], reference: TrialResult | None) -> dict[str, Any]:
    """Totals over trials, for the markdown table."""
    return {
        "trials": len(results),
        "sigkills": sum(kill.victims for r in results for kill in r.kills),
        "kill_events": sum(len(r.kills) for r in results),
        "kills_all": sum(1 for r in results for kill in r.kills if kill.mode == "all"),
        "broker_restarts": sum(len(r.broker_restarts) for r in results),
        "joins_leaves": sum(r.joins + r.leaves for r in results),
        "rebalance_handovers": sum(r.handovers for r in results),
        "throttled": sum(r.throttled for r in results),
        "faults": sum(r.faults for r in results),
        "rows_expected": sum(r.rows_expected for r in results),
        "rows_lost": sum(max(r.rows_lost, 0) for r in results),
        "rows_doubled": sum(max(r.rows_doubled, 0) for r in results),
        "exports_identical": sum(
            1
            for r in results
            if reference is not None and r.export_digests and r.export_digests == reference.export_digests
        ),
        "exports_checked": sum(1 for r in results if r.export_digests),
        "reissued": sum(r.repeat_successes for r in results),
        "bound": sum(r.in_flight_bound for r in results),
        "over_bound": sum(1 for r in results if r.unexplained),
        "rebalance_windows": sum(r.windows for r in results),
        "max_reissued": max((r.repeat_successes for r in results), default=0),
        "duplicates_skipped": sum(stats.get("duplicates", 0) for r in results for stats in r.consumer_stats),
        "failed": sum(1 for r in results if problems(r, reference)),
        "seconds": sum(r.elapsed_s for r in results),
    }


def summary_markdown(title: str, results: list[TrialResult], reference: TrialResult | None) -> str:
    t = summary_rows(results, reference)
    lines = [
        f"### {title}",
        "",
        "| trials | failed | faults injected | rows expected | rows lost | rows doubled | exports byte-identical "
        "| re-issued calls | pages in flight at kills and rebalances (from outside) | trials with a re-issue "
        "not in flight |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {t['trials']} | {t['failed']} | {t['sigkills']} consumer SIGKILLs in {t['kill_events']} kills "
        f"({t['kills_all']} of the whole group), {t['throttled']} 429s, {t['broker_restarts']} broker restarts, "
        f"{t['joins_leaves']} joins/leaves, {t['rebalance_windows']} rebalance windows "
        f"| {t['rows_expected']} | {t['rows_lost']} | {t['rows_doubled']} "
        f"| {t['exports_identical']}/{t['exports_checked']} | {t['reissued']} (max {t['max_reissued']} in a trial) "
        f"| {t['bound']} | {t['over_bound']} |",
        "",
        f"{t['duplicates_skipped']} duplicate request copies were skipped without an API call; "
        f"total trial time {t['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def trial_markdown(results: list[TrialResult], reference: TrialResult | None) -> str:
    lines = [
        "| seed | pages | kills (mode@landed pages) | other faults | 429s | rebalance windows | re-issued | in flight "
        "| rows lost | rows doubled | exports identical | seconds |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        kills = ", ".join(f"{k.mode}@{k.at_landed}" for k in r.kills) or "-"
        other = (
            ", ".join(
                [f"broker {b.how}@{b.at_landed}" for b in r.broker_restarts]
                + ([f"{r.joins} join"] if r.joins else [])
                + ([f"{r.leaves} leave"] if r.leaves else [])
            )
            or "-"
        )
        identical = (
            "-"
            if not r.export_digests or reference is None
            else ("yes" if r.export_digests == reference.export_digests else "**no**")
        )
        lines.append(
            f"| {r.seed} | {r.pages} | {kills} | {other} | {r.throttled} | {r.windows} | {r.repeat_successes} "
            f"| {r.in_flight_bound} | {r.rows_lost} | {r.rows_doubled} | {identical} | {r.elapsed_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


def cleanup(result: TrialResult) -> None:
    shutil.rmtree(result.data_dir, ignore_errors=True)


@contextlib.contextmanager
def trial_env(bootstrap: str, root: Path, exports: bool = True, broker: Any = None) -> Iterator[TrialEnv]:
    if not exports:
        yield TrialEnv(bootstrap, root, broker=broker)
        return
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield TrialEnv(bootstrap, root, instance, broker=broker)


__all__ = [
    "BIG",
    "SMALL",
    "Fleet",
    "Plan",
    "Step",
    "TrialEnv",
    "TrialError",
    "TrialResult",
    "Workload",
    "cleanup",
    "describe",
    "landed_count",
    "problems",
    "run_trial",
    "summary_markdown",
    "trial_env",
    "trial_markdown",
    "wait_for",
]
