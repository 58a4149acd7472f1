"""Per-call policies: rate limits, the load quota and injected faults.

Each policy owns its lock, so request threads only serialise on short
bookkeeping, never on row generation or sleeps. Time comes from an injected
monotonic clock so tests can drive windows and refills deterministically.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reporting_assets.sandbox.config import FaultSpec

Clock = Callable[[], float]


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`; starts full."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 if one is now); refills first."""
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class Refusal:
    """Why and for how long a call is refused."""

    retry_after_s: int
    scope: str  # "per-site" or "global"


class RateLimiter:
    """A global bucket for all API calls plus one bucket per site."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._per_site_qps: float | None = None
        self._global_qps: float | None = None
        self._burst: float | None = None
        self._global: TokenBucket | None = None
        self._sites: dict[str, TokenBucket] = {}

    def configure(self, per_site_qps: float | None, global_qps: float | None, burst: float | None) -> None:
        """Apply new limits; all buckets restart full."""
        with self._lock:
            self._per_site_qps, self._global_qps, self._burst = per_site_qps, global_qps, burst
            self._global = (
                None if global_qps is None else TokenBucket(global_qps, self._capacity(global_qps), self._clock())
            )
            self._sites = {}

    def _capacity(self, qps: float) -> float:
        return self._burst if self._burst is not None else max(1.0, qps)

    def try_acquire(self, site_url: str | None) -> Refusal | None:
        """Take a token from every bucket that applies, or none of them (a refused call is free)."""
        with self._lock:
            now = self._clock()
            buckets: list[tuple[str, TokenBucket]] = []
            if self._global is not None:
                buckets.append(("global", self._global))
            if site_url is not None and self._per_site_qps is not None:
                bucket = self._sites.get(site_url)
                if bucket is None:
                    bucket = self._sites[site_url] = TokenBucket(
                        self._per_site_qps, self._capacity(self._per_site_qps), now
                    )
                buckets.append(("per-site", bucket))
            waits = [(bucket.wait_time(now), scope) for scope, bucket in buckets]
            wait, scope = max(waits, default=(0.0, ""))
            if wait > 0.0:
                return Refusal(max(1, math.ceil(wait)), scope)
            for _scope, bucket in buckets:
                bucket.tokens -= 1.0
            return None


class LoadQuota:
    """Per site, at most `budget` expensive queries per fixed window of `window_s` seconds.

    A window opens with the first expensive query after the previous one ended.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._budget: int | None = None
        self._window_s = 60.0
        self._windows: dict[str, tuple[float, int]] = {}  # site -> (window start, used)

    def configure(self, budget: int | None, window_s: float) -> None:
        with self._lock:
            self._budget, self._window_s = budget, window_s
            self._windows = {}

    def try_consume(self, site_url: str) -> bool:
        """True (and one unit used) if the site still has budget in its current window."""
        with self._lock:
            if self._budget is None:
                return True
            now = self._clock()
            start, used = self._windows.get(site_url, (now, 0))
            if now - start >= self._window_s:
                start, used = now, 0
            if used >= self._budget:
                self._windows[site_url] = (start, used)
                return False
            self._windows[site_url] = (start, used + 1)
            return True


class FaultPicker:
    """Chooses which fault (if any) a searchAnalytics.query call gets.

    Probability draws come from a `random.Random(seed)` restarted whenever
    faults are (re)configured, so a given sequence of calls sees the same faults.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: tuple[FaultSpec, ...] = ()
        self._remaining: list[int | None] = []
        self._rng = random.Random(0)
        # Per fault, when it was first served: `for_s` counts from there, so an outage lasts that long
        # whenever the first call meets it (not from when it was set, which a slow start would eat up).
        self._first_served: list[float | None] = []

    def configure(self, faults: Sequence[FaultSpec], seed: int) -> None:
        with self._lock:
            self._faults = tuple(faults)
            self._remaining = [f.times for f in self._faults]
            self._rng = random.Random(seed)
            self._first_served = [None] * len(self._faults)

    def pick(self, site_url: str, start_row: int) -> FaultSpec | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.site_url is not None and fault.site_url != site_url:
                    continue
                if fault.start_row is not None and fault.start_row != start_row:
                    continue
                remaining = self._remaining[i]
                if remaining is not None and remaining <= 0:
                    continue
                first = self._first_served[i]
                if fault.for_s is not None and first is not None and time.monotonic() - first >= fault.for_s:
                    continue  # the outage is over
                if fault.probability is not None and self._rng.random() >= fault.probability:
                    continue
                if remaining is not None:
                    self._remaining[i] = remaining - 1
                if first is None:
                    self._first_served[i] = time.monotonic()
                return fault
            return None
