"""The Kafka-consuming download loop: poll -> pace -> call the partner -> validate -> land -> commit.

One consumer serves many accounts at once: a small pool of worker threads makes the calls, and a
scheduler in the polling thread hands them requests of whichever account may be called now, so an
account that waits (pace, Retry-After, load quota) never holds up the others on its Kafka partition.

Commit comes after landing (and after any continuation page, dead letter or delayed copy is
acknowledged by the broker), never before; commits are asynchronous, one at a time, so the polling
thread never waits for the broker while calls finish. Requests finish out of order, so each Kafka partition
commits up to its oldest unfinished offset, and a partition runs at most `window` offsets ahead
of it: a killed consumer re-issues at most the calls it had started and not yet committed.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from googleapiclient.errors import HttpError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from reporting_assets.core.landing import LandingZone
from reporting_assets.core.consumer.pacing import AccountPacer
from reporting_assets.core.messages import DeadLetter, DelayedRequest, InvalidRequestError, ReportRequest
from reporting_assets.core.partner import MalformedResponseError, http_error_reason, http_error_summary
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.kafka import subscribe

log = logging.getLogger(__name__)

MAX_SEEN_PER_PARTITION = 10_000  # copies come soon after the first; older ones meet the landing check
COMMIT_RETRY_S = 1.0  # after a commit failed because the broker was unreachable
CAUGHT_UP_TIMEOUT_MS = 5_000
COMMIT_ANSWER_TIMEOUT_S = 30.0  # an asynchronous commit unanswered this long is sent again
BUSY_WAIT_S = 0.01  # longest wait for a call to finish before polling the broker again
BUSY_POLL_EVERY_S = 0.05  # how often to poll while calls are in flight and enough records are buffered

REBALANCE_ERRORS = (
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
)


class PartnerClient(Protocol):
    def query(
        self, request: ReportRequest, on_throttled: Callable[[float | None], None] | None = None
    ) -> list[dict[str, Any]]: ...


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


class QuotaExhausted(Exception):
    """The partner's load quota refused the account: wait, do not hammer, do not dead-letter."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # landed | dead_lettered | delayed | retry | duplicate
    rows: int = 0
    continued: bool = False
    calls: int = 0
    reason: str = ""


class PartitionOffsets:
    """Offsets of one Kafka partition received and not yet finished, in arrival (= offset) order."""

    def __init__(self) -> None:
        self.open: dict[int, None] = {}
        self.next_offset = -1  # one past the highest offset received

    def receive(self, offset: int) -> None:
        self.open[offset] = None
        self.next_offset = max(self.next_offset, offset + 1)

    def finish(self, offset: int) -> None:
        self.open.pop(offset, None)

    def forget_from(self, offset: int) -> None:
        """Drop offsets >= offset (they will be fetched again after a seek)."""
        for pending in [o for o in self.open if o >= offset]:
            del self.open[pending]
        self.next_offset = min(self.next_offset, offset)

    def commit_point(self) -> int:
        return next(iter(self.open)) if self.open else self.next_offset


@dataclass
class Work:
    tp: TopicPartition
    offset: int
    record: Any
    request: ReportRequest
    throttled: int = 0  # times the partner still answered 429 after the client's own retries


