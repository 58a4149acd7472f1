"""The sandbox server, driven through the real google-api-python-client (and raw HTTP where headers matter)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from googleapiclient.errors import HttpError

from reporting_assets.sandbox import FaultSpec, SandboxServer, default_config, expected_rows
from reporting_assets.sandbox.data import SEARCH_APPEARANCES, hours_of
from reporting_assets_tests.sandbox.helpers import (
    DAY,
    FORBIDDEN_SITE,
    HOSTILE_SITE,
    ManualClock,
    make_client,
    raw_query,
    raw_request,
    sandbox_config,
    wait_for,
)

SHOP = "https://shop.example.com/"
StartSandbox = Callable[..., SandboxServer]


def _body(**overrides: Any) -> dict[str, Any]:
    return {"startDate": DAY, "endDate": DAY, **overrides}


def _query(client: Any, site: str, num_retries: int = 0, **overrides: Any) -> Any:
    return client.searchanalytics().query(siteUrl=site, body=_body(**overrides)).execute(num_retries=num_retries)


def _error(exc: HttpError) -> dict[str, Any]:
    return json.loads(exc.content)["error"]


# --- the happy path ---


def test_sites_list_shape(client: Any) -> None:
    entries = client.sites().list().execute()["siteEntry"]
    assert entries[0] == {"siteUrl": "sc-domain:example.com", "permissionLevel": "siteOwner"}
    levels = {e["siteUrl"]: e["permissionLevel"] for e in entries}
    assert levels[FORBIDDEN_SITE] == "siteUnverifiedUser"
    assert levels[HOSTILE_SITE] == "siteOwner"


@pytest.mark.parametrize(
    "dimensions",
    [[], ["date"], ["query"], ["page"], ["country"], ["device"], ["date", "query", "page", "country", "device"]],
)
def test_query_shape_for_every_dimension(sandbox: SandboxServer, client: Any, dimensions: list[str]) -> None:
    answer = _query(client, "https://www.example.com/", dimensions=dimensions, rowLimit=25000)
    assert answer["rows"] == expected_rows(sandbox.config, "https://www.example.com/", DAY, DAY, dimensions)
    assert answer["responseAggregationType"] == ("byPage" if "page" in dimensions else "byProperty")
    row = answer["rows"][0]
    assert len(row["keys"]) == len(dimensions)
    assert {"clicks", "impressions", "ctr", "position"} <= set(row)


def test_paging_reassembles_expected_rows(sandbox: SandboxServer, client: Any) -> None:
    rows: list[dict] = []
    pages = 0
    while True:
        answer = _query(client, SHOP, dimensions=["query", "page"], rowLimit=1000, startRow=len(rows))
        if "rows" not in answer:
            break
        rows.extend(answer["rows"])
        pages += 1
    assert pages >= 3
    assert rows == expected_rows(sandbox.config, SHOP, DAY, DAY, ["query", "page"])
    assert answer == {"responseAggregationType": "byPage"}


def test_multi_day_range_pages_cross_day_boundaries(sandbox: SandboxServer, client: Any) -> None:
    truth = expected_rows(sandbox.config, "sc-domain:example.com", "2024-03-01", "2024-03-10", ["date", "query"])
    rows: list[dict] = []
    while answer := _query(
        client,
        "sc-domain:example.com",
        startDate="2024-03-01",
        endDate="2024-03-10",
        dimensions=["date", "query"],
        rowLimit=250,
        startRow=len(rows),
    ).get("rows"):
        rows.extend(answer)
    assert rows == truth


def test_same_seed_same_rows_different_seed_different_rows(start_sandbox: StartSandbox) -> None:
    answers = []
    for seed in (1, 1, 2):
        server = start_sandbox(sandbox_config(seed=seed))
        answers.append(_query(make_client(server.url), SHOP, dimensions=["query"])["rows"])
    assert answers[0] == answers[1]
    assert answers[0] != answers[2]


@pytest.mark.parametrize(
    "site", ["sc-domain:example.com", "https://www.example.com/", HOSTILE_SITE, "sc-domain:bücher.example"]
)
def test_percent_encoded_site_urls_round_trip(sandbox: SandboxServer, client: Any, site: str) -> None:
    assert client.sites().get(siteUrl=site).execute() == {"siteUrl": site, "permissionLevel": "siteOwner"}
    answer = _query(client, site, dimensions=["page"])
    assert answer["rows"] == expected_rows(sandbox.config, site, DAY, DAY, ["page"])[:1000]
    assert sandbox.stats()["calls_by_site"][site] == 2


def test_search_type_and_deprecated_search_type(sandbox: SandboxServer, client: Any) -> None:
    image = expected_rows(sandbox.config, SHOP, DAY, DAY, ["query"], "image")
    assert _query(client, SHOP, dimensions=["query"], type="image")["rows"] == image
    assert _query(client, SHOP, dimensions=["query"], searchType="IMAGE")["rows"] == image
    assert _query(client, SHOP, dimensions=["page"], type="googleNews", dataState="all")["rows"]


def test_search_appearance_hour_and_filters(sandbox: SandboxServer, client: Any) -> None:
    appearance = _query(client, SHOP, dimensions=["date", "searchAppearance"])["rows"]
    assert appearance == expected_rows(sandbox.config, SHOP, DAY, DAY, ["date", "searchAppearance"])
    assert {row["keys"][1] for row in appearance} <= set(SEARCH_APPEARANCES) and len(appearance) > 1

    day = dt.date.fromisoformat(DAY)
    sandbox.update_config(today=(day + dt.timedelta(days=3)).isoformat())  # a final day, hours kept
    hours = _query(client, SHOP, dimensions=["hour"], dataState="hourly_all")["rows"]
    assert sorted(row["keys"][0] for row in hours) == sorted(hours_of(DAY))
    # Google keeps hours for its last 10 days: ten days on, the day has none.
    sandbox.update_config(today=(day + dt.timedelta(days=9)).isoformat())
    assert _query(client, SHOP, dimensions=["hour"], dataState="hourly_all").get("rows")
    sandbox.update_config(today=(day + dt.timedelta(days=10)).isoformat())
    assert "rows" not in _query(client, SHOP, dimensions=["hour"], dataState="hourly_all")
    assert _query(client, SHOP, dimensions=["date"])["rows"]  # daily data is kept 16 months
    assert all(key.startswith(f"{DAY}T") and key.endswith(("-08:00", "-07:00")) for key in hours_of(DAY))

    mobile = [{"filters": [{"dimension": "device", "operator": "equals", "expression": "MOBILE"}]}]
    rows = _query(client, SHOP, dimensions=["query", "device"], dimensionFilterGroups=mobile, rowLimit=25000)["rows"]
    everything = expected_rows(sandbox.config, SHOP, DAY, DAY, ["query", "device"])
    assert rows == [row for row in everything if row["keys"][1] == "MOBILE"]
    assert rows == expected_rows(sandbox.config, SHOP, DAY, DAY, ["query", "device"], filters=mobile)
    assert 0 < len(rows) < len(everything)
    regex = [{"filters": [{"dimension": "query", "operator": "excludingRegex", "expression": "^best "}]}]
    kept = _query(client, SHOP, dimensions=["query"], dimensionFilterGroups=regex, rowLimit=25000)["rows"]
    assert kept and not any(row["keys"][0].startswith("best ") for row in kept)


# --- errors ---


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"endDate": DAY}, "startDate is required"),
        (_body(startDate="2024/03/05"), "YYYY-MM-DD"),
        (_body(endDate="2024-02-30"), "not a valid date"),
        (_body(startDate="2024-03-06"), "after endDate"),
        (_body(rowLimit=0), "rowLimit"),
        (_body(rowLimit=25001), "rowLimit"),
        (_body(startRow=-1), "startRow"),
        (_body(dimensions=["browser"]), "unknown dimension"),
        (_body(dimensions=["query"], type="discover"), "query is not supported for type discover"),
        (_body(dimensions=["hour"]), "HOURLY_ALL"),
        (_body(aggregationType="byNewsShowcasePanel"), "byNewsShowcasePanel"),
        (
            _body(dimensionFilterGroups=[{"filters": [{"dimension": "page", "expression": "/blog"}]}]),
            "only grouped dimensions",
        ),
        (
            _body(
                dimensions=["query"],
                dimensionFilterGroups=[
                    {"filters": [{"dimension": "query", "operator": "includingRegex", "expression": "("}]}
                ],
            ),
            "invalid regular expression",
        ),
        (_body(dimensions=["query", "query"]), "listed twice"),
        (_body(type="podcast"), "unknown search type"),
        (_body(dataState="fresh"), "dataState"),
        (_body(aggregationType="byMoon"), "aggregationType"),
        (_body(dimensions=["page"], aggregationType="byProperty"), "byProperty"),
        (_body(colour="red"), 'Unknown name "colour"'),
    ],
)
def test_bad_arguments_are_400(client: Any, body: dict[str, Any], message: str) -> None:
    with pytest.raises(HttpError) as info:
        client.searchanalytics().query(siteUrl=SHOP, body=body).execute(num_retries=3)
    assert info.value.status_code == 400
    error = _error(info.value)
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert error["errors"] == [{"message": error["message"], "domain": "global", "reason": "badRequest"}]
    assert message in error["message"]


def test_invalid_json_body_is_400(sandbox: SandboxServer) -> None:
    resp = raw_query(sandbox.url, SHOP, b"{not json")
    assert resp.status == 400
    assert resp.json()["error"]["errors"][0]["reason"] == "badRequest"


def test_forbidden_site_is_403(client: Any) -> None:
    with pytest.raises(HttpError) as info:
        _query(client, FORBIDDEN_SITE, num_retries=3)
    assert info.value.status_code == 403
    error = _error(info.value)
    assert (error["status"], error["errors"][0]["reason"]) == ("PERMISSION_DENIED", "forbidden")


def test_unknown_site_and_path_are_404(sandbox: SandboxServer, client: Any) -> None:
    for call in (
        lambda: _query(client, "https://unknown.example/"),
        lambda: client.sites().get(siteUrl="https://unknown.example/").execute(),
    ):
        with pytest.raises(HttpError) as info:
            call()
        assert info.value.status_code == 404
        assert _error(info.value)["status"] == "NOT_FOUND"
        assert _error(info.value)["errors"][0]["reason"] == "notFound"
    resp = raw_request(sandbox.url, "GET", "/webmasters/v3/nothing-here")
    assert resp.status == 404 and resp.json()["error"]["code"] == 404


# --- rate limits ---


def test_rate_limit_answers_429_with_retry_after_and_refusals_are_free(start_sandbox: StartSandbox) -> None:
    clock = ManualClock()
    server = start_sandbox(sandbox_config(per_site_qps=0.25, burst=2), clock=clock)
    assert [raw_query(server.url, SHOP, _body()).status for _ in range(2)] == [200, 200]
    refused = [raw_query(server.url, SHOP, _body()) for _ in range(5)]
    assert {r.status for r in refused} == {429}
    assert refused[0].headers["retry-after"] == "4"  # one token at 0.25 qps
    error = refused[0].json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["errors"][0] | {"message": ""} == {
        "message": "",
        "domain": "usageLimits",
        "reason": "rateLimitExceeded",
    }
    assert raw_query(server.url, "https://www.example.com/", _body()).status == 200  # other sites unaffected
    clock.advance(3.0)
    assert raw_query(server.url, SHOP, _body()).headers["retry-after"] == "1"  # rounded up, at least 1
    clock.advance(1.0)  # exactly one token refilled: the 6 refusals took none
    assert raw_query(server.url, SHOP, _body()).status == 200
    stats = server.stats()
    assert stats["rate_limited"] == stats["status_counts"]["429"] == 6


def test_global_rate_limit_spans_sites(start_sandbox: StartSandbox) -> None:
    server = start_sandbox(sandbox_config(global_qps=1, burst=2), clock=ManualClock())
    statuses = [
        raw_query(server.url, site, _body()).status
        for site in (SHOP, "https://www.example.com/", "sc-domain:example.com")
    ]
    assert statuses == [200, 200, 429]
    assert raw_request(server.url, "GET", "/webmasters/v3/sites").status == 429


def test_client_retries_ride_out_rate_limits(start_sandbox: StartSandbox) -> None:
    server = start_sandbox(sandbox_config(per_site_qps=4, burst=1))
    assert raw_query(server.url, SHOP, _body()).status == 200  # drains the bucket: the next calls must wait
    results: list[Any] = []

    def call(start_row: int) -> None:
        results.append(_query(make_client(server.url), SHOP, num_retries=5, dimensions=["query"], startRow=start_row))

    threads = [threading.Thread(target=call, args=(n * 1000,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all("rows" in r for r in results)
    stats = server.stats()
    assert stats["rate_limited"] >= 1
    assert stats["status_counts"]["200"] == 4


# --- faults ---


def test_faults_are_off_by_default(start_sandbox: StartSandbox) -> None:
    server = start_sandbox(default_config())
    client = make_client(server.url)
    for n in range(20):
        _query(client, SHOP, dimensions=["query"], startRow=(n % 3) * 1000)
    stats = server.stats()
    assert stats["faults_served"] == {} and stats["status_counts"] == {"200": 20}


def test_an_outage_of_a_given_length_ends_by_itself(sandbox: SandboxServer, client: Any) -> None:
    sandbox.update_config(faults=[FaultSpec("http_503", site_url=SHOP, for_s=1.0)])
    time.sleep(1.2)  # longer than the outage: it starts with the first call that meets it, not with the config
    with pytest.raises(HttpError) as info:
        _query(client, SHOP)
    assert info.value.status_code == 503
    outage_began = time.monotonic()

    def answers() -> bool:
        try:
            return bool(_query(client, SHOP)["rows"])
        except HttpError:
            return False

    wait_for(answers, timeout_s=15)
    assert time.monotonic() - outage_began >= 0.9  # served for the whole outage, and only then normal
    assert _query(client, "https://www.example.com/")["rows"]  # other sites were never down


def test_a_connection_reset_fault_closes_the_connection_with_no_answer(sandbox: SandboxServer, client: Any) -> None:
    sandbox.update_config(faults=[FaultSpec("connection_reset", site_url=SHOP, times=2)])
    with pytest.raises(ConnectionError, match="without response"):
        _query(client, SHOP)  # httplib2 reconnects once by itself (a stale kept-alive connection): 2 served
    stats = sandbox.stats()
    assert stats["faults_served"] == {"connection_reset": 2} and stats["status_counts"] == {"0": 2}
    assert _query(client, SHOP)["rows"]  # the faults are used up: an answer again


@pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_503", 503)])
def test_server_error_faults(sandbox: SandboxServer, client: Any, kind: str, status: int) -> None:
    sandbox.update_config(faults=[FaultSpec(kind, site_url=SHOP, times=2)])
    with pytest.raises(HttpError) as info:
        _query(client, SHOP)
    assert info.value.status_code == status
    assert _error(info.value)["code"] == status
    assert _query(client, SHOP, num_retries=3)["rows"]  # second fault, then the client's retry succeeds
    assert _query(client, "https://www.example.com/")["rows"]  # rule matches one site only
    assert sandbox.stats()["faults_served"] == {kind: 2}


@pytest.mark.parametrize("kind", ["malformed", "truncated"])
def test_unparseable_body_faults(sandbox: SandboxServer, client: Any, kind: str) -> None:
    sandbox.update_config(faults=[FaultSpec(kind, times=1)])
    answer = _query(client, SHOP, dimensions=["query"])
    # googleapiclient hands back the raw text when the body is not JSON; callers must check for a dict.
    assert isinstance(answer, str)
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer)
    assert isinstance(_query(client, SHOP), dict)


def test_truncated_fault_sends_a_consistent_content_length(sandbox: SandboxServer) -> None:
    sandbox.update_config(faults=[{"kind": "truncated"}])
    resp = raw_query(sandbox.url, SHOP, _body(dimensions=["query"]))
    assert resp.status == 200 and int(resp.headers["content-length"]) == len(resp.body) > 0
    assert resp.body.startswith(b'{"rows":[')
    with pytest.raises(json.JSONDecodeError):
        resp.json()


def test_wrong_schema_fault(sandbox: SandboxServer, client: Any) -> None:
    sandbox.update_config(faults=[FaultSpec("wrong_schema", start_row=1000)])
    assert isinstance(_query(client, SHOP, startRow=0, dimensions=["query"])["rows"][0]["keys"], list)
    answer = _query(client, SHOP, startRow=1000, dimensions=["query"])
    assert answer == {"rows": [{"keys": "x", "clicks": "lots"}]}


def test_slow_fault_times_the_client_out(sandbox: SandboxServer) -> None:
    sandbox.update_config(faults=[FaultSpec("slow", slow_s=1.5, times=1)])
    with pytest.raises(TimeoutError):
        _query(make_client(sandbox.url, timeout=1), SHOP)
    assert _query(make_client(sandbox.url, timeout=5), SHOP)["rows"]
    # The slow call is counted when its (late) answer goes out.
    wait_for(lambda: sandbox.stats()["faults_served"] == {"slow": 1})


def test_probability_faults_are_reproducible_per_seed(start_sandbox: StartSandbox) -> None:
    def pattern(seed: int) -> list[int]:
        faults = [{"kind": "http_500", "probability": 0.3}]
        server = start_sandbox(sandbox_config(seed=seed, faults=faults))
        return [raw_query(server.url, SHOP, _body(startRow=n)).status for n in range(40)]

    first = pattern(11)
    assert first == pattern(11)
    assert 0 < first.count(500) < 40 and set(first) == {200, 500}
    assert first != pattern(12)


def test_faults_switch_at_runtime_through_the_admin_endpoint(sandbox: SandboxServer) -> None:
    update = {"faults": [{"kind": "http_503", "site_url": SHOP, "times": 1}]}
    resp = raw_request(sandbox.url, "POST", "/_sandbox/config", json.dumps(update).encode())
    assert resp.status == 200 and resp.json()["faults"][0]["kind"] == "http_503"
    assert raw_request(sandbox.url, "GET", "/_sandbox/config").json()["faults"] == resp.json()["faults"]
    assert [raw_query(sandbox.url, SHOP, _body()).status for _ in range(2)] == [503, 200]
    raw_request(sandbox.url, "POST", "/_sandbox/config", b'{"faults": []}')
    assert sandbox.config.faults == ()


def test_bad_runtime_config_is_400_naming_the_setting(sandbox: SandboxServer) -> None:
    for update, setting in (({"per_site_qps": -5}, "per_site_qps"), ({"faults": [{"kind": "boom"}]}, "faults[].kind")):
        resp = raw_request(sandbox.url, "POST", "/_sandbox/config", json.dumps(update).encode())
        assert resp.status == 400 and setting in resp.json()["error"]["message"]
    assert raw_request(sandbox.url, "POST", "/_sandbox/config", b"[1,").status == 400
    assert sandbox.config == sandbox_config()
    with pytest.raises(ValueError, match="probability"):
        sandbox.update_config(faults=[{"kind": "slow", "probability": -0.1}])


# --- load quota ---


def test_load_quota_refuses_expensive_queries_until_the_window_rolls_over(start_sandbox: StartSandbox) -> None:
    clock = ManualClock()
    server = start_sandbox(sandbox_config(load_quota=2, load_quota_window_s=60), clock=clock)
    client = make_client(server.url)
    _query(client, SHOP, dimensions=["query"])
    _query(client, SHOP, dimensions=["date", "page"])
    with pytest.raises(HttpError) as info:
        _query(client, SHOP, num_retries=3, dimensions=["query"])  # not retried by the client
    assert info.value.status_code == 403
    error = _error(info.value)
    assert (error["status"], error["errors"][0]["reason"], error["errors"][0]["domain"]) == (
        "RESOURCE_EXHAUSTED",
        "quotaExceeded",
        "usageLimits",
    )
    assert "load quota" in error["message"]
    assert _query(client, SHOP, dimensions=["date", "country", "device"])["rows"]  # cheap queries pass
    assert _query(client, "https://www.example.com/", dimensions=["query"])["rows"]  # per site
    clock.advance(59.9)
    assert raw_query(server.url, SHOP, _body(dimensions=["query"])).status == 403
    clock.advance(0.1)
    assert _query(client, SHOP, dimensions=["query"])["rows"]
    assert server.stats()["quota_refused"] == 2


# --- stats and admin ---


def test_stats_count_repeats_and_reset(sandbox: SandboxServer, client: Any) -> None:
    sandbox.update_config(faults=[FaultSpec("http_500", start_row=7, times=1)])
    _query(client, SHOP, dimensions=["query"])
    _query(client, SHOP, dimensions=["query"])  # finished work re-issued
    _query(client, SHOP, dimensions=["page"])
    with pytest.raises(HttpError):
        _query(client, SHOP, dimensions=["query"], startRow=7)
    _query(client, SHOP, dimensions=["query"], startRow=7)  # a repeat call, but its first success
    stats = raw_request(sandbox.url, "GET", "/_sandbox/stats").json()
    assert stats == sandbox.stats()
    assert stats["calls_total"] == 5 and stats["calls_by_site"] == {SHOP: 5}
    assert stats["status_counts"] == {"200": 4, "500": 1}
    assert (stats["repeat_calls"], stats["repeat_successes"]) == (2, 1)
    assert stats["faults_served"] == {"http_500": 1}
    assert stats["rows_served"] == 4 * 1000
    assert raw_request(sandbox.url, "POST", "/_sandbox/stats/reset").json()["calls_total"] == 0
    _query(client, SHOP, dimensions=["query"])  # seen bodies are forgotten too
    stats = sandbox.stats()
    assert (stats["calls_total"], stats["repeat_calls"], stats["repeat_successes"], stats["rate_limited"]) == (
        1,
        0,
        0,
        0,
    )


def test_admin_endpoints_are_not_counted(sandbox: SandboxServer) -> None:
    assert raw_request(sandbox.url, "GET", "/_sandbox/health").json() == {"ok": True}
    assert raw_request(sandbox.url, "GET", "/_sandbox/config").json() == sandbox.config.to_dict()
    assert raw_request(sandbox.url, "GET", "/_sandbox/nope").status == 404
    assert sandbox.stats()["calls_total"] == 0


def test_latency_and_stop_do_not_hang(start_sandbox: StartSandbox) -> None:
    server = start_sandbox(sandbox_config(latency_s=0.01))
    assert _query(make_client(server.url), SHOP)["rows"]
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        server.start()


def test_concurrent_calls_are_counted_consistently(start_sandbox: StartSandbox) -> None:
    faults = [{"kind": "http_503", "probability": 0.2}]
    server = start_sandbox(sandbox_config(faults=faults, per_site_qps=1000, burst=40))
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(site: str) -> None:
        for n in range(40):
            status = raw_query(server.url, site, _body(dimensions=["query"], rowLimit=5, startRow=n)).status
            with lock:
                statuses.append(status)

    sites = [SHOP, "https://www.example.com/", "sc-domain:example.com", HOSTILE_SITE] * 2
    threads = [threading.Thread(target=worker, args=(site,)) for site in sites]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = server.stats()
    assert stats["calls_total"] == len(statuses) == 320
    assert stats["status_counts"] == {str(s): statuses.count(s) for s in set(statuses)}
    assert stats["faults_served"].get("http_503", 0) == statuses.count(503) > 0
    assert stats["rate_limited"] == statuses.count(429)
    assert stats["repeat_calls"] == 160  # every body is sent by two threads
