"""The Kafka-consuming download loop: poll -> call the partner -> validate -> land -> commit.

Commit comes after landing (and after any continuation page or dead letter is acknowledged by the
broker), never before: a killed consumer re-issues at most the requests it had in flight, and a new
run simply continues from the group's committed offsets.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from googleapiclient.errors import HttpError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from reporting_assets.consumer.landing import LandingZone
from reporting_assets.consumer.pacing import AccountPacer
from reporting_assets.messages import DeadLetter, InvalidRequestError, ReportRequest
from reporting_assets.resources.partner import MalformedResponseError, http_error_reason, http_error_summary

log = logging.getLogger(__name__)


class PartnerClient(Protocol):
    def query(self, request: ReportRequest) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ConsumerSettings:
    request_topic: str
    dead_letter_topic: str
    idle_timeout_s: float = 10.0
    max_runtime_s: float = 3_000.0
    qps_per_account: float = 10.0
    max_attempts: int = 3  # for malformed answers, which the client does not retry itself
    retry_backoff_s: float = 0.5
    commit_every: int = 1
    poll_timeout_ms: int = 500
    max_poll_records: int = 100
    client_retries: int = 5  # the partner client's num_retries, recorded in dead letters

    def __post_init__(self) -> None:
        checks = {
            "idle_timeout_s": self.idle_timeout_s >= 0,
            "max_runtime_s": self.max_runtime_s > 0,
            "qps_per_account": self.qps_per_account > 0,
            "max_attempts": self.max_attempts >= 1,
            "retry_backoff_s": self.retry_backoff_s >= 0,
            "commit_every": self.commit_every >= 1,
            "poll_timeout_ms": self.poll_timeout_ms > 0,
            "max_poll_records": self.max_poll_records >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"consumer setting {name}={getattr(self, name)!r} is out of range")


@dataclass
class ConsumerStats:
    consumed: int = 0
    landed: int = 0
    rows: int = 0
    continued: int = 0
    dead_lettered: int = 0
    api_calls: int = 0
    commits: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    stopped_because: str = ""

    def as_metadata(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "landed": self.landed,
            "rows": self.rows,
            "continued": self.continued,
            "dead_lettered": self.dead_lettered,
            "api_calls": self.api_calls,
            "commits": self.commits,
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "stopped_because": self.stopped_because,
        }


class Failure(Exception):
    """A request that will not succeed now; becomes a dead letter."""

    def __init__(self, reason: str, error: str, attempts: int, status: int | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.attempts = attempts
        self.status = status


class _CommitOnRevoke(ConsumerRebalanceListener):
    def __init__(self, loop: DownloadLoop) -> None:
        self._loop = loop

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._loop.commit_pending()

    def on_partitions_assigned(self, assigned: Any) -> None:
        pass


class DownloadLoop:
    def __init__(
        self,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        partner: PartnerClient,
        landing: LandingZone,
        settings: ConsumerSettings,
        clock: Callable[[], float] = time.monotonic,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.partner = partner
        self.landing = landing
        self.settings = settings
        self.pacer = AccountPacer(settings.qps_per_account)
        self.stats = ConsumerStats()
        self._clock = clock
        self._should_stop = should_stop
        self._pending: dict[TopicPartition, int] = {}
        self._uncommitted = 0

    def subscribe(self) -> None:
        self.consumer.subscribe([self.settings.request_topic], listener=_CommitOnRevoke(self))

    def run(self) -> ConsumerStats:
        started = last_record = self._clock()
        while True:
            now = self._clock()
            if self._should_stop():
                self.stats.stopped_because = "asked to stop"
                break
            if now - started >= self.settings.max_runtime_s:
                self.stats.stopped_because = f"max runtime {self.settings.max_runtime_s:g}s reached"
                break
            if now - last_record >= self.settings.idle_timeout_s:
                self.stats.stopped_because = f"topic drained for {self.settings.idle_timeout_s:g}s"
                break
            batch = self.consumer.poll(
                timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_poll_records
            )
            for tp, records in batch.items():
                for record in records:
                    self.process(tp, record)
                    last_record = self._clock()
            self.commit_pending()
        self.commit_pending()
        return self.stats

    def process(self, tp: TopicPartition, record: Any) -> None:
        """Handle one message to the end (landed, continued, or dead-lettered), then mark it done."""
        self.stats.consumed += 1
        try:
            request = ReportRequest.decode(record.value)
        except InvalidRequestError as exc:
            self.dead_letter(record, None, Failure("invalid_message", str(exc), attempts=0))
        else:
            try:
                rows = self.download(request)
            except Failure as failure:
                self.dead_letter(record, request, failure)
            else:
                self.land(request, rows)
        self._pending[tp] = record.offset + 1
        self._uncommitted += 1
        if self._uncommitted >= self.settings.commit_every:
            self.commit_pending()

    def download(self, request: ReportRequest) -> list[dict[str, Any]]:
        attempts = 0
        while True:
            attempts += 1
            self.pacer.acquire(request.account)
            self.stats.api_calls += 1
            try:
                return self.partner.query(request)
            except HttpError as exc:
                raise classify_http_error(exc, self.settings.client_retries) from None
            except (MalformedResponseError, ValueError) as exc:
                if attempts >= self.settings.max_attempts:
                    raise Failure("malformed_response", f"{type(exc).__name__}: {exc}", attempts) from None
            except (socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
                raise Failure(
                    "transport_error", f"{type(exc).__name__}: {exc}", self.settings.client_retries + 1
                ) from None
            time.sleep(self.settings.retry_backoff_s * 2 ** (attempts - 1))

    def land(self, request: ReportRequest, rows: list[dict[str, Any]]) -> None:
        self.landing.land_page(request, rows)
        self.stats.landed += 1
        self.stats.rows += len(rows)
        if len(rows) >= request.row_limit:
            # The next page must be on the topic before this offset is committed.
            follow_up = request.next_page()
            self.producer.send(self.settings.request_topic, key=follow_up.key(), value=follow_up.encode()).get(
                timeout=30
            )
            self.stats.continued += 1

    def dead_letter(self, record: Any, request: ReportRequest | None, failure: Failure) -> None:
        letter = DeadLetter(
            reason=failure.reason,
            error=failure.error,
            attempts=failure.attempts,
            status=failure.status,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            request=request.to_json() if request else None,
            raw_value=None if request else _printable(record.value),
            failed_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        self.producer.send(self.settings.dead_letter_topic, key=record.key, value=letter.encode()).get(timeout=30)
        if request is not None:
            self.landing.mark_dead_letter(request, letter)
        self.stats.dead_lettered += 1
        self.stats.dead_letter_reasons[failure.reason] += 1
        log.warning("dead-lettered %s: %s", request.request_id if request else f"offset {record.offset}", failure.error)

    def commit_pending(self) -> None:
        if not self._pending:
            return
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._pending.items()}
        self.consumer.commit(offsets)
        self._pending.clear()
        self._uncommitted = 0
        self.stats.commits += 1


def classify_http_error(error: HttpError, client_retries: int) -> Failure:
    status = error.status_code
    summary = http_error_summary(error)
    reason = http_error_reason(error)
    if status == 429 or status >= 500:
        return Failure("server_error" if status >= 500 else "rate_limited", summary, client_retries + 1, status)
    if status == 403 and reason == "quotaExceeded":
        return Failure("quota_exceeded", summary, 1, status)
    return Failure("client_error", summary, 1, status)


def _printable(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value[:4096].decode("utf-8", "replace")
