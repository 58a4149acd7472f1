"""GA4: the real google-api-python-client, through core/ga4.py, against the sandbox's GA4 endpoints over HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from googleapiclient.errors import HttpError

from reporting_assets.core.consumer.work import Failure, PartnerAuthError, QuotaExhausted, Retry
from reporting_assets.core.ga4 import (
    GA4_SCOPES,
    Ga4Clients,
    build_clients,
    classify_ga4_error,
    ga4_credentials,
    list_properties,
    run_report_page,
)
from reporting_assets.core.partner import Partner, next_quota_day_ms
from reporting_assets.sandbox import PropertySpec, SandboxConfig, SandboxServer, SiteSpec
from reporting_assets.sandbox.ga4 import expected_report, request_tokens
from reporting_assets_tests.helpers import KEY_ID, service_account_file
from reporting_assets_tests.sandbox.helpers import raw_request

SHOP, BLOG, APP = "properties/123456", "properties/234567", "properties/345678"
PROPERTIES = [
    PropertySpec("123456", "111", "Shop", rows_per_day=120),
    PropertySpec("234567", "111", "Blog", rows_per_day=30, thresholded=True),
    PropertySpec("345678", "222", "App", rows_per_day=10),
    PropertySpec("456789", "333", "Help", rows_per_day=5),
    PropertySpec("567890", "444", "Docs", rows_per_day=5, sampled=True),
]
REQUEST: dict[str, Any] = {
    "dateRanges": [{"startDate": "2026-11-01", "endDate": "2026-11-03"}],
    "dimensions": [{"name": "date"}, {"name": "sessionDefaultChannelGroup"}, {"name": "landingPage"}],
    "metrics": [{"name": "sessions"}, {"name": "keyEvents"}, {"name": "totalRevenue"}],
}


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(seed=3, sites=[SiteSpec("sc-domain:example.com", 10)], ga4_properties=PROPERTIES)
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def clients(sandbox: SandboxServer) -> Ga4Clients:
    return build_clients(Partner(api_endpoint=sandbox.url))


def _keyed(sandbox: SandboxServer, prop: str, request: dict[str, Any]) -> list[dict[str, str]]:
    """The sandbox's truth, keyed by header names as run_report_page keys rows."""
    names = [d["name"] for d in request.get("dimensions", [])] + [m["name"] for m in request.get("metrics", [])]
    return [
        dict(zip(names, [v["value"] for v in row["dimensionValues"] + row["metricValues"]], strict=True))
        for row in expected_report(sandbox.config, prop, request)
    ]


def _refused(clients: Ga4Clients, prop: str, request: dict[str, Any] = REQUEST) -> HttpError:
    with pytest.raises(HttpError) as error:
        run_report_page(clients.data, prop, request, 0, 100)
    return error.value


def test_properties_are_listed_over_every_page_of_account_summaries(sandbox, clients):
    found = list_properties(clients.admin, page_size=1)  # 4 accounts: 4 pages
    assert [(p.name, p.display_name, p.account) for p in found] == [
        (SHOP, "Shop", "accounts/111"),
        (BLOG, "Blog", "accounts/111"),
        (APP, "App", "accounts/222"),
        ("properties/456789", "Help", "accounts/333"),
        ("properties/567890", "Docs", "accounts/444"),
    ]
    assert sandbox.stats()["calls_by_method"]["ga4.accountSummaries.list"] == 4


def test_a_report_read_page_by_page_equals_the_truth_row_for_row(sandbox, clients):
    truth = _keyed(sandbox, SHOP, REQUEST)
    assert len(truth) == 360  # 120 a day over 3 days: the pages below really page
    rows: list[dict[str, str]] = []
    offset = 0
    for _ in range(10):  # bounded: a sandbox ignoring offset must fail, not hang
        page = run_report_page(clients.data, SHOP, REQUEST, offset, 70)
        assert page.row_count == len(truth)
        if not page.rows:
            break
        rows += page.rows
        offset += len(page.rows)
    assert rows == truth
    assert rows[0]["date"] == "20261101" and set(rows[0]) == {
        "date", "sessionDefaultChannelGroup", "landingPage", "sessions", "keyEvents", "totalRevenue"
    }  # fmt: skip
    assert sandbox.stats()["calls_by_method"]["ga4.runReport"] == 7  # 6 pages of <= 70, then an empty one


