"""Rerun = continue: what of a selection is downloaded, still on its way, or still to enqueue.

A crashed or killed run is simply run again: the group's committed offsets say what is left. So an
enqueue first reads that (the uncommitted requests of the request and delay topics) and the landing
zone, and enqueues only the (report, date, account) partitions that are neither downloaded nor on
their way; a refresh enqueues everything again.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import DelayedRequest, InvalidRequestError, ReportRequest
from reporting_assets.core.reports import HOURLY_DAYS, get_report, google_today

PartitionId = tuple[str, str, str]  # (report, date, account)


@dataclass(frozen=True)
class EnqueuePlan:
    """The partitions of a selection, each in one of three lists."""

    to_enqueue: list[PartitionId] = field(default_factory=list)
    continued: list[PartitionId] = field(default_factory=list)  # requests still on the topics: left to finish
    downloaded: list[PartitionId] = field(default_factory=list)  # landed complete: nothing to do
    # Google has no such data (hourly data older than its last HOURLY_DAYS days): never asked for.
    unavailable: list[PartitionId] = field(default_factory=list)

    @property
    def skipped(self) -> set[PartitionId]:
        return set(self.continued) | set(self.downloaded) | set(self.unavailable)

    def describe(self) -> str:
        line = (
            f"{len(self.to_enqueue)} partitions to enqueue, {len(self.continued)} continued from the topic "
            f"(requests left from an earlier run), {len(self.downloaded)} already downloaded"
        )
        if self.unavailable:
            line += f", {len(self.unavailable)} not available from Google ({unavailable_reason(self.unavailable)})"
        return line


def unavailable_reason(partitions: Sequence[PartitionId]) -> str:
    """Which reports and dates a selection asked for that Google does not keep, in one phrase."""
    dates = sorted({date for _report, date, _account in partitions})
    reports = ", ".join(sorted({report for report, _date, _account in partitions}))
    span = dates[0] if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
    return f"{reports} on {span}: Google keeps hourly data for the last {HOURLY_DAYS} days only"


def requests_on_the_way(values: Iterable[tuple[str, bytes]], delay_topic: str | None) -> Counter[PartitionId]:
    """Per partition, its requests not yet done: uncommitted (topic, value)s of the request and
    delay topics. Messages that are not requests are left to the consumer (it dead-letters them)."""
    partitions: Counter[PartitionId] = Counter()
    for topic, value in values:
        try:
            if topic == delay_topic:
                request = DelayedRequest.decode(value).original_request()
            else:
                request = ReportRequest.decode(value)
        except InvalidRequestError:
            continue
        partitions[(request.report, request.date, request.account)] += 1
    return partitions


def on_the_way(values: Iterable[tuple[str, bytes]], delay_topic: str | None) -> set[PartitionId]:
    """The partitions with a request not yet done (see `requests_on_the_way`)."""
    return set(requests_on_the_way(values, delay_topic))


def plan_enqueue(
    pairs: Sequence[tuple[str, str]],
    reports: Sequence[str],
    pending: set[PartitionId],
    landing: LandingZone,
    refresh: bool = False,
    today: dt.date | None = None,
) -> EnqueuePlan:
    """Which (account, date) pairs × reports to enqueue; `refresh`: all of them, downloaded or not.
    `today`: Google's (default: the date in Pacific time now), for what it still keeps."""
    plan = EnqueuePlan()
    today = today or google_today()
    specs = {report: get_report(report) for report in reports}
    for account, date in pairs:
        for report in reports:
            partition = (report, date, account)
            if not specs[report].available_on(date, today):
                plan.unavailable.append(partition)
            elif refresh:
                plan.to_enqueue.append(partition)
            elif partition in pending:
                plan.continued.append(partition)
            elif landing.completeness(report, date, account).complete:
                plan.downloaded.append(partition)
            else:
                plan.to_enqueue.append(partition)
    return plan