class _NoteAssignments(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread, which must not block: only note what happened."""

    def __init__(self, loop: DownloadLoop) -> None:
        self._loop = loop

    def on_partitions_revoked(self, revoked: Any) -> None:
        # A rebalance has begun (kafka-python's protocol revokes every partition): start no new
        # call until the new assignment is known, or the new owners would make the same calls.
        if revoked:
            self._loop.rebalancing_since = self._loop._clock()

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._loop.assignments.append(set(assigned))
        self._loop.rebalancing_since = None


class DownloadLoop:
    def __init__(
        self,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        client_factory: Callable[[], PartnerClient],
        landing: LandingZone,
        settings: ConsumerSettings,
        clock: Callable[[], float] = time.monotonic,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.landing = landing
        self.settings = settings
        self.pacer = AccountPacer(settings.qps_per_account, global_qps=settings.global_qps)
        self.stats = ConsumerStats()
        self._client_factory = client_factory
        self._clients = threading.local()
        self._clock = clock
        self._should_stop = should_stop
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="download")
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        # Per partition, the (request id, chain, attempt) of requests taken since it was assigned:
        # a second copy of a continuation page (its parent page was processed twice) is skipped.
        self._seen: dict[TopicPartition, OrderedDict[tuple[str, str, int], None]] = {}
        self._pending: dict[str, deque[Work]] = {}  # account -> requests not yet started
        self._buffered = 0
        self._runnable: deque[str] = deque()
        self._queued: set[str] = set()
        self._sleeping: list[tuple[float, str]] = []  # (monotonic time, account)
        self._window_parked: dict[TopicPartition, set[str]] = {}
        self._in_flight: dict[Future, Work] = {}
        self._account_in_flight: Counter[str] = Counter()
        self._quota_until_ms: dict[str, int] = {}  # account -> epoch ms its load quota refills
        self._delayed_partitions: dict[TopicPartition, float] = {}  # paused until (monotonic)
        self._finished_since_commit = 0
        self._last_commit = clock()
        self._commit_retry_at = 0.0
        self._last_poll = clock()
        self._commit_sent: float | None = None  # when the unanswered asynchronous commit was sent
        self.assignments: deque[set[TopicPartition]] = deque()  # appended by the rebalance listener
        self.rebalancing_since: float | None = None  # set by the listener between revocation and assignment

    # ---- main loop ---------------------------------------------------------------------------

    def subscribe(self) -> None:
        topics = [self.settings.request_topic]
        if self.settings.delay_topic:
            topics.append(self.settings.delay_topic)
        subscribe(self.consumer, topics, listener=_NoteAssignments(self))

    def run(self) -> ConsumerStats:
        started = last_activity = self._clock()
        try:
            while True:
                now = self._clock()
                if self._should_stop():
                    self.stats.stopped_because = "asked to stop"
                    break
                if now - started >= self.settings.max_runtime_s:
                    self.stats.stopped_because = f"max runtime {self.settings.max_runtime_s:g}s reached"
                    break
                # Requests parked on the delay topic are work too: wait for them rather than stop.
                busy = bool(self._in_flight or self._buffered or self._delayed_partitions)
                joining = not self.consumer.assignment() and now - started < self.settings.join_grace_s
                if busy or joining:
                    last_activity = now
                elif now - last_activity >= self.settings.idle_timeout_s:
                    if self._caught_up():
                        self.stats.stopped_because = f"topic drained for {self.settings.idle_timeout_s:g}s"
                        break
                    last_activity = now  # quiet, but records are still there (slow fetches, a loaded broker)
                self._reap(block=False)
                self._resume_due_partitions()
                self._schedule()
                self._maybe_commit()
                if self._in_flight:
                    # Block on the calls, not on the broker: a poll that waits for records while a
                    # call finishes leaves a worker idle. Records arrive on kafka-python's IO thread
                    # meanwhile; with enough of them buffered, poll (a hand-off to that thread, slow
                    # while the workers hold the GIL) only now and then.
                    if self._buffered < self.settings.concurrency * 4 or now - self._last_poll >= BUSY_POLL_EVERY_S:
                        self._poll(timeout_ms=0)
                    self._reap(block=True, timeout=self._idle_wait_s(now))
                else:
                    self._poll(timeout_ms=10 if busy else self.settings.poll_timeout_ms)
        finally:
            self._finish_in_flight()
            self.commit()
            self._pool.shutdown(wait=True)
        return self.stats

    def _caught_up(self) -> bool:
        """Nothing is left for the group: this consumer's partitions are read to their end offsets,
        and every other partition of its topics is committed to its end.

        Checking only its own partitions, a consumer could stop while partitions were held by a
        member that no longer runs (a killed run's consumer, until its session expires) or were
        between owners, and the run would end with lag left (seen in CI: a resumed download stopped
        "drained" with one request never downloaded).
        """
        mine = self.consumer.assignment()
        own = [tp for tp in mine if tp not in self._delayed_partitions]
        try:
            others = [
                TopicPartition(topic, partition)
                for topic in sorted(self.consumer.subscription() or ())
                for partition in sorted(self.consumer.partitions_for_topic(topic) or ())
                if TopicPartition(topic, partition) not in mine
            ]
            if not own and not others:
                return True
            ends = self.consumer.end_offsets(own + others, timeout_ms=CAUGHT_UP_TIMEOUT_MS)
            if any(self.consumer.position(tp, timeout_ms=CAUGHT_UP_TIMEOUT_MS) < ends[tp] for tp in own):
                return False
            left = [tp for tp in others if ends[tp] > self._group_position(tp)]
        except kafka_errors.KafkaError as exc:
            # The broker does not answer (restarting?): not drained as far as we know; keep waiting.
            log.info("cannot tell whether the topic is drained: %s", exc)
            return False
        if left:
            log.info("own partitions done; waiting for %s, not yet committed to their end", _names(left))
        return not left

    def _group_position(self, tp: TopicPartition) -> int:
        """Where the group would start reading a partition it does not own here."""
        committed = self.consumer.committed(tp, timeout_ms=CAUGHT_UP_TIMEOUT_MS)
        if committed is not None:
            return committed
        return self.consumer.beginning_offsets([tp], timeout_ms=CAUGHT_UP_TIMEOUT_MS)[tp]

    def _poll(self, timeout_ms: int) -> None:
        full = self._buffered >= self.settings.max_buffered
        assigned = self.consumer.assignment()
        if full:
            self.consumer.pause(*assigned)
        else:
            self.consumer.resume(*[tp for tp in assigned if tp not in self._delayed_partitions])
        batch = self.consumer.poll(timeout_ms=timeout_ms, max_records=500)
        self._last_poll = self._clock()
        while self.assignments:
            assigned = self.assignments.popleft()
            self.release_partitions(set(self._offsets) - assigned)
            # Fetch positions may have moved past records this consumer skipped or dropped during the
            # rebalance: start each kept partition again at its commit point (what we hold is skipped).
            for tp in assigned & set(self._offsets):
                if self._offsets[tp].next_offset >= 0 and tp not in self._delayed_partitions:
                    self.consumer.seek(tp, self._offsets[tp].commit_point())
        owned = self.consumer.assignment()
        for tp, records in batch.items():
            if tp not in owned:
                continue
            if tp.topic == self.settings.delay_topic:
                self._take_delayed(tp, records)
            else:
                for record in records:
                    self._take(tp, record)

    # ---- taking records ----------------------------------------------------------------------

    def _offsets_of(self, tp: TopicPartition) -> PartitionOffsets:
        offsets = self._offsets.get(tp)
        if offsets is None:
            offsets = self._offsets[tp] = PartitionOffsets()
        return offsets

    def _take(self, tp: TopicPartition, record: Any) -> None:
        offsets = self._offsets_of(tp)
        if record.offset < offsets.next_offset:
            return  # fetched again after a rebalance: already finished, buffered or in flight here
        self.stats.consumed += 1
        offsets.receive(record.offset)
        try:
            request = ReportRequest.decode(record.value)
        except InvalidRequestError as exc:
            # Poison message: straight to the dead-letter topic, the partition carries on.
            self.dead_letter(record, None, Failure("invalid_message", str(exc), attempts=0))
            self._finish(tp, record.offset)
            return
        if not request.chain:
            # A first page as enqueued: its message starts a chain that its continuation pages inherit.
            request = request.in_chain(f"{tp.partition}:{record.offset}:{record.timestamp}")
        if self._seen_before(tp, request):
            self.stats.duplicates += 1
            self._finish(tp, record.offset)
            return
        account = request.account
        self._pending.setdefault(account, deque()).append(Work(tp, record.offset, record, request))
        self._buffered += 1
        self._make_runnable(account)

    def _seen_before(self, tp: TopicPartition, request: ReportRequest) -> bool:
        """Whether another copy of this message (same chain, same call, same attempt) came before.

        Copies arise when a page is processed twice (a consumer killed or a partition moved after
        the page's continuation was sent but before its offset was committed): each processing sends
        the next page again. Fetching in offset order, the first copy is the one that runs.
        """
        seen = self._seen.setdefault(tp, OrderedDict())
        key = (request.request_id, request.chain, request.attempt)
        if key in seen:
            return True
        seen[key] = None
        if len(seen) > MAX_SEEN_PER_PARTITION:
            seen.popitem(last=False)  # older copies are still caught by the landing zone check
        return False

    def _take_delayed(self, tp: TopicPartition, records: list[Any]) -> None:
        """Release due requests from the delay topic; pause the partition at the first one not due."""
        now_ms = _epoch_ms()
        offsets = self._offsets_of(tp)
        for record in records:
            if record.offset < offsets.next_offset:
                continue
            self.stats.consumed += 1
            offsets.receive(record.offset)
            try:
                delayed = DelayedRequest.decode(record.value)
            except InvalidRequestError as exc:
                self.dead_letter(record, None, Failure("invalid_message", str(exc), attempts=0))
                self._finish(tp, record.offset)
                continue
            if delayed.due_at_ms > now_ms:
                offsets.forget_from(record.offset)
                self.consumer.seek(tp, record.offset)
                self.consumer.pause(tp)
                self._delayed_partitions[tp] = self._clock() + (delayed.due_at_ms - now_ms) / 1000
                return
            request = delayed.original_request()
            self.producer.send(self.settings.request_topic, key=request.key(), value=request.encode()).get(timeout=30)
            self.stats.released += 1
            self._finish(tp, record.offset)

    def _resume_due_partitions(self) -> None:
        now = self._clock()
        for tp, until in list(self._delayed_partitions.items()):
            if until <= now:
                del self._delayed_partitions[tp]
                self.consumer.resume(tp)

    # ---- scheduling --------------------------------------------------------------------------

    def _make_runnable(self, account: str) -> None:
        if account not in self._queued and self._pending.get(account):
            self._queued.add(account)
            self._runnable.append(account)

    def _schedule(self) -> None:
        now = self._clock()
        if self.assignments:
            return  # partitions changed hands: `_poll` releases the lost ones first
        since = self.rebalancing_since
        if since is not None and now - since < self.settings.join_grace_s:
            return  # a rebalance is under way (past join_grace_s, carry on rather than wait forever)
        while self._sleeping and self._sleeping[0][0] <= now:
            _, account = heapq.heappop(self._sleeping)
            self._queued.discard(account)
            self._make_runnable(account)
        for _ in range(len(self._runnable)):
            if len(self._in_flight) >= self.settings.concurrency:
                return
            account = self._runnable.popleft()
            self._queued.discard(account)
            queue = self._pending.get(account)
            if not queue:
                continue
            if self._account_in_flight[account] >= self.settings.max_in_flight_per_account:
                continue  # re-queued when one of its calls finishes
            work = queue[0]
            offsets = self._offsets_of(work.tp)
            if work.offset - offsets.commit_point() >= self.settings.window:
                self._window_parked.setdefault(work.tp, set()).add(account)
                continue  # re-queued when the partition's commit point moves
            if account in self._quota_until_ms and self._quota_until_ms[account] > _epoch_ms():
                queue.popleft()
                self._buffered -= 1
                self._submit(work, self._defer, self._quota_until_ms[account])
                self._make_runnable(account)
                continue
            wait_s = self.pacer.try_acquire(account)
            if wait_s > 0:
                self._queued.add(account)
                heapq.heappush(self._sleeping, (now + wait_s, account))
                continue
            queue.popleft()
            self._buffered -= 1
            self._submit(work, self._work)
            self._make_runnable(account)

    def _submit(self, work: Work, fn: Callable[..., Outcome], *args: Any) -> None:
        future = self._pool.submit(fn, work, *args)
        self._in_flight[future] = work
        self._account_in_flight[work.request.account] += 1

    def _idle_wait_s(self, now: float) -> float:
        """How long the loop may wait for a call to finish: until the next paced account is due."""
        wait_s = BUSY_WAIT_S
        if self._sleeping:
            wait_s = min(wait_s, max(0.0, self._sleeping[0][0] - now))
        return wait_s

    def _reap(self, block: bool, timeout: float | None = None) -> None:
        if not self._in_flight:
            return
        if block:
            done, _ = wait(list(self._in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            done = [future for future in self._in_flight if future.done()]
        for future in done:
            work = self._in_flight.pop(future)
            account = work.request.account
            self._account_in_flight[account] -= 1
            outcome = future.result()  # a landing error (disk, permissions) stops the consumer uncommitted
            self._record(outcome)
            if outcome.kind == "retry" and work.offset not in self._offsets_of(work.tp).open:
                pass  # its partition went to another consumer meanwhile, which fetches it again
            elif outcome.kind == "retry":
                work.throttled += 1
                self._pending.setdefault(account, deque()).appendleft(work)
                self._buffered += 1
            else:
                if outcome.kind == "delayed":
                    # Its copy comes back from the delay topic later: that one must run.
                    self._seen.get(work.tp, {}).pop((work.request.request_id, work.request.chain, work.request.attempt), None)
                self._finish(work.tp, work.offset)
            self._make_runnable(account)

    def _record(self, outcome: Outcome) -> None:
        self.stats.api_calls += outcome.calls
        if outcome.kind == "landed":
            self.stats.landed += 1
            self.stats.rows += outcome.rows
            self.stats.continued += int(outcome.continued)
        elif outcome.kind == "delayed":
            self.stats.delayed += 1
        elif outcome.kind == "retry":
            pass
        elif outcome.kind == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.dead_lettered += 1
            self.stats.dead_letter_reasons[outcome.reason] += 1

    def _finish(self, tp: TopicPartition, offset: int) -> None:
        offsets = self._offsets_of(tp)
        before = offsets.commit_point()
        offsets.finish(offset)
        self._finished_since_commit += 1
        if offsets.commit_point() != before:
            for account in self._window_parked.pop(tp, ()):
                self._make_runnable(account)

    # ---- work done in the pool ---------------------------------------------------------------

    def _client(self) -> PartnerClient:
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = self._client_factory()
        return client

    def _work(self, work: Work) -> Outcome:
        request = work.request
        if self.landing.landed_in_chain(request):
            # Another copy of this message already landed the page (and sent its continuation first).
            return Outcome("duplicate")
        try:
            rows, calls = self.download(request)
        except Failure as failure:
            self.dead_letter(work.record, request, failure)
            return Outcome("dead_lettered", calls=failure.attempts, reason=failure.reason)
        except Throttled as throttled:
            if work.throttled + 1 >= self.settings.max_throttled:
                failure = Failure("rate_limited", throttled.error, throttled.calls, 429)
                self.dead_letter(work.record, request, failure)
                return Outcome("dead_lettered", calls=throttled.calls, reason=failure.reason)
            return Outcome("retry", calls=throttled.calls)
        except QuotaExhausted:
            until = _epoch_ms() + int(self.settings.quota_wait_s * 1000)
            self._quota_until_ms[request.account] = until
            if self.settings.delay_topic is None:
                failure = Failure("quota_exceeded", "load quota exceeded and no delay topic configured", 1, 403)
                self.dead_letter(work.record, request, failure)
                return Outcome("dead_lettered", calls=1, reason=failure.reason)
            return self._defer(work, until, calls=1)
        self.pacer.on_success(request.account)
        continued = self.land(request, rows)
        return Outcome("landed", rows=len(rows), continued=continued, calls=calls)

    def _defer(self, work: Work, until_ms: int, calls: int = 0) -> Outcome:
        """Park the request on the delay topic; the partition moves on without waiting."""
        assert self.settings.delay_topic is not None
        delayed = DelayedRequest(request=work.request.to_json(), due_at_ms=until_ms, reason="quota_exceeded")
        self.producer.send(self.settings.delay_topic, key=work.request.key(), value=delayed.encode()).get(timeout=30)
        return Outcome("delayed", calls=calls)

    def download(self, request: ReportRequest) -> tuple[list[dict[str, Any]], int]:
        attempts = 0
        client = self._client()

        def throttled(retry_after_s: float | None) -> None:
            self.stats.throttled += 1
            self.pacer.on_throttled(request.account, retry_after_s)

        while True:
            attempts += 1
            try:
                return client.query(request, on_throttled=throttled), attempts
            except HttpError as exc:
                if exc.status_code == 403 and http_error_reason(exc) == "quotaExceeded":
                    raise QuotaExhausted() from None
                if exc.status_code == 429:
                    raise Throttled(self.settings.client_retries + 1, http_error_summary(exc)) from None
                raise classify_http_error(exc, self.settings.client_retries) from None
            except (MalformedResponseError, ValueError) as exc:
                if attempts >= self.settings.max_attempts:
                    raise Failure("malformed_response", f"{type(exc).__name__}: {exc}", attempts) from None
            except (socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
                raise Failure(
                    "transport_error", f"{type(exc).__name__}: {exc}", self.settings.client_retries + 1
                ) from None
            time.sleep(self.settings.retry_backoff_s * 2 ** (attempts - 1))

    def land(self, request: ReportRequest, rows: list[dict[str, Any]]) -> bool:
        # The next page goes on the topic before this page lands (and before this offset is
        # committed): a page landed by this chain always has its continuation sent, so another
        # copy of this request can skip both (`landed_in_chain`).
        full = len(rows) >= request.row_limit
        if full:
            follow_up = request.next_page()
            self.producer.send(
                self.settings.request_topic, key=follow_up.key(), value=follow_up.encode()
            ).get(timeout=30)
        self.landing.land_page(request, rows)
        return full

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
        else:
            self.stats.dead_lettered += 1
            self.stats.dead_letter_reasons[failure.reason] += 1
        log.warning("dead-lettered %s: %s", request.request_id if request else f"offset {record.offset}", failure.error)

    # ---- commits and rebalances --------------------------------------------------------------

    def _maybe_commit(self) -> None:
        """Commit without waiting for the broker: one asynchronous commit at a time.

        While one is unanswered, finished offsets accumulate and go with the next one, so the
        polling thread never blocks on a commit round trip and commits batch themselves under load.
        """
        if self._commit_sent is not None and self._clock() - self._commit_sent < COMMIT_ANSWER_TIMEOUT_S:
            return
        if not self._finished_since_commit or self._clock() < self._commit_retry_at:
            return
        due = self._clock() - self._last_commit >= self.settings.commit_interval_s
        if self._finished_since_commit >= self.settings.commit_every or due:
            offsets = self._commit_points()
            self._finished_since_commit = 0
            self._last_commit = self._clock()
            if offsets:
                self._commit_sent = self._clock()
                self.consumer.commit_async(offsets, callback=self._on_commit_answer)

    def _on_commit_answer(self, offsets: dict[TopicPartition, OffsetAndMetadata], answer: Any) -> None:
        # kafka-python calls this on the polling thread, from inside `poll` or `commit`.
        self._commit_sent = None
        self._commit_answered(offsets, answer if isinstance(answer, Exception) else None)

    def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit and wait for the broker's answer (at the end of a run)."""
        offsets = self._commit_points(partitions)
        self._finished_since_commit = 0
        self._last_commit = self._clock()
        if offsets:
            error: Exception | None = None
            try:
                self.consumer.commit(offsets)
            except kafka_errors.KafkaError as exc:
                error = exc
            self._commit_answered(offsets, error)

    def _commit_points(self, partitions: set[TopicPartition] | None = None) -> dict[TopicPartition, OffsetAndMetadata]:
        return {
            tp: OffsetAndMetadata(state.commit_point(), "", -1)
            for tp, state in self._offsets.items()
            if state.next_offset >= 0 and (partitions is None or tp in partitions)
        }

    def _commit_answered(self, offsets: dict[TopicPartition, OffsetAndMetadata], error: Exception | None) -> None:
        if error is None:
            self.stats.commits += 1
        elif isinstance(error, REBALANCE_ERRORS):
            # Lost the partitions meanwhile; their new owner continues from the last good commit.
            log.info("commit skipped during a rebalance: %s", error)
        elif isinstance(error, kafka_errors.KafkaError) and error.retriable:
            # The broker is unreachable (restarting, say): keep working and commit again in a
            # moment; the commit points are kept, so the next commit covers these offsets too.
            log.warning("commit failed, retrying in %gs: %s", COMMIT_RETRY_S, error)
            self._commit_retry_at = self._clock() + COMMIT_RETRY_S
            self._finished_since_commit = max(1, self._finished_since_commit)
        else:
            raise error

    def _finish_in_flight(self) -> None:
        while self._in_flight:
            self._reap(block=True, timeout=1.0)

    def release_partitions(self, revoked: set[TopicPartition]) -> None:
        """After a rebalance: drop what was only buffered for partitions another consumer now owns.

        Their offsets were committed up to at most `commit_interval_s` ago; the new owner re-issues
        what finished since (landing is idempotent), and calls still in flight here finish harmlessly.
        """
        for account, queue in self._pending.items():
            kept = deque(work for work in queue if work.tp not in revoked)
            self._buffered -= len(queue) - len(kept)
            self._pending[account] = kept
        for tp in revoked:
            self._offsets[tp] = PartitionOffsets()  # nothing to commit for it any more
            self._seen.pop(tp, None)
            self._window_parked.pop(tp, None)
            self._delayed_partitions.pop(tp, None)


def classify_http_error(error: HttpError, client_retries: int) -> Failure:
    status = error.status_code
    summary = http_error_summary(error)
    if status >= 500:
        return Failure("server_error", summary, client_retries + 1, status)
    return Failure("client_error", summary, 1, status)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def _epoch_ms() -> int:
    return int(time.time() * 1000)


def _printable(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value[:4096].decode("utf-8", "replace")
