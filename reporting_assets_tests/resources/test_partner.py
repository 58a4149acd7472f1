"""The partner resource: the real google-api-python-client against the sandbox."""

from __future__ import annotations

import json
import time

import google.auth.exceptions
import pytest
from googleapiclient.errors import HttpError

from reporting_assets.core.partner import (
    MalformedResponseError,
    PartnerConfigError,
    http_error_reason,
    http_error_summary,
    retry_after_seconds,
    throttle_wait_s,
    validate_rows,
)
from reporting_assets.core.reports import get_report
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec, expected_rows

SITES = [SiteSpec("https://www.example.com/", 30), SiteSpec("https://locked.example.com/", 5, forbidden=True)]
REQUEST = get_report("search_analytics").first_request("https://www.example.com/", "2026-11-02", row_limit=100)


@pytest.fixture
def sandbox():
    with SandboxServer(SandboxConfig(seed=1, sites=SITES, per_site_qps=None, global_qps=None, faults=[])) as server:
        yield server


def test_lists_sites_and_queries_rows_exactly(sandbox):
    client = PartnerResource(api_endpoint=sandbox.url).client()
    sites = client.list_sites()
    assert [(s.url, s.readable) for s in sites] == [
        ("https://locked.example.com/", False),
        ("https://www.example.com/", True),
    ]
    rows = client.query(REQUEST).rows
    assert rows == expected_rows(sandbox.config, REQUEST.account, REQUEST.date, REQUEST.date, list(REQUEST.dimensions))


def test_a_query_is_one_http_call_and_a_429_comes_back_at_once_with_its_retry_after(sandbox):
    # The consumer's scheduler is the one retry layer: the client neither retries nor sleeps.
    sandbox.update_config(per_site_qps=0.1, burst=1.0)
    client = PartnerResource(api_endpoint=sandbox.url, num_retries=3).client()
    client.query(REQUEST)  # takes the only token for the next 10 s
    started = time.monotonic()
    with pytest.raises(HttpError) as refused:
        client.query(REQUEST)
    assert time.monotonic() - started < 5  # no Retry-After slept (it says 10 s), no random·2ⁿ retries
    assert refused.value.status_code == 429 and throttle_wait_s(refused.value) >= 5
    assert sandbox.stats()["calls_by_method"].get("searchanalytics.query") == 2


def test_errors_keep_googles_reason_and_never_the_uri(sandbox):
    client = PartnerResource(api_endpoint=sandbox.url, num_retries=0).client()
    locked = get_report("search_analytics").first_request("https://locked.example.com/", "2026-11-02", 100)
    with pytest.raises(HttpError) as error:
        client.query(locked)
    assert error.value.status_code == 403 and http_error_reason(error.value) == "forbidden"
    summary = http_error_summary(error.value)
    assert summary.startswith("HTTP 403 forbidden") and "http" not in summary.split(":", 1)[0].lower()[4:]


def test_bad_settings_name_the_setting(tmp_path):
    with pytest.raises(PartnerConfigError, match="PartnerResource.num_retries"):
        PartnerResource(api_endpoint="http://127.0.0.1:1/", num_retries=-1).client()
    with pytest.raises(PartnerConfigError, match="PartnerResource.api_endpoint"):
        PartnerResource(api_endpoint="ftp://nowhere").client()
    with pytest.raises(PartnerConfigError, match="credentials_file: cannot read .*missing.json"):
        PartnerResource(credentials_file=str(tmp_path / "missing.json")).client()
    secret = tmp_path / "key.json"
    secret.write_text(json.dumps({"type": "service_account", "private_key": "PLANTED-SECRET-123"}))
    with pytest.raises(PartnerConfigError) as error:
        PartnerResource(credentials_file=str(secret)).client()
    assert "PLANTED-SECRET-123" not in str(error.value)
    assert "credentials_file" in str(error.value)


def test_unreachable_partner_is_an_error_not_a_hang():
    client = PartnerResource(api_endpoint="http://127.0.0.1:9/", num_retries=0, timeout_s=2).client()
    with pytest.raises(OSError):
        client.list_sites()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("<html>", "expected an object"),
        ({"rows": "x"}, "not a list"),
        ({"rows": [{"keys": "x", "clicks": "lots"}]}, "keys"),
        ({"rows": [{"keys": ["a"] * 5, "clicks": -1, "impressions": 1, "ctr": 0, "position": 1}]}, "negative"),
        ({"rows": [{"keys": ["a"] * 5, "clicks": 1.5, "impressions": 2, "ctr": 0, "position": 1}]}, "whole number"),
        ({"rows": [{"keys": ["a"] * 5, "clicks": 1, "impressions": 2, "ctr": 0.5}]}, "position"),
    ],
)
def test_malformed_answers_are_rejected(answer, message):
    with pytest.raises(MalformedResponseError, match=message):
        validate_rows(answer, REQUEST)


