"""Rerun = continue: the enqueue plan from what is on the topics and what is landed."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import DelayedRequest
from reporting_assets.core.reports import get_report
from reporting_assets.core.rerun import on_the_way, plan_enqueue
from reporting_assets.core.status import partition_status

REPORT = get_report("search_analytics")
ROW = {
    "keys": ["2026-11-02", "q", "https://x/p", "usa", "MOBILE"],
    "clicks": 1,
    "impressions": 2,
    "ctr": 0.5,
    "position": 1.0,
}


def test_what_is_on_its_way_is_continued_what_is_landed_is_skipped_the_rest_is_enqueued(tmp_path):
    zone = LandingZone(tmp_path)
    done = REPORT.first_request("https://done.example.com/", "2026-11-02", row_limit=5)
    zone.land_page(done, [ROW])  # a short first page: complete
    half = REPORT.first_request("https://half.example.com/", "2026-11-02", row_limit=1)
    zone.land_page(half, [ROW])  # a full page: its next page is still to come
    parked = REPORT.first_request("https://parked.example.com/", "2026-11-02", row_limit=5)
    left = [
        ("requests", half.next_page().encode()),
        ("requests", b"not a request"),  # left to the consumer, which dead-letters it
        ("requests.delayed", DelayedRequest(parked.to_json(), due_at_ms=1, reason="quota_exceeded").encode()),
    ]
    pending = on_the_way(left, "requests.delayed")
    assert pending == {(REPORT.name, "2026-11-02", half.account), (REPORT.name, "2026-11-02", parked.account)}

    pairs = [
        (account, "2026-11-02") for account in (done.account, half.account, parked.account, "https://new.example.com/")
    ]
    plan = plan_enqueue(pairs, [REPORT.name], pending, zone)
    assert plan.downloaded == [(REPORT.name, "2026-11-02", done.account)]
    assert plan.continued == [(REPORT.name, "2026-11-02", half.account), (REPORT.name, "2026-11-02", parked.account)]
    assert plan.to_enqueue == [(REPORT.name, "2026-11-02", "https://new.example.com/")]
    assert plan.skipped == set(plan.downloaded) | set(plan.continued)
    assert "1 partitions to enqueue, 2 continued" in plan.describe()

    refreshed = plan_enqueue(pairs, [REPORT.name], pending, zone, refresh=True)
    assert len(refreshed.to_enqueue) == 4 and not refreshed.skipped


def test_hourly_data_older_than_googles_ten_days_is_never_asked_for(tmp_path):
    zone = LandingZone(tmp_path)
    today = dt.date(2026, 11, 20)
    dates = ["2026-11-10", "2026-11-11", "2026-11-20"]  # ten days back: 11-11 is the oldest kept
    pairs = [("https://a.example.com/", date) for date in dates]
    plan = plan_enqueue(pairs, ["hourly", "search_analytics"], set(), zone, today=today)
    assert plan.unavailable == [("hourly", "2026-11-10", "https://a.example.com/")]
    assert sorted(plan.to_enqueue) == sorted(
        [("hourly", d, "https://a.example.com/") for d in dates[1:]]
        + [("search_analytics", d, "https://a.example.com/") for d in dates]
    )
    assert plan.unavailable[0] in plan.skipped  # the Spark enqueue leaves it out too
    assert "1 not available from Google (hourly on 2026-11-10: Google keeps hourly data for the last 10 days" in (
        plan.describe()
    )


def test_status_says_why_an_old_hourly_day_was_never_enqueued(tmp_path):
    zone = LandingZone(tmp_path / "landing")
    old = partition_status(zone, tmp_path / "exports", Counter(), ("hourly", "2020-01-01", "https://a.example.com/"))
    assert (old.state, old.detail) == ("not enqueued", "Google keeps hourly data for the last 10 days only")
    daily = partition_status(
        zone, tmp_path / "exports", Counter(), ("by_date_web", "2020-01-01", "https://a.example.com/")
    )
    assert (daily.state, daily.detail) == ("not enqueued", "no request was ever made")
