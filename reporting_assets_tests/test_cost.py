"""`core.cost`: the calls and time a plan takes, from the landing zone's history and the pace."""

from __future__ import annotations

from reporting_assets.core.cost import SITE_QPS_LIMIT, run_cost, selection
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


def test_the_pace_is_capped_by_the_site_limit_and_the_project_budget(tmp_path):
    zone = LandingZone(tmp_path)
    accounts = [f"site{i}" for i in range(8)]
    plan = plan_enqueue(selection([f"2026-11-{d:02}" for d in range(1, 31)], accounts), ["r"], set(), zone)
    fast = run_cost(plan, zone, row_limit=1000, qps_per_account=1000.0)
    assert fast.seconds == 30 / SITE_QPS_LIMIT
    budget = run_cost(plan, zone, row_limit=1000, qps_per_account=1000.0, global_qps=4.0)
    assert budget.seconds == 8 * 30 / 4.0