def test_retry_after_parsing():
    assert retry_after_seconds("3") == 3 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None and retry_after_seconds("-1") is None


@pytest.mark.parametrize(
    ("now_utc", "midnight_utc"),
    [
        ("2026-12-01T07:59:00", "2026-12-01T08:00:00"),  # 23:59 PST: one minute to go
        ("2026-12-01T08:00:00", "2026-12-02T08:00:00"),  # just refilled: the next day's
        ("2026-07-01T06:59:30", "2026-07-01T07:00:00"),  # summer: PDT, UTC-7
        ("2026-03-08T09:30:00", "2026-03-09T07:00:00"),  # the day clocks go forward
    ],
)
def test_daily_quotas_refill_at_the_next_pacific_midnight(now_utc: str, midnight_utc: str):
    import datetime as dt

    from reporting_assets.core.partner import next_quota_day_ms

    now = dt.datetime.fromisoformat(now_utc).replace(tzinfo=dt.UTC)
    expected = dt.datetime.fromisoformat(midnight_utc).replace(tzinfo=dt.UTC)
    assert next_quota_day_ms(now) == int(expected.timestamp() * 1000)


@pytest.mark.parametrize(
    ("status", "reason", "throttling"),
    [
        (429, "rateLimitExceeded", True),
        (403, "rateLimitExceeded", True),
        (403, "userRateLimitExceeded", True),
        (403, "quotaExceeded", False),  # the load quota: a wait of its own, not a pace
        (403, "dailyLimitExceeded", False),
        (403, "forbidden", False),
        (500, "backendError", False),
    ],
)
def test_throttling_answers_are_told_from_quota_and_permission_refusals(status: int, reason: str, throttling: bool):
    from reporting_assets.core.partner import is_throttling

    body = json.dumps({"error": {"code": status, "errors": [{"reason": reason}]}}).encode()
    assert is_throttling(status, body) is throttling
    assert is_throttling(403, b"not json") is False


def user_credentials_file(tmp_path, token_uri: str, **fields: str):
    info = {
        "type": "authorized_user",
        "client_id": "1234.apps.googleusercontent.com",
        "client_secret": "PLANTED-CLIENT-SECRET",
        "refresh_token": "PLANTED-REFRESH-TOKEN",
        "token_uri": token_uri,
        **fields,
    }
    path = tmp_path / "user.json"
    path.write_text(json.dumps({name: value for name, value in info.items() if value}))
    return path


def test_oauth_user_credentials_get_a_token_from_their_refresh_token_and_read_the_sites(tmp_path):
    # Before: a credentials file had to be a service-account key; a user's saved OAuth credentials
    # (gcloud's application-default file, a consent flow's) were refused as "not a usable key".
    config = SandboxConfig(seed=1, sites=SITES, per_site_qps=None, global_qps=None, faults=[], require_auth=True)
    with SandboxServer(config) as sandbox:
        anonymous = PartnerResource(api_endpoint=sandbox.url, num_retries=0).client()
        with pytest.raises(google.auth.exceptions.InvalidOperation):
            anonymous.query(REQUEST)  # the sandbox answered 401: it really asks for a token

        path = user_credentials_file(tmp_path, f"{sandbox.url}token")
        client = PartnerResource(api_endpoint=sandbox.url, credentials_file=str(path)).client()
        assert client.query(REQUEST).rows == expected_rows(
            sandbox.config, REQUEST.account, REQUEST.date, REQUEST.date, list(REQUEST.dimensions)
        )
        assert len(sandbox.issued_tokens()) == 1


def test_user_credentials_missing_a_field_name_the_field_and_never_a_secret(tmp_path):
    path = user_credentials_file(tmp_path, "http://127.0.0.1:9/token", refresh_token="")
    with pytest.raises(PartnerConfigError) as error:
        PartnerResource(credentials_file=str(path)).client()
    message = str(error.value)
    assert message.startswith("PartnerResource.credentials_file: ") and "OAuth user credentials" in message
    assert "refresh_token" in message and "PLANTED" not in message