def test_an_exact_string_filter_keeps_only_its_rows(sandbox, clients):
    request = {
        **REQUEST,
        "dimensionFilter": {
            "filter": {
                "fieldName": "sessionDefaultChannelGroup",
                "stringFilter": {"matchType": "EXACT", "value": "Email"},
            }
        },
    }
    page = run_report_page(clients.data, SHOP, request, 0, 1000)
    assert page.rows and {row["sessionDefaultChannelGroup"] for row in page.rows} == {"Email"}
    assert page.rows == _keyed(sandbox, SHOP, request) and page.row_count == len(page.rows)
    everything = run_report_page(clients.data, SHOP, REQUEST, 0, 1000).rows
    assert page.rows == [row for row in everything if row["sessionDefaultChannelGroup"] == "Email"]


def test_property_quota_is_returned_and_decreases_by_the_tokens_charged(clients):
    request = {**REQUEST, "returnPropertyQuota": True}
    first = run_report_page(clients.data, SHOP, request, 0, 250)
    second = run_report_page(clients.data, SHOP, request, 250, 250)
    assert first.property_quota is not None and second.property_quota is not None
    day_1, day_2 = first.property_quota["tokensPerDay"], second.property_quota["tokensPerDay"]
    assert day_1["consumed"] == request_tokens(250) and day_1["remaining"] == 200_000 - request_tokens(250)
    assert day_2["remaining"] == day_1["remaining"] - request_tokens(110)  # the last 110 of 360 rows
    assert second.property_quota["tokensPerHour"]["remaining"] < first.property_quota["tokensPerHour"]["remaining"]
    assert run_report_page(clients.data, SHOP, REQUEST, 0, 10).property_quota is None  # not asked: not sent


@pytest.mark.parametrize(
    ("limits", "reason"),
    [({"tokens_per_day": 5}, "daily_quota_exceeded"), ({"tokens_per_hour": 5}, "hourly_quota_exceeded")],
)
def test_a_property_out_of_tokens_answers_429_and_waits_while_others_still_answer(sandbox, clients, limits, reason):
    spent = PropertySpec("123456", "111", "Shop", rows_per_day=120, **limits)
    sandbox.update_config(ga4_properties=[spent, *PROPERTIES[1:]])
    run_report_page(clients.data, SHOP, REQUEST, 0, 1000)  # 360 rows: 4 tokens, within the 5
    run_report_page(clients.data, SHOP, REQUEST, 0, 1000)  # 8 of 5: Google lets a call overdraw
    error = _refused(clients, SHOP)
    assert error.status_code == 429 and b'"RESOURCE_EXHAUSTED"' in error.content
    now = dt.datetime(2026, 11, 4, 15, 30, tzinfo=dt.UTC)
    outcome = classify_ga4_error(error, now)
    assert isinstance(outcome, QuotaExhausted) and outcome.reason == reason
    # The daily quota refills at Pacific midnight; the hourly one "within an hour": the consumer's quota wait.
    assert outcome.until_ms == (next_quota_day_ms(now) if reason == "daily_quota_exceeded" else None)
    assert run_report_page(clients.data, BLOG, REQUEST, 0, 10).rows  # another property is not affected
    assert sandbox.stats()["quota_refused"] == 1


def test_concurrent_requests_exhausted_is_throttling(sandbox, clients):
    # A property allowing no more open calls than are open: the sandbox refuses with Google's message.
    sandbox.update_config(ga4_properties=[PropertySpec("123456", "111", tokens_per_day=10**6), *PROPERTIES[1:]])
    quotas = sandbox._app._ga4.quotas  # hold the only open-call slots, as 10 parallel calls would
    prop = sandbox.config.ga4_property(SHOP)
    for _ in range(prop.concurrent_requests):
        assert quotas.open(prop) is None
    outcome = classify_ga4_error(_refused(clients, SHOP))
    assert isinstance(outcome, Retry) and outcome.reason == "throttled"


