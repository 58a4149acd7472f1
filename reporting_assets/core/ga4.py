"""Google Analytics 4 through google-api-python-client: the Admin API lists properties, the Data API reads reports.

Built like Search Console (core/partner.py): the discovery documents the package ships, the same
`Partner` settings (endpoint, credentials file, timeout), so offline both point at the sandbox. A report
page is one HTTP call with no retries: whoever schedules the calls decides when to ask again, from what
`classify_ga4_error` says the error means.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import httplib2
from google.auth.credentials import Credentials, Scoped
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from reporting_assets.core.consumer.work import Failure, PartnerAuthError, QuotaExhausted, Retry
from reporting_assets.core.partner import Partner, credentials_refused, next_quota_day_ms, throttle_wait_s

GA4_SCOPES = ["https://www.googleapis.com/auth/analytics.readonly"]
MAX_LIMIT = 250_000  # rows Google returns at most per runReport, whatever `limit` asks


class Ga4ResponseError(ValueError):
    """The Data or Admin API answered 200 with a body that is not what its discovery document says."""


@dataclass(frozen=True)
class Ga4Property:
    name: str  # "properties/123456"
    display_name: str
    account: str  # "accounts/111"
    account_name: str


@dataclass(frozen=True)
class ReportPage:
    """One runReport page: rows keyed by header name, and what Google says about the whole report."""

    rows: list[dict[str, str]]
    row_count: int  # rows of the whole report, over all pages
    property_quota: dict[str, Any] | None  # only when the request set returnPropertyQuota
    thresholded: bool  # Google may have withheld rows of small user counts
    sampled: bool
    metric_types: dict[str, str] = field(default_factory=dict)  # metric -> TYPE_INTEGER, TYPE_FLOAT, ...


@dataclass(frozen=True)
class Ga4Clients:
    data: Any  # analyticsdata v1beta
    admin: Any  # analyticsadmin v1beta


def ga4_credentials(partner: Partner) -> Credentials:
    """The partner's credentials, asking for the Analytics scope where the kind of credentials can.

    A service account's token is minted for the scopes it asks, so it is re-scoped; a user's refresh
    token carries the scopes granted at consent (the consent must include analytics.readonly).
    """
    credentials = partner.credentials()
    if isinstance(credentials, Scoped):
        return credentials.with_scopes(GA4_SCOPES)
    return credentials


def build_clients(partner: Partner) -> Ga4Clients:
    """Both GA4 services from the shipped discovery documents (no network), on one authorized transport each."""
    partner.validate()
    credentials = ga4_credentials(partner)
    options = {"api_endpoint": partner.api_endpoint} if partner.api_endpoint else None

    def service(name: str) -> Any:
        http = AuthorizedHttp(credentials, http=httplib2.Http(timeout=partner.timeout_s))
        return build(name, "v1beta", http=http, static_discovery=True, cache_discovery=False, client_options=options)

    return Ga4Clients(data=service("analyticsdata"), admin=service("analyticsadmin"))


def list_properties(admin: Any, page_size: int = 200, num_retries: int = 0) -> list[Ga4Property]:
    """Every property the credentials can read, over all pages of accountSummaries.list, sorted by name."""
    found: list[Ga4Property] = []
    token: str | None = None
    while True:
        answer = admin.accountSummaries().list(pageSize=page_size, pageToken=token).execute(num_retries=num_retries)
        if not isinstance(answer, dict):
            raise Ga4ResponseError("accountSummaries.list answer is not an object")
        for summary in answer.get("accountSummaries", []):
            for prop in summary.get("propertySummaries", []):
                found.append(
                    Ga4Property(
                        prop["property"],
                        prop.get("displayName", ""),
                        summary["account"],
                        summary.get("displayName", ""),
                    )
                )
        token = answer.get("nextPageToken") or None
        if token is None:
            return sorted(found, key=lambda p: p.name)


def run_report_page(data: Any, property_name: str, request: dict[str, Any], offset: int, limit: int) -> ReportPage:
    """One page of a report in exactly one HTTP call (no retries here); raises HttpError or Ga4ResponseError.

    `request` is a RunReportRequest body without offset and limit, which this call sets.
    """
    if not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit must be within 1..{MAX_LIMIT}, got {limit}")
    body = {**request, "offset": str(offset), "limit": str(limit)}  # int64 fields travel as strings
    answer = data.properties().runReport(property=property_name, body=body).execute(num_retries=0)
    return parse_report_page(answer, limit)


def parse_report_page(answer: object, limit: int) -> ReportPage:
    """A runReport answer as rows keyed by header name, checked against its headers."""
    if not isinstance(answer, dict):
        raise Ga4ResponseError(f"runReport answer is a JSON {type(answer).__name__}, expected an object")
    names = [h.get("name") for h in answer.get("dimensionHeaders", [])] + [
        h.get("name") for h in answer.get("metricHeaders", [])
    ]
    if not all(isinstance(n, str) for n in names):
        raise Ga4ResponseError("runReport headers lack names")
    raw_rows = answer.get("rows", [])  # proto3 JSON leaves out an empty list
    if not isinstance(raw_rows, list) or len(raw_rows) > limit:
        raise Ga4ResponseError(f"runReport rows are not a list of at most {limit}")
    rows = [_row(raw, names, index) for index, raw in enumerate(raw_rows)]
    row_count = answer.get("rowCount", 0)
    if not isinstance(row_count, int) or row_count < len(rows):
        raise Ga4ResponseError(f"runReport rowCount {row_count!r} is not a count of at least {len(rows)}")
    metadata = answer.get("metadata") or {}
    metric_types = {h["name"]: str(h.get("type", "")) for h in answer.get("metricHeaders", [])}
    return ReportPage(
        metric_types=metric_types,
        rows=rows,
        row_count=row_count,
        property_quota=answer.get("propertyQuota"),
        thresholded=bool(metadata.get("subjectToThresholding", False)),
        sampled=bool(metadata.get("samplingMetadatas")),
    )


def _row(raw: Any, names: list[str], index: int) -> dict[str, str]:
    try:
        values = [v["value"] for v in raw.get("dimensionValues", [])] + [
            v["value"] for v in raw.get("metricValues", [])
        ]
    except (AttributeError, KeyError, TypeError):
        raise Ga4ResponseError(f"runReport row {index} has values without 'value'") from None
    if len(values) != len(names):
        raise Ga4ResponseError(f"runReport row {index} has {len(values)} values for {len(names)} headers")
    return dict(zip(names, values, strict=True))


def ga4_error_status(error: HttpError) -> tuple[str, str]:
    """Google's `error.status` (RESOURCE_EXHAUSTED, INVALID_ARGUMENT, ...) and `error.message`, or ''."""
    try:
        body = json.loads(error.content.decode("utf-8"))["error"]
        return str(body.get("status", "")), str(body.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", ""


def ga4_error_summary(error: HttpError) -> str:
    """Status code, Google's status and message, never the request URI."""
    status, message = ga4_error_status(error)
    return f"HTTP {error.status_code}" + (f" {status}" if status else "") + (f": {message}" if message else "")


def classify_ga4_error(error: HttpError, now: dt.datetime | None = None) -> Exception:
    """What a GA4 error answer means, in the consumer's classes: stop, wait for a quota, ask again, or give up.

    GA4 says which quota ran out only in the message of a 429 RESOURCE_EXHAUSTED: tokens per day wait
    for Pacific midnight, tokens per hour for the consumer's quota wait; concurrent requests (or an
    unnamed 429) are throttling, asked again soon.
    """
    code = error.status_code
    summary = ga4_error_summary(error)
    _status, message = ga4_error_status(error)
    text = message.lower()
    if code == 401:
        return PartnerAuthError(credentials_refused(summary))
    if code == 429 and "tokens per day" in text:
        return QuotaExhausted("daily_quota_exceeded", next_quota_day_ms(now))
    if code == 429 and "tokens per hour" in text:
        # Refilled "within an hour": the consumer looks again after its quota wait (one call a wait).
        return QuotaExhausted("hourly_quota_exceeded")
    if code == 429:
        return Retry("throttled", summary, "rate_limited", code, throttle_wait_s(error))
    if code >= 500:
        return Retry("transient", summary, "server_error", code)
    if code == 403:
        return Failure("permission_denied", summary, 1, code)  # grant the credentials access, then re-drive
    if code == 404:
        return Failure("unknown_property", summary, 1, code)
    return Failure("client_error", summary, 1, code)  # 400 INVALID_ARGUMENT: the same request cannot succeed
