"""Google Analytics 4 in the sandbox: the Admin API's accountSummaries.list and the Data API's runReport.

Paths as google-api-python-client calls them (`analyticsadmin` / `analyticsdata` v1beta, both on the
sandbox's one base URL): `GET /v1beta/accountSummaries` and `POST /v1beta/properties/<id>:runReport`.
Rows are deterministic (`expected_report_rows` is the truth tests compare with); token quotas are per
property, as Google's are, so one property running dry leaves the others answering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from reporting_assets.sandbox import responses
from reporting_assets.sandbox.config import PropertySpec, SandboxConfig
from reporting_assets.sandbox.responses import Response
from reporting_assets.sandbox.stats import CallIdentity, CallRecord

ACCOUNT_SUMMARIES_PATH = "/v1beta/accountSummaries"
PROPERTIES_PREFIX = "/v1beta/properties/"
RUN_REPORT_SUFFIX = ":runReport"
MAX_LIMIT = 250_000  # Google returns at most this many rows a request, whatever `limit` asks
DEFAULT_LIMIT = 10_000
DEFAULT_PAGE_SIZE = 50  # accountSummaries: Google's default; at most 200
MAX_PAGE_SIZE = 200
MAX_RANGE_DAYS = 1830
ROWS_PER_TOKEN = 100  # a request costs 1 token plus one per 100 rows it returns (Google: "most cost < 10")

CHANNELS = (
    "Organic Search", "Direct", "Paid Search", "Referral", "Organic Social", "Email", "Display",
    "Paid Social", "Affiliates", "Unassigned",
)  # fmt: skip
COUNTRIES = (
    "United States", "United Kingdom", "Germany", "France", "India", "Canada", "Australia", "Spain",
    "Italy", "Netherlands", "Brazil", "Mexico", "Japan", "Poland", "Sweden", "Switzerland",
)  # fmt: skip
DEVICES = ("desktop", "mobile", "tablet")
SOURCES = ("google", "(direct)", "bing", "newsletter", "facebook.com", "t.co", "duckduckgo", "partner.example")
MEDIUMS = ("organic", "(none)", "cpc", "email", "referral", "social")
_SECTIONS = ("products", "blog", "guides", "help", "deals", "compare")
_THINGS = ("shoes", "laptop", "coffee", "bike", "camera", "tent", "desk", "chair", "lamp", "watch", "jacket", "kettle")
LANDING_PAGES = ("/", *(f"/{s}/{t}" for s in _SECTIONS for t in _THINGS))
ITEMS = tuple(f"{a} {t}" for a in ("Classic", "Pro", "Lite", "Max") for t in _THINGS)

# Dimension name -> its values (an index into them is what rows are drawn from); `date` is per day.
DIMENSION_VALUES: dict[str, Sequence[str]] = {
    "sessionDefaultChannelGroup": CHANNELS,
    "sessionSource": SOURCES,
    "sessionMedium": MEDIUMS,
    "landingPage": LANDING_PAGES,
    "country": COUNTRIES,
    "deviceCategory": DEVICES,
    "itemName": ITEMS,
}
DIMENSIONS: tuple[str, ...] = ("date", *DIMENSION_VALUES)
# Metric name -> Google's metric type.
METRICS: dict[str, str] = {
    "sessions": "TYPE_INTEGER",
    "totalUsers": "TYPE_INTEGER",
    "newUsers": "TYPE_INTEGER",
    "screenPageViews": "TYPE_INTEGER",
    "conversions": "TYPE_INTEGER",
    "keyEvents": "TYPE_INTEGER",
    "itemsPurchased": "TYPE_INTEGER",
    "totalRevenue": "TYPE_CURRENCY",
    "itemRevenue": "TYPE_CURRENCY",
    "engagementRate": "TYPE_FLOAT",
}
STRING_MATCHES: dict[str, Callable[[str, str], bool]] = {
    "EXACT": lambda value, expected: value == expected,
    "BEGINS_WITH": lambda value, expected: value.startswith(expected),
    "ENDS_WITH": lambda value, expected: value.endswith(expected),
    "CONTAINS": lambda value, expected: expected in value,
    "FULL_REGEXP": lambda value, expected: re.fullmatch(expected, value) is not None,
}
_DAYS_AGO = re.compile(r"^(\d+)daysAgo$")


# --- requests ---


@dataclass(frozen=True)
class StringFilter:
    field: str
    match_type: str
    value: str
    case_sensitive: bool

    def keeps(self, value: str) -> bool:
        if self.case_sensitive:
            return STRING_MATCHES[self.match_type](value, self.value)
        return STRING_MATCHES[self.match_type](value.lower(), self.value.lower())


@dataclass(frozen=True)
class ReportQuery:
    """What a runReport asks, validated: the rows it has do not depend on offset and limit."""

    prop: PropertySpec
    start: dt.date
    end: dt.date
    dimensions: tuple[str, ...]
    metrics: tuple[str, ...]
    row_filter: StringFilter | None = None


def _invalid(message: str) -> Response:
    return _error(400, message, "INVALID_ARGUMENT")


def _error(code: int, message: str, status: str) -> Response:
    """Google's error body for the GA4 APIs (gRPC-style: code, message, status; no `errors` list)."""
    payload = {"error": {"code": code, "message": message, "status": status}}
    return Response(code, json.dumps(payload).encode("utf-8"))


