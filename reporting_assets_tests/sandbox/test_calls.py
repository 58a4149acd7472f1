"""What the sandbox says, from outside the client, of the calls it has open and has answered."""

from __future__ import annotations

import threading

from reporting_assets.sandbox import FaultSpec, SandboxServer
from reporting_assets.sandbox.stats import CallIdentity, CallTimeline, open_at
from reporting_assets_tests.sandbox.helpers import DAY, ManualClock, raw_query, raw_request, wait_for

SHOP = "https://shop.example.com/"


def _page(start_row: int) -> dict:
    return {"startDate": DAY, "endDate": DAY, "dimensions": ["query"], "rowLimit": 50, "startRow": start_row}


def test_open_calls_and_the_timeline_say_what_a_client_has_in_flight(sandbox: SandboxServer) -> None:
    # The second page is held until the test lets it go: an open call, deterministically.
    sandbox.update_config(faults=[FaultSpec("slow", site_url=SHOP, start_row=50, slow_s=600)])
    assert raw_query(sandbox.url, SHOP, _page(0)).status == 200
    held = threading.Thread(target=raw_query, args=(sandbox.url, SHOP, _page(50)))
    held.start()
    wait_for(lambda: sandbox.stats()["open_calls"] == 1, 10, "the held call to arrive")

    seen = raw_request(sandbox.url, "GET", "/_sandbox/calls").json()
    (open_call,) = seen["open"]
    expected = {"method": "searchanalytics.query", "site_url": SHOP, "start_date": DAY, "end_date": DAY}
    assert open_call | expected == open_call
    assert (open_call["start_row"], open_call["row_limit"], open_call["status"]) == (50, 50, None)
    (first,) = seen["answered"]
    assert (first["start_row"], first["status"]) == (0, 200)
    assert first["received_at"] <= first["answered_at"] <= open_call["received_at"] <= seen["now"]

    sandbox._app.stop_event.set()  # cuts the slow fault's wait short: the held call is answered
    held.join(10)
    calls = sandbox.calls()
    assert calls["open"] == [] and calls["dropped"] == 0 and sandbox.stats()["open_calls"] == 0
    assert [(c["start_row"], c["status"]) for c in calls["answered"]] == [(0, 200), (50, 200)]
    assert calls["answered"][1]["answered_at"] > seen["now"]
    # The moment of the first look, read back later from the timeline alone.
    assert [c["id"] for c in open_at(calls, seen["now"])] == [open_call["id"]]
    assert [c["id"] for c in open_at(calls, first["received_at"])] == [first["id"]]
    assert open_at(calls, first["received_at"] - 1) == []

    sandbox.reset_stats()
    assert sandbox.calls()["answered"] == []


def test_admin_calls_are_not_on_the_timeline(sandbox: SandboxServer) -> None:
    raw_request(sandbox.url, "GET", "/_sandbox/stats")
    raw_request(sandbox.url, "GET", "/_sandbox/calls")
    raw_request(sandbox.url, "GET", "/webmasters/v3/sites")
    assert [c["method"] for c in sandbox.calls()["answered"]] == ["sites.list"]


def test_the_timeline_is_bounded_and_counts_what_it_dropped() -> None:
    clock = ManualClock()
    timeline = CallTimeline(clock, size=2)
    ids = []
    for start_row in (0, 10, 20):
        ids.append(timeline.received(CallIdentity("searchanalytics.query", SHOP, DAY, DAY, start_row, 10)))
        clock.advance(1)
        timeline.answered(ids[-1], 200)
    still_open = timeline.received(CallIdentity("searchanalytics.query", SHOP, DAY, DAY, 30, 10))
    calls = timeline.snapshot()
    assert [c["id"] for c in calls["answered"]] == ids[1:] and calls["dropped"] == 1
    assert [c["id"] for c in calls["open"]] == [still_open]
    timeline.reset()
    calls = timeline.snapshot()
    assert (calls["answered"], calls["dropped"], [c["id"] for c in calls["open"]]) == ([], 0, [still_open])
