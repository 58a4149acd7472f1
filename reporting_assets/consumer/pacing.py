"""Per-account pacing: a token bucket per account, so one consumer never outruns a site's quota."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `acquire` waits for one."""

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

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds waited."""
        waited = 0.0
        self._refill()
        while self._tokens < 1:
            pause = (1 - self._tokens) / self.rate
            self._sleep(pause)
            waited += pause
            self._refill()
        self._tokens -= 1
        return waited


class AccountPacer:
    """One bucket per account, created on first use."""

    def __init__(self, qps_per_account: float, burst: float = 1.0) -> None:
        if not qps_per_account > 0:
            raise ValueError(f"qps_per_account must be > 0, got {qps_per_account}")
        self.qps_per_account = qps_per_account
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def acquire(self, account: str) -> float:
        bucket = self._buckets.get(account)
        if bucket is None:
            bucket = self._buckets[account] = TokenBucket(self.qps_per_account, self.burst)
        return bucket.acquire()
