"""Which fetched request starts next: per account, so an account that waits holds up no other.

Requests wait in one queue per account, in offset order. Accounts with requests take turns
(round-robin); an account drops out of the turns while it waits (its pace, its partition's window,
its calls in flight, the backoff or Retry-After of a request to ask again) and comes back when the
wait is over, so the requests of other accounts on the same Kafka partition keep going. This is the
one place a retry waits: the partner client makes one call per request and no worker sleeps.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator

from kafka import TopicPartition

from reporting_assets.core.consumer.pacing import AccountPacer
from reporting_assets.core.consumer.work import Work


class AccountScheduler:
    """The requests fetched and not yet started, and the turns of their accounts.

    Runs on the polling thread only, except `hold`, which worker threads call.
    """

    def __init__(
        self,
        pacer: AccountPacer,
        *,
        window: int,
        max_in_flight_per_account: int,
        commit_point: Callable[[TopicPartition], int],
        has_room: Callable[[], bool],
    ) -> None:
        self._pacer = pacer
        self._window = window
        self._max_in_flight = max_in_flight_per_account
        self._commit_point = commit_point  # of a partition, where its window starts
        self._has_room = has_room  # whether the pool may take one more call
        self.pending: dict[str, deque[Work]] = {}  # account -> requests not yet started
        self.buffered = 0  # requests in `pending`, all accounts: fetching pauses at max_buffered
        self._runnable: deque[str] = deque()  # accounts whose turn comes, in turn order
        self._queued: set[str] = set()  # accounts in `_runnable` or `_sleeping`: each in one, once
        self._sleeping: list[tuple[float, str]] = []  # heap of (monotonic time, account) waiting on their pace
        # Per partition, accounts whose next request is `window` offsets past its commit point.
        self._window_parked: dict[TopicPartition, set[str]] = {}
        self.in_flight: Counter[str] = Counter()  # account -> calls started, not yet reaped
        self._held: dict[str, tuple[int, str]] = {}  # account -> (epoch ms it may be called again, why)

    def add(self, work: Work) -> None:
        """A fetched request, behind its account's others."""
        account = work.request.account
        self.pending.setdefault(account, deque()).append(work)
        self.buffered += 1
        self.make_runnable(account)

    def put_back(self, work: Work) -> None:
        """A request to run again (throttled, failed transiently, malformed): first in its account's
        line, which waits until its `not_before`."""
        self.pending.setdefault(work.request.account, deque()).appendleft(work)
        self.buffered += 1

    def make_runnable(self, account: str) -> None:
        if account not in self._queued and self.pending.get(account):
            self._queued.add(account)
            self._runnable.append(account)

    def hold(self, account: str, until_ms: int, reason: str) -> None:
        """The account must not be called until then (a quota spent, the partner failing for it): its
        requests go to the delay topic meanwhile. The later of two holds stands."""
        current = self._held.get(account)
        if current is None or current[0] < until_ms:
            self._held[account] = (until_ms, reason)

    def due(self, now: float) -> Iterator[tuple[Work, tuple[int, str] | None]]:
        """Requests to start now, at most one per account and turn, while the pool has room.

        Each comes with None (call the partner) or the epoch ms to defer it to and the quota that
        is spent (its account's load or daily quota). The caller starts each before asking for the
        next (`started`).
        """
        while self._sleeping and self._sleeping[0][0] <= now:
            _, account = heapq.heappop(self._sleeping)
            self._queued.discard(account)
            self.make_runnable(account)
        for _ in range(len(self._runnable)):
            if not self._has_room():
                return
            account = self._runnable.popleft()
            self._queued.discard(account)
            queue = self.pending.get(account)
            if not queue:
                continue
            if self.in_flight[account] >= self._max_in_flight:
                continue  # re-queued when one of its calls finishes
            work = queue[0]
            if work.offset - self._commit_point(work.tp) >= self._window:
                self._window_parked.setdefault(work.tp, set()).add(account)
                continue  # re-queued when the partition's commit point moves
            if work.not_before > now:
                self._queued.add(account)
                heapq.heappush(self._sleeping, (work.not_before, account))
                continue  # asked again once its backoff or Retry-After is over
            held = self._held.get(account)
            if held is not None and held[0] > epoch_ms():
                queue.popleft()
                self.buffered -= 1
                yield work, held
                self.make_runnable(account)
                continue
            wait_s = self._pacer.try_acquire(account)
            if wait_s > 0:
                self._queued.add(account)
                heapq.heappush(self._sleeping, (now + wait_s, account))
                continue
            queue.popleft()
            self.buffered -= 1
            yield work, None
            self.make_runnable(account)

    def started(self, account: str) -> None:
        self.in_flight[account] += 1

    def finished(self, account: str) -> None:
        self.in_flight[account] -= 1

    def unpark(self, tp: TopicPartition) -> None:
        """The partition's commit point moved: its parked accounts take turns again."""
        for account in self._window_parked.pop(tp, ()):
            self.make_runnable(account)

    def next_wake(self) -> float | None:
        """When the next account waiting on its pace is due (monotonic), if any."""
        return self._sleeping[0][0] if self._sleeping else None

    def release(self, revoked: set[TopicPartition]) -> None:
        """Drop the requests of partitions another consumer now owns."""
        for account, queue in self.pending.items():
            kept = deque(work for work in queue if work.tp not in revoked)
            self.buffered -= len(queue) - len(kept)
            self.pending[account] = kept
        for tp in revoked:
            # An account parked on a lost partition may still have requests on kept ones: its turn
            # comes again (make_runnable skips it when nothing of it is left).
            for account in self._window_parked.pop(tp, ()):
                self.make_runnable(account)


def epoch_ms() -> int:
    return int(time.time() * 1000)
