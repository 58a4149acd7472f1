"""What the download loop hands its worker threads, what comes back, and what it counts.

A `Work` is one fetched request; the function run in the pool returns an `Outcome` (never raises
for a request that failed: the failure becomes a dead letter, a delayed copy or a retry), which the
polling thread reads to decide whether the request's offset is finished and to count it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from googleapiclient.errors import HttpError
from kafka import TopicPartition

from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.partner import (
    DAILY_QUOTA_REASON,
    LOAD_QUOTA_REASON,
    THROTTLE_REASONS,
    Answer,
    credentials_refused,
    http_error_reason,
    http_error_summary,
    next_quota_day_ms,
    throttle_wait_s,
)


class PartnerClient(Protocol):
    def query(self, request: ReportRequest) -> Answer: ...


@dataclass
class Work:
    tp: TopicPartition
    offset: int
    record: Any  # the Kafka record, for a dead letter's source and raw value
    request: ReportRequest
    throttled: int = 0  # times the partner answered this copy with a throttle (429, 403 rate limit)
    failed: int = 0  # times its call failed transiently or its answer was malformed
    not_before: float = 0.0  # monotonic time before which the scheduler does not call again
    calls: int = 0  # calls made for this copy
    answer: Answer | None = None  # kept when the broker did not take what landing sends: land it, no new call


@dataclass(frozen=True)
class Outcome:
    kind: str  # landed | dead_lettered | delayed | retry | duplicate | auth_failed
    rows: int = 0
    continued: bool = False
    calls: int = 0
    reason: str = ""  # retry: throttled | transient | malformed | broker
    wait_s: float | None = None  # retry: the partner's Retry-After, if it gave one


class Failure(Exception):
    """A request that will not succeed now; becomes a dead letter."""

    def __init__(self, reason: str, error: str, attempts: int, status: int | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.attempts = attempts
        self.status = status


class Retry(Exception):
    """One call that may succeed if asked again: the scheduler decides when (no worker waits).

    `reason` is throttled (429, 403 rate limit), transient (5xx, timeout, unreachable host) or
    malformed (a 200 whose body is not a valid answer); `wait_s` is the partner's Retry-After.
    """

    def __init__(
        self, reason: str, error: str, failure: str, status: int | None = None, wait_s: float | None = None
    ) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.failure = failure  # the dead letter's reason once the tries are used up
        self.status = status
        self.wait_s = wait_s


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


def classify_http_error(error: HttpError) -> Exception:
    """What an error answer means for the request: stop, wait for a quota, ask again, or give up."""
    status = error.status_code
    summary = http_error_summary(error)
    reason = http_error_reason(error) if status == 403 else ""
    if status == 401:
        return PartnerAuthError(credentials_refused(summary))
    if reason == LOAD_QUOTA_REASON:
        return QuotaExhausted()
    if reason == DAILY_QUOTA_REASON:
        return QuotaExhausted("daily_quota_exceeded", next_quota_day_ms())
    if status == 429 or reason in THROTTLE_REASONS:
        return Retry("throttled", summary, "rate_limited", status, throttle_wait_s(error))
    if status >= 500:
        return Retry("transient", summary, "server_error", status)
    if reason in PERMISSION_REASONS:
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
    duplicates: int = 0  # copies of a request its download already landed: skipped, no API call
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    retry_reasons: Counter[str] = field(default_factory=Counter)  # asked again from memory, by why
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
        elif outcome.kind == "retry":
            self.retry_reasons[outcome.reason] += 1  # neither done nor failed: back in line
        elif outcome.kind == "auth_failed":
            pass  # left for the next run
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
            "retry_reasons": dict(self.retry_reasons),
            "stopped_because": self.stopped_because,
        }
