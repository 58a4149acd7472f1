"""Splitting a chain past the row cap: which slices, and what a load takes of a split download."""

from __future__ import annotations

import json
import re

from reporting_assets.core.downloads import PartitionLoad
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import DeadLetter, ReportRequest
from reporting_assets.core.split import Split, plan_split, reaches_cap, slice_requests

DIMENSIONS = ("date", "query", "page", "country", "device")


def request(filters: str = "", start_row: int = 0, row_limit: int = 2) -> ReportRequest:
    return ReportRequest(
        "search_analytics", "https://s.example/", "2026-11-02", DIMENSIONS,
        row_limit=row_limit, start_row=start_row, filters=filters, download="d1",
    )  # fmt: skip


def row(query: str, page: str, country: str, device: str) -> dict:
    return {
        "keys": ["2026-11-02", query, page, country, device],
        "clicks": 1,
        "impressions": 2,
        "ctr": 0.5,
        "position": 1.0,
    }


def patterns(split: Split) -> list[tuple[str, str]]:
    return [(f["operator"], f["expression"]) for s in split.slices for f in json.loads(s)[0]["filters"][-1:]]


def test_a_full_page_at_the_cap_reaches_it_and_a_short_one_does_not():
    assert reaches_cap(request(start_row=2), rows=2, cap=4)
    assert not reaches_cap(request(start_row=0), rows=2, cap=4)
    assert not reaches_cap(request(start_row=2), rows=1, cap=4)


def test_device_splits_first_and_needs_no_remainder_once_every_device_is_seen():
    rows = [row("q", "https://s.example/a", "usa", d) for d in ("DESKTOP", "MOBILE", "TABLET", "MOBILE")]
    split = plan_split(request(), rows)
    assert split.dimension == "device"
    assert sorted(patterns(split)) == [
        ("includingRegex", "^(DESKTOP)$"),
        ("includingRegex", "^(MOBILE)$"),
        ("includingRegex", "^(TABLET)$"),
    ]


def test_a_slice_with_one_device_splits_by_country_into_balanced_groups_and_a_remainder():
    parent = plan_split(request(), [row("q", "p", "usa", "DESKTOP"), row("q", "p", "usa", "MOBILE")])
    desktop = request(filters=parent.slices[0])
    counts = {"usa": 5, "gbr": 3, "deu": 2, "fra": 2, "ind": 1, "can": 1}
    rows = [row("q", "p", c, "DESKTOP") for c, n in counts.items() for _ in range(n)]
    split = plan_split(desktop, rows)
    assert split.dimension == "country" and len(split.slices) == 5  # 4 groups + the remainder
    groups = [json.loads(s)[0]["filters"] for s in split.slices]
    assert all(g[0] == json.loads(parent.slices[0])[0]["filters"][0] for g in groups)  # the device stays
    chosen = [re.compile(g[-1]["expression"]) for g in groups[:4]]
    for country in counts:  # every seen country in exactly one group, none in the remainder
        assert sum(bool(p.search(country)) for p in chosen) == 1
        assert re.search(groups[4][-1]["expression"], country) and groups[4][-1]["operator"] == "excludingRegex"
    assert not any(p.search("nor") for p in chosen)  # an unseen country is the remainder's


def test_pages_split_by_their_first_path_segment():
    rows = [
        row("q", url, "usa", "DESKTOP")
        for url in ("https://s.example/a/1", "https://s.example/a/2", "https://s.example/b?x=1", "https://s.example/")
    ]
    split = plan_split(
        request(
            filters=json.dumps(
                [{"groupType": "and", "filters": [{"dimension": "country", "operator": "equals", "expression": "usa"}]}]
            )
        ),
        rows,
    )
    assert split.dimension == "page"
    including = [re.compile(e) for op, e in patterns(split) if op == "includingRegex"]
    for url in ("https://s.example/a/1", "https://s.example/a", "https://s.example/b?x=1", "https://s.example/"):
        assert sum(bool(p.search(url)) for p in including) == 1, url
    assert not any(p.search("https://s.example/ab/1") for p in including)


def test_nothing_left_to_split_on_is_a_truncation():
    split = plan_split(
        request(),
        [row("q1", "https://s.example/a", "usa", "DESKTOP"), row("q2", "https://s.example/a/x", "usa", "DESKTOP")],
    )
    assert split == Split(None, ())


def test_a_load_takes_the_slices_not_the_split_chain_and_waits_for_every_slice(tmp_path):
    zone = LandingZone(tmp_path)
    first, at_cap = request(), request(start_row=2)
    zone.land_page(first, [row("q", "p", "usa", "DESKTOP")] * 2)
    split = plan_split(at_cap, [row("q", "p", "usa", "DESKTOP"), row("q", "p", "usa", "MOBILE")])
    zone.mark_split(at_cap, split)
    zone.land_page(at_cap, [row("q", "p", "usa", "DESKTOP")] * 2)
    desktop, mobile, tablet = slice_requests(at_cap, split)  # TABLET unseen: the remainder's
    zone.land_page(desktop, [row("q", "p", "usa", "DESKTOP")])
    zone.land_page(tablet, [])
    state = zone.completeness("search_analytics", "2026-11-02", "https://s.example/")
    assert not state.complete and state.missing == ((mobile.filters, 0),) and state.slices == 3
    zone.land_page(mobile, [row("q", "p", "usa", "MOBILE")] * 2)  # full: its next page is awaited
    state = zone.completeness("search_analytics", "2026-11-02", "https://s.example/")
    assert state.missing == ((mobile.filters, 2),)
    zone.land_page(mobile.next_page(), [])
    state = zone.completeness("search_analytics", "2026-11-02", "https://s.example/")
    assert state.complete and [p.request for p in state.pages] == [desktop, mobile, mobile.next_page(), tablet]
    assert state.rows == 3 and zone.split_of(at_cap) == split


def test_a_slice_that_cannot_split_further_is_truncated_and_a_dead_lettered_slice_is_not_awaited(tmp_path):
    zone = LandingZone(tmp_path)
    at_cap = request(row_limit=2)
    split = plan_split(at_cap, [row("q", "p", "usa", "DESKTOP"), row("q", "p", "usa", "MOBILE")])
    zone.mark_split(at_cap, split)
    zone.land_page(at_cap, [row("q", "p", "usa", "DESKTOP")] * 2)
    desktop, mobile, tablet = slice_requests(at_cap, split)
    zone.land_page(tablet, [])
    zone.mark_split(desktop, Split(None, ()))
    zone.land_page(desktop, [row("q", "p", "usa", "DESKTOP")] * 2)
    letter = DeadLetter("client_error", "400", 1, "t", 0, 5, mobile.to_json(), None, "2026-11-02T00:00:00")
    zone.mark_dead_letter(mobile, letter)
    state = zone.completeness("search_analytics", "2026-11-02", "https://s.example/")
    assert [p.request for p in state.truncated] == [desktop]
    assert state.missing == ((mobile.filters, 0),) and not state.complete
    assert PartitionLoad("2026-11-02", "https://s.example/", "search_analytics", state).still_downloading == []
