"""What a run will cost before it spends any quota: requests, calls and time at the partner's pace.

Read-only: the topics' uncommitted requests and the landing zone say what is already downloaded or on
its way (as the enqueue decides, `core.rerun`); earlier downloads of the same (report, account) say
how many pages a day it takes. Nothing is enqueued, landed or recorded.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from reporting_assets.core.landing import LandingZone
from reporting_assets.core.rerun import EnqueuePlan

# Search Console's limits: 1 200 queries a minute per site and per user (the run's one credential is one
# user, so the whole run too). No pace gets past them. (The project's 30 000 000 a day cannot bind one
# user: 20 a second is 1 728 000 a day.)
SITE_QPS_LIMIT = 20.0
USER_QPS_LIMIT = 20.0


@dataclass(frozen=True)
class RunCost:
    plan: EnqueuePlan
    minimum_calls: int  # one first page per request to enqueue
    expected_calls: int  # pages a day as earlier downloads of the same report and account took
    seconds: float  # at the pace: per account in parallel, within the project-wide budget
    pace: float  # calls/s per account: the consumers' pace within the site limit
    global_qps: float | None = None

    def lines(self) -> list[str]:
        pace = f"{self.pace:g} calls/s per account"
        pace += f", {self.global_qps:g} calls/s in all" if self.global_qps else ""
        return [
            f"to enqueue          : {len(self.plan.to_enqueue)} requests",
            f"calls               : {self.minimum_calls} at least (one page each), "
            f"about {self.expected_calls} as earlier downloads went",
            f"time at the pace    : about {format_duration(self.seconds)} ({pace}; Search Console allows "
            f"{USER_QPS_LIMIT:g} calls/s per site and per user)",
            f"continued           : {len(self.plan.continued)} partitions still on the topics (no new request)",
            f"already downloaded  : {len(self.plan.downloaded)} partitions (--refresh to download them again)",
        ]


def pages_a_day(zone: LandingZone, report: str, account: str, row_limit: int) -> int:
    """The calls one day of (report, account) took last time, at `row_limit` rows a page (1: no history)."""
    for date in reversed(zone.dates_of(report, account)):
        landed = zone.completeness(report, date, account)
        if landed.complete:
            return landed.rows // row_limit + 1  # a full last page is followed by one empty call
    return 1


def run_cost(
    plan: EnqueuePlan,
    zone: LandingZone,
    row_limit: int,
    qps_per_account: float,
    global_qps: float | None = None,
) -> RunCost:
    calls_by_account: Counter[str] = Counter()
    pages: dict[tuple[str, str], int] = {}
    for report, _, account in plan.to_enqueue:
        if (report, account) not in pages:
            pages[(report, account)] = pages_a_day(zone, report, account, row_limit)
        calls_by_account[account] += pages[(report, account)]
    pace = min(qps_per_account, SITE_QPS_LIMIT)
    seconds = quota_seconds(calls_by_account, pace, global_qps)
    return RunCost(plan, len(plan.to_enqueue), sum(calls_by_account.values()), seconds, pace, global_qps)


def quota_seconds(calls_by_account: Counter[str], pace: float, global_qps: float | None = None) -> float:
    """The time these calls take: accounts in parallel at `pace`, all within the user's limit and the
    project's budget."""
    seconds = max((count / pace for count in calls_by_account.values()), default=0.0)
    return max(seconds, sum(calls_by_account.values()) / min(USER_QPS_LIMIT, global_qps or USER_QPS_LIMIT))


def format_duration(seconds: float) -> str:
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def group_pace(qps_per_account: float, accounts: int, global_qps: float | None = None) -> float:
    """Calls/s the whole run can make: every account at its pace within the site limit, all of them
    within the user's limit and the project-wide budget."""
    pace = min(qps_per_account, SITE_QPS_LIMIT) * accounts
    return min(pace, USER_QPS_LIMIT, global_qps or USER_QPS_LIMIT)


def selection(dates: Sequence[str], accounts: Sequence[str]) -> list[tuple[str, str]]:
    """(account, date) pairs in the enqueue's order."""
    return [(account, date) for date in dates for account in accounts]
