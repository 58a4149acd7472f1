"""Progress of a download run, as one set of figures for the console and the Dagster UI.

Each consumer reports its own counters every few seconds (`ConsumerProgress`, from a
`ProgressReporter` the loop calls); the op records them as observations of `report_requests`, which
the UI plots over the run. The console reads those same observations back and adds what only the
topics know (`DownloadWatch`): requests done of the total, requests parked on the delay topic, and an
ETA from the measured pace, or from the partner's quota before there is one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from reporting_assets.core.consumer.work import ConsumerStats
from reporting_assets.core.cost import format_duration
from reporting_assets.core.kafka import TopicLag

RATE_WINDOW_S = 10.0  # the console's calls/s: over the last seconds, not since the start
REPORT_EVERY_S = 3.0  # how often a consumer records its counters: plotted points, not a log flood
COUNTERS = ("api_calls", "throttled", "landed", "rows", "dead_lettered")


@dataclass(frozen=True)
class ConsumerProgress:
    """One consumer's counters since it started, and its calls/s over the last interval."""

    consumer: int
    api_calls: int
    throttled: int  # calls answered 429 (or a 403 rate limit)
    landed: int
    rows: int
    dead_lettered: int
    calls_per_s: float

    def metadata(self) -> dict[str, Any]:
        """Observation metadata: one key per consumer and figure, so the UI plots a line for each."""
        prefix = f"consumer_{self.consumer}_"
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "consumer"}
        return {"consumer": f"consumer_{self.consumer}", **{prefix + name: value for name, value in values.items()}}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ConsumerProgress | None:
        """The progress an observation carries, or None for other observations (the lag sensor's)."""
        name = metadata.get("consumer")
        if not isinstance(name, str) or not name.startswith("consumer_"):
            return None
        try:
            index = int(name.removeprefix("consumer_"))
            prefix = f"consumer_{index}_"
            counts = {counter: int(metadata[prefix + counter]) for counter in COUNTERS}
            return cls(consumer=index, calls_per_s=float(metadata[prefix + "calls_per_s"]), **counts)
        except (KeyError, TypeError, ValueError):
            return None


class ProgressReporter:
    """Called by the consumer's loop as often as it likes; emits at most one report every `every_s`."""

    def __init__(
        self,
        consumer: int,
        emit: Callable[[ConsumerProgress], None],
        every_s: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._emit = emit
        self._every_s = every_s
        self._clock = clock
        self._last_at = clock()
        self._last_calls = 0

    def __call__(self, stats: ConsumerStats) -> None:
        if self._clock() - self._last_at >= self._every_s:
            self.report(stats)

    def report(self, stats: ConsumerStats) -> None:
        """Emit now (the loop's end calls it, so the last report has the final counts)."""
        now = self._clock()
        elapsed = now - self._last_at
        rate = (stats.api_calls - self._last_calls) / elapsed if elapsed > 0 else 0.0
        self._last_at, self._last_calls = now, stats.api_calls
        counts = {counter: getattr(stats, counter) for counter in COUNTERS}
        self._emit(ConsumerProgress(consumer=self._consumer, calls_per_s=round(rate, 2), **counts))


@dataclass(frozen=True)
class DownloadProgress:
    """The run's figures at one moment."""

    requests_done: int  # request messages committed since the run began, less those parked
    requests_total: int  # done + still on the request topic (pages found along the way add to it)
    delayed: int  # parked on the delay topic after a load-quota refusal
    api_calls: int
    throttled: int
    dead_lettered: int
    calls_per_s: float
    eta_s: float | None  # None: nothing left, or no pace known

    @property
    def complete(self) -> bool:
        return self.requests_total > 0 and self.requests_done >= self.requests_total and not self.delayed

    def line(self) -> str:
        eta = "" if self.eta_s is None else f", ETA {format_duration(self.eta_s)}"
        return (
            f"download: {self.requests_done}/{self.requests_total} requests, {self.api_calls} calls "
            f"({self.calls_per_s:.1f}/s), {self.throttled} throttled (429), {self.delayed} delayed, "
            f"{self.dead_lettered} dead letters{eta}"
        )


class DownloadWatch:
    """The group's progress from the topics' offsets and the consumers' latest reports.

    `lags` answers the request topic's and the delay topic's lag for the consumer group. The first
    reading is the baseline: what was committed then was done before this run.
    """

    def __init__(
        self,
        lags: Callable[[], tuple[TopicLag, int]],
        quota_qps: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lags = lags
        self._quota_qps = quota_qps
        self._clock = clock
        self._started = clock()
        requests, _ = lags()
        self._baseline = {p: lag.committed for p, lag in requests.partitions.items()}
        self._consumers: dict[int, ConsumerProgress] = {}
        self._calls_seen: deque[tuple[float, int]] = deque()  # (when, calls in all), over RATE_WINDOW_S

    def note(self, reports: Iterable[ConsumerProgress]) -> None:
        for report in reports:
            self._consumers[report.consumer] = report  # counters only grow: the newest one holds

    def progress(self) -> DownloadProgress:
        requests, delayed = self._lags()
        done = sum(max(lag.committed - self._baseline.get(p, 0), 0) for p, lag in requests.partitions.items())
        total = sum(max(lag.end - self._baseline.get(p, 0), 0) for p, lag in requests.partitions.items())
        done = max(done - delayed, 0)
        left = total - done
        elapsed = self._clock() - self._started
        pace = done / elapsed if done and elapsed > 0 else self._quota_qps  # requests/s
        reports = self._consumers.values()
        calls = sum(r.api_calls for r in reports)
        return DownloadProgress(
            requests_done=done,
            requests_total=total,
            delayed=delayed,
            api_calls=calls,
            throttled=sum(r.throttled for r in reports),
            dead_lettered=sum(r.dead_lettered for r in reports),
            calls_per_s=self._calls_per_s(calls),
            eta_s=left / pace if left and pace > 0 else None,
        )

    def _calls_per_s(self, calls: int) -> float:
        now = self._clock()
        self._calls_seen.append((now, calls))
        while len(self._calls_seen) > 2 and now - self._calls_seen[1][0] >= RATE_WINDOW_S:
            self._calls_seen.popleft()
        since, before = self._calls_seen[0]
        return (calls - before) / (now - since) if now > since else 0.0