def _date(value: Any, today: dt.date, field: str) -> dt.date:
    if value == "today":
        return today
    if value == "yesterday":
        return today - dt.timedelta(days=1)
    if isinstance(value, str):
        ago = _DAYS_AGO.match(value)
        if ago:
            return today - dt.timedelta(days=int(ago.group(1)))
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{field} {value!r} is invalid: use YYYY-MM-DD, NdaysAgo, yesterday or today.")


def _int_field(payload: dict[str, Any], name: str, default: int) -> int:
    # int64 fields travel as JSON strings in Google's APIs; accept numbers too.
    value = payload.get(name, default)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer (got {value!r}).")
    if value < 0:
        raise ValueError(f"{name} must be non-negative (got {value}).")
    return value


def _names(payload: dict[str, Any], key: str) -> tuple[str, ...]:
    entries = payload.get(key, [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries
    ):
        raise ValueError(f"{key} must be a list of objects with a name.")
    names = tuple(e["name"] for e in entries)
    if len(set(names)) != len(names):
        raise ValueError(f"{key} has a duplicate name.")
    return names


def _filter(payload: dict[str, Any], dimensions: tuple[str, ...]) -> StringFilter | None:
    spec = payload.get("dimensionFilter")
    if spec is None:
        return None
    inner = spec.get("filter") if isinstance(spec, dict) else None
    string = inner.get("stringFilter") if isinstance(inner, dict) else None
    if not isinstance(string, dict):
        raise ValueError("dimensionFilter: the sandbox serves one filter with a stringFilter only.")
    field = inner.get("fieldName")
    if field not in dimensions:
        raise ValueError(f"dimensionFilter fieldName {field!r} must be one of the requested dimensions (sandbox).")
    match_type = string.get("matchType", "EXACT")
    if match_type not in STRING_MATCHES:
        raise ValueError(f"dimensionFilter matchType {match_type!r} is invalid.")
    value = string.get("value")
    if not isinstance(value, str):
        raise ValueError("dimensionFilter stringFilter.value must be a string.")
    return StringFilter(field, match_type, value, bool(string.get("caseSensitive", False)))


def parse_report(config: SandboxConfig, prop: PropertySpec, payload: Any) -> tuple[ReportQuery, int, int, bool]:
    """(query, offset, limit, returnPropertyQuota) of a runReport body; ValueError names the bad field."""
    if not isinstance(payload, dict):
        raise ValueError("Invalid JSON payload received: the body must be a JSON object.")
    dimensions, metrics = _names(payload, "dimensions"), _names(payload, "metrics")
    for name in dimensions:
        if name not in DIMENSIONS:
            raise ValueError(
                f"Field {name} is not a valid dimension. For a list of valid dimensions and metrics, see the API schema."
            )
    for name in metrics:
        if name not in METRICS:
            raise ValueError(
                f"Field {name} is not a valid metric. For a list of valid dimensions and metrics, see the API schema."
            )
    if not dimensions and not metrics:
        raise ValueError("A report needs at least one dimension or metric.")
    ranges = payload.get("dateRanges")
    if not isinstance(ranges, list) or not ranges:
        raise ValueError("dateRanges is required.")
    if len(ranges) > 1 or not isinstance(ranges[0], dict):
        raise ValueError("dateRanges: the sandbox serves one date range a report.")
    today = config.today_date()
    start = _date(ranges[0].get("startDate"), today, "startDate")
    end = _date(ranges[0].get("endDate"), today, "endDate")
    if end < start:
        raise ValueError(f"endDate {end} is before startDate {start}.")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise ValueError(f"The date range is longer than {MAX_RANGE_DAYS} days (sandbox).")
    offset = _int_field(payload, "offset", 0)
    limit = _int_field(payload, "limit", DEFAULT_LIMIT) or DEFAULT_LIMIT  # 0 means unset, as in proto3
    query = ReportQuery(prop, start, end, dimensions, metrics, _filter(payload, dimensions))
    return query, offset, min(limit, MAX_LIMIT), bool(payload.get("returnPropertyQuota", False))


# --- the truth: which rows a report has ---


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _metric_value(name: str, rng: random.Random, sessions: int) -> str:
    if name == "sessions":
        return str(sessions)
    if name == "totalUsers":
        return str(max(1, int(sessions * rng.uniform(0.6, 0.95))))
    if name == "newUsers":
        return str(int(sessions * rng.uniform(0.1, 0.6)))
    if name == "screenPageViews":
        return str(int(sessions * rng.uniform(1.0, 4.0)))
    if name in ("conversions", "keyEvents"):
        return str(int(sessions * rng.uniform(0.0, 0.08)))
    if name == "itemsPurchased":
        return str(int(sessions * rng.uniform(0.0, 0.05)))
    if name in ("totalRevenue", "itemRevenue"):
        return f"{sessions * rng.uniform(0.0, 3.5):.2f}"
    return f"{rng.uniform(0.3, 0.9):.6f}"  # engagementRate


def _unit_rows(config: SandboxConfig, query: ReportQuery, day: dt.date | None) -> list[dict[str, Any]]:
    """The rows of one day (or of the whole range without `date`), before any filter."""
    dims = [d for d in query.dimensions if d != "date"]
    pools = [DIMENSION_VALUES[d] for d in dims]
    combos = math.prod(len(p) for p in pools)  # 1 with no other dimension: one total row
    unit = day.isoformat() if day is not None else f"{query.start}..{query.end}"
    rng = _rng(config.seed, query.prop.id, unit, ",".join(dims))
    wanted = (
        query.prop.rows_per_day if day is not None else query.prop.rows_per_day * ((query.end - query.start).days + 1)
    )
    picked = sorted(rng.sample(range(combos), min(combos, wanted))) if wanted else []
    rows = []
    for index in picked:
        values, rest = [], index
        for pool in reversed(pools):
            rest, at = divmod(rest, len(pool))
            values.append(pool[at])
        by_dim = dict(zip(dims, reversed(values), strict=True))
        if day is not None:
            by_dim["date"] = day.strftime("%Y%m%d")
        sessions = max(1, int(rng.paretovariate(1.2) * 20))
        rows.append(
            {
                "dimensionValues": [{"value": by_dim[d]} for d in query.dimensions],
                "metricValues": [{"value": _metric_value(m, rng, sessions)} for m in query.metrics],
            }
        )
    return rows


def expected_report_rows(config: SandboxConfig, query: ReportQuery) -> list[dict[str, Any]]:
    """Every row of the report in the order runReport pages through them (date first, then as drawn)."""
    if "date" in query.dimensions:
        days = [query.start + dt.timedelta(days=i) for i in range((query.end - query.start).days + 1)]
        rows = [row for day in days for row in _unit_rows(config, query, day)]
    else:
        rows = _unit_rows(config, query, None)
    if query.row_filter is not None:
        at = query.dimensions.index(query.row_filter.field)
        rows = [row for row in rows if query.row_filter.keeps(row["dimensionValues"][at]["value"])]
    return rows


def expected_report(config: SandboxConfig, property_name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row a runReport body has over all its pages (offset and limit ignored): tests' truth."""
    prop = config.ga4_property(property_name)
    if prop is None:
        raise ValueError(f"no GA4 property {property_name!r} in the config")
    return expected_report_rows(config, parse_report(config, prop, body)[0])


def request_tokens(rows_returned: int) -> int:
    """Tokens a runReport costs: deterministic, growing with the rows it returns."""
    return 1 + rows_returned // ROWS_PER_TOKEN


# --- quotas ---


@dataclass
class _Usage:
    day: int = -1  # the clock's day / hour number the counters belong to
    hour: int = -1
    day_tokens: int = 0
    hour_tokens: int = 0
    open_calls: int = 0


class PropertyQuotas:
    """Tokens per day and per hour, and concurrent requests, per property (fixed windows of the clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, _Usage] = {}

    def reset(self) -> None:
        with self._lock:
            self._usage = {}

    def _current(self, prop: PropertySpec) -> _Usage:
        now = self._clock()
        usage = self._usage.setdefault(prop.id, _Usage())
        day, hour = int(now // 86_400), int(now // 3_600)
        if usage.day != day:
            usage.day, usage.day_tokens = day, 0
        if usage.hour != hour:
            usage.hour, usage.hour_tokens = hour, 0
        return usage

    def open(self, prop: PropertySpec) -> str | None:
        """Start a call: None, or which quota is exhausted (the call is refused and costs nothing)."""
        with self._lock:
            usage = self._current(prop)
            if usage.day_tokens >= prop.tokens_per_day:
                return "tokensPerDay"
            if usage.hour_tokens >= prop.tokens_per_hour:
                return "tokensPerHour"
            if usage.open_calls >= prop.concurrent_requests:
                return "concurrentRequests"
            usage.open_calls += 1
            return None

    def close(self, prop: PropertySpec, tokens: int) -> None:
        """End an opened call, charging its tokens (a call may overdraw; the next one is refused)."""
        with self._lock:
            usage = self._current(prop)
            usage.open_calls -= 1
            usage.day_tokens += tokens
            usage.hour_tokens += tokens

    def status(self, prop: PropertySpec) -> dict[str, Any]:
        """The response's `propertyQuota`, as Google reports it after the call."""
        with self._lock:
            usage = self._current(prop)
            return {
                "tokensPerDay": _status(usage.day_tokens, prop.tokens_per_day),
                "tokensPerHour": _status(usage.hour_tokens, prop.tokens_per_hour),
                "concurrentRequests": _status(usage.open_calls, prop.concurrent_requests),
                "serverErrorsPerProjectPerHour": _status(0, 10),
                "potentiallyThresholdedRequestsPerHour": _status(0, 120),
                "tokensPerProjectPerHour": _status(usage.hour_tokens, prop.tokens_per_hour // 4),
            }


def _status(consumed: int, limit: int) -> dict[str, int]:
    return {"consumed": consumed, "remaining": max(0, limit - consumed)}


_EXHAUSTED_MESSAGES = {
    "tokensPerDay": "Exhausted property tokens per day for {name}. Daily quotas refresh at midnight Pacific time.",
    "tokensPerHour": "Exhausted property tokens per hour for {name}. Hourly quotas refresh within an hour.",
    "concurrentRequests": "Exhausted concurrent requests quota for {name}.",
}


# --- the API ---


def is_ga4_path(path: str) -> bool:
    return path.rstrip("/") == ACCOUNT_SUMMARIES_PATH or path.startswith(PROPERTIES_PREFIX)


def identity(method: str, path: str) -> CallIdentity:
    """What a GA4 call asks for, for the call timeline (the property stands where a site would)."""
    if path.rstrip("/") == ACCOUNT_SUMMARIES_PATH:
        return CallIdentity("ga4.accountSummaries.list")
    if method == "POST" and path.endswith(RUN_REPORT_SUFFIX):
        return CallIdentity("ga4.runReport", unquote(path[len("/v1beta/") : -len(RUN_REPORT_SUFFIX)]))
    return CallIdentity("unknown")


class Ga4Api:
    """Answers the GA4 calls; safe to call from many threads."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.quotas = PropertyQuotas(clock)

    def handle(
        self, config: SandboxConfig, method: str, path: str, query_string: str, body: bytes
    ) -> tuple[Response, CallRecord]:
        if path.rstrip("/") == ACCOUNT_SUMMARIES_PATH and method == "GET":
            return self._account_summaries(config, parse_qs(query_string))
        if method == "POST" and path.startswith(PROPERTIES_PREFIX) and path.endswith(RUN_REPORT_SUFFIX):
            name = unquote(path[len("/v1beta/") : -len(RUN_REPORT_SUFFIX)])
            return self._run_report(config, name, body)
        response = _error(404, f"Method not found: {method} {path}", "NOT_FOUND")
        return response, CallRecord("unknown", response.status)

    def _account_summaries(self, config: SandboxConfig, params: dict[str, list[str]]) -> tuple[Response, CallRecord]:
        method = "ga4.accountSummaries.list"
        accounts: dict[str, list[PropertySpec]] = {}
        for prop in config.ga4_properties:
            accounts.setdefault(prop.account, []).append(prop)
        try:
            size = int(params.get("pageSize", [DEFAULT_PAGE_SIZE])[0]) or DEFAULT_PAGE_SIZE
            start = int(params.get("pageToken", ["0"])[0] or 0)
            if size < 0 or not 0 <= start <= len(accounts):
                raise ValueError
        except ValueError:
            response = _invalid("pageSize or pageToken is invalid.")
            return response, CallRecord(method, response.status)
        size = min(size, MAX_PAGE_SIZE)
        ids = sorted(accounts)[start : start + size]
        summaries = [
            {
                "name": f"accountSummaries/{account}",
                "account": f"accounts/{account}",
                "displayName": f"Account {account}",
                "propertySummaries": [
                    {
                        "property": prop.name,
                        "displayName": prop.display_name or prop.name,
                        "propertyType": "PROPERTY_TYPE_ORDINARY",
                        "parent": f"accounts/{account}",
                    }
                    for prop in accounts[account]
                ],
            }
            for account in ids
        ]
        payload: dict[str, Any] = {"accountSummaries": summaries}
        if start + size < len(accounts):
            payload["nextPageToken"] = str(start + size)
        response = responses.json_response(payload)
        return response, CallRecord(method, 200, success=True)

    def _run_report(self, config: SandboxConfig, name: str, body: bytes) -> tuple[Response, CallRecord]:
        method = "ga4.runReport"
        prop = config.ga4_property(name)
        if prop is None:
            message = (
                f"User does not have sufficient permissions for this property ({name}). "
                "To learn more about Property ID, see https://developers.google.com/analytics/devguides/reporting/data/v1/property-id."
            )
            response = _error(403, message, "PERMISSION_DENIED")
            return response, CallRecord(method, response.status, name)
        try:
            query, offset, limit, with_quota = parse_report(config, prop, json.loads(body or b"null"))
        except (ValueError, UnicodeDecodeError) as exc:  # includes json.JSONDecodeError
            response = _invalid(str(exc))
            return response, CallRecord(method, response.status, name)
        exhausted = self.quotas.open(prop)
        if exhausted is not None:
            response = _error(429, _EXHAUSTED_MESSAGES[exhausted].format(name=name), "RESOURCE_EXHAUSTED")
            return response, CallRecord(method, response.status, name, quota_refused=True)
        rows: list[dict[str, Any]] = []
        try:
            every = expected_report_rows(config, query)
            rows = every[offset : offset + limit]
        finally:
            self.quotas.close(prop, request_tokens(len(rows)))
        payload: dict[str, Any] = {
            "dimensionHeaders": [{"name": d} for d in query.dimensions],
            "metricHeaders": [{"name": m, "type": METRICS[m]} for m in query.metrics],
            "rows": rows,
            "rowCount": len(every),
            "metadata": _metadata(prop),
            "kind": "analyticsData#runReport",
        }
        if not rows:
            del payload["rows"]  # proto3 JSON leaves an empty list out
        if with_quota:
            payload["propertyQuota"] = self.quotas.status(prop)
        return responses.json_response(payload), CallRecord(method, 200, name, rows=len(rows), success=True)


def _metadata(prop: PropertySpec) -> dict[str, Any]:
    metadata: dict[str, Any] = {"currencyCode": "USD", "timeZone": "America/Los_Angeles"}
    if prop.thresholded:
        metadata["subjectToThresholding"] = True
    if prop.sampled:
        metadata["samplingMetadatas"] = [{"samplesReadCount": "1000000", "samplingSpaceSize": "10000000"}]
    return metadata
