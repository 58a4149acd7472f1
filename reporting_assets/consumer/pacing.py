"""Pacing: a token bucket per account that adapts to the partner's 429s, under a global budget.

Buckets never block: `try_acquire` answers how long to wait, so the scheduler can serve other
accounts meanwhile. The per-account rate starts at the configured QPS, halves on a 429
(multiplicative decrease) and creeps back up with each success (additive increase), so a run
against an unknown or lowered limit settles just below it instead of producing 429 storms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 calls/s, got {rate}")
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_acquire(self) -> float:
        """Take a token and return 0, or return the seconds until one is there (taking nothing)."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds waited."""
        waited = 0.0
        while (pause := self.try_acquire()) > 0:
            self._sleep(pause)
            waited += pause
        return waited

    def hold_until(self, moment: float) -> None:
        """No token before `moment` (a Retry-After)."""
        self._refill()
        seconds = moment - self._clock()
        if seconds > 0:
            self._tokens = min(self._tokens, 1 - seconds * self.rate)

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate


class AccountPacer:
    """One adaptive bucket per account plus an optional global bucket; thread-safe."""

    def __init__(
        self,
        qps_per_account: float,
        burst: float = 1.0,
        global_qps: float | None = None,
        min_qps: float = 0.05,
        increase_per_success: float | None = None,  # fraction of the current rate
        decrease_factor: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not qps_per_account > 0:
            raise ValueError(f"qps_per_account must be > 0, got {qps_per_account}")
        if global_qps is not None and not global_qps > 0:
            raise ValueError(f"global_qps must be > 0, got {global_qps}")
        if not 0 < decrease_factor < 1:
            raise ValueError(f"decrease_factor must be within (0, 1), got {decrease_factor}")
        self.qps_per_account = qps_per_account
        self.burst = burst
        self.min_qps = min(min_qps, qps_per_account)
        # Growth of 1.5 % a success: after a halving, ~46 calls pass before the next 429 (~2 %).
        self.increase_per_success = increase_per_success if increase_per_success is not None else 0.015
        self.decrease_factor = decrease_factor
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._global = TokenBucket(global_qps, max(1.0, global_qps / 10), clock=clock) if global_qps else None
        self.throttled = 0

    def _bucket(self, account: str) -> TokenBucket:
        bucket = self._buckets.get(account)
        if bucket is None:
            bucket = self._buckets[account] = TokenBucket(self.qps_per_account, self.burst, clock=self._clock)
        return bucket

    def try_acquire(self, account: str) -> float:
        """0 when a call for `account` may go now (tokens taken), else the seconds to wait."""
        with self._lock:
            bucket = self._bucket(account)
            wait = bucket.try_acquire()
            if wait > 0 or self._global is None:
                return wait
            global_wait = self._global.try_acquire()
            if global_wait > 0:
                bucket._tokens += 1  # give the account's token back: nothing was sent
            return global_wait

    def acquire(self, account: str) -> float:
        waited = 0.0
        while (pause := self.try_acquire(account)) > 0:
            time.sleep(pause)
            waited += pause
        return waited

    def on_success(self, account: str) -> None:
        with self._lock:
            bucket = self._bucket(account)
            if bucket.rate < self.qps_per_account:
                step = max(bucket.rate * self.increase_per_success, self.qps_per_account / 200)
                bucket.set_rate(min(self.qps_per_account, bucket.rate + step))

    def on_throttled(self, account: str, retry_after_s: float | None = None) -> None:
        """The partner answered 429: slow this account down, and wait out its Retry-After."""
        with self._lock:
            self.throttled += 1
            bucket = self._bucket(account)
            bucket.set_rate(max(self.min_qps, bucket.rate * self.decrease_factor))
            if retry_after_s:
                bucket.hold_until(self._clock() + retry_after_s)

    def rate(self, account: str) -> float:
        with self._lock:
            return self._bucket(account).rate
