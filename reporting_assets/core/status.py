"""Where a range stands, per (report, date, account): on the topics, downloading, downloaded,
dead-lettered, exported.

Read-only, from the two places that hold the truth: the topics' uncommitted requests (what is left to
call) and the landing zone (what was called, and how it ended); a date's export files say whether the
newest download reached the analysts. Whether the requests left are being called right now, the
consumer group's members say (the caller asks the broker).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reporting_assets.core.landing import LandedPage, LandingZone
from reporting_assets.core.reports import HOURLY_DAYS, get_report, google_today
from reporting_assets.core.rerun import PartitionId

STATES = ("not enqueued", "on the topics", "downloading", "incomplete", "dead-lettered", "downloaded")


@dataclass(frozen=True)
class PartitionStatus:
    report: str
    date: str
    account: str
    state: str  # one of STATES
    detail: str
    exported: bool

    def line(self, account_width: int) -> str:
        export = "exported" if self.exported else "not exported"
        return f"{self.report}  {self.date}  {self.account:<{account_width}}  {self.state}: {self.detail}; {export}"


def partition_status(
    zone: LandingZone,
    exports_dir: Path,
    left: Counter[PartitionId],
    partition: PartitionId,
    downloading: bool = False,
) -> PartitionStatus:
    """`downloading`: the consumer group is at work (requests left are being called, not waiting)."""
    report, date, account = partition
    landed = zone.completeness(report, date, account)
    pages = f"{len(landed.pages)} pages, {landed.rows} rows landed"
    if landed.slices:
        pages += f" in {landed.slices} slices past the row cap"
    if landed.truncated:
        pages += f", {len(landed.truncated)} still at the cap (rows past it missing)"
    if left[partition]:
        state = "downloading" if downloading else "on the topics"
        detail = f"{left[partition]} requests left, {pages}"
    elif landed.download is None and not get_report(report).available_on(date, google_today()):
        state, detail = "not enqueued", f"Google keeps hourly data for the last {HOURLY_DAYS} days only"
    elif landed.download is None:
        state, detail = "not enqueued", "no request was ever made"
    elif landed.dead_letters:
        reasons = Counter(
            f"{letter.reason}" + (f" (HTTP {letter.status})" if letter.status else "") for letter in landed.dead_letters
        )
        why = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        state, detail = "dead-lettered", f"{why}; {pages} (redrive_dead_letters once it is fixed)"
    elif landed.missing_start_rows:
        state = "incomplete"
        detail = f"page at row {landed.missing_start_rows[0]} missing and not on the topics; {pages} (run again)"
    else:
        data_state = "provisional" if any(page.provisional for page in landed.pages) else "final"
        state, detail = "downloaded", f"{data_state}, {pages}"
    return PartitionStatus(report, date, account, state, detail, exported(exports_dir, report, date, landed.pages))


def exported(exports_dir: Path, report: str, date: str, pages: Sequence[LandedPage]) -> bool:
    """An export of the date written after the newest download's pages landed."""
    files = list((exports_dir / report).glob(f"{date}.*")) if (exports_dir / report).is_dir() else []
    if not files or not pages:
        return False
    return min(f.stat().st_mtime for f in files) >= max(page.path.stat().st_mtime for page in pages)


def tally(statuses: list[PartitionStatus]) -> str:
    counts = Counter(status.state for status in statuses)
    states = ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])
    return f"{len(statuses)} partitions: {states}; {sum(s.exported for s in statuses)} exported"
