"""Where each Kafka partition may be committed, and the asynchronous commit of those points.

Requests finish out of order, so a partition commits up to its oldest unfinished offset (the gap
before it stays uncommitted): a consumer killed at any moment leaves the group to re-fetch only
what it had not finished. Commits go one at a time and never block the polling thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka import errors as kafka_errors
from kafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

COMMIT_RETRY_S = 1.0  # after a commit failed because the broker was unreachable
COMMIT_ANSWER_TIMEOUT_S = 30.0  # an asynchronous commit unanswered this long is sent again

REBALANCE_ERRORS = (
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
)

Offsets = dict[TopicPartition, OffsetAndMetadata]


class PartitionOffsets:
    """Offsets of one Kafka partition received and not yet finished, in arrival (= offset) order.

    The commit point is the oldest unfinished offset, or, with everything finished, one past the
    highest received: the offset the group must read next for nothing unfinished to be lost.
    """

    def __init__(self) -> None:
        # Received, not finished; a dict keeps arrival order, so the first key is the oldest.
        self.open: dict[int, None] = {}
        self.next_offset = -1  # one past the highest offset received; -1: nothing received yet

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


class CommitTracker:
    """The offsets of this consumer's partitions, and their commit.

    Asynchronous, one commit at a time: while one is unanswered, finished offsets accumulate and go
    with the next one, so the polling thread never waits on a commit round trip and commits batch
    themselves under load. Every answer goes to `on_answer` first (the loop counts commits there).
    """

    def __init__(
        self,
        consumer: Any,
        *,
        commit_every: int,
        commit_interval_s: float,
        clock: Callable[[], float],
        on_answer: Callable[[Offsets, Exception | None], None],
    ) -> None:
        self._consumer = consumer
        self._commit_every = commit_every
        self._commit_interval_s = commit_interval_s
        self._clock = clock
        self._on_answer = on_answer
        # Per partition held since its assignment; a partition never received from commits nothing.
        self.partitions: dict[TopicPartition, PartitionOffsets] = {}
        self.finished_since_commit = 0  # none: no commit (the last one already covered everything)
        self.last_commit = clock()  # when the commit points were last taken: commit_interval_s counts from it
        self.retry_at = 0.0  # after a retriable failure, no commit before this (monotonic)
        self.sent: float | None = None  # when the unanswered asynchronous commit was sent

    def of(self, tp: TopicPartition) -> PartitionOffsets:
        offsets = self.partitions.get(tp)
        if offsets is None:
            offsets = self.partitions[tp] = PartitionOffsets()
        return offsets

    def reset(self, tp: TopicPartition) -> None:
        """Forget a partition another consumer now owns: nothing to commit for it any more."""
        self.partitions[tp] = PartitionOffsets()

    def finish(self, tp: TopicPartition, offset: int) -> bool:
        """Mark an offset finished; whether the partition's commit point moved."""
        offsets = self.of(tp)
        before = offsets.commit_point()
        offsets.finish(offset)
        self.finished_since_commit += 1
        return offsets.commit_point() != before

    def points(self, partitions: set[TopicPartition] | None = None) -> Offsets:
        return {
            tp: OffsetAndMetadata(state.commit_point(), "", -1)
            for tp, state in self.partitions.items()
            if state.next_offset >= 0 and (partitions is None or tp in partitions)
        }

    def awaiting_answer_since(self, now: float) -> float:
        """Seconds the unanswered asynchronous commit has been out (0: none is)."""
        return 0.0 if self.sent is None else now - self.sent

    def maybe_commit(self) -> None:
        """Send an asynchronous commit if one is due and none is unanswered."""
        if self.sent is not None and self._clock() - self.sent < COMMIT_ANSWER_TIMEOUT_S:
            return
        if not self.finished_since_commit or self._clock() < self.retry_at:
            return
        due = self._clock() - self.last_commit >= self._commit_interval_s
        if self.finished_since_commit >= self._commit_every or due:
            offsets = self._take(None)
            if offsets:
                self.sent = self._clock()
                self._consumer.commit_async(offsets, callback=self._answered_async)

    def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit and wait for the broker's answer (at the end of a run)."""
        offsets = self._take(partitions)
        if offsets:
            error: Exception | None = None
            try:
                self._consumer.commit(offsets)
            except kafka_errors.KafkaError as exc:
                error = exc
            self._answered(offsets, error)

    def _take(self, partitions: set[TopicPartition] | None) -> Offsets:
        offsets = self.points(partitions)
        self.finished_since_commit = 0
        self.last_commit = self._clock()
        return offsets

    def _answered_async(self, offsets: Offsets, answer: Any) -> None:
        # kafka-python calls this on the polling thread, from inside `poll` or `commit`.
        self.sent = None
        self._answered(offsets, answer if isinstance(answer, Exception) else None)

    def _answered(self, offsets: Offsets, error: Exception | None) -> None:
        self._on_answer(offsets, error)
        if error is None:
            return
        if isinstance(error, REBALANCE_ERRORS):
            # The group is rebalancing. Partitions lost meanwhile are reset by the loop (their new
            # owner continues from the last good commit); those kept must still be committed, even
            # if no further request finishes here, or the group waits on them until max_runtime_s.
            log.info("commit refused during a rebalance, sending again in %gs: %s", COMMIT_RETRY_S, error)
            self.retry_at = self._clock() + COMMIT_RETRY_S
            self.finished_since_commit = max(1, self.finished_since_commit)
        elif isinstance(error, kafka_errors.KafkaError) and error.retriable:
            # The broker is unreachable (restarting, say): keep working and commit again in a
            # moment; the commit points are kept, so the next commit covers these offsets too.
            log.warning("commit failed, retrying in %gs: %s", COMMIT_RETRY_S, error)
            self.retry_at = self._clock() + COMMIT_RETRY_S
            self.finished_since_commit = max(1, self.finished_since_commit)
        else:
            raise error
