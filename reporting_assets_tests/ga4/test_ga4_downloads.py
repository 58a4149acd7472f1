"""GA4 through the shared pipeline: its requests on the same topic as Search Console's, the same consumer
group and landing zone, on the real broker, the real google-api-python-client and the sandbox."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
import pytest

from reporting_assets.core.connectors.ga4 import STANDARD_REPORTS, Ga4Report, report_body
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import InvalidRequestError, ReportRequest
from reporting_assets.core.reports import get_report
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.sandbox import PropertySpec, SandboxConfig, SandboxServer, SiteSpec, expected_rows
from reporting_assets.sandbox.ga4 import METRICS, expected_report
from reporting_assets_tests.consumer.test_loop import dead_letters, delayed_requests, enqueue, run_loop
from reporting_assets_tests.helpers import wait_for

SHOP, BLOG = "properties/123456", "properties/234567"
PROPERTIES = [
    PropertySpec("123456", "111", "Shop", rows_per_day=120),
    PropertySpec("234567", "111", "Blog", rows_per_day=30, thresholded=True),
]
SITE = SiteSpec("https://www.example.com/", 250)
SEARCH = get_report("search_analytics")
DATE = "2026-11-02"
ROW_LIMIT = 25


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(
        seed=5, sites=[SITE], ga4_properties=PROPERTIES, per_site_qps=None, global_qps=None, faults=[], rows_jitter=0.0
    )
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def kafka(kafka_resource: KafkaResource) -> KafkaResource:
    kafka_resource.ensure_topics(
        {kafka_resource.request_topic: 2, kafka_resource.dead_letter_topic: 1, kafka_resource.delay_topic: 1}
    )
    return kafka_resource


def truth(sandbox: SandboxServer, report: Ga4Report, prop: str) -> list[tuple[Any, ...]]:
    """The sandbox's rows of a report, as the landed table should hold them (metrics typed by Google's type)."""
    request = report.first_request(prop, DATE)
    rows = []
    for row in expected_report(sandbox.config, prop, report_body(request)):
        values = [v["value"] for v in row["dimensionValues"]]
        dims = [
            f"{v[:4]}-{v[4:6]}-{v[6:]}" if d == "date" else v for d, v in zip(report.dimensions, values, strict=True)
        ]
        metrics = [
            int(v["value"]) if METRICS[m] == "TYPE_INTEGER" else float(v["value"])
            for m, v in zip(report.metrics, row["metricValues"], strict=True)
        ]
        rows.append((*dims, *metrics))
    return rows


def ordered(landing: LandingZone, report: Ga4Report, prop: str) -> list[tuple[Any, ...]]:
    """The landed rows in row_number order (pages may land in any order)."""
    state = landing.completeness(report.name, DATE, prop)
    assert state.complete, (report.name, prop, state)
    records = [
        record
        for path in landing.download_dir(report.name, DATE, prop, state.download).glob("*.parquet")
        for record in pq.read_table(path).to_pylist()
    ]
    numbers = sorted(r["row_number"] for r in records)
    assert numbers == list(range(len(records))), "a row landed twice or a page is missing"
    return [
        (r["date"].isoformat(), *(r[d] for d in report.dimensions if d != "date"), *(r[m] for m in report.metrics))
        for r in sorted(records, key=lambda r: r["row_number"])
    ]


def exact_page_size(rows: int) -> int:
    """A row limit whose last page is exactly full (the largest divisor of `rows` up to half of it, else `rows`):
    without the partner's rowCount, a full last page costs one more call for an empty page."""
    return next((size for size in range(rows // 2, 1, -1) if rows % size == 0), rows)


def test_ga4_and_search_console_share_the_topic_and_every_row_lands_row_for_row(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    reports = [(report, prop, truth(sandbox, report, prop)) for report in STANDARD_REPORTS for prop in (SHOP, BLOG)]
    assert all(expected for _, _, expected in reports)  # reports with rows, or the comparison proves little
    limits = {(report.name, prop): exact_page_size(len(expected)) for report, prop, expected in reports}
    requests = [report.first_request(prop, DATE, row_limit=limits[report.name, prop]) for report, prop, _ in reports]
    enqueue(kafka, [*requests, SEARCH.first_request(SITE.url, DATE, row_limit=100)])
    loop = run_loop(kafka, sandbox, landing)

    assert dead_letters(kafka) == [] and loop.stats.dead_lettered == 0
    for report, prop, expected in reports:
        assert ordered(landing, report, prop) == expected, (report.name, prop)
    # rowCount says when a report ends: each page called once, and none for an empty page after the last.
    calls = sandbox.stats()["calls_by_site"]
    for prop in (SHOP, BLOG):
        pages = sum(len(expected) // limits[report.name, p] for report, p, expected in reports if p == prop)
        assert calls[prop] == pages, (prop, calls, limits)
    # Google's thresholding is in every landed row of the property it concerns.
    blog_file = next(
        landing.download_dir("ga4_channels", DATE, BLOG, landing.latest_download("ga4_channels", DATE, BLOG)).glob(
            "*.parquet"
        )
    )
    assert set(pq.read_table(blog_file).column("thresholded").to_pylist()) == {True}
    # Search Console's report went through the same consumers, as before.
    search = landing.completeness(SEARCH.name, DATE, SITE.url)
    assert search.complete and search.rows == len(
        expected_rows(sandbox.config, SITE.url, DATE, DATE, list(SEARCH.dimensions))
    )
    assert sandbox.stats()["rate_limited"] == 0


def test_a_property_whose_tokens_run_out_waits_while_the_other_finishes_and_then_every_row_lands(
    kafka, sandbox, tmp_path
):
    landing = LandingZone(tmp_path)
    report = STANDARD_REPORTS[1]  # landing pages: the most rows, so the most pages
    shop_pages = math.ceil(len(truth(sandbox, report, SHOP)) / 10)
    assert shop_pages > 3
    # 3 tokens an hour for the shop: each page of 10 rows costs one, so its quota is spent after 3 pages.
    spent = PropertySpec("123456", "111", "Shop", rows_per_day=120, tokens_per_hour=3)
    sandbox.update_config(ga4_properties=[spent, PROPERTIES[1]])
    enqueue(kafka, [report.first_request(prop, DATE, row_limit=10) for prop in (SHOP, BLOG)])
    quota_wait_s = 2.0
    loops: list = []
    refilled_at: list[float] = []

    def refill_once_the_blog_is_done() -> None:
        # A new hour (a full quota) comes only once the blog finished while the shop waited on the delay topic.
        wait_for(
            lambda: loops and loops[0].stats.delayed >= 1 and landing.completeness(report.name, DATE, BLOG).complete,
            60,
            lambda: f"the blog's report to land while the shop waits: {sandbox.stats()}",
        )
        refilled_at.append(sandbox.calls()["now"])
        sandbox.update_config(ga4_properties=PROPERTIES)

    watcher = threading.Thread(target=refill_once_the_blog_is_done, daemon=True)
    watcher.start()
    loop = run_loop(kafka, sandbox, landing, quota_wait_s=quota_wait_s, on_loop=loops.append)
    watcher.join(timeout=5)
    assert refilled_at, "the watcher never saw the shop wait while the blog finished"

    for prop in (SHOP, BLOG):
        assert ordered(landing, report, prop) == truth(sandbox, report, prop), prop
    shop = [call for call in sandbox.calls()["answered"] if call["site_url"] == SHOP]
    answered = [call for call in shop if call["status"] == 200]
    refused = [call for call in shop if call["status"] == 429]
    assert len(answered) == shop_pages  # every page called once with success, none twice
    # The third answer's propertyQuota said the tokens were spent: no call came for a quota wait after it,
    # and every call Google refused came before the quota refilled (one a wait, not a storm).
    third = sorted(call["answered_at"] for call in answered)[2]
    assert all(call["received_at"] >= third + quota_wait_s * 0.9 for call in refused), (third, refused)
    assert all(call["received_at"] < refilled_at[0] for call in refused), (refilled_at, refused)
    assert loop.stats.delayed >= 1 and loop.stats.released >= 1
    assert {d.reason for d in delayed_requests(kafka)} == {"hourly_quota_exceeded"}
    assert dead_letters(kafka) == []


def test_a_bad_property_or_metric_is_a_dead_letter_with_the_reason_and_the_rest_lands(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    good = STANDARD_REPORTS[0]
    unknown_property = good.first_request("properties/999999", DATE, row_limit=ROW_LIMIT)
    bad_metric = Ga4Report("ga4_typo", ("date",), ("sesions",)).first_request(SHOP, DATE)
    enqueue(
        kafka,
        [unknown_property, bad_metric, good.first_request(BLOG, DATE, row_limit=ROW_LIMIT)],
        raw=[b'{"v":1,"partner":"bing","report":"r","account":"a","date":"2026-11-02","dimensions":["date"]}'],
    )
    run_loop(kafka, sandbox, landing)

    letters = {(letter.request or {}).get("account", "raw"): letter for letter in dead_letters(kafka)}
    assert letters["properties/999999"].reason == "permission_denied"
    assert letters[SHOP].reason == "client_error" and "sesions" in letters[SHOP].error
    assert letters["raw"].reason == "invalid_message" and "unknown partner 'bing'" in letters["raw"].error
    assert ordered(landing, good, BLOG) == truth(sandbox, good, BLOG)
    assert sandbox.stats()["calls_by_site"]["properties/999999"] == 1  # one call: a 403 is not asked again


def test_ga4_requests_are_checked_before_anything_is_called():
    report = STANDARD_REPORTS[0]
    request = report.first_request(SHOP, DATE, row_limit=1000)
    assert ReportRequest.decode(request.encode()) == request  # partner and metrics round-trip
    assert (
        request.request_id
        != ReportRequest.decode(
            request.encode().replace(b'"totalRevenue"', b'"keyEvents"').replace(request.request_id.encode(), b"")
        ).request_id
    )  # the metrics are part of the call's identity
    for bad, message in [
        ({"account": "https://www.example.com/"}, "account must be a property"),
        ({"metrics": ()}, "1 to 10 metrics"),
        ({"search_type": "image"}, "Search Console's"),
        ({"row_limit": 250_001}, "row_limit 250001 is outside 1..250000"),
        ({"filters": "[1]"}, "FilterExpression"),
        ({"metrics": ("sessions; DROP",)}, "is not a GA4 dimension or metric name"),
    ]:
        fields = {**request.to_json(), **bad, "request_id": ""}
        del fields["v"]
        fields["dimensions"], fields["metrics"] = tuple(fields["dimensions"]), tuple(fields["metrics"])
        with pytest.raises(InvalidRequestError, match=message):
            ReportRequest(**fields)
    # Search Console's messages are what they were: no partner field, the same ids.
    search = SEARCH.first_request(SITE.url, DATE, row_limit=100)
    assert b"partner" not in search.encode() and b"metrics" not in search.encode()
