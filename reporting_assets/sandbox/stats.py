"""Counters describing what clients asked and what the sandbox answered."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any


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
