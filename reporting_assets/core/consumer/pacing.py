"""Pacing: a token bucket per account that finds the partner's unknown limit, under a global budget.

Buckets never block: `try_acquire` answers how long to wait, so the scheduler can serve other
accounts meanwhile. The per-account rate starts at the configured QPS and adapts both ways, since
a pace below the limit wastes the quota as surely as one above it draws 429s:

- Up, only while the account's calls wait on its own bucket (demand: an idle account, or one held
  back by the global budget, never raises its rate) and no 429 came for a second. A rate never
  refused grows fast (+200 % a second): the limit is higher still. Under a ceiling (a rate that
  drew a 429) it climbs back at 10 % a second, 1 % over the last 10 %, and the ceiling creeps up
  0.01 % a call (the limit may rise). An overshoot shows only once the partner's burst is spent,
  then costs a 429: hence the slow approach to a rate known to draw one.
- Down on a 429, to just under what the partner actually served since its bucket was last full:
  n calls in d seconds are its burst plus d seconds of its rate, and a per-minute quota lets about
  a second's worth come together, so its rate is about (n + 1) / (d + 1 s). A pace 5 × too high
  lands near the limit in one cut instead of a burst of 429s. With fewer than 3 calls behind it (a
  tiny partner burst) that says little: the first cut is -30 %; later ones -50 % when refused on
  the way back up, -10 % near the ceiling, never below what the partner served.

At most one cut per second (or per Retry-After): the calls under way when the limit was hit answer
429 together and count as one. The bucket saves up to two calls, so a call sent late (the loop
waking after its time) is made up rather than lost. The rate never exceeds `max_qps` (by default
the global budget, else 10 × the starting pace).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
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

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        self._refill()
        self.rate = rate
        if burst is not None:
            self.burst = burst
            self._tokens = min(self._tokens, burst)


CUT_COOLDOWN_S = 1.0  # at most one cut of an account's rate per this long (or per Retry-After)
PARTNER_BURST_S = 1.0  # the partner lets this long's worth of calls come together (its bucket)
MIN_SAMPLES = 3  # successes an estimate of the partner's rate needs; fewer tell only its burst
HISTORY = 1024  # successes remembered per account for that estimate


class _Account:
    """One account's bucket and what its calls taught: the ceiling (None: never refused yet), the
    successes since the last cut, and whether its calls have been waiting on the bucket."""

    __slots__ = ("bucket", "ceiling", "calm_at", "successes", "waited", "grown_at")

    def __init__(self, bucket: TokenBucket, now: float) -> None:
        self.bucket = bucket
        self.ceiling: float | None = None
        self.calm_at = float("-inf")  # 429s before this answer calls sent before the last cut
        self.successes: deque[float] = deque(maxlen=HISTORY)
        self.waited = False  # a call waited on this bucket since the last success: there is demand
        self.grown_at = now


def served_rate(successes: deque[float], now: float, burst_s: float = PARTNER_BURST_S) -> float:
    """The partner's rate, from the calls that emptied its bucket: the n successes and the refused call
    in the d seconds since it was last full are its burst (`burst_s` of its rate) plus d seconds of it,
    so rate = (n + 1) / (d + burst_s). The best of every possible start: before it, the bucket was
    still full (the calls slower than the partner's rate)."""
    best, count = 0.0, len(successes)
    for i, at in enumerate(successes):
        best = max(best, (count - i + 1) / (now - at + burst_s))
    return best


def grown(rate: float, per_s: float, seconds: float) -> float:
    return rate * (1 + per_s * seconds)


class AccountPacer:
    """One adaptive bucket per account plus an optional global bucket; thread-safe."""

    def __init__(
        self,
        qps_per_account: float,
        burst: float = 2.0,
        global_qps: float | None = None,
        min_qps: float = 0.05,
        max_qps: float | None = None,  # None: the global budget, else 10 × the starting pace
        fast_growth_per_s: float = 2.0,  # never refused: the limit is higher still, find it fast
        climb_per_s: float = 0.1,  # back towards 90 % of the ceiling after a cut
        near_per_s: float = 0.01,  # the last 10 % below it: a fast climb would overshoot
        first_cut: float = 0.7,  # the first 429 (few successes to tell the partner's rate from)
        decrease_factor: float = 0.5,  # refused again on the way back up: the limit is further down
        recut_factor: float = 0.9,  # a cut after climbing back towards the ceiling: the limit is near
        ceiling_margin: float = 0.03,  # settle this fraction below the ceiling
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
        self.max_qps = max(qps_per_account, max_qps or global_qps or 10 * qps_per_account)
        self.fast_growth_per_s = fast_growth_per_s
        self.climb_per_s = climb_per_s
        self.near_per_s = near_per_s
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

    @property
    def global_qps(self) -> float | None:
        return self._global.rate if self._global is not None else None

    def set_global_qps(self, rate: float) -> None:
        """A new calls/s for the global bucket (this consumer's share of the group's budget changed)."""
        if not rate > 0:
            raise ValueError(f"global_qps must be > 0, got {rate}")
        with self._lock:
            if self._global is None:
                raise ValueError("this pacer has no global budget to change")
            self._global.set_rate(rate, burst=max(1.0, rate / 10))

    def _account(self, account: str) -> _Account:
        state = self._accounts.get(account)
        if state is None:
            bucket = TokenBucket(self.qps_per_account, self.burst, clock=self._clock)
            state = self._accounts[account] = _Account(bucket, self._clock())
        return state

    def try_acquire(self, account: str) -> float:
        """0 when a call for `account` may go now (tokens taken), else the seconds to wait."""
        with self._lock:
            state = self._account(account)
            wait = state.bucket.try_acquire()
            if wait > 0:
                state.waited = True
                return wait
            if self._global is None:
                return 0.0
            global_wait = self._global.try_acquire()
            if global_wait > 0:
                state.bucket._tokens += 1  # give the account's token back: nothing was sent
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
            now = self._clock()
            state.successes.append(now)
            # At most two calls' worth of growth a success: time spent idle is not time under demand.
            seconds, state.grown_at = min(now - state.grown_at, 2 / state.bucket.rate), now
            if not state.waited or now < state.calm_at:
                return  # no demand (nothing waited on the bucket), or just cut
            state.waited = False
            if state.ceiling is not None:
                state.ceiling = min(self.max_qps, state.ceiling * (1 + self.probe_per_success))
            state.bucket.set_rate(min(self.max_qps, self._raised(state.bucket.rate, state.ceiling, seconds)))

    def _raised(self, rate: float, ceiling: float | None, seconds: float) -> float:
        """The rate after `seconds` of calls that waited on it and drew no 429."""
        if ceiling is None:
            return grown(rate, self.fast_growth_per_s, seconds)
        target = ceiling * (1 - self.ceiling_margin)
        per_s = self.climb_per_s if rate < 0.9 * target else self.near_per_s
        return max(rate, min(target, grown(rate, per_s, seconds)))

    def on_throttled(self, account: str, retry_after_s: float | None = None) -> None:
        """The partner answered 429: slow down to what it served, remember the ceiling, wait out Retry-After."""
        with self._lock:
            self.throttled += 1
            state = self._account(account)
            now = self._clock()
            if now >= state.calm_at:
                # One cut per episode: the calls already under way when the limit was hit answer
                # 429 too, and must not cut the rate (and the ceiling) again.
                rate = state.bucket.rate
                ceiling, cut = self._cut(state, rate, now)
                state.ceiling = ceiling
                state.bucket.set_rate(max(self.min_qps, cut))
                state.calm_at = now + max(CUT_COOLDOWN_S, retry_after_s or 0.0)
                state.successes.clear()  # the partner's bucket is empty now: estimates start afresh
                state.waited = False
            if retry_after_s:
                state.bucket.hold_until(now + retry_after_s)

    def _cut(self, state: _Account, rate: float, now: float) -> tuple[float, float]:
        """The new ceiling and rate after a 429 at `rate`."""
        served = min(rate, served_rate(state.successes, now)) if len(state.successes) >= MIN_SAMPLES else None
        if state.ceiling is None and served is not None:
            # Refused for the first time, from a pace never refused (far above the limit, or climbing
            # to it from below): what the partner served is the best guess of its limit.
            return served, served * (1 - self.ceiling_margin)
        # Refused again, or too few successes to tell the partner's rate from its burst: back near
        # the ceiling, the limit is just under it (cut a little); refused on the way up, it is
        # further down (cut hard), though not below what the partner served.
        if state.ceiling is None:
            factor = self.first_cut
        elif rate >= 0.99 * state.ceiling * (1 - self.ceiling_margin):
            factor = self.recut_factor
        else:
            factor = self.decrease_factor
        cut = rate * factor
        if served is not None:
            cut = max(cut, served * (1 - self.ceiling_margin))
        return rate, cut

    def rate(self, account: str) -> float:
        with self._lock:
            return self._account(account).bucket.rate

    def rates(self) -> dict[str, float]:
        with self._lock:
            return {account: state.bucket.rate for account, state in self._accounts.items()}
