"""What every benchmark shares: the broker, topics of its own, the sandbox, consumer processes, the machine."""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import os
import platform
import queue
import resource
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.reports import get_report
from reporting_assets.resources.kafka import KafkaResource

REPORT = get_report("search_analytics")
FIRST_DATE = dt.date(2025, 1, 1)
SPAWN = multiprocessing.get_context("spawn")  # the driver runs the sandbox's threads: never fork it


def unique(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Bench:
    """One run of `python -m bench`: its mode, its broker, its scratch folder."""

    mode: str  # quick | full
    bootstrap: str
    workdir: Path
    logs: Path  # consumers' logs of the latest run (kept after the scratch folder is gone)

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def kafka(self, prefix: str, partitions: int) -> KafkaResource:
        """A KafkaResource with request, dead-letter and delay topics and a consumer group of its own."""
        topic = unique(prefix)
        kafka = KafkaResource(
            bootstrap_servers=self.bootstrap,
            request_topic=topic,
            dead_letter_topic=f"{topic}.dead-letter",
            delay_topic=f"{topic}.delayed",
            topic_partitions=partitions,
            consumer_group=f"{topic}-group",
            client_id=f"{topic}-client",
        )
        kafka.ensure_topics({kafka.request_topic: partitions, kafka.dead_letter_topic: 1, kafka.delay_topic: 1})
        return kafka

    def log_file(self, name: str) -> str:
        self.logs.mkdir(parents=True, exist_ok=True)
        return str(self.logs / f"{unique(name)}.log")

    def scratch(self, name: str) -> Path:
        path = self.workdir / unique(name)
        path.mkdir(parents=True)
        return path

    def delete_topics(self, kafka: KafkaResource) -> None:
        """Clean up after a benchmark (the broker's data dir goes at the end anyway)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-cleanup")
        try:
            with contextlib.suppress(Exception):
                admin.delete_topics([kafka.request_topic, kafka.dead_letter_topic, kafka.delay_topic])
        finally:
            admin.close()


# -- requests ------------------------------------------------------------------------------------------


def site_urls(count: int) -> list[str]:
    return [f"https://site{index:03d}.bench.example/" for index in range(count)]


def requests_for(accounts: Sequence[str], per_account: int, row_limit: int = 1_000) -> list[ReportRequest]:
    """`per_account` first-page requests (one date each) per account, interleaved like an enqueue of days."""
    return [
        REPORT.first_request(account, (FIRST_DATE + dt.timedelta(days=day)).isoformat(), row_limit=row_limit)
        for day in range(per_account)
        for account in accounts
    ]


def produce(kafka: KafkaResource, requests: Sequence[ReportRequest]) -> float:
    """Put the requests on the request topic (keyed by account, like the Spark sink); returns seconds.

    The seconds run from the first send to the last acknowledgement: the producer's start-up (its
    connection and the topic's metadata, ~0.1 s once per producer) is a fixed cost, like the
    consumer's group join, and is not spread over the requests.
    """
    producer = kafka.producer(linger_ms=20)
    try:
        producer.partitions_for(kafka.request_topic)  # waits for the topic's metadata
        started = time.perf_counter()
        for request in requests:
            producer.send(kafka.request_topic, key=request.key(), value=request.encode())
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


def partition_spread(accounts: Sequence[str], partitions: int) -> list[int]:
    """Accounts per Kafka partition under the default (murmur2) partitioner: the key hashing skew."""
    from kafka.partitioner.default import murmur2

    counts = [0] * partitions
    for account in accounts:
        counts[(murmur2(account.encode()) & 0x7FFFFFFF) % partitions] += 1
    return counts


# -- the landing zone ----------------------------------------------------------------------------------


def landed_files(root: Path) -> int:
    if not root.exists():
        return 0
    return sum(1 for path in root.rglob("*.parquet") if not path.name.startswith("."))


def landed_rows(root: Path) -> int:
    """Rows in the landing zone: each page once, however many times it was landed."""
    import pyarrow.parquet as pq

    if not root.exists():
        return 0
    return sum(pq.read_metadata(path).num_rows for path in root.rglob("*.parquet") if not path.name.startswith("."))


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(poll_s)


# -- processes -----------------------------------------------------------------------------------------


@dataclass
class Child:
    """A benchmark worker in its own process; its result (a dict) comes back through a queue."""

    process: Any
    queue: Any
    name: str = ""
    log: str | None = None

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            value = self.queue.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            raise TimeoutError(
                f"{self.name} gave no result within {timeout_s:.0f} s and was killed"
                + (f" (its log: {self.log})" if self.log else "")
            ) from None
        self.process.join(timeout=30)
        if isinstance(value, BaseException):
            raise value
        return value

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()  # SIGKILL: no finally blocks, no commit, no goodbye to the group
        self.process.join(timeout=30)


def _child_main(queue: Any, target: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> None:
    try:
        result = target(**kwargs)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result.setdefault("cpu_s", usage.ru_utime + usage.ru_stime)
        result.setdefault("max_rss_mb", usage.ru_maxrss / 1024)
        queue.put(result)
    except BaseException as error:  # the driver re-raises it
        queue.put(RuntimeError(f"{target.__name__} failed: {type(error).__name__}: {error}"))
        raise


def start_child(target: Callable[..., dict[str, Any]], **kwargs: Any) -> Child:
    results = SPAWN.Queue()
    process = SPAWN.Process(target=_child_main, args=(results, target, kwargs), daemon=True)
    process.start()
    return Child(process, results, target.__name__, kwargs.get("log_to"))


@contextlib.contextmanager
def children(targets: Sequence[tuple[Callable[..., dict[str, Any]], dict[str, Any]]]) -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        for target, kwargs in targets:
            started.append(start_child(target, **kwargs))
        yield started
    finally:
        for child in started:
            child.kill()


# -- the sandbox, sampled ----------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # epoch seconds
    calls: int
    ok: int
    throttled: int


@dataclass
class StatsSampler:
    """Samples the sandbox's counters every `every_s` on a thread, for rates over a steady window."""

    stats: Callable[[], dict[str, Any]]
    every_s: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StatsSampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.take()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.take()

    def take(self) -> None:
        snapshot = self.stats()
        ok = int(snapshot["status_counts"].get("200", 0))
        self.samples.append(Sample(time.time(), snapshot["calls_total"], ok, snapshot["rate_limited"]))

    def window(self, low: float, high: float, changes: Sequence[float] = ()) -> tuple[Sample, Sample] | None:
        """The steady window: from `low` of the final successes, and not before the last of `changes`
        (e.g. consumer group rebalances) that came before `high` of them, until `high`; None if none is left."""
        total = self.samples[-1].ok
        last = next(s for s in self.samples if s.ok >= high * total)
        settled = max((at for at in changes if at < last.at), default=0.0)
        first = next(s for s in self.samples if s.ok >= low * total and s.at >= settled)
        return (first, last) if first.at < last.at else None

    def busy_span(self) -> tuple[Sample, Sample]:
        """From the sample before the first call to the first sample with every success."""
        before = [s for s in self.samples if s.calls == 0]
        first = before[-1] if before else self.samples[0]
        total = self.samples[-1].ok
        last = next(s for s in self.samples if s.ok >= total)
        return first, last


def code_state(root: Path, files: Sequence[str]) -> dict[str, Any]:
    """The commit measured, and whether the files that decide the figures had uncommitted changes."""
    import hashlib

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else "unknown"

    changed = set(git("status", "--porcelain", "--", *files).splitlines())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "files": {
            name: {
                "sha256": hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]
                if (root / name).exists()
                else None,
                "uncommitted": any(line.endswith(name) for line in changed),
            }
            for name in files
        },
    }


# -- the machine -----------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    java = "not found"
    if shutil.which("java"):
        out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
        java = out[0].strip() if out else "unknown"
    from importlib.metadata import version

    packages = ", ".join(
        f"{name} {version(name)}" for name in ("dagster", "pyspark", "kafka-python", "duckdb", "pyarrow")
    )
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": java,
        "packages": packages,
    }
