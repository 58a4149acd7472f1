"""Google Analytics 4 (`analyticsdata` v1beta `properties.runReport`): the second partner.

A request is one page of one property's report for one day: `dimensions` and `metrics` by their
GA4 names, `start_row`/`row_limit` as runReport's offset/limit, `filters` as its `dimensionFilter`
JSON. Every call asks for the property's quota: a property whose tokens the answer says are spent is
held (its requests wait on the delay topic) before a call is refused. The landed table has one column
per dimension (GA4's names) and per metric (typed by the answer's metric headers), plus whether
Google thresholded or sampled the report.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from googleapiclient.errors import HttpError

from reporting_assets.core.consumer.work import QuotaExhausted
from reporting_assets.core.ga4 import (
    MAX_LIMIT,
    Ga4Clients,
    build_clients,
    classify_ga4_error,
    run_report_page,
)
from reporting_assets.core.landing import REQUEST_METADATA_KEY
from reporting_assets.core.messages import SEARCH_CONSOLE_FIELDS, InvalidRequestError, ReportRequest
from reporting_assets.core.partner import Answer, Partner, next_quota_day_ms

PROPERTY = re.compile(r"properties/[0-9]{1,20}")
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_:]{0,99}")  # custom ones too: customEvent:<parameter>
MAX_DIMENSIONS = 9  # what runReport takes in one request
MAX_METRICS = 10
COMMON_COLUMNS = [
    ("report", pa.string()),
    ("account", pa.string()),
    ("date", pa.date32()),
    ("request_id", pa.string()),
    ("download", pa.string()),
    ("row_number", pa.int64()),
]
FLAG_COLUMNS = [("thresholded", pa.bool_()), ("sampled", pa.bool_())]
INTEGER_TYPES = frozenset({"TYPE_INTEGER", "TYPE_SECONDS", "TYPE_MILLISECONDS"})


def report_body(request: ReportRequest) -> dict[str, Any]:
    """The RunReportRequest of one page, without offset and limit (run_report_page sets them)."""
    body: dict[str, Any] = {
        "dateRanges": [{"startDate": request.date, "endDate": request.date}],
        "dimensions": [{"name": name} for name in request.dimensions],
        "metrics": [{"name": name} for name in request.metrics],
        "returnPropertyQuota": True,
    }
    if request.filters:
        body["dimensionFilter"] = json.loads(request.filters)
    return body


def quota_spent(property_quota: dict[str, Any] | None, now: dt.datetime | None = None) -> QuotaExhausted | None:
    """Whether the property's next call would be refused, by the quota this answer reports."""

    def remaining(name: str) -> int | None:
        status = (property_quota or {}).get(name)
        value = status.get("remaining") if isinstance(status, dict) else None
        return value if isinstance(value, int) else None

    day, hour = remaining("tokensPerDay"), remaining("tokensPerHour")
    if day is not None and day <= 0:
        return QuotaExhausted("daily_quota_exceeded", next_quota_day_ms(now))
    if hour is not None and hour <= 0:
        return QuotaExhausted("hourly_quota_exceeded")
    return None


class Ga4Client:
    """The Data API's runReport, one page per call. Not thread-safe (httplib2)."""

    def __init__(self, clients: Ga4Clients) -> None:
        self._data = clients.data

    def query(self, request: ReportRequest) -> Answer:
        page = run_report_page(self._data, request.account, report_body(request), request.start_row, request.row_limit)
        integer = {name for name, kind in page.metric_types.items() if kind in INTEGER_TYPES}
        rows = [typed_row(row, request, integer) for row in page.rows]  # ValueError: a malformed answer
        return Answer(
            rows=rows,
            more=request.start_row + len(page.rows) < page.row_count,
            quota_spent=quota_spent(page.property_quota),
            details={"metric_types": page.metric_types, "thresholded": page.thresholded, "sampled": page.sampled},
        )


def typed_row(row: dict[str, str], request: ReportRequest, integer: set[str]) -> dict[str, Any]:
    """A row as landed: metrics as numbers (GA4 sends every value as a string), `date` as a date."""
    typed: dict[str, Any] = dict(row)
    for name in request.metrics:
        typed[name] = int(row[name]) if name in integer else float(row[name])
    if "date" in row:
        typed["date"] = dt.datetime.strptime(row["date"], "%Y%m%d").date()  # GA4's date: YYYYMMDD
    return typed


def landed_schema(request: ReportRequest, metric_types: dict[str, str]) -> pa.Schema:
    dimensions = [(name, pa.string()) for name in request.dimensions if name != "date"]
    metrics = [
        (name, pa.int64() if metric_types.get(name) in INTEGER_TYPES else pa.float64()) for name in request.metrics
    ]
    return pa.schema([*COMMON_COLUMNS, *dimensions, *metrics, *FLAG_COLUMNS])


