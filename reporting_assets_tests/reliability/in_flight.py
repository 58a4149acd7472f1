"""What was in flight at a moment, measured from outside the consumers; which calls were made again.

A page is in flight at a moment when a call of it had reached the sandbox and the request message
asking for it was not committed by the group: a new owner of its partition starts from the committed
offset, so these are the only pages it may call again. Each part is read from outside:

* **open**: received by the sandbox and not answered (the sandbox's timeline, `SandboxServer.calls`);
* **answered**: answered, the page not landed (its answer on the way, or being written), not committed;
* **landed**: its page file in the landing zone, its message not committed (a new owner finds the
  file and skips the call).

A moment is a kill (from the SIGKILL to the victims found dead), or a window in which partitions may have changed hands (a
rebalance): then the pages received by its end whose message was not committed at its start. A call
of a page asked before (`reissues`) is explained when the page was in flight at a moment between the
two calls; any other repeat is a defect (an offset committed too early and re-done, a continuation
sent twice, a partition called by two owners).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from reporting_assets.core.messages import InvalidRequestError, ReportRequest
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.sandbox.stats import open_at

QUERY = "searchanalytics.query"
Page = tuple[str, str, int]  # (site, date, startRow): one page of a (report, date, account) download


@dataclass(frozen=True)
class Message:
    """A request message on the topic: where it is and the page it asks for."""

    partition: int
    offset: int
    page: Page
    request_id: str
    timestamp_ms: int  # when its producer sent it (epoch ms)


@dataclass(frozen=True)
class InFlight:
    start: float  # the sandbox's clock
    end: float
    open: frozenset[Page]
    answered: frozenset[Page]
    landed: frozenset[Page]

    @property
    def pages(self) -> frozenset[Page]:
        return self.open | self.answered | self.landed

    def counts(self) -> dict[str, int]:
        return {
            "open": len(self.open),
            "answered": len(self.answered),
            "landed": len(self.landed),
            "pages": len(self.pages),
        }


@dataclass(frozen=True)
class Reissue:
    page: Page
    first_at: float  # when the sandbox received the previous call of the page
    again_at: float
    moment: int | None  # index of the moment that explains it; None: nothing does


def page_of(call: Mapping[str, Any]) -> Page:
    return (str(call["site_url"]), str(call["start_date"]), int(call["start_row"] or 0))


def query_calls(calls: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The searchAnalytics.query calls of a `SandboxServer.calls()` snapshot, answered or open, by arrival."""
    found = [call for call in (*calls["answered"], *calls["open"]) if call["method"] == QUERY]
    return sorted(found, key=lambda call: call["received_at"])


def page_calls(calls: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The query calls that name a page (the sandbox read their body: a call cut off by a kill may not)."""
    return [call for call in query_calls(calls) if call["start_date"] is not None]


def messages(kafka: KafkaResource, topic: str, timeout_s: float = 60) -> list[Message]:
    """Every request message on `topic`, read without a group (the consumers are not disturbed)."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        found = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s:g}s")
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    try:
                        request = ReportRequest.decode(record.value)
                    except InvalidRequestError:
                        continue
                    page = (request.account, request.date, request.start_row)
                    found.append(Message(tp.partition, record.offset, page, request.request_id, record.timestamp))
        return found
    finally:
        consumer.close()


def landed_ids(root: Path) -> set[str]:
    """Request ids of the pages in a landing zone (one `<request id>.parquet` a page)."""
    if not root.exists():
        return set()
    return {path.stem for path in root.rglob("*.parquet") if not path.name.startswith(".")}


def measure(
    calls: Mapping[str, Any],
    start: float,
    end: float,
    on_topic: Iterable[Message],
    committed: Mapping[int, int],
    landed: set[str],
    sent_by_ms: float,
) -> InFlight:
    """In flight at a kill (from the signal, `start`, to the victims' death, `end`) or over a window:
    pages received by `end` whose message is at or beyond the partition's `committed` offset (read at
    `end` for a kill, at `start` for a window), `landed` read at `end`; `open`: those open at `start`.
    `calls` is a snapshot taken at or after `end`, `on_topic` the messages read afterwards, of which
    only those sent by `sent_by_ms` (epoch ms) count: a copy of a page sent again later (its parent
    page re-run) does not make the page in flight at the moment."""
    uncommitted = [m for m in on_topic if m.offset >= committed.get(m.partition, 0) and m.timestamp_ms <= sent_by_ms]
    received = {page_of(call) for call in page_calls(calls) if call["received_at"] <= end}
    open_pages = frozenset(
        page_of(call) for call in open_at(calls, start) if call["method"] == QUERY and call["start_date"] is not None
    )
    landed_pages = frozenset(m.page for m in uncommitted if m.request_id in landed) - open_pages  # parts: disjoint
    answered = frozenset({m.page for m in uncommitted} & received) - open_pages - landed_pages
    return InFlight(start, end, open_pages, answered, landed_pages)


