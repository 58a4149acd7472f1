"""Lag of the request topic: how much work is left, how old it is, and what is dead-lettered.

One measurement (`measure`) feeds the lag observation of `report_requests` (plotted by the UI)
and both asset checks, whether the lag sensor reports them each tick or someone executes the
checks from the UI. Metadata values are plain Python: numbers are plotted over time, text is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reporting_assets.core.kafka import KafkaCluster, KafkaTopicError, PartitionLag


@dataclass(frozen=True)
class LagLimits:
    max_messages: int
    max_age_s: float


@dataclass(frozen=True)
class LagSnapshot:
    request_topic: str
    consumer_group: str
    total: int
    partitions: dict[int, PartitionLag]
    delayed: int  # requests parked on the delay topic after a load-quota refusal (work not done either)
    oldest_age_s: float | None  # None without lag
    dead_letter_topic: str
    dead_letters_retained: int  # messages on the dead-letter topic (the record of what failed)
    dead_letters_pending: int  # of those, not re-driven yet
    measured_at: float

    def metadata(self) -> dict[str, Any]:
        return {
            "lag_total": self.total,
            "lag_by_partition": {
                str(p): {"end": v.end, "committed": v.committed, "lag": v.lag}
                for p, v in sorted(self.partitions.items())
            },
            "oldest_request_age_s": float(round(self.oldest_age_s or 0.0, 3)),
            "delayed_requests": self.delayed,
            "dead_letters_pending": self.dead_letters_pending,
            "dead_letters_retained": self.dead_letters_retained,
            "request_topic": self.request_topic,
            "consumer_group": self.consumer_group,
        }


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any]


def measure(kafka: KafkaCluster, now: Callable[[], float] = time.time) -> LagSnapshot:
    """Lag of the consumer group on the request topic, its oldest request, and the dead letters.

    Raises KafkaTopicError while the topics do not exist (nothing was ever enqueued).
    """
    lag = kafka.lag(kafka.request_topic)
    delayed = delayed_requests(kafka)
    oldest_ms = kafka.oldest_unconsumed_timestamp_ms(kafka.request_topic) if lag.total else None
    measured_at = now()
    dead_end = kafka.end_offsets(kafka.dead_letter_topic)
    dead_begin = kafka.beginning_offsets(kafka.dead_letter_topic)
    redriven = kafka.committed_offsets(kafka.dead_letter_topic, group_id=kafka.redrive_group)
    return LagSnapshot(
        request_topic=kafka.request_topic,
        consumer_group=kafka.consumer_group,
        total=lag.total,
        partitions=lag.partitions,
        delayed=delayed,
        oldest_age_s=None if oldest_ms is None else max(measured_at - oldest_ms / 1000, 0.0),
        dead_letter_topic=kafka.dead_letter_topic,
        dead_letters_retained=sum(max(dead_end[p] - dead_begin.get(p, 0), 0) for p in dead_end),
        dead_letters_pending=sum(max(dead_end[p] - max(redriven.get(p, 0), dead_begin.get(p, 0)), 0) for p in dead_end),
        measured_at=measured_at,
    )


def delayed_requests(kafka: KafkaCluster) -> int:
    """Requests parked on the delay topic, not done either (no delay topic yet: none)."""
    try:
        return kafka.lag(kafka.delay_topic).total
    except KafkaTopicError:
        return 0


def lag_check(snapshot: LagSnapshot, limits: LagLimits) -> CheckOutcome:
    age = snapshot.oldest_age_s or 0.0
    waiting = snapshot.total + snapshot.delayed
    too_many = waiting > limits.max_messages
    too_old = age > limits.max_age_s
    metadata = {
        "lag_total": snapshot.total,
        "delayed_requests": snapshot.delayed,
        "oldest_request_age_s": float(round(age, 3)),
        "limits": f"lag <= {limits.max_messages}, oldest request <= {limits.max_age_s:g}s",
    }
    if not (too_many or too_old):
        return CheckOutcome(
            True, f"{waiting} requests waiting (limit {limits.max_messages}), oldest {age:.0f}s old", metadata
        )
    reasons = []
    if too_many:
        parked = f", {snapshot.delayed} of them parked after load-quota refusals" if snapshot.delayed else ""
        reasons.append(f"{waiting} requests not done (limit {limits.max_messages}{parked})")
    if too_old:
        reasons.append(f"the oldest waiting request is {age:.0f}s old (limit {limits.max_age_s:g}s)")
    return CheckOutcome(
        False,
        f"{_sentence(' and '.join(reasons))} on {snapshot.request_topic}. The consumers are behind or not "
        "running: check that the launch_consumers_on_lag sensor is running and its download_requests runs "
        "succeed (their logs say why they stop); for a big backfill, start download_requests with more "
        "consumers, or raise REPORTING_LAG_MAX_MESSAGES / REPORTING_LAG_MAX_AGE_S if this lag is expected.",
        metadata,
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def dead_letter_check(snapshot: LagSnapshot) -> CheckOutcome:
    metadata = {
        "dead_letters_pending": snapshot.dead_letters_pending,
        "dead_letters_retained": snapshot.dead_letters_retained,
        "dead_letter_topic": snapshot.dead_letter_topic,
    }
    if not snapshot.dead_letters_pending:
        return CheckOutcome(True, f"no dead letters waiting on {snapshot.dead_letter_topic}", metadata)
    return CheckOutcome(
        False,
        f"{snapshot.dead_letters_pending} dead-lettered requests wait on {snapshot.dead_letter_topic}. "
        "Read their reason and error (the all_requests_landed check of downloaded_reports names the partitions), "
        "fix the cause, then run the redrive_dead_letters job; the sensors download the partitions again.",
        metadata,
    )