def test_an_unknown_property_is_permission_denied_naming_it(clients):
    error = _refused(clients, "properties/999")
    assert error.status_code == 403 and b"PERMISSION_DENIED" in error.content
    outcome = classify_ga4_error(error)
    assert isinstance(outcome, Failure) and outcome.reason == "permission_denied"
    assert "properties/999" in outcome.error and "PERMISSION_DENIED" in outcome.error


@pytest.mark.parametrize(("kind", "name"), [("metrics", "sessionz"), ("dimensions", "landingPagePlusQueryString2")])
def test_an_unknown_field_is_a_bad_request_naming_the_field(clients, kind, name):
    request = {**REQUEST, kind: [*REQUEST[kind], {"name": name}]}
    error = _refused(clients, SHOP, request)
    assert error.status_code == 400
    outcome = classify_ga4_error(error)
    assert isinstance(outcome, Failure) and outcome.reason == "client_error"
    assert "INVALID_ARGUMENT" in outcome.error and f"Field {name} is not a valid {kind[:-1]}" in outcome.error


def test_thresholding_and_sampling_surface(clients):
    assert run_report_page(clients.data, BLOG, REQUEST, 0, 5).thresholded is True
    shop = run_report_page(clients.data, SHOP, REQUEST, 0, 5)
    assert shop.thresholded is False and shop.sampled is False
    assert run_report_page(clients.data, "properties/567890", REQUEST, 0, 5).sampled is True


@pytest.mark.parametrize(
    ("code", "status", "expected", "reason"),
    [
        (401, "UNAUTHENTICATED", PartnerAuthError, None),
        (500, "INTERNAL", Retry, "transient"),
        (503, "UNAVAILABLE", Retry, "transient"),
        (429, "RESOURCE_EXHAUSTED", Retry, "throttled"),  # a 429 naming no quota: throttling
    ],
)
def test_auth_and_server_errors_are_classified_without_the_uri(code, status, expected, reason):
    # A 401 never reaches the caller as an HttpError with anonymous credentials (google-auth tries to
    # refresh them first), so these are the bodies Google sends, classified directly.
    body = f'{{"error":{{"code":{code},"message":"Request failed.","status":"{status}"}}}}'.encode()
    error = HttpError(
        _Resp(code), body, uri="https://analyticsdata.googleapis.com/v1beta/properties/1:runReport?key=SECRET"
    )
    outcome = classify_ga4_error(error)
    assert isinstance(outcome, expected) and "SECRET" not in str(outcome) and "googleapis" not in str(outcome)
    if reason is not None:
        assert outcome.reason == reason and f"HTTP {code} {status}" in outcome.error


def test_a_service_account_is_rescoped_to_analytics_and_its_token_is_accepted(sandbox, tmp_path):
    key_file, fragment = service_account_file(tmp_path, f"{sandbox.url}token")
    sandbox.update_config(require_auth=True)
    partner = Partner(api_endpoint=sandbox.url, credentials_file=str(key_file))
    assert list(ga4_credentials(partner).scopes) == GA4_SCOPES
    clients = build_clients(partner)
    assert run_report_page(clients.data, SHOP, REQUEST, 0, 5).rows
    assert [p.name for p in list_properties(clients.admin)][:1] == [SHOP]
    error = _refused(clients, "properties/999")  # an error's text carries no key material nor token
    text = classify_ga4_error(error).error
    assert fragment not in text and KEY_ID not in text and not any(t in text for t in sandbox.issued_tokens())


def test_ga4_properties_are_set_through_the_admin_config_route(sandbox, clients):
    body = b'{"ga4_properties": [{"id": "42", "account": "7", "display_name": "New", "rows_per_day": 3}]}'
    assert raw_request(sandbox.url, "POST", "/_sandbox/config", body).status == 200
    assert [p.name for p in list_properties(clients.admin)] == ["properties/42"]
    bad = raw_request(sandbox.url, "POST", "/_sandbox/config", b'{"ga4_properties": [{"id": "x1", "account": "7"}]}')
    assert bad.status == 400 and b"ga4_properties[].id" in bad.body


class _Resp(dict):
    def __init__(self, status: int) -> None:
        super().__init__(status=str(status))
        self.status = status
        self.reason = ""
