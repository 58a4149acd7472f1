"""What the download loop hands its worker threads, what comes back, and what it counts.

A `Work` is one fetched request; the function run in the pool returns an `Outcome` (never raises
for a request that failed: the failure becomes a dead letter, a delayed copy or a retry), which the
polling thread reads to decide whether the request's offset is finished and to count it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from googleapiclient.errors import HttpError
from kafka import TopicPartition

from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.partner import http_error_reason, http_error_summary


class PartnerClient(Protocol):
    def query(
        self, request: ReportRequest, on_throttled: Callable[[float | None], None] | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass
class Work:
    tp: TopicPartition
    offset: int
    record: Any  # the Kafka record, for a dead letter's source and raw value
    request: ReportRequest
    throttled: int = 0  # times the partner still answered 429 after the client's own retries


@dataclass(frozen=True)
class Outcome:
    kind: str  # landed | dead_lettered | delayed | retry | duplicate
    rows: int = 0
    continued: bool = False
    calls: int = 0
    reason: str = ""


class Failure(Exception):
    """A request that will not succeed now; becomes a dead letter."""

    def __init__(self, reason: str, error: str, attempts: int, status: int | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.attempts = attempts
        self.status = status


class Throttled(Exception):
    """429 even after the client's retries: the request goes back in line, the account slows down."""

    def __init__(self, calls: int, error: str) -> None:
        super().__init__(error)
        self.calls = calls
        self.error = error


class PartnerAuthError(RuntimeError):
    """The partner refused the credentials (a failed token refresh, HTTP 401): nothing can succeed.

    The run stops with this one line, naming the setting to fix; the request stays uncommitted and
    nothing is dead-lettered, so the next run with good credentials downloads it.
    """


class QuotaExhausted(Exception):
    """A partner quota refused the account: wait, do not hammer, do not dead-letter.

    `until_ms` is when it refills, where the partner says so (the daily quota, at Pacific midnight);
    None: the consumer's `quota_wait_s` (the load quota's ~15 minutes).
    """

    def __init__(self, reason: str = "quota_exceeded", until_ms: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.until_ms = until_ms


PERMISSION_REASONS = frozenset({"forbidden", "insufficientPermissions"})
# Failures that may pass by themselves: tried again from the delay topic before any dead letter.
TRANSIENT_REASONS = frozenset({"server_error", "transport_error"})


def classify_http_error(error: HttpError, client_retries: int) -> Failure:
    """What a dead letter says of an answer that cannot succeed as it is (or outlasted the retries)."""
    status = error.status_code
    summary = http_error_summary(error)
    if status >= 500:
        return Failure("server_error", summary, client_retries + 1, status)
    if status == 403 and http_error_reason(error) in PERMISSION_REASONS:
        return Failure("permission_denied", summary, 1, status)  # add the account to the property, re-drive
    if status == 404:
        return Failure("unknown_site", summary, 1, status)  # the property does not exist (any more)
    return Failure("client_error", summary, 1, status)


@dataclass
class ConsumerStats:
    consumed: int = 0
    landed: int = 0
    rows: int = 0
    continued: int = 0
    dead_lettered: int = 0
    delayed: int = 0
    released: int = 0
    api_calls: int = 0
    throttled: int = 0
    commits: int = 0
    duplicates: int = 0  # copies of a request this chain already landed: skipped, no API call
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    stopped_because: str = ""

    def record(self, outcome: Outcome) -> None:
        """Count the outcome of one request run in the pool."""
        self.api_calls += outcome.calls
        if outcome.kind == "landed":
            self.landed += 1
            self.rows += outcome.rows
            self.continued += int(outcome.continued)
        elif outcome.kind == "delayed":
            self.delayed += 1
        elif outcome.kind in ("retry", "auth_failed"):
            pass  # neither done nor failed: back in line, or left for the next run
        elif outcome.kind == "duplicate":
            self.duplicates += 1
        else:
            self.dead_lettered += 1
            self.dead_letter_reasons[outcome.reason] += 1

    def as_metadata(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "landed": self.landed,
            "rows": self.rows,
            "continued": self.continued,
            "dead_lettered": self.dead_lettered,
            "delayed": self.delayed,
            "released": self.released,
            "api_calls": self.api_calls,
            "throttled": self.throttled,
            "commits": self.commits,
            "duplicates": self.duplicates,
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "stopped_because": self.stopped_because,
        }
