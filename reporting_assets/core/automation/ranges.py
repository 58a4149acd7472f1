"""Partition ranges: cover sets of (date, account) partitions with few rectangles, one run each.

A partition range of the (date, account) partitions is the rectangle of a date range and an
account range in the dynamic partitions' order, so a run can only cover contiguous blocks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date as Date

from reporting_assets.core.keys import RANGE_END_TAG, RANGE_START_TAG, key_str


@dataclass(frozen=True)
class Rectangle:
    """Consecutive dates x accounts contiguous in the dynamic partition order: one partition range."""

    first_date: str
    last_date: str
    first_account: str
    last_account: str
    size: int

    @property
    def tags(self) -> dict[str, str]:
        return {
            RANGE_START_TAG: key_str(self.first_date, self.first_account),
            RANGE_END_TAG: key_str(self.last_date, self.last_account),
        }


def _runs(sorted_ints: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in sorted_ints:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def rectangles(done: Mapping[str, Iterable[str]], account_order: list[str], max_partitions: int) -> list[Rectangle]:
    """Cover the done partitions with few partition ranges of at most `max_partitions` each."""
    index = {account: i for i, account in enumerate(account_order)}
    dates_by_span: dict[tuple[int, int], list[Date]] = defaultdict(list)
    for date, accounts in done.items():
        positions = sorted(index[a] for a in accounts if a in index)
        for span in _runs(positions):
            dates_by_span[span].append(Date.fromisoformat(date))
    result = []
    for (start, end), dates in sorted(dates_by_span.items()):
        width = end - start + 1
        ordinals = _runs(sorted(d.toordinal() for d in dates))
        for first, last in ordinals:
            if width >= max_partitions:
                for day in range(first, last + 1):
                    iso = Date.fromordinal(day).isoformat()
                    for chunk in range(start, end + 1, max_partitions):
                        chunk_end = min(chunk + max_partitions - 1, end)
                        result.append(
                            Rectangle(iso, iso, account_order[chunk], account_order[chunk_end], chunk_end - chunk + 1)
                        )
                continue
            days_per_run = max(max_partitions // width, 1)
            for day in range(first, last + 1, days_per_run):
                day_end = min(day + days_per_run - 1, last)
                result.append(
                    Rectangle(
                        Date.fromordinal(day).isoformat(),
                        Date.fromordinal(day_end).isoformat(),
                        account_order[start],
                        account_order[end],
                        width * (day_end - day + 1),
                    )
                )
    return sorted(result, key=lambda r: (r.first_date, r.first_account))


def missing_blocks(accounts: list[str], missing: Callable[[str], bool]) -> list[list[str]]:
    """Runs of consecutive missing accounts, in the dynamic partitions' order (a range's order)."""
    blocks: list[list[str]] = []
    extend = False
    for account in accounts:
        if missing(account):
            if not extend:
                blocks.append([])
            blocks[-1].append(account)
            extend = True
        else:
            extend = False
    return blocks