class Ga4Connector:
    name = "ga4"
    max_row_limit = MAX_LIMIT
    splits_at_row_cap = False  # offset paging reaches every row

    def validate_request(self, request: ReportRequest) -> None:
        def fail(message: str) -> None:
            raise InvalidRequestError(f"GA4 request: {message}")

        if not PROPERTY.fullmatch(request.account):
            fail(f"account must be a property, properties/<digits>, got {request.account[:100]!r}")
        if len(request.dimensions) > MAX_DIMENSIONS or not 1 <= len(request.metrics) <= MAX_METRICS:
            fail(f"a report takes up to {MAX_DIMENSIONS} dimensions and 1 to {MAX_METRICS} metrics")
        bad = [name for name in (*request.dimensions, *request.metrics) if not FIELD_NAME.fullmatch(name)]
        if bad:
            fail(f"{bad[0][:100]!r} is not a GA4 dimension or metric name")
        if set(request.dimensions) & set(request.metrics):
            fail("a name is both a dimension and a metric")
        defaults = {"search_type": "web", "data_state": "final", "aggregation_type": "auto"}
        if any(getattr(request, name) != defaults[name] for name in SEARCH_CONSOLE_FIELDS):
            fail(f"{', '.join(SEARCH_CONSOLE_FIELDS)} are Search Console's: leave them out")
        if request.filters:
            try:
                expression = json.loads(request.filters)
            except ValueError:
                expression = None
            if not isinstance(expression, dict):
                fail("filters must be a FilterExpression JSON object (runReport's dimensionFilter)")

    def build_client(self, partner: Partner) -> Ga4Client:
        return Ga4Client(build_clients(partner))

    def classify(self, error: HttpError) -> Exception:
        return classify_ga4_error(error)

    def page_table(
        self, request: ReportRequest, rows: Sequence[dict[str, Any]], provisional: bool, answer: Answer | None
    ) -> pa.Table:
        details = answer.details if answer is not None else {}
        schema = landed_schema(request, details.get("metric_types", {}))
        columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        day = dt.date.fromisoformat(request.date)
        for offset, row in enumerate(rows):
            columns["report"].append(request.report)
            columns["account"].append(request.account)
            columns["date"].append(row.get("date", day))
            columns["request_id"].append(request.request_id)
            columns["download"].append(request.download)
            columns["row_number"].append(request.start_row + offset)
            for name in (*request.dimensions, *request.metrics):
                if name != "date":
                    columns[name].append(row[name])
            columns["thresholded"].append(bool(details.get("thresholded", False)))
            columns["sampled"].append(bool(details.get("sampled", False)))
        metadata = {
            REQUEST_METADATA_KEY: request.encode(),
            b"rows": str(len(rows)).encode(),
            b"provisional": b"true" if provisional else b"false",
            b"thresholded": b"true" if details.get("thresholded") else b"false",
            b"sampled": b"true" if details.get("sampled") else b"false",
        }
        return pa.table(columns, schema=schema.with_metadata(metadata))


CONNECTOR = Ga4Connector()


@dataclass(frozen=True)
class Ga4Report:
    """A GA4 report of the standard set: one request per property and day, paged by offset."""

    name: str
    dimensions: tuple[str, ...]
    metrics: tuple[str, ...]
    description: str = ""

    def first_request(self, property_name: str, date: str, row_limit: int = MAX_LIMIT) -> ReportRequest:
        return ReportRequest(
            report=self.name,
            account=property_name,
            date=date,
            dimensions=self.dimensions,
            metrics=self.metrics,
            row_limit=row_limit,
            partner=Ga4Connector.name,
        )


# What analysts ask of GA4 first: traffic and outcomes by channel, landing page, country and device,
# and e-commerce items (one day per request: fresh-then-final revisits recent days one by one).
STANDARD_REPORTS = (
    Ga4Report(
        "ga4_channels",
        ("date", "sessionDefaultChannelGroup"),
        ("sessions", "totalUsers", "conversions", "totalRevenue"),
        "Sessions, users, conversions and revenue by default channel group",
    ),
    Ga4Report(
        "ga4_landing_pages",
        ("date", "landingPage"),
        ("sessions", "totalUsers", "conversions", "totalRevenue"),
        "Sessions, users, conversions and revenue by landing page",
    ),
    Ga4Report(
        "ga4_country_device",
        ("date", "country", "deviceCategory"),
        ("sessions", "totalUsers", "newUsers"),
        "Sessions and users by country and device category",
    ),
    Ga4Report(
        "ga4_items",
        ("date", "itemName"),
        ("itemsPurchased", "itemRevenue"),
        "E-commerce items: items purchased and item revenue by item",
    ),
)
