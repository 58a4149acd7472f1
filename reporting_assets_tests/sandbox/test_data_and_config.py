"""The sandbox's truth (`expected_rows`) and config validation, without a server."""

from __future__ import annotations

import json

import pytest

from reporting_assets.sandbox import (
    FaultSpec,
    SandboxConfig,
    SiteSpec,
    default_config,
    expected_row_count,
    expected_rows,
)
from reporting_assets.sandbox.data import COUNTRIES, DEVICES
from reporting_assets_tests.sandbox.helpers import DAY, sandbox_config

SHOP = "https://shop.example.com/"
ALL_DIMENSIONS = ["date", "query", "page", "country", "device"]


def _check_rows(rows: list[dict], dimensions: list[str]) -> None:
    keys = [tuple(r["keys"]) for r in rows]
    assert len(set(keys)) == len(keys), "key tuples must be unique"
    for row in rows:
        assert set(row) == {"keys", "clicks", "impressions", "ctr", "position"}
        assert len(row["keys"]) == len(dimensions) and all(isinstance(k, str) for k in row["keys"])
        assert isinstance(row["clicks"], int) and isinstance(row["impressions"], int)
        assert row["impressions"] >= row["clicks"] >= 0
        assert row["ctr"] == (row["clicks"] / row["impressions"] if row["impressions"] else 0.0)
        assert row["position"] >= 1 and round(row["position"], 2) == row["position"]


@pytest.mark.parametrize(
    "dimensions",
    [
        [],
        ["date"],
        ["query"],
        ["page"],
        ["country"],
        ["device"],
        ["country", "device"],
        ["query", "page"],
        ALL_DIMENSIONS,
    ],
)
def test_rows_are_well_formed_unique_and_sorted_by_clicks(dimensions: list[str]) -> None:
    rows = expected_rows(sandbox_config(), SHOP, DAY, DAY, dimensions)
    _check_rows(rows, dimensions)
    clicks = [r["clicks"] for r in rows]
    assert clicks == sorted(clicks, reverse=True)
    assert len(rows) == expected_row_count(sandbox_config(), SHOP, DAY, DAY, dimensions)


def test_open_ended_dimensions_give_about_rows_per_day_rows() -> None:
    config = sandbox_config()
    counts = [len(expected_rows(config, SHOP, f"2024-03-{d:02d}", f"2024-03-{d:02d}", ["query"])) for d in range(1, 8)]
    assert all(2600 * 0.9 - 1 <= n <= 2600 * 1.1 + 1 for n in counts)
    assert len(set(counts)) > 1, "rows_per_day varies a little by date"
    no_jitter = config.updated({"rows_jitter": 0.0})
    assert len(expected_rows(no_jitter, SHOP, DAY, DAY, ["page"])) == 2600


def test_closed_dimensions_are_capped_at_their_distinct_combinations() -> None:
    config = sandbox_config()
    rows = expected_rows(config, SHOP, DAY, DAY, ["country", "device"])
    assert len(rows) == len(COUNTRIES) * len(DEVICES) == 120
    assert {r["keys"][1] for r in rows} == set(DEVICES)
    assert len(expected_rows(config, SHOP, DAY, DAY, ["device"])) == 3
    assert len(expected_rows(config, SHOP, DAY, DAY, ["date"])) == 1
    small = expected_rows(config, "sc-domain:bücher.example", DAY, DAY, ["country", "device"])
    assert 27 <= len(small) <= 33  # fewer rows than combinations: a subset


def test_multi_day_ranges_serve_each_day_in_date_order() -> None:
    config = sandbox_config()
    rows = expected_rows(config, "sc-domain:example.com", "2024-03-01", "2024-03-03", ["query", "date"])
    dates = [r["keys"][1] for r in rows]
    assert dates == sorted(dates) and set(dates) == {"2024-03-01", "2024-03-02", "2024-03-03"}
    per_day = expected_rows(config, "sc-domain:example.com", "2024-03-02", "2024-03-02", ["query", "date"])
    assert [r for r in rows if r["keys"][1] == "2024-03-02"] == per_day
    # Without the date dimension the whole range is one block with distinct keys.
    ranged = expected_rows(config, "sc-domain:example.com", "2024-03-01", "2024-03-03", ["query"])
    _check_rows(ranged, ["query"])


def test_dimension_order_only_reorders_keys() -> None:
    config = sandbox_config()
    a = expected_rows(config, SHOP, DAY, DAY, ["query", "country"])
    b = expected_rows(config, SHOP, DAY, DAY, ["country", "query"])

    def as_set(rows: list[dict], dims: list[str]) -> set:
        return {
            (tuple(sorted(zip(dims, r["keys"], strict=True))), r["clicks"], r["impressions"], r["position"])
            for r in rows
        }

    assert as_set(a, ["query", "country"]) == as_set(b, ["country", "query"])


