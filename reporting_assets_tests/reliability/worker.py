"""What runs in each consumer process of a reliability trial: the project's `DownloadLoop`, unchanged.

The process is a real OS process (forked from a pre-loaded multiprocessing fork server, so a start
costs milliseconds instead of seconds of imports) that the trial SIGKILLs at will. It talks to the
real broker and, through the real google-api-python-client, to the sandbox.

The only addition is bookkeeping for the re-issue bound: when a rebalance takes partitions away
from this consumer, it appends to its event file how many of their requests it had started (called,
or calling right now) beyond the partition's committed offset. The new owner starts from that
committed offset, so those are exactly the calls it may repeat. Each event is one `os.write` on an
O_APPEND file, so it survives a later SIGKILL.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import deque
from typing import Any

from kafka import TopicPartition

from reporting_assets.core.consumer.loop import DownloadLoop
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.landing import LandingZone
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource


class EventLog:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **event: Any) -> None:
        line = json.dumps({"pid": os.getpid(), "t": round(time.time(), 3), **event}, sort_keys=True)
        os.write(self._fd, (line + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


class _LoggedDeque(deque):
    """`DownloadLoop.assignments`, noting each new assignment in the event file as it arrives."""

    def __init__(self, events: EventLog) -> None:
        super().__init__()
        self.events = events

    def append(self, assigned: Any) -> None:
        self.events.write(event="assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
        super().append(assigned)


class TracedLoop(DownloadLoop):
    """`DownloadLoop` that reports, at each rebalance, the started-but-uncommitted calls it hands over.

    Each started call is counted once, when its partition is first given up with the call's offset
    not committed: at a revocation (the start of every rebalance), a release, or the consumer's exit.
    """

    def __init__(self, *args: Any, events: EventLog, die_after_landing: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events
        self.die_after_landing = die_after_landing
        self.landed_here = 0
        self.committed: dict[TopicPartition, int] = {}  # offset the group has committed (as far as we know)
        self.counted: set[tuple[TopicPartition, int]] = set()  # started calls already reported as handed over
        self.assignments = _LoggedDeque(events)

    def _commit_answered(self, offsets: Any, error: Exception | None) -> None:
        if error is not None:
            self.events.write(event="commit_failed", error=type(error).__name__)
        else:
            for tp, meta in offsets.items():
                if tp in self.committed:
                    self.committed[tp] = max(self.committed[tp], meta.offset)
        super()._commit_answered(offsets, error)

    @property
    def rebalancing_since(self) -> float | None:
        return self.__dict__.get("_rebalancing_since")

    @rebalancing_since.setter
    def rebalancing_since(self, value: float | None) -> None:
        # Set by the rebalance listener on kafka-python's thread: only note it, `_schedule` counts.
        if value is not None:
            self.__dict__["_revocation_pending"] = True
        self.__dict__["_rebalancing_since"] = value

    def _schedule(self) -> None:
        if self.__dict__.pop("_revocation_pending", False):
            # kafka-python's protocol revokes every partition at the start of a rebalance: from now
            # on any of them may go to another consumer, in this generation or in one this consumer
            # misses, so what was started on them and not committed counts as handed over now.
            held = {tp for tp in self._offsets if tp.topic == self.settings.request_topic}
            self.events.write(event="revoked", exposure=self.hand_over(held))
        super()._schedule()

    def _take(self, tp: TopicPartition, record: Any) -> None:
        state = self._offsets.get(tp)
        if tp not in self.committed and (state is None or state.next_offset < 0):
            # The first record after an assignment sits at the group's committed offset.
            self.committed[tp] = record.offset
        super()._take(tp, record)

    def land(self, request: Any, rows: Any) -> bool:
        full = super().land(request, rows)
        self.landed_here += 1
        if self.die_after_landing is not None and self.landed_here >= self.die_after_landing:
            # The worst moment to die: the page and its continuation are written, the offset is not committed.
            os.kill(os.getpid(), signal.SIGKILL)
        return full

    def _work(self, work: Any) -> Any:
        outcome = super()._work(work)
        self.events.write(
            event="call",
            tp=f"{work.tp.topic}:{work.tp.partition}",
            offset=work.offset,
            request=work.request.request_id,
            start_row=work.request.start_row,
            outcome=outcome.kind,
        )
        return outcome

    def started(self, partitions: set[TopicPartition]) -> set[tuple[TopicPartition, int]]:
        """Requests of these partitions started here (called or calling) beyond the committed offset."""
        found = set()
        for tp in partitions:
            state = self._offsets.get(tp)
            base = self.committed.get(tp)
            if state is None or base is None or state.next_offset < 0 or tp.topic != self.settings.request_topic:
                continue
            in_flight = {work.offset for work in self._in_flight.values() if work.tp == tp}
            found.update(
                (tp, offset)
                for offset in range(base, state.next_offset)
                if offset in in_flight or offset not in state.open
            )
        return found

    def hand_over(self, partitions: set[TopicPartition]) -> int:
        """Count the started, uncommitted calls of these partitions not counted at an earlier hand-over."""
        started = self.started(partitions)
        new = started - self.counted
        self.counted |= started
        return len(new)

    def release_partitions(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            self.events.write(
                event="handover",
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                exposure=self.hand_over(revoked),
            )
            for tp in revoked:
                self.committed.pop(tp, None)
                self.counted = {(t, o) for t, o in self.counted if t != tp}
        super().release_partitions(revoked)


def run_consumer(spec: dict[str, Any]) -> None:
    """Entry point of a consumer process (see `trials.Fleet`)."""
    logging.basicConfig(level=logging.ERROR)
    events = EventLog(spec["events_path"])
    events.write(event="start", name=spec["name"])
    kafka = KafkaResource(**spec["kafka"])
    settings = ConsumerSettings(
        request_topic=kafka.request_topic,
        dead_letter_topic=kafka.dead_letter_topic,
        delay_topic=kafka.delay_topic,
        **spec["settings"],
    )
    partner = PartnerResource(api_endpoint=spec["sandbox_url"], num_retries=spec["num_retries"], timeout_s=10)
    session_ms = int(spec["session_timeout_s"] * 1000)
    consumer = kafka.consumer(
        [],
        client_id=spec["name"],
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(200, session_ms // 4),
    )
    producer = kafka.producer()
    parent = os.getppid()  # the fork server: when it goes (the test process died), stop instead of lingering
    asked_to_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: asked_to_stop.set())  # a graceful leave, like a finished run

    def should_stop() -> bool:
        return asked_to_stop.is_set() or os.getppid() != parent

    try:
        loop = TracedLoop(
            consumer,
            producer,
            partner.clients,
            LandingZone(spec["landing_dir"]),
            settings,
            should_stop=should_stop,
            events=events,
            die_after_landing=spec.get("die_after_landing"),
        )
        loop.subscribe()
        stats = loop.run()
        # A consumer that stops hands its partitions over too; normally it has committed everything.
        events.write(event="exit", stats=stats.as_metadata(), exposure=loop.hand_over(set(loop._offsets)))
    finally:
        producer.close(timeout=10)
        consumer.close()
        events.close()
