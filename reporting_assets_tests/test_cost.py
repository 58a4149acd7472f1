"""`core.cost`: the calls and time a plan takes, from the landing zone's history and the pace."""

from __future__ import annotations

from collections import Counter

from reporting_assets.core.cost import (
    SITE_QPS_LIMIT,
    USER_QPS_LIMIT,
    format_duration,
    group_pace,
    quota_seconds,
    run_cost,
    selection,
)
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.rerun import plan_enqueue

DIMENSIONS = ("date", "query")


def row(date: str, query: str) -> dict:
    return {"keys": [date, query], "clicks": 1, "impressions": 2, "ctr": 0.5, "position": 1.0}


def land_day(zone: LandingZone, account: str, date: str, rows: int, row_limit: int) -> None:
    """A complete download of `rows` rows in pages of `row_limit` (the last one short)."""
    for start in range(0, rows + 1, row_limit):
        request = ReportRequest(
            "search_analytics", account, date, DIMENSIONS, row_limit=row_limit, start_row=start, download="d1"
        )
        count = min(row_limit, rows - start)
        zone.land_page(request, [row(date, f"q{start + i}") for i in range(count)])


def test_history_sets_the_pages_a_day_and_no_history_counts_one(tmp_path):
    zone = LandingZone(tmp_path)
    land_day(zone, "a", "2026-11-01", rows=250, row_limit=100)
    plan = plan_enqueue(selection(["2026-11-02", "2026-11-03"], ["a", "b"]), ["search_analytics"], set(), zone)
    cost = run_cost(plan, zone, row_limit=50, qps_per_account=2.0)
    assert cost.minimum_calls == 4
    assert cost.expected_calls == 2 * (250 // 50 + 1) + 2 * 1  # a: 6 calls a day at 50 rows a page
    assert cost.seconds == 12 / 2.0  # a's calls at 2 calls/s, b's in parallel


def test_the_pace_is_capped_by_the_site_limit_the_user_limit_and_the_project_budget(tmp_path):
    zone = LandingZone(tmp_path)
    one = plan_enqueue(
        selection([f"2026-11-{d:02}" for d in range(1, 31)], ["site0"]), ["search_analytics"], set(), zone
    )
    assert run_cost(one, zone, row_limit=1000, qps_per_account=1000.0).seconds == 30 / SITE_QPS_LIMIT
    accounts = [f"site{i}" for i in range(8)]
    plan = plan_enqueue(
        selection([f"2026-11-{d:02}" for d in range(1, 31)], accounts), ["search_analytics"], set(), zone
    )
    # Before: 30 / 20 s, as if each site had its own 1 200 a minute; one credential is one user, and a
    # user gets 1 200 a minute across all sites.
    fast = run_cost(plan, zone, row_limit=1000, qps_per_account=1000.0)
    assert fast.seconds == 8 * 30 / USER_QPS_LIMIT
    budget = run_cost(plan, zone, row_limit=1000, qps_per_account=1000.0, global_qps=4.0)
    assert budget.seconds == 8 * 30 / 4.0
    assert group_pace(2.0, 8) == 16.0 and group_pace(5.0, 8) == USER_QPS_LIMIT and group_pace(5.0, 8, 3.0) == 3.0


def test_many_accounts_share_the_users_limit_and_durations_read_as_minutes_and_hours():
    calls = Counter({f"site{i}": 3_600 for i in range(10)})  # 36 000 calls: 30 min for the user at 20/s
    assert quota_seconds(calls, pace=20.0) == 1_800.0
    assert quota_seconds(calls, pace=1.0) == 3_600.0  # each site's hour of calls, all in parallel
    assert format_duration(59.2) == "1 min 00 s" and format_duration(3 * 3600 + 61) == "3 h 01 min"
    assert format_duration(7) == "7 s"
