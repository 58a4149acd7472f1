"""Pacing: a token bucket per account that adapts to the partner's 429s, under a global budget.

Buckets never block: `try_acquire` answers how long to wait, so the scheduler can serve other
accounts meanwhile. The per-account rate starts at the configured QPS. A 429 marks the rate that
drew it as the account's ceiling and cuts the rate: -30 % the first time, -50 % when refused again
on the way back up, only -10 % when refused back near the ceiling (the limit is just under it).
Successes bring the rate back to 3 % under the ceiling, fast at first and slowly for the last 10 %,
and the ceiling itself creeps up very slowly. So a run against an unknown or lowered limit settles
just below it: few 429s, and little time spent far under the limit after each one. At most one cut
per second (or per Retry-After): the calls under way when the limit was hit answer 429 together
and count as one.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


def backoff_s(first_s: float, tries: int, rng: random.Random) -> float:
    """The wait before try `tries` + 1: `first_s` doubled each try, with equal jitter (half of it
    fixed, half random), so calls refused together do not come back together."""
    full = first_s * 2 ** max(0, tries - 1)
    return full / 2 + rng.uniform(0, full / 2)


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


CUT_COOLDOWN_S = 1.0  # at most one cut of an account's rate per this long (or per Retry-After)


class _Account:
    """One account's bucket, and its ceiling: the rate that drew the last 429 (None: none yet), creeping up."""

    __slots__ = ("bucket", "ceiling", "calm_at")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.ceiling: float | None = None
        self.calm_at = float("-inf")  # 429s before this answer calls sent before the last cut


class AccountPacer:
    """One adaptive bucket per account plus an optional global bucket; thread-safe."""

    def __init__(
        self,
        qps_per_account: float,
        burst: float = 1.0,
        global_qps: float | None = None,
        min_qps: float = 0.05,
        increase_per_success: float = 0.02,  # fraction of the current rate, below the ceiling
        first_cut: float = 0.7,  # the first 429: a configured pace is often just a little too high
        decrease_factor: float = 0.5,  # refused again on the way back up: the limit is further down
        recut_factor: float = 0.9,  # a cut after climbing back towards the ceiling: the limit is near
        ceiling_margin: float = 0.03,  # settle this fraction below the rate that drew a 429
        probe_per_success: float = 0.0001,  # the ceiling's growth a success (the limit may have risen)
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not qps_per_account > 0:
            raise ValueError(f"qps_per_account must be > 0, got {qps_per_account}")
        if global_qps is not None and not global_qps > 0:
            raise ValueError(f"global_qps must be > 0, got {global_qps}")
        for name, factor in (
            ("first_cut", first_cut),
            ("decrease_factor", decrease_factor),
            ("recut_factor", recut_factor),
        ):
            if not 0 < factor < 1:
                raise ValueError(f"{name} must be within (0, 1), got {factor}")
        if not 0 <= ceiling_margin < 1:
            raise ValueError(f"ceiling_margin must be within [0, 1), got {ceiling_margin}")
        self.qps_per_account = qps_per_account
        self.burst = burst
        self.min_qps = min(min_qps, qps_per_account)
        self.increase_per_success = increase_per_success
        self.first_cut = first_cut
        self.decrease_factor = decrease_factor
        self.recut_factor = recut_factor
        self.ceiling_margin = ceiling_margin
        self.probe_per_success = probe_per_success
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self._global = TokenBucket(global_qps, max(1.0, global_qps / 10), clock=clock) if global_qps else None
        self.throttled = 0

    def _account(self, account: str) -> _Account:
        state = self._accounts.get(account)
        if state is None:
            state = self._accounts[account] = _Account(TokenBucket(self.qps_per_account, self.burst, clock=self._clock))
        return state

    def try_acquire(self, account: str) -> float:
        """0 when a call for `account` may go now (tokens taken), else the seconds to wait."""
        with self._lock:
            bucket = self._account(account).bucket
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
            state = self._account(account)
            target = self.qps_per_account
            if state.ceiling is not None:
                state.ceiling = min(self.qps_per_account, state.ceiling * (1 + self.probe_per_success))
                target = state.ceiling * (1 - self.ceiling_margin)
            rate = state.bucket.rate
            if rate < target:
                # Quickly back to 90 % of the target, then slowly: a fast climb overshoots the limit
                # before the partner's burst runs dry, and the next 429 would set the ceiling too high.
                growth = self.increase_per_success if rate < 0.9 * target else self.increase_per_success / 10
                step = max(rate * growth, self.qps_per_account / 1000)
                state.bucket.set_rate(min(target, rate + step))

    def on_throttled(self, account: str, retry_after_s: float | None = None) -> None:
        """The partner answered 429: remember the rate as too high, slow down, wait out Retry-After."""
        with self._lock:
            self.throttled += 1
            state = self._account(account)
            now = self._clock()
            if now >= state.calm_at:
                # One cut per episode: the calls already under way when the limit was hit answer
                # 429 too, and must not cut the rate (and the ceiling) again.
                rate = state.bucket.rate
                # Back near the ceiling, the limit is just under it: cut a little. Refused on the way
                # up, the limit is further down: cut hard.
                if state.ceiling is None:
                    factor = self.first_cut
                elif rate >= 0.99 * state.ceiling * (1 - self.ceiling_margin):
                    factor = self.recut_factor
                else:
                    factor = self.decrease_factor
                state.ceiling = rate
                state.bucket.set_rate(max(self.min_qps, rate * factor))
                state.calm_at = now + max(CUT_COOLDOWN_S, retry_after_s or 0.0)
            if retry_after_s:
                state.bucket.hold_until(now + retry_after_s)

    def rate(self, account: str) -> float:
        with self._lock:
            return self._account(account).bucket.rate

    def rates(self) -> dict[str, float]:
        with self._lock:
            return {account: state.bucket.rate for account, state in self._accounts.items()}