def test_rows_are_deterministic_per_seed_and_differ_across_seeds_and_types() -> None:
    first = expected_rows(sandbox_config(), SHOP, DAY, DAY, ["query"])
    assert first == expected_rows(sandbox_config(), SHOP, DAY, DAY, ["query"])
    assert first != expected_rows(sandbox_config(seed=8), SHOP, DAY, DAY, ["query"])
    assert first != expected_rows(sandbox_config(), SHOP, DAY, DAY, ["query"], "image")


def test_a_revision_keeps_the_rows_and_draws_their_numbers_anew() -> None:
    original = expected_rows(sandbox_config(), SHOP, DAY, DAY, ["query", "page"])
    revised = expected_rows(sandbox_config(revision=1), SHOP, DAY, DAY, ["query", "page"])
    assert original == expected_rows(sandbox_config(revision=0), SHOP, DAY, DAY, ["query", "page"])
    assert sorted(row["keys"] for row in revised) == sorted(row["keys"] for row in original)
    assert [row["clicks"] for row in revised] != [row["clicks"] for row in original]
    assert revised != expected_rows(sandbox_config(revision=2), SHOP, DAY, DAY, ["query", "page"])
    with pytest.raises(ValueError, match="revision must be a whole number"):
        sandbox_config(revision=-1)


def test_a_revision_set_while_running_is_what_the_sandbox_serves(start_sandbox) -> None:
    import urllib.request

    server = start_sandbox(sandbox_config(per_site_qps=None, global_qps=None))
    server.update_config(revision=3)
    body = json.dumps({"startDate": DAY, "endDate": DAY, "dimensions": ["query"], "rowLimit": 25000}).encode()
    url = f"{server.url}webmasters/v3/sites/{SHOP.replace(':', '%3A').replace('/', '%2F')}/searchAnalytics/query"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        served = json.loads(answer.read())["rows"]
    assert served == expected_rows(server.config, SHOP, DAY, DAY, ["query"])
    assert served != expected_rows(sandbox_config(), SHOP, DAY, DAY, ["query"])  # not the cached original


def test_expected_rows_rejects_bad_arguments() -> None:
    config = sandbox_config()
    with pytest.raises(ValueError, match="unknown site"):
        expected_rows(config, "https://nope.example/", DAY, DAY, [])
    with pytest.raises(ValueError, match="unknown dimension"):
        expected_rows(config, SHOP, DAY, DAY, ["browser"])
    with pytest.raises(ValueError, match="after endDate"):
        expected_rows(config, SHOP, "2024-03-06", DAY, [])


def test_config_round_trips_through_json() -> None:
    config = sandbox_config(
        per_site_qps=3.5,
        burst=2,
        load_quota=10,
        faults=[FaultSpec("slow", slow_s=2.0), {"kind": "http_500", "probability": 0.25, "site_url": "x", "times": 3}],
    )
    assert SandboxConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert SandboxConfig.from_dict(default_config().to_dict()) == default_config()


def test_default_config_has_five_sites_needing_several_pages() -> None:
    config = default_config()
    assert [s.url for s in config.sites] == [
        "sc-domain:example.com",
        "https://www.example.com/",
        "https://shop.example.com/",
        "https://blog.example.com/",
        "https://help.example.org/",
    ]
    assert expected_row_count(config, SHOP, DAY, DAY, ["query"]) > 2000  # 3 pages of 1000
    assert config.faults == () and config.load_quota is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"per_site_qps": -1}, "per_site_qps"),
        ({"global_qps": 0}, "global_qps"),
        ({"sites": []}, "sites must list at least one site"),
        ({"sites": [{"url": "a", "rows_per_day": 1}, {"url": "a", "rows_per_day": 2}]}, "duplicate url 'a'"),
        ({"sites": [{"url": "a", "rows_per_day": -5}]}, "rows_per_day"),
        ({"faults": [{"kind": "explode"}]}, "faults\\[\\].kind 'explode' is unknown"),
        ({"faults": [{"kind": "http_500", "probability": 1.5}]}, "probability must be within \\[0, 1\\]"),
        ({"faults": [{"kind": "http_500", "color": "red"}]}, "unknown setting faults\\[\\].color"),
        ({"latency_s": "fast"}, "latency_s must be a number"),
        ({"load_quota_window_s": 0}, "load_quota_window_s"),
        ({"burst": 0.5}, "burst"),
        ({"bogus": 1}, "unknown setting config.bogus"),
    ],
)
def test_config_validation_names_the_bad_setting(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sandbox_config().updated(changes)


def test_site_spec_validation() -> None:
    with pytest.raises(ValueError, match="url"):
        SiteSpec("", 10)
    with pytest.raises(ValueError, match="rows_per_day"):
        SiteSpec("https://a/", 1.5)  # type: ignore[arg-type]
