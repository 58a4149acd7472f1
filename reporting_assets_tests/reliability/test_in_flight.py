"""The in-flight measure on a made-up timeline: which pages count, and which repeats they explain."""

from __future__ import annotations

from reporting_assets_tests.reliability import in_flight

SITE, DAY = "https://a.example.com/", "2026-11-01"


def call(start_row: int, received: float, answered: float | None, status: int | None = 200) -> dict:
    return {
        "id": int(received * 10),
        "method": in_flight.QUERY,
        "site_url": SITE,
        "start_date": DAY,
        "end_date": DAY,
        "start_row": start_row,
        "row_limit": 50,
        "received_at": received,
        "answered_at": answered,
        "status": status,
    }


def page(start_row: int) -> in_flight.Page:
    return (SITE, DAY, start_row)


def message(offset: int, start_row: int) -> in_flight.Message:
    return in_flight.Message(0, offset, page(start_row), f"r{start_row}", timestamp_ms=offset * 1000)


def test_a_kill_counts_open_answered_and_landed_pages_beyond_the_committed_offset() -> None:
    calls = {
        "answered": [
            call(0, 1.0, 1.1),  # committed at the kill
            call(50, 2.0, 2.1),  # landed, not committed
            call(100, 3.0, 3.1),  # answered, not landed
            call(150, 4.0, 6.0),  # open at the kill (t = 5)
            call(200, 7.0, 7.1),  # after the kill
        ],
        "open": [],
    }
    on_topic = [message(offset, start_row) for offset, start_row in enumerate((0, 50, 100, 150, 200))]
    on_topic.append(message(5, 0))  # a copy of page 0 sent after the kill: it was not in flight then
    kill = in_flight.measure(calls, 5.0, 5.0, on_topic, {0: 1}, {"r0", "r50"}, sent_by_ms=4_000)
    assert (kill.open, kill.answered, kill.landed) == ({page(150)}, {page(100)}, {page(50)})

    calls["answered"] += [call(100, 8.0, 8.1), call(150, 8.2, 8.3), call(0, 9.0, 9.1)]
    again = in_flight.reissues(calls, [kill])
    assert [(r.page, r.moment) for r in again] == [(page(100), 0), (page(150), 0), (page(0), None)]


def test_a_repeat_before_the_moment_or_of_a_refused_call_is_not_explained_by_it() -> None:
    calls = {"answered": [call(0, 1.0, 1.1), call(0, 2.0, 2.1), call(50, 3.0, 3.1, 429), call(50, 4.0, 4.1)]}
    calls["open"] = []
    later = in_flight.InFlight(10.0, 10.0, frozenset({page(0)}), frozenset(), frozenset())
    assert [(r.page, r.moment) for r in in_flight.reissues(calls, [later])] == [(page(0), None), (page(50), None)]
    # Only answers with data: a 429 and its retry are one call.
    successes = in_flight.reissues(calls, [later], statuses=frozenset({200}))
    assert [(r.page, r.moment) for r in successes] == [(page(0), None)]


def test_calls_whose_body_never_arrived_whole_name_no_page() -> None:
    cut = {**call(0, 1.0, 1.1, 400), "start_date": None, "end_date": None, "start_row": None, "row_limit": None}
    calls = {"answered": [cut, {**cut, "id": 99}, call(0, 2.0, 2.1)], "open": []}
    assert in_flight.page_calls(calls) == [calls["answered"][2]]
    assert in_flight.reissues(calls, []) == []
