"""The Kafka-consuming download loop: poll -> pace -> call the partner -> validate -> land -> commit.

One consumer serves many accounts at once: a small pool of worker threads makes the calls, and a
scheduler in the polling thread hands them requests of whichever account may be called now, so an
account that waits (pace, Retry-After, load quota) never holds up the others on its Kafka partition.

Commit comes after landing (and after any continuation page, dead letter or delayed copy is
acknowledged by the broker), never before; commits are asynchronous, one at a time, so the polling
thread never waits for the broker while calls finish. Requests finish out of order, so each Kafka partition
commits up to its oldest unfinished offset, and a partition runs at most `window` offsets ahead
of it: a killed consumer re-issues at most the calls it had started and not yet committed.

The pieces: `offsets` (the commit point of each partition and the commits), `scheduler` (which
account's request starts next), `work` (what runs in the pool and what comes back), `drained`
(when the group has nothing left). This module composes them and does the work itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import google.auth.exceptions
import httplib2
from googleapiclient.errors import HttpError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError

from reporting_assets.core.connectors import connector_for
from reporting_assets.core.consumer.budget import GroupBudget
from reporting_assets.core.consumer.drained import group_caught_up
from reporting_assets.core.consumer.offsets import CommitTracker, Offsets, PartitionOffsets
from reporting_assets.core.consumer.pacing import AccountPacer, backoff_s
from reporting_assets.core.consumer.scheduler import AccountScheduler, epoch_ms
from reporting_assets.core.consumer.settled import GroupWatch
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.consumer.work import (
    ConsumerStats,
    Failure,
    Outcome,
    PartnerAuthError,
    PartnerClient,
    QuotaExhausted,
    Retry,
    Work,
)
from reporting_assets.core.kafka import subscribe
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import (
    DeadLetter,
    DelayedRequest,
    InvalidRequestError,
    ReportRequest,
    download_id_of_message,
)
from reporting_assets.core.partner import Answer, MalformedResponseError, credentials_refused
from reporting_assets.core.split import plan_split, reaches_cap, slice_requests

__all__ = ["ConsumerStats", "DownloadLoop", "PartnerClient"]

log = logging.getLogger(__name__)

MAX_SEEN_PER_PARTITION = 10_000  # copies come soon after the first; older ones meet the landing check
BUSY_WAIT_S = 0.01  # longest wait for a call to finish before polling the broker again
# While calls are in flight and enough records are buffered, poll only this often: a poll is a
# hand-off to kafka-python's IO thread that waits for the GIL behind the workers (7-16 ms measured
# with 4 of them), and the workers that finish meanwhile wait for the polling thread.
BUSY_POLL_EVERY_S = 0.5
# A send the broker did not acknowledge (it is down or electing a leader): try the request again
# this much later, its answer kept, so the outage costs no call and stops no consumer.
BROKER_RETRY_S = 1.0
SHARE_EVERY_S = 0.5  # how often the pacer takes this consumer's share of the group's budget
SHARE_CHANGE = 0.05  # a share closer than this to the current rate leaves the global bucket alone
SETTLE_CHECK_EVERY_S = 0.1  # how often to ask the broker whether the group has settled, at the start


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
        group_watch: GroupWatch | None = None,
        on_progress: Callable[[ConsumerStats], None] | None = None,
        group_budget: GroupBudget | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.landing = landing
        self.settings = settings
        # An even share of the group's budget until the budget reads the group's lag.
        share = settings.global_qps / settings.consumers if settings.global_qps else None
        self.pacer = AccountPacer(settings.qps_per_account, global_qps=share, max_qps=settings.global_qps)
        self._budget = group_budget
        self._next_share_at = clock()
        self.stats = ConsumerStats()
        self._client_factory = client_factory
        self._clients = threading.local()  # one partner client per worker thread
        self._clock = clock
        self._should_stop = should_stop
        self._on_progress = on_progress  # told the counters each turn of the loop (it decides when to report)
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="download")
        self._in_flight: dict[Future, Work] = {}  # calls submitted to the pool, not yet reaped
        # Finished calls, put by the worker that finished them: one queue read per turn of the loop
        # costs the polling thread less CPU than `concurrent.futures.wait` over every call in flight.
        self._done: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._commits = CommitTracker(
            consumer,
            commit_every=settings.commit_every,
            commit_interval_s=settings.commit_interval_s,
            clock=clock,
            on_answer=self._commit_answered,
        )
        self._scheduler = AccountScheduler(
            self.pacer,
            window=settings.window,
            max_in_flight_per_account=settings.max_in_flight_per_account,
            commit_point=lambda tp: self._commits.of(tp).commit_point(),
            has_room=lambda: len(self._in_flight) < self.settings.concurrency,
        )
        # Per partition, the (request id, download, attempt) of requests taken since it was assigned:
        # a second copy of a continuation page (its parent page was processed twice) is skipped.
        self._seen: dict[TopicPartition, OrderedDict[tuple[str, str, int], None]] = {}
        self._delayed_partitions: dict[TopicPartition, float] = {}  # paused until (monotonic)
        self._last_poll = clock()
        self._poll_soon = False  # a delayed partition resumed: its records come with the next poll
        self.assignments: deque[set[TopicPartition]] = deque()  # appended by the rebalance listener
        self.rebalancing_since: float | None = None  # set by the listener between revocation and assignment
        self._fatal: PartnerAuthError | None = None  # why the run must stop: raised once it has committed
        self._random = random.Random()  # the jitter of backoffs (polling thread only)
        # Until the run's whole group is in, no call starts (None: settled, or nobody to wait for).
        self._group_watch = group_watch
        self._started = clock()
        self._next_settle_check = self._started

    @property
    def _offsets(self) -> dict[TopicPartition, PartitionOffsets]:
        """Per partition, the offsets received and not yet finished (owned by the commit tracker)."""
        return self._commits.partitions

    # ---- main loop ---------------------------------------------------------------------------

    def subscribe(self) -> None:
        topics = [self.settings.request_topic]
        if self.settings.delay_topic:
            topics.append(self.settings.delay_topic)
        subscribe(self.consumer, topics, listener=_NoteAssignments(self))

    def run(self) -> ConsumerStats:
        started = last_activity = self._started = self._clock()
        if self._budget is not None:
            self._budget.start()
        try:
            while True:
                now = self._clock()
                if self._should_stop():
                    self.stats.stopped_because = "asked to stop"
                    break
                if self._fatal is not None:
                    self.stats.stopped_because = str(self._fatal)
                    break
                if now - started >= self.settings.max_runtime_s:
                    self.stats.stopped_because = f"max runtime {self.settings.max_runtime_s:g}s reached"
                    break
                # Requests parked on the delay topic are work too: wait for them rather than stop.
                busy = bool(self._in_flight or self._scheduler.buffered or self._delayed_partitions)
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
                self._take_budget_share(now)
                self._schedule()
                self._commits.maybe_commit()
                if self._on_progress is not None:
                    self._on_progress(self.stats)
                if self._in_flight:
                    # Block on the calls, not on the broker: a poll that waits for records while a
                    # call finishes leaves a worker idle. Records arrive on kafka-python's IO thread
                    # meanwhile; with enough of them buffered, poll (a hand-off to that thread, slow
                    # while the workers hold the GIL) only now and then.
                    if self._poll_due(now):
                        self._poll(timeout_ms=0)
                    self._reap(block=True, timeout=self._idle_wait_s(now))
                else:
                    self._poll(timeout_ms=10 if busy else self.settings.poll_timeout_ms)
        finally:
            if self._budget is not None:
                self._budget.close()
            self._finish_in_flight()
            self.commit()
            self._pool.shutdown(wait=True)
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def _take_budget_share(self, now: float) -> None:
        """This consumer's calls/s: its share of the group's budget, by the lag on its partitions."""
        if self._budget is None or now < self._next_share_at:
            return
        self._next_share_at = now + SHARE_EVERY_S
        share, current = self._budget.rate(self.consumer.assignment()), self.pacer.global_qps
        if current is not None and abs(share - current) > SHARE_CHANGE * current:
            self.pacer.set_global_qps(share)

    def _poll_due(self, now: float) -> bool:
        """While calls are in flight: whether to poll now rather than wait on the calls.

        Poll when the buffer runs low, when a delayed partition resumed (its records come with a
        poll), every `commit_interval_s` while a commit's answer is awaited (kafka-python reads it
        inside `poll`, and the next commit waits for it), and at least every BUSY_POLL_EVERY_S.
        """
        if self._scheduler.buffered < self.settings.concurrency * 4 or self._poll_soon:
            return True
        since = now - self._last_poll
        if self._commits.awaiting_answer_since(now) > 0 and since >= self.settings.commit_interval_s:
            return True
        return since >= BUSY_POLL_EVERY_S

    def _caught_up(self) -> bool:
        return group_caught_up(self.consumer, self._delayed_partitions)

    def _poll(self, timeout_ms: int) -> None:
        full = self._scheduler.buffered >= self.settings.max_buffered
        assigned = self.consumer.assignment()
        if full:
            self.consumer.pause(*assigned)
        else:
            self.consumer.resume(*[tp for tp in assigned if tp not in self._delayed_partitions])
        batch = self.consumer.poll(timeout_ms=timeout_ms, max_records=500)
        self._last_poll = self._clock()
        self._poll_soon = False
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

    def _take(self, tp: TopicPartition, record: Any) -> None:
        offsets = self._commits.of(tp)
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
        if not request.download:
            # A first page enqueued by hand, without a download id: its message names the download.
            request = request.in_download(download_id_of_message(tp.partition, record.offset, record.timestamp))
        if self._seen_before(tp, request):
            self.stats.duplicates += 1
            self._finish(tp, record.offset)
            return
        self._scheduler.add(Work(tp, record.offset, record, request))

    def _seen_before(self, tp: TopicPartition, request: ReportRequest) -> bool:
        """Whether another copy of this message (same download, same call, same attempt) came before.

        Copies arise when a page is processed twice (a consumer killed or a partition moved after
        the page's continuation was sent but before its offset was committed): each processing sends
        the next page again. Fetching in offset order, the first copy is the one that runs.
        """
        seen = self._seen.setdefault(tp, OrderedDict())
        key = (request.request_id, request.download, request.attempt)
        if key in seen:
            return True
        seen[key] = None
        if len(seen) > MAX_SEEN_PER_PARTITION:
            seen.popitem(last=False)  # older copies are still caught by the landing zone check
        return False

    def _take_delayed(self, tp: TopicPartition, records: list[Any]) -> None:
        """Release due requests from the delay topic; pause the partition at the first one not due."""
        now_ms = epoch_ms()
        offsets = self._commits.of(tp)
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
            try:
                self.producer.send(self.settings.request_topic, key=request.key(), value=request.encode()).get(
                    timeout=30
                )
            except KafkaError as exc:
                # The broker did not take it: fetch this record again at the next poll.
                log.warning("releasing %s: the broker did not take it (%s); trying again", request.request_id, exc)
                offsets.forget_from(record.offset)
                self.consumer.seek(tp, record.offset)
                return
            self.stats.released += 1
            self._finish(tp, record.offset)

    def _resume_due_partitions(self) -> None:
        now = self._clock()
        for tp, until in list(self._delayed_partitions.items()):
            if until <= now:
                del self._delayed_partitions[tp]
                self.consumer.resume(tp)
                self._poll_soon = True

    # ---- starting and reaping calls ----------------------------------------------------------

    def _schedule(self) -> None:
        now = self._clock()
        if self.assignments:
            return  # partitions changed hands: `_poll` releases the lost ones first
        since = self.rebalancing_since
        if since is not None and now - since < self.settings.join_grace_s:
            return  # a rebalance is under way (past join_grace_s, carry on rather than wait forever)
        if not self._group_settled(now):
            return
        for work, held in self._scheduler.due(now):
            if held is None:
                self._submit(work, self._work)
            else:
                until_ms, reason = held
                self._submit(work, self._defer, until_ms, 0, reason)

    def _group_settled(self, now: float) -> bool:
        """Whether the run's whole group is in (see `settled`), asked of the broker every 100 ms."""
        watch = self._group_watch
        if watch is None:
            return True
        waited = now - self._started
        if waited < self.settings.join_grace_s:
            if now < self._next_settle_check:
                return False
            self._next_settle_check = now + SETTLE_CHECK_EVERY_S
            if not watch.settled(self.consumer):
                return False
            log.info("group %s settled after %.1fs: calls start", watch.group_id, waited)
        else:
            log.warning("group %s not settled after %.0fs: calls start anyway", watch.group_id, waited)
        watch.close()
        self._group_watch = None
        return True

    def _submit(self, work: Work, fn: Callable[..., Outcome], *args: Any) -> None:
        future = self._pool.submit(fn, work, *args)
        self._in_flight[future] = work
        self._scheduler.started(work.request.account)
        future.add_done_callback(self._done.put)

    def _idle_wait_s(self, now: float) -> float:
        """How long the loop may wait for a call to finish: until the next paced account is due."""
        wait_s = BUSY_WAIT_S
        wake = self._scheduler.next_wake()
        if wake is not None:
            wait_s = min(wait_s, max(0.0, wake - now))
        return wait_s

    def _reap(self, block: bool, timeout: float | None = None) -> None:
        if not self._in_flight:
            return
        done: list[Future] = []
        if block:
            try:
                done.append(self._done.get(timeout=timeout))
            except queue.Empty:
                return
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        for future in done:
            work = self._in_flight.pop(future)
            account = work.request.account
            self._scheduler.finished(account)
            outcome = future.result()  # a landing error (disk, permissions) stops the consumer uncommitted
            self.stats.record(outcome)
            if outcome.kind == "retry" and work.offset not in self._commits.of(work.tp).open:
                pass  # its partition went to another consumer meanwhile, which fetches it again
            elif outcome.kind == "retry":
                self._retry_later(work, outcome)
            elif outcome.kind == "auth_failed":
                # Left open (uncommitted, not dead-lettered): the next run downloads it.
                self._fatal = self._fatal or PartnerAuthError(outcome.reason)
            else:
                if outcome.kind == "delayed":
                    # Its copy comes back from the delay topic later: that one must run.
                    self._seen.get(work.tp, {}).pop(
                        (work.request.request_id, work.request.download, work.request.attempt), None
                    )
                self._finish(work.tp, work.offset)
            self._scheduler.make_runnable(account)

    def _retry_later(self, work: Work, outcome: Outcome) -> None:
        """Back first in its account's line, not to be called before its wait is over."""
        if outcome.reason == "broker":
            tries = 1  # the partner is not at fault: no attempt is used up
        elif outcome.reason == "throttled":
            work.throttled += 1
            tries = work.throttled
            self.stats.throttled += 1
            self.pacer.on_throttled(work.request.account, outcome.wait_s)
        else:
            work.failed += 1
            tries = work.failed
        wait_s = outcome.wait_s
        if wait_s is None:
            wait_s = backoff_s(self.settings.retry_backoff_s, tries, self._random)
        work.not_before = self._clock() + min(wait_s, self.settings.max_retry_wait_s)
        self._scheduler.put_back(work)

    def _finish(self, tp: TopicPartition, offset: int) -> None:
        if self._commits.finish(tp, offset):
            self._scheduler.unpark(tp)

    def _finish_in_flight(self) -> None:
        while self._in_flight:
            self._reap(block=True, timeout=1.0)

    # ---- work done in the pool ---------------------------------------------------------------

    def _client(self) -> PartnerClient:
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = self._client_factory()
        return client

    def _work(self, work: Work) -> Outcome:
        calls_before = work.calls
        try:
            return self._call_and_land(work)
        except KafkaError as exc:
            # Nothing was landed, committed or lost: the request goes back in line (its answer, if
            # the call was made, with it) and the consumer carries on once the broker answers.
            log.warning("%s: the broker did not take a send (%s); trying again", work.request.request_id, exc)
            return Outcome("retry", calls=work.calls - calls_before, reason="broker", wait_s=BROKER_RETRY_S)

    def _call_and_land(self, work: Work) -> Outcome:
        request = work.request
        if work.answer is not None:
            continued = self.land(request, work.answer)
            return Outcome("landed", rows=len(work.answer.rows), continued=continued)
        if self.landing.landed_in_download(request):
            # Another copy of this message already landed the page (and sent its continuation first).
            return Outcome("duplicate")
        try:
            work.calls += 1
            answer = self.download(request)
        except Retry as retry:
            return self._retry_or_give_up(work, retry)
        except Failure as failure:
            self.dead_letter(work.record, request, failure)
            return Outcome("dead_lettered", calls=1, reason=failure.reason)
        except PartnerAuthError as refused:
            return Outcome("auth_failed", calls=1, reason=str(refused))
        except QuotaExhausted as exhausted:
            until = exhausted.until_ms or epoch_ms() + int(self.settings.quota_wait_s * 1000)
            self._scheduler.hold(request.account, until, exhausted.reason)
            if self.settings.delay_topic is None:
                failure = Failure(exhausted.reason, "quota exceeded and no delay topic configured", 1, 403)
                self.dead_letter(work.record, request, failure)
                return Outcome("dead_lettered", calls=1, reason=failure.reason)
            return self._defer(work, until, calls=1, reason=exhausted.reason)
        self.pacer.on_success(request.account)
        if answer.quota_spent is not None:
            # The answer says the account's quota is spent: its next calls wait, none is refused first.
            spent = answer.quota_spent
            until = spent.until_ms or epoch_ms() + int(self.settings.quota_wait_s * 1000)
            self._scheduler.hold(request.account, until, spent.reason)
        work.answer = answer
        continued = self.land(request, answer)
        return Outcome("landed", rows=len(answer.rows), continued=continued, calls=1)

    def _retry_or_give_up(self, work: Work, retry: Retry) -> Outcome:
        """Ask again from memory (the scheduler waits, no worker does), from the delay topic, or never."""
        request, settings = work.request, self.settings
        if retry.reason == "throttled":
            if work.throttled + 1 < settings.max_throttled:
                return Outcome("retry", calls=1, reason=retry.reason, wait_s=retry.wait_s)
            tries = work.throttled + 1
        elif work.failed + 1 < settings.max_attempts:
            log.info("%s: %s (%s); asking again", request.request_id, retry.reason, retry.error)
            return Outcome("retry", calls=1, reason=retry.reason)
        elif retry.reason == "transient" and settings.delay_topic and request.retries < len(settings.transient_waits_s):
            # The partner or the way to it is down: try again later, from the delay topic, so that
            # an outage of a few minutes dead-letters nothing and holds up no other account. The
            # account's other requests wait as long, parked without a call: an outage costs a few
            # calls per account, not a few per request.
            until = epoch_ms() + int(settings.transient_waits_s[request.retries] * 1000)
            reason = f"transient {retry.failure}"
            self._scheduler.hold(request.account, until, reason)
            return self._defer(work, until, calls=1, reason=reason, request=request.retried())
        else:
            tries = work.failed + 1
        failure = Failure(retry.failure, retry.error, tries, retry.status)
        self.dead_letter(work.record, request, failure)
        return Outcome("dead_lettered", calls=1, reason=failure.reason)

    def _defer(
        self,
        work: Work,
        until_ms: int,
        calls: int = 0,
        reason: str = "quota_exceeded",
        request: ReportRequest | None = None,
    ) -> Outcome:
        """Park the request (or `request`, its updated copy) on the delay topic; the partition moves on."""
        assert self.settings.delay_topic is not None
        parked = request or work.request
        delayed = DelayedRequest(request=parked.to_json(), due_at_ms=until_ms, reason=reason)
        self.producer.send(self.settings.delay_topic, key=parked.key(), value=delayed.encode()).get(timeout=30)
        # Its download's folder, before the offset is committed: a request done on the request topic
        # always leaves a trace of its download (a page, a dead-letter marker, or this awaited folder).
        self.landing.await_page(parked)
        return Outcome("delayed", calls=calls)

    def download(self, request: ReportRequest) -> Answer:
        """One call to the partner and its answer, validated; a failure is raised already classified."""
        try:
            return self._client().query(request)
        except (google.auth.exceptions.RefreshError, google.auth.exceptions.InvalidOperation) as exc:
            # A token refresh the partner refused, or credentials that cannot get one at all.
            raise PartnerAuthError(credentials_refused(f"{type(exc).__name__}: {exc}")) from None
        except HttpError as exc:
            raise connector_for(request.partner).classify(exc) from None
        except (MalformedResponseError, ValueError) as exc:
            raise Retry("malformed", f"{type(exc).__name__}: {exc}", "malformed_response") from None
        except (
            TimeoutError,
            ConnectionError,
            OSError,
            httplib2.HttpLib2Error,
            google.auth.exceptions.TransportError,
        ) as exc:
            # The network, the partner's host or its token endpoint did not answer (DNS included).
            raise Retry("transient", f"{type(exc).__name__}: {exc}", "transport_error") from None

    def land(self, request: ReportRequest, answer: Answer) -> bool:
        # The next page goes on the topic before this page lands (and before this offset is
        # committed): a page landed in this download always has its continuation sent, so another
        # copy of this request can skip both (`landed_in_download`).
        full = answer.more if answer.more is not None else len(answer.rows) >= request.row_limit
        splits = connector_for(request.partner).splits_at_row_cap
        if full and splits and reaches_cap(request, len(answer.rows), self.settings.row_cap):
            follow_ups = self._split(request, answer)
        elif full:
            follow_ups = [request.next_page()]
        else:
            follow_ups = []
        sent = [
            self.producer.send(self.settings.request_topic, key=follow_up.key(), value=follow_up.encode())
            for follow_up in follow_ups
        ]
        for future in sent:
            future.get(timeout=30)
        self.landing.land_page(request, answer.rows, provisional=answer.provisional, answer=answer)
        return full

    def _split(self, request: ReportRequest, answer: Answer) -> list[ReportRequest]:
        """A page past this one would be empty: its chain goes on as filtered slices, written down first.

        A copy of this request (redelivered before its page landed) finds the split already made and
        sends the same slices again, which the slices' own duplicate check then skips.
        """
        split = self.landing.split_of(request)
        if split is None:
            split = plan_split(request, answer.rows)
            self.landing.mark_split(request, split)
        if split.slices:
            log.info(
                "%s reached the row cap: split by %s into %d slices",
                request.request_id,
                split.dimension,
                len(split.slices),
            )
        else:
            log.warning("%s reached the row cap and no filter can split it further: truncated", request.request_id)
        return slice_requests(request, split)

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
            failed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        self.producer.send(self.settings.dead_letter_topic, key=record.key, value=letter.encode()).get(timeout=30)
        if request is not None:
            self.landing.mark_dead_letter(request, letter)
        else:
            self.stats.dead_lettered += 1
            self.stats.dead_letter_reasons[failure.reason] += 1
        log.warning("dead-lettered %s: %s", request.request_id if request else f"offset {record.offset}", failure.error)

    # ---- commits and rebalances --------------------------------------------------------------

    def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit and wait for the broker's answer (at the end of a run)."""
        self._commits.commit(partitions)

    def _commit_answered(self, offsets: Offsets, error: Exception | None) -> None:
        """Every commit answer, asynchronous or not, before the commit tracker acts on it."""
        if error is None:
            self.stats.commits += 1

    def release_partitions(self, revoked: set[TopicPartition]) -> None:
        """After a rebalance: drop what was only buffered for partitions another consumer now owns.

        Their offsets were committed up to at most `commit_interval_s` ago; the new owner re-issues
        what finished since (landing is idempotent), and calls still in flight here finish harmlessly.
        """
        self._scheduler.release(revoked)
        for tp in revoked:
            self._commits.reset(tp)  # nothing to commit for it any more
            self._seen.pop(tp, None)
            self._delayed_partitions.pop(tp, None)


def _printable(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value[:4096].decode("utf-8", "replace")
