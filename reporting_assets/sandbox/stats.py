"""Counters describing what clients asked and what the sandbox answered, and a timeline of the calls."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

TIMELINE_SIZE = 100_000  # answered calls kept for the timeline (older ones are dropped, and counted)


@dataclass(frozen=True)
class CallRecord:
    """What one API call was and how it ended."""

    method: str  # "sites.list", "sites.get", "searchanalytics.query" or "unknown"
    status: int
    site_url: str | None = None
    call_key: bytes | None = None  # digest of (site, canonical body) for query calls
    fault: str | None = None
    rows: int = 0
    success: bool = False  # a proper 200 data answer (not a 200 fault payload)
    quota_refused: bool = False


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._calls_total = 0
            self._by_site: Counter[str] = Counter()
            self._by_method: Counter[str] = Counter()
            self._status: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._quota_refused = 0
            self._rows = 0
            self._repeat_calls = 0
            self._repeat_successes = 0
            self._seen_calls: set[bytes] = set()
            self._seen_successes: set[bytes] = set()

    def record(self, call: CallRecord) -> None:
        with self._lock:
            self._calls_total += 1
            self._by_method[call.method] += 1
            self._status[str(call.status)] += 1
            if call.site_url is not None:
                self._by_site[call.site_url] += 1
            if call.fault is not None:
                self._faults[call.fault] += 1
            self._quota_refused += call.quota_refused
            if call.success:
                self._rows += call.rows
            if call.call_key is not None:
                self._count_repeats(call)

    def _count_repeats(self, call: CallRecord) -> None:
        key = call.call_key
        assert key is not None
        if key in self._seen_calls:
            self._repeat_calls += 1
        else:
            self._seen_calls.add(key)
        if call.success:
            if key in self._seen_successes:
                self._repeat_successes += 1
            else:
                self._seen_successes.add(key)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls_total": self._calls_total,
                "calls_by_site": dict(self._by_site),
                "calls_by_method": dict(self._by_method),
                "status_counts": dict(self._status),
                "rate_limited": self._status.get("429", 0),
                "quota_refused": self._quota_refused,
                "faults_served": dict(self._faults),
                "repeat_calls": self._repeat_calls,
                "repeat_successes": self._repeat_successes,
                "rows_served": self._rows,
            }


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """What a call asked for, as far as the request says (enough to match it to a page of a download)."""

    method: str
    site_url: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    start_row: int | None = None
    row_limit: int | None = None


class CallTimeline:
    """Calls received and not yet answered, and the answered ones in the order they were answered.

    Memory is bounded: the open calls are at most the server's handler threads, and the timeline
    keeps the last `size` answered calls (`dropped` says how many went before them).
    """

    def __init__(self, clock: Callable[[], float], size: int = TIMELINE_SIZE) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next_id = 0
        self._open: dict[int, tuple[CallIdentity, float]] = {}
        self._answered: deque[tuple[int, CallIdentity, float, float, int]] = deque(maxlen=size)
        self._dropped = 0

    def received(self, identity: CallIdentity) -> int:
        """Note a call as it arrives; returns its id, for `answered`."""
        with self._lock:
            self._next_id += 1
            self._open[self._next_id] = (identity, self._clock())
            return self._next_id

    def answered(self, call_id: int, status: int) -> None:
        """Note the call's answer (status 0: the connection was dropped without one)."""
        with self._lock:
            identity, received_at = self._open.pop(call_id)
            if len(self._answered) == self._answered.maxlen:
                self._dropped += 1
            self._answered.append((call_id, identity, received_at, self._clock(), status))

    def reset(self) -> None:
        """Forget the answered calls; open ones stay open (their answers are still to come)."""
        with self._lock:
            self._answered.clear()
            self._dropped = 0

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def snapshot(self) -> dict[str, Any]:
        """`now` (the sandbox's clock), the `open` calls and the `answered` ones, oldest answer first."""
        with self._lock:
            now = self._clock()
            open_calls = [_entry(i, identity, at, None, None) for i, (identity, at) in self._open.items()]
            answered = [_entry(*call) for call in self._answered]
            dropped = self._dropped
        return {"now": now, "open": open_calls, "answered": answered, "dropped": dropped}


def _entry(
    call_id: int, identity: CallIdentity, received_at: float, answered_at: float | None, status: int | None
) -> dict[str, Any]:
    return {"id": call_id, **asdict(identity), "received_at": received_at, "answered_at": answered_at, "status": status}


def open_at(calls: dict[str, Any], at: float) -> list[dict[str, Any]]:
    """From a `CallTimeline.snapshot` taken at or after `at`: the calls received by `at` and not answered by then."""
    still_open = [call for call in calls["open"] if call["received_at"] <= at]
    return still_open + [call for call in calls["answered"] if call["received_at"] <= at < call["answered_at"]]
