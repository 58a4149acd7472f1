"""The commit point, the commit tracker's decisions, the per-account scheduler and the loop's poll cadence: pure logic, no broker."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka import errors as kafka_errors
from kafka.structs import OffsetAndMetadata

from reporting_assets.core.consumer.loop import BUSY_POLL_EVERY_S, DownloadLoop
from reporting_assets.core.consumer.offsets import (
    COMMIT_ANSWER_TIMEOUT_S,
    COMMIT_RETRY_S,
    CommitTracker,
    PartitionOffsets,
)
from reporting_assets.core.consumer.pacing import AccountPacer
from reporting_assets.core.consumer.scheduler import AccountScheduler, epoch_ms
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.consumer.work import Work
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import ReportRequest

TP = TopicPartition("requests", 0)
OTHER = TopicPartition("requests", 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- the commit point ------------------------------------------------------------------------

# (received offsets, then steps: ("finish", offset) or ("forget_from", offset)) -> offset to commit
COMMIT_POINTS = {
    "nothing received yet": ([], [], -1),
    "nothing finished": ([5, 6, 7], [], 5),
    "finished in order": ([5, 6, 7], [("finish", 5), ("finish", 6)], 7),
    "everything finished": ([5, 6, 7], [("finish", 5), ("finish", 6), ("finish", 7)], 8),
    "everything finished out of order": ([5, 6, 7], [("finish", 7), ("finish", 5), ("finish", 6)], 8),
    "later ones finished, the oldest not": ([5, 6, 7], [("finish", 7), ("finish", 6)], 5),
    "a gap": ([0, 1, 2, 3, 4], [("finish", 0), ("finish", 1), ("finish", 3)], 2),
    "the gap closes": ([0, 1, 2, 3, 4], [("finish", 0), ("finish", 1), ("finish", 3), ("finish", 2)], 4),
    "finished twice": ([0, 1, 2], [("finish", 0), ("finish", 0)], 1),
    "a later one finished twice": ([0, 1, 2], [("finish", 1), ("finish", 1)], 0),
    "finishing one never received": ([0, 1], [("finish", 9)], 0),
    "sparse offsets (compacted, transaction markers)": ([10, 12, 15], [("finish", 10)], 12),
    "sparse offsets all finished": ([10, 12, 15], [("finish", 12), ("finish", 15), ("finish", 10)], 16),
    "forget_from after a seek, older ones open": ([0, 1, 2, 3], [("finish", 0), ("forget_from", 2)], 1),
    "forget_from after a seek, older ones finished": (
        [0, 1, 2, 3],
        [("finish", 0), ("finish", 1), ("forget_from", 2)],
        2,
    ),
    "forget_from drops finished-out-of-order ones too": ([0, 1, 2, 3], [("finish", 3), ("forget_from", 1)], 0),
    "forget_from past what was received": ([0, 1], [("finish", 0), ("finish", 1), ("forget_from", 7)], 2),
    "forget_from everything": ([4, 5], [("forget_from", 4)], 4),
}


@pytest.mark.parametrize(("received", "steps", "expected"), COMMIT_POINTS.values(), ids=COMMIT_POINTS.keys())
def test_commit_point(received: list[int], steps: list[tuple[str, int]], expected: int):
    offsets = PartitionOffsets()
    for offset in received:
        offsets.receive(offset)
    for step, offset in steps:
        getattr(offsets, step)(offset)
    assert offsets.commit_point() == expected


def test_commit_point_after_forget_from_and_fetching_again():
    offsets = PartitionOffsets()
    for offset in range(4):
        offsets.receive(offset)
    offsets.finish(0)
    offsets.forget_from(2)  # paused at 2 and sought back: 2 and 3 come again
    offsets.finish(1)
    assert offsets.commit_point() == 2
    offsets.receive(2)
    offsets.receive(3)
    offsets.finish(3)
    assert offsets.commit_point() == 2
    offsets.finish(2)
    assert offsets.commit_point() == 4


# ---- the commit tracker ----------------------------------------------------------------------


class FakeConsumer:
    """The two commit calls of a KafkaConsumer: asynchronous ones wait until `answer` is called."""

    def __init__(self) -> None:
        self.sent: list[dict[TopicPartition, OffsetAndMetadata]] = []  # every commit, in order
        self.unanswered: list[tuple[Any, Any]] = []  # asynchronous commits: (offsets, callback)
        self.fail_with: Exception | None = None  # raised by the synchronous `commit`

    def commit_async(self, offsets: Any, callback: Any) -> None:
        self.sent.append(offsets)
        self.unanswered.append((offsets, callback))

    def commit(self, offsets: Any) -> None:
        self.sent.append(offsets)
        if self.fail_with is not None:
            raise self.fail_with

    def answer(self, answer: Any = None) -> None:
        """The broker answers the oldest asynchronous commit (a response, or an exception)."""
        offsets, callback = self.unanswered.pop(0)
        callback(offsets, answer)


def tracker(consumer: FakeConsumer, clock: FakeClock, commit_every: int = 1, commit_interval_s: float = 0.2):
    answers: list[Exception | None] = []
    commits = CommitTracker(
        consumer,
        commit_every=commit_every,
        commit_interval_s=commit_interval_s,
        clock=clock,
        on_answer=lambda offsets, error: answers.append(error),
    )
    return commits, answers


def points(*pairs: tuple[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in pairs}


def receive(commits: CommitTracker, tp: TopicPartition, *offsets: int) -> None:
    for offset in offsets:
        commits.of(tp).receive(offset)


def test_nothing_is_committed_until_something_finishes():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, _ = tracker(consumer, clock)
    commits.maybe_commit()
    receive(commits, TP, 0, 1)
    clock.now += 60
    commits.maybe_commit()
    commits.commit()  # nothing finished, but the end of a run commits what it holds
    assert consumer.sent == [points((TP, 0))]
    commits.maybe_commit()
    assert consumer.sent == [points((TP, 0))]


def test_one_asynchronous_commit_at_a_time_then_the_latest_points():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, answers = tracker(consumer, clock)
    receive(commits, TP, 0, 1, 2)
    receive(commits, OTHER, 7)  # received, not finished: committed at its oldest unfinished offset
    assert commits.finish(TP, 0) is True
    commits.maybe_commit()
    assert consumer.sent == [points((TP, 1), (OTHER, 7))]
    assert commits.finish(TP, 2) is False  # 1 is still open: the commit point stays
    assert commits.finish(TP, 1) is True
    clock.now += 10
    commits.maybe_commit()
    assert len(consumer.sent) == 1  # the first one is unanswered
    consumer.answer()
    assert answers == [None]
    commits.maybe_commit()
    assert consumer.sent[1:] == [points((TP, 3), (OTHER, 7))]


def test_an_unanswered_commit_is_sent_again_after_the_answer_timeout():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, _ = tracker(consumer, clock)
    receive(commits, TP, 0, 1)
    commits.finish(TP, 0)
    commits.maybe_commit()
    commits.finish(TP, 1)
    clock.now += COMMIT_ANSWER_TIMEOUT_S - 0.1
    commits.maybe_commit()
    assert len(consumer.sent) == 1
    clock.now += 0.1
    commits.maybe_commit()
    assert consumer.sent == [points((TP, 1)), points((TP, 2))]


def test_commits_batch_to_commit_every_or_the_interval():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, _ = tracker(consumer, clock, commit_every=3, commit_interval_s=5.0)
    receive(commits, TP, *range(6))
    commits.finish(TP, 0)
    commits.finish(TP, 1)
    commits.maybe_commit()
    assert consumer.sent == []
    commits.finish(TP, 2)
    commits.maybe_commit()
    assert consumer.sent == [points((TP, 3))]
    consumer.answer()
    commits.finish(TP, 3)
    clock.now += 4.9
    commits.maybe_commit()
    assert len(consumer.sent) == 1
    clock.now += 0.1
    commits.maybe_commit()
    assert consumer.sent[1:] == [points((TP, 4))]


def test_a_retriable_failure_keeps_the_points_and_retries():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, answers = tracker(consumer, clock)
    receive(commits, TP, 0, 1)
    commits.finish(TP, 0)
    commits.maybe_commit()
    error = kafka_errors.NodeNotReadyError("broker restarting")
    consumer.answer(error)
    assert answers == [error]
    commits.maybe_commit()
    clock.now += COMMIT_RETRY_S - 0.01
    commits.maybe_commit()
    assert len(consumer.sent) == 1  # not before the retry time
    clock.now += 0.01
    commits.maybe_commit()  # nothing finished since, and still committed again
    assert consumer.sent == [points((TP, 1)), points((TP, 1))]


def test_a_commit_refused_during_a_rebalance_is_sent_again_without_new_work():
    # Before: the refused points waited for another request to finish; a consumer whose last
    # requests finished inside the rebalance never committed them, and the group waited for its
    # partitions to be committed to their end until max_runtime_s.
    consumer, clock = FakeConsumer(), FakeClock()
    commits, answers = tracker(consumer, clock)
    receive(commits, TP, 0, 1)
    commits.finish(TP, 0)
    commits.finish(TP, 1)
    commits.maybe_commit()
    error = kafka_errors.CommitFailedError("generation moved on")
    consumer.answer(error)  # does not raise
    assert answers == [error]
    commits.maybe_commit()
    assert len(consumer.sent) == 1  # not at once: the rebalance is still under way
    clock.now += COMMIT_RETRY_S
    commits.maybe_commit()
    assert consumer.sent[1:] == [points((TP, 2))]  # the same points again, nothing new finished
    consumer.answer(None)
    clock.now += 60
    commits.maybe_commit()
    assert len(consumer.sent) == 2  # answered: nothing more to send


def test_after_a_refused_commit_only_the_partitions_still_held_are_sent_again():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, _ = tracker(consumer, clock)
    receive(commits, TP, 0)
    receive(commits, OTHER, 0)
    commits.finish(TP, 0)
    commits.finish(OTHER, 0)
    commits.maybe_commit()
    consumer.answer(kafka_errors.RebalanceInProgressError("rebalancing"))
    commits.reset(TP)  # the new assignment took TP away
    clock.now += COMMIT_RETRY_S
    commits.maybe_commit()
    assert consumer.sent[1:] == [points((OTHER, 1))]


def test_a_non_retriable_failure_raises():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, answers = tracker(consumer, clock)
    receive(commits, TP, 0)
    commits.finish(TP, 0)
    commits.maybe_commit()
    error = kafka_errors.GroupAuthorizationFailedError("not allowed")
    with pytest.raises(kafka_errors.GroupAuthorizationFailedError):
        consumer.answer(error)
    assert answers == [error]
    consumer.fail_with = kafka_errors.TopicAuthorizationFailedError("not allowed")
    with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
        commits.commit()


def test_a_synchronous_commit_of_some_partitions_and_a_released_one():
    consumer, clock = FakeConsumer(), FakeClock()
    commits, answers = tracker(consumer, clock)
    receive(commits, TP, 0, 1)
    receive(commits, OTHER, 5)
    commits.finish(TP, 0)
    commits.finish(OTHER, 5)
    commits.commit({OTHER})
    assert consumer.sent == [points((OTHER, 6))] and answers == [None]
    commits.reset(OTHER)  # now another consumer's: never committed from here again
    commits.commit()
    assert consumer.sent[1:] == [points((TP, 1))]
    consumer.fail_with = kafka_errors.RequestTimedOutError("slow broker")
    commits.commit()  # retriable: no raise, the next commit covers it
    assert answers[-1] is consumer.fail_with


# ---- the scheduler ---------------------------------------------------------------------------

A, B = "https://a.example.com/", "https://b.example.com/"


def work(tp: TopicPartition, offset: int, account: str) -> Work:
    request = ReportRequest(
        report="search_analytics", account=account, date="2026-11-02", dimensions=("date",), start_row=offset * 1000
    )
    return Work(tp, offset, None, request)


class FakePacer:
    """An `AccountPacer` whose waits are set by hand: none unless told."""

    def __init__(self) -> None:
        self.waits: dict[str, float] = {}

    def try_acquire(self, account: str) -> float:
        return self.waits.get(account, 0.0)


class Harness:
    """A scheduler with a pool of `slots` and commit points set by hand, as the loop drives it."""

    def __init__(self, qps: float | None = None, window: int = 100, per_account: int = 2, slots: int = 10) -> None:
        self.clock = FakeClock()
        # A real pacer saving up one call only: an account's second call waits for its pace.
        self.pacer = FakePacer() if qps is None else AccountPacer(qps_per_account=qps, burst=1, clock=self.clock)
        self.commit_points: dict[TopicPartition, int] = {TP: 0, OTHER: 0}
        self.in_flight: list[Work] = []
        self.slots = slots
        self.scheduler = AccountScheduler(
            self.pacer,
            window=window,
            max_in_flight_per_account=per_account,
            commit_point=lambda tp: self.commit_points[tp],
            has_room=lambda: len(self.in_flight) < self.slots,
        )

    def start(self) -> list[tuple[str, int, tuple[int, str] | None]]:
        started = []
        for item, defer_until_ms in self.scheduler.due(self.clock.now):
            self.in_flight.append(item)
            self.scheduler.started(item.request.account)
            started.append((item.request.account, item.offset, defer_until_ms))
        return started

    def reap(self, item: Work) -> None:
        self.in_flight.remove(item)
        self.scheduler.finished(item.request.account)
        self.scheduler.make_runnable(item.request.account)


def test_accounts_take_turns():
    harness = Harness(per_account=5)
    for offset, account in enumerate([A, A, A, B]):
        harness.scheduler.add(work(TP, offset, account))
    assert harness.scheduler.buffered == 4
    assert harness.start() == [(A, 0, None), (B, 3, None)]  # one per account and turn
    assert harness.start() == [(A, 1, None)]
    assert harness.start() == [(A, 2, None)]
    assert harness.scheduler.buffered == 0


def test_an_account_waiting_on_its_pace_does_not_hold_up_another():
    harness = Harness(qps=1.0)
    harness.scheduler.add(work(TP, 0, A))
    harness.scheduler.add(work(TP, 1, A))
    assert harness.start() == [(A, 0, None)]
    harness.scheduler.add(work(TP, 2, B))  # behind A's on the same partition
    assert harness.start() == [(B, 2, None)]  # A's next call is due in a second: B's goes first
    assert harness.scheduler.next_wake() == pytest.approx(101.0)
    harness.clock.now = 100.99
    assert harness.start() == []
    harness.clock.now = 101.0
    assert harness.start() == [(A, 1, None)]


def test_a_paced_account_sleeps_while_the_other_runs():
    harness = Harness()
    harness.pacer.waits[A] = 5.0
    harness.scheduler.add(work(TP, 0, A))  # first on the partition
    harness.scheduler.add(work(TP, 1, B))
    harness.scheduler.add(work(TP, 2, B))
    assert harness.start() == [(B, 1, None)]
    assert harness.scheduler.next_wake() == pytest.approx(105.0)
    harness.clock.now += 1
    assert harness.start() == [(B, 2, None)]  # A still sleeps; B carries on
    harness.pacer.waits.clear()
    assert harness.start() == []  # A is due at 105, not before
    harness.clock.now = 105.0
    assert harness.start() == [(A, 0, None)]
    assert harness.scheduler.next_wake() is None


def test_an_account_past_its_partitions_window_does_not_hold_up_another():
    harness = Harness(window=4)
    harness.scheduler.add(work(TP, 4, A))  # 4 offsets past the commit point: outside the window
    harness.scheduler.add(work(OTHER, 0, A))  # behind it in A's line
    harness.scheduler.add(work(TP, 1, B))
    assert harness.start() == [(B, 1, None)]
    assert harness.start() == []  # parked: not retried until the partition's commit point moves
    harness.commit_points[TP] = 1
    harness.scheduler.unpark(OTHER)  # another partition's commit point: A stays parked
    assert harness.start() == []
    harness.scheduler.unpark(TP)
    assert harness.start() == [(A, 4, None)]
    assert harness.start() == [(A, 0, None)]


def test_an_account_at_its_in_flight_cap_does_not_hold_up_another():
    harness = Harness(per_account=1)
    harness.scheduler.add(work(TP, 0, A))
    harness.scheduler.add(work(TP, 1, A))
    assert harness.start() == [(A, 0, None)]
    harness.scheduler.add(work(TP, 2, B))
    assert harness.start() == [(B, 2, None)]  # A's turn comes first, but its one call is under way
    assert harness.start() == []
    harness.reap(harness.in_flight[0])
    assert harness.start() == [(A, 1, None)]


def test_an_account_out_of_quota_is_deferred_and_another_is_called():
    harness = Harness()
    until = epoch_ms() + 60_000
    harness.scheduler.hold(A, until, "daily_quota_exceeded")
    harness.scheduler.add(work(TP, 0, A))
    harness.scheduler.add(work(TP, 1, B))
    assert harness.start() == [(A, 0, (until, "daily_quota_exceeded")), (B, 1, None)]  # which quota, too
    harness.scheduler.hold(A, until - 30_000, "quota_exceeded")  # a shorter hold does not cut the longer one
    harness.scheduler.add(work(TP, 2, A))
    assert harness.start() == [(A, 2, (until, "daily_quota_exceeded"))]

    lapsed = Harness()
    lapsed.scheduler.hold(A, epoch_ms() - 1, "quota_exceeded")  # refilled already
    lapsed.scheduler.add(work(TP, 3, A))
    assert lapsed.start() == [(A, 3, None)]


def test_a_full_pool_keeps_every_account_its_turn():
    harness = Harness(slots=1)
    harness.scheduler.add(work(TP, 0, A))
    harness.scheduler.add(work(TP, 1, B))
    assert harness.start() == [(A, 0, None)]
    assert harness.start() == []
    harness.reap(harness.in_flight[0])
    assert harness.start() == [(B, 1, None)]


def test_release_drops_the_revoked_partitions_requests():
    harness = Harness(per_account=1)
    harness.scheduler.add(work(TP, 0, A))
    harness.scheduler.add(work(TP, 1, A))
    harness.scheduler.add(work(OTHER, 0, A))
    harness.scheduler.add(work(TP, 2, B))
    harness.scheduler.add(work(OTHER, 1, B))
    assert harness.start() == [(A, 0, None), (B, 2, None)]
    harness.scheduler.release({TP})
    assert harness.scheduler.buffered == 2
    for item in list(harness.in_flight):  # calls under way finish, their accounts take turns again
        harness.reap(item)
    assert harness.start() == [(A, 0, None), (B, 1, None)]
    assert [item.tp for item in harness.in_flight] == [OTHER, OTHER]


def test_an_account_parked_on_a_revoked_partition_runs_its_other_requests():
    # B's next request is parked on TP's window; TP goes to another consumer. B's request on OTHER
    # must run (before the fix nothing made B runnable again: no call of its in flight, no new record
    # of it, so OTHER's commit point stalled and the run never drained).
    harness = Harness(window=1)
    harness.scheduler.add(work(TP, 0, A))
    harness.scheduler.add(work(TP, 3, B))
    harness.scheduler.add(work(OTHER, 0, B))
    assert harness.start() == [(A, 0, None)]
    harness.scheduler.release({TP})
    assert harness.start() == [(B, 0, None)]


# ---- when the loop polls while calls are in flight --------------------------------------------


class PollingConsumer(FakeConsumer):
    """The commit calls, and `resume` (a delayed partition's pause ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.resumed: list[TopicPartition] = []

    def resume(self, *partitions: TopicPartition) -> None:
        self.resumed.extend(partitions)


def busy_loop(tmp_path, clock: FakeClock, buffered: int) -> tuple[DownloadLoop, PollingConsumer]:
    consumer = PollingConsumer()
    settings = ConsumerSettings(request_topic="requests", dead_letter_topic="dead", concurrency=4)
    loop = DownloadLoop(consumer, None, lambda: None, LandingZone(tmp_path), settings, clock=clock)
    for offset in range(buffered):
        loop._scheduler.add(work(TP, offset, A))
    return loop, consumer


def test_a_busy_consumer_with_records_buffered_polls_only_now_and_then(tmp_path):
    # A poll is a hand-off to kafka-python's IO thread that waits for the GIL behind the workers:
    # polling every 50 ms made the polling thread spend a third of a run there (bench/profile.py).
    clock = FakeClock()
    loop, _ = busy_loop(tmp_path, clock, buffered=16)
    loop._last_poll = clock.now
    clock.now += 0.1
    assert not loop._poll_due(clock.now)
    clock.now += BUSY_POLL_EVERY_S
    assert loop._poll_due(clock.now)


def test_a_busy_consumer_polls_when_its_buffer_runs_low(tmp_path):
    clock = FakeClock()
    loop, _ = busy_loop(tmp_path, clock, buffered=15)  # under 4 per call in flight
    loop._last_poll = clock.now
    assert loop._poll_due(clock.now)


def test_a_busy_consumer_polls_for_an_awaited_commit_answer_every_commit_interval(tmp_path):
    # kafka-python reads a commit's answer inside poll, and no commit goes out before it is read.
    clock = FakeClock()
    loop, consumer = busy_loop(tmp_path, clock, buffered=16)
    loop._commits.of(TP).receive(0)
    loop._commits.finish(TP, 0)
    loop._commits.maybe_commit()
    assert len(consumer.unanswered) == 1
    loop._last_poll = clock.now
    clock.now += loop.settings.commit_interval_s * 0.9
    assert not loop._poll_due(clock.now)
    clock.now += loop.settings.commit_interval_s * 0.2
    assert loop._poll_due(clock.now)
    consumer.answer()
    assert not loop._poll_due(clock.now)  # answered: the next poll is due at BUSY_POLL_EVERY_S


def test_a_busy_consumer_polls_at_once_when_a_delayed_partition_resumes(tmp_path):
    clock = FakeClock()
    loop, consumer = busy_loop(tmp_path, clock, buffered=16)
    loop._delayed_partitions[OTHER] = clock.now + 5
    loop._last_poll = clock.now
    clock.now += 5
    loop._resume_due_partitions()
    assert consumer.resumed == [OTHER]
    assert loop._poll_due(clock.now)