def reissues(
    calls: Mapping[str, Any], moments: Sequence[InFlight], statuses: frozenset[int] | None = None
) -> list[Reissue]:
    """Every call (of those answered with one of `statuses`; None: any) of a page so asked before, with
    the moment that explains it: the page in flight then, the previous call received by the moment's
    end and this one after its start."""
    last: dict[Page, float] = {}
    found = []
    for call in page_calls(calls):
        if statuses is not None and call["status"] not in statuses:
            continue
        page, at = page_of(call), call["received_at"]
        if page in last:
            moment = next(
                (index for index, m in enumerate(moments) if page in m.pages and last[page] <= m.end and at >= m.start),
                None,
            )
            found.append(Reissue(page, last[page], at, moment))
        last[page] = at
    return found


# ---- windows in which partitions may change hands ------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: float  # time.monotonic of the last sample before the group changed
    end: float  # of the first sample that found it Stable again
    committed: dict[int, int]  # the committed offsets read at `start`
    end_ms: float  # `end` in epoch ms (messages carry their producer's wall clock)


def _signature(description: Mapping[str, Any]) -> tuple[Any, ...]:
    """The group's state and who holds which partition, as DescribeGroups tells it."""
    members = frozenset(
        (
            member.get("member_id"),
            frozenset(
                (entry["topic"], partition)
                for entry in (member.get("member_assignment") or {}).get("assigned_partitions", [])
                for partition in entry["partitions"]
            ),
        )
        for member in description.get("members") or []
    )
    return (description.get("group_state"), members)


class GroupWindows:
    """Watches a consumer group from outside, on a thread: every `every_s`, its committed offsets, then
    its DescribeGroups answer. A window opens at the last sample before the state or the assignment
    changed (or the broker stopped answering) and closes at the first sample that finds the group
    Stable again: partitions can have changed hands only inside one. The offsets are read before the
    group is described, so a window's offsets are at most those committed when the change began."""

    # Every 50 ms the sampling (in the driver, beside the sandbox's threads) slowed the sandbox enough
    # that a clean run met no 429s; 250 ms leaves it as it was, and only widens the windows.
    def __init__(self, kafka: KafkaResource, every_s: float = 0.25) -> None:
        self._kafka = kafka
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-windows", daemon=True)
        self.windows: list[Window] = []
        self.samples = 0

    def __enter__(self) -> GroupWindows:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=self._kafka.bootstrap_servers,
            request_timeout_ms=2000,
            bootstrap_timeout_ms=2000,  # the broker may be down (a restart trial): try again soon
            client_id="group-windows",
        )

    def _sample(self, admin: KafkaAdminClient, tps: list[TopicPartition]) -> tuple[dict[int, int], tuple[Any, ...]]:
        group = self._kafka.consumer_group
        offsets = admin.list_group_offsets({group: tps}).get(group, {})
        committed = {tp.partition: max(entry.offset, 0) for tp, entry in offsets.items()}
        return committed, _signature(admin.describe_groups([group])[group])

    def _run(self) -> None:
        tps = [TopicPartition(self._kafka.request_topic, p) for p in range(self._kafka.topic_partitions)]
        admin: KafkaAdminClient | None = None
        last: tuple[float, dict[int, int], tuple[Any, ...]] | None = None  # the last good sample
        opened: tuple[float, dict[int, int]] | None = (time.monotonic(), {})  # the group forms: a window
        while True:
            at = time.monotonic()
            try:
                admin = admin or self._admin()
                committed, signature = self._sample(admin, tps)
            except Exception:  # the broker away (a restart): unknown, so possibly changing
                if admin is not None:
                    with contextlib.suppress(Exception):
                        admin.close()
                admin = None
                if opened is None and last is not None:
                    opened = (last[0], last[1])
            else:
                self.samples += 1
                if opened is None and last is not None and (signature != last[2] or signature[0] != "Stable"):
                    opened = (last[0], last[1])
                if opened is not None and signature[0] == "Stable":
                    self.windows.append(Window(opened[0], time.monotonic(), opened[1], time.time() * 1000))
                    opened = None
                last = (at, committed, signature)
            if self._stop.wait(self._every_s):
                break
        if opened is not None:  # still changing at the end: open to the end
            self.windows.append(Window(opened[0], time.monotonic(), opened[1], time.time() * 1000))
        if admin is not None:
            admin.close()
