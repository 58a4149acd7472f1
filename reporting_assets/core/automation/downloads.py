"""Which (date, account) partitions wait for their requests, and which of them are done.

The download sensor folds enqueue and download events into a `DownloadState` (kept in its JSON
cursor), then asks `done_partitions` which pending partitions the consumer group has finished.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from reporting_assets.core.keys import parse_key


def digest(*parts: object) -> str:
    """A short stable digest of the parts (run keys, interned account sets)."""
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


@dataclass
class PendingDate:
    """Accounts of one date enqueued and not downloaded since, with the watermark they wait for."""

    watermark: dict[int, int]  # Kafka partition -> offset the group must have committed
    enqueued_sid: int  # newest enqueue (storage id) folded into this date
    accounts: frozenset[str]

    def merge(self, watermark: Mapping[int, int], sid: int, accounts: Iterable[str]) -> None:
        for partition, offset in watermark.items():
            self.watermark[partition] = max(self.watermark.get(partition, 0), offset)
        self.enqueued_sid = max(self.enqueued_sid, sid)
        self.accounts = self.accounts | frozenset(accounts)


@dataclass
class DownloadState:
    folded_upto: int = 0  # event-log storage id up to which enqueues and downloads are folded in
    pending: dict[str, PendingDate] = field(default_factory=dict)

    # Account sets are interned in the cursor: 30 dates of the same 10 000 accounts store them once.
    def to_cursor(self) -> str:
        sets: dict[str, list[str]] = {}
        refs: dict[frozenset[str], str] = {}
        dates = {}
        for date, pending in sorted(self.pending.items()):
            ref = refs.get(pending.accounts)
            if ref is None:
                members = sorted(pending.accounts)
                ref = refs[pending.accounts] = digest(*members)
                sets[ref] = members
            dates[date] = {
                "wm": {str(p): o for p, o in sorted(pending.watermark.items())},
                "sid": pending.enqueued_sid,
                "accounts": ref,
            }
        return json.dumps({"v": 1, "upto": self.folded_upto, "dates": dates, "sets": sets}, separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> DownloadState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        sets = {ref: frozenset(members) for ref, members in data.get("sets", {}).items()}
        pending = {
            date: PendingDate(
                watermark={int(p): int(o) for p, o in entry["wm"].items()},
                enqueued_sid=int(entry["sid"]),
                accounts=sets[entry["accounts"]],
            )
            for date, entry in data.get("dates", {}).items()
        }
        return cls(folded_upto=int(data.get("upto", 0)), pending=pending)

    @property
    def pending_partitions(self) -> int:
        return sum(len(p.accounts) for p in self.pending.values())

    def fold(
        self,
        enqueued: Mapping[str, int],
        downloaded: Mapping[str, int],
        watermark_of: Callable[[str], Mapping[int, int]],
        upto: int,
    ) -> None:
        """Add partitions enqueued in (folded_upto, upto]; drop those downloaded after their enqueue."""
        added: dict[str, tuple[dict[int, int], int, set[str]]] = {}
        for key, sid in enqueued.items():
            if downloaded.get(key, -1) > sid:
                continue  # enqueued and already downloaded since (e.g. by hand), both within this tick
            date, account = parse_key(key)
            marks, newest, accounts = added.setdefault(date, ({}, 0, set()))
            for partition, offset in watermark_of(key).items():
                marks[partition] = max(marks.get(partition, 0), offset)
            accounts.add(account)
            added[date] = (marks, max(newest, sid), accounts)
        for date, (marks, newest, accounts) in added.items():
            if date in self.pending:
                self.pending[date].merge(marks, newest, accounts)
            else:
                self.pending[date] = PendingDate(dict(marks), newest, frozenset(accounts))
        # A download newer than the cursor is newer than every enqueue folded in earlier ticks.
        removed: dict[str, set[str]] = defaultdict(set)
        for key, sid in downloaded.items():
            if enqueued.get(key, -1) > sid:
                continue  # enqueued again after this download: still pending
            date, account = parse_key(key)
            if date in self.pending and account in self.pending[date].accounts:
                removed[date].add(account)
        self.remove(removed)
        self.folded_upto = max(self.folded_upto, upto)

    def remove(self, accounts_by_date: Mapping[str, Iterable[str]]) -> None:
        for date, accounts in accounts_by_date.items():
            pending = self.pending.get(date)
            if pending is None:
                continue
            pending.accounts = pending.accounts - frozenset(accounts)
            if not pending.accounts:
                del self.pending[date]


def watermark_passed(watermark: Mapping[int, int], committed: Mapping[int, int]) -> bool:
    return all(committed.get(partition, 0) >= offset for partition, offset in watermark.items())


def done_partitions(
    state: DownloadState,
    committed: Mapping[int, int],
    drained: bool,
    settled: Callable[[str, str], bool],
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, set[str]]:
    """Date -> accounts whose requests, continuation pages included, are all done.

    The group's committed offsets must have passed the date's watermark. If the topic is drained as
    well (committed offsets read before end offsets and equal to them), every continuation page of
    those requests is consumed too, since a consumer writes a continuation before it commits the
    request that led to it. Otherwise the landing zone says whether each partition's page chain is
    complete (a short page or a dead letter ends it); those checks stop after `budget_s`.
    """
    done: dict[str, set[str]] = {}
    deadline = clock() + budget_s
    for date, pending in sorted(state.pending.items(), key=lambda item: (item[1].enqueued_sid, item[0])):
        if not watermark_passed(pending.watermark, committed):
            continue
        if drained:
            done[date] = set(pending.accounts)
            continue
        for account in sorted(pending.accounts):
            if clock() >= deadline:
                return done
            if settled(date, account):
                done.setdefault(date, set()).add(account)
    return done
