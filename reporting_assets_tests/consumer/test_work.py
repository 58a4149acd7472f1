"""Every partner error answer classified: stop, wait for a quota, ask again, or give up."""

from __future__ import annotations

import json

import httplib2
import pytest
from googleapiclient.errors import HttpError

from reporting_assets.core.consumer.work import (
    Failure,
    PartnerAuthError,
    QuotaExhausted,
    Retry,
    classify_http_error,
)


def http_error(status: int, reason: str = "", retry_after: str | None = None) -> HttpError:
    headers = {"status": str(status)}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    body = {"error": {"code": status, "message": "no", "errors": [{"reason": reason}] if reason else []}}
    return HttpError(httplib2.Response(headers), json.dumps(body).encode(), uri="https://x/?key=SECRET")


@pytest.mark.parametrize(
    ("status", "reason", "kind", "what"),
    [
        (429, "rateLimitExceeded", Retry, "throttled"),
        (403, "rateLimitExceeded", Retry, "throttled"),
        (403, "userRateLimitExceeded", Retry, "throttled"),
        (403, "quotaExceeded", QuotaExhausted, "quota_exceeded"),
        (403, "dailyLimitExceeded", QuotaExhausted, "daily_quota_exceeded"),
        (500, "backendError", Retry, "transient"),
        (503, "", Retry, "transient"),
        (401, "authError", PartnerAuthError, None),
        (403, "forbidden", Failure, "permission_denied"),
        (403, "insufficientPermissions", Failure, "permission_denied"),
        (404, "notFound", Failure, "unknown_site"),
        (400, "badRequest", Failure, "client_error"),
    ],
)
def test_each_error_answer_has_one_meaning(status: int, reason: str, kind: type, what: str | None) -> None:
    meaning = classify_http_error(http_error(status, reason))
    assert type(meaning) is kind
    if what is not None:
        assert meaning.reason == what
    assert "SECRET" not in str(meaning)


def test_a_throttle_carries_the_partners_retry_after_and_a_daily_quota_its_refill_time() -> None:
    throttle = classify_http_error(http_error(429, "rateLimitExceeded", retry_after="7"))
    assert isinstance(throttle, Retry) and throttle.wait_s == 7 and throttle.failure == "rate_limited"
    assert classify_http_error(http_error(429, "rateLimitExceeded")).wait_s is None
    daily = classify_http_error(http_error(403, "dailyLimitExceeded"))
    assert isinstance(daily, QuotaExhausted) and daily.until_ms is not None
    assert classify_http_error(http_error(403, "quotaExceeded")).until_ms is None  # the consumer's quota_wait_s
