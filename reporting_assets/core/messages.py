"""Wire formats of the request topic and the dead-letter topic.

A request message is one API call. Its `request_id` is a hash of the call's parameters, so the
same call always has the same id and lands under the same file name (idempotent landing).
Messages never carry credentials: the consumer's partner resource holds them.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any

REQUEST_VERSION = 1
DEAD_LETTER_VERSION = 1
MAX_ROW_LIMIT = 25_000
MAX_ACCOUNT_LENGTH = 2_048
CONTROL_CHARACTER = re.compile("[\x00-\x1f]")
# Search Console keeps 16 months of data; anything far outside that is a typo, not a request.
EARLIEST_DATE = dt.date(2000, 1, 1)
LATEST_DATE = dt.date(2100, 1, 1)
DIMENSIONS = ("date", "query", "page", "country", "device", "searchAppearance", "hour")
SEARCH_TYPES = ("web", "image", "video", "news", "discover", "googleNews")
DATA_STATES = ("final", "all", "hourly_all")
AGGREGATION_TYPES = ("auto", "byPage", "byProperty", "byNewsShowcasePanel")
FILTER_DIMENSIONS = ("query", "page", "country", "device", "searchAppearance")
FILTER_OPERATORS = ("equals", "notEquals", "contains", "notContains", "includingRegex", "excludingRegex")
# Download ids name folders of the landing zone: file-name safe, and they sort by time.
DOWNLOAD_ID = re.compile(r"[A-Za-z0-9._-]{0,100}")
DEFAULT_PARTNER = "searchconsole"
# Fields only Search Console's calls have: another partner's messages leave them out.
SEARCH_CONSOLE_FIELDS = ("search_type", "data_state", "aggregation_type")


class InvalidRequestError(ValueError):
    """A message on the request topic that can never become a valid API call."""


@dataclass(frozen=True)
class ReportRequest:
    """One Search Console `searchanalytics.query` call: one account, one date, one page of rows."""

    report: str
    account: str
    date: str
    dimensions: tuple[str, ...]
    search_type: str = "web"
    data_state: str = "final"
    row_limit: int = 1_000
    start_row: int = 0
    attempt: int = 0
    request_id: str = field(default="")
    aggregation_type: str = "auto"
    # `dimensionFilterGroups` as canonical JSON ("" for none): a string, so Spark hashes it like Python.
    filters: str = ""
    # Which download of its (report, date, account) this request belongs to: set by the enqueue (one
    # id per enqueue, ordered by time, see `new_download_id`), inherited by continuation pages. Not
    # part of the request id: it tells a duplicate copy of a page (same id, same download) from a
    # fresh download of the same call (same id, a newer download); its pages land in its own folder.
    download: str = field(default="", compare=False)
    # Tries already spent waiting out transient partner failures (5xx, timeouts, unreachable host) on
    # the delay topic; a new page or a re-drive starts at 0. Not part of the request id either.
    retries: int = field(default=0, compare=False)
    # Which partner the call is for (core/connectors); Search Console's messages leave it out.
    partner: str = DEFAULT_PARTNER
    # The report's metrics, for partners that ask for them by name (GA4); Search Console's are fixed.
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_request_fields(self)
        if not self.request_id:
            object.__setattr__(self, "request_id", compute_request_id(self))

    @property
    def page(self) -> int:
        return self.start_row // self.row_limit

    def next_page(self) -> ReportRequest:
        """The continuation request: same call, the following `row_limit` rows."""
        return replace(self, start_row=self.start_row + self.row_limit, attempt=0, retries=0, request_id="")

    def with_attempt(self, attempt: int) -> ReportRequest:
        return replace(self, attempt=attempt, retries=0)

    def retried(self) -> ReportRequest:
        """The copy that waits out a transient failure on the delay topic, one more try spent."""
        return replace(self, retries=self.retries + 1)

    def in_download(self, download: str) -> ReportRequest:
        # The consumer names the download of every hand-enqueued message: only the new field needs
        # checking, the rest was checked when the message was decoded.
        check_download_id(download)
        named = copy.copy(self)
        object.__setattr__(named, "download", download)
        return named

    def api_body(self) -> dict[str, Any]:
        """The JSON body of `searchanalytics.query` for this request."""
        body: dict[str, Any] = {
            "startDate": self.date,
            "endDate": self.date,
            "dimensions": list(self.dimensions),
            "type": self.search_type,
            "dataState": self.data_state,
            "rowLimit": self.row_limit,
            "startRow": self.start_row,
        }
        if self.aggregation_type != "auto":
            body["aggregationType"] = self.aggregation_type
        if self.filters:
            body["dimensionFilterGroups"] = json.loads(self.filters)
        return body

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dimensions"] = list(self.dimensions)
        # Defaults left out: a message of a plain report reads (and hashes) as before these fields.
        if self.partner == DEFAULT_PARTNER:
            del data["partner"], data["metrics"]
        else:
            data["metrics"] = list(self.metrics)
            for name in SEARCH_CONSOLE_FIELDS:
                del data[name]
        if self.aggregation_type == "auto":
            data.pop("aggregation_type", None)
        if not self.filters:
            del data["filters"]
        if not self.download:
            del data["download"]  # a hand-written message may carry none: the consumer names it
        if not self.retries:
            del data["retries"]
        return {"v": REQUEST_VERSION, **data}

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def key(self) -> bytes:
        """Kafka key: the account, so one account's calls share one Kafka partition (and one pace)."""
        return self.account.encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> ReportRequest:
        """Parse a request message; raises InvalidRequestError saying exactly what is wrong."""
        if raw is None:
            raise InvalidRequestError("empty message value")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequestError(f"message value is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRequestError(f"message value is a JSON {type(data).__name__}, expected an object")
        version = data.get("v")
        if version != REQUEST_VERSION:
            raise InvalidRequestError(
                f"unsupported request version {version!r} (this consumer reads v{REQUEST_VERSION})"
            )
        required = ("report", "account", "date", "dimensions")
        missing = [name for name in required if name not in data]
        if missing:
            raise InvalidRequestError(f"missing fields: {', '.join(missing)}")
        dimensions = data["dimensions"]
        if not isinstance(dimensions, list):
            raise InvalidRequestError("field 'dimensions' must be a list")
        metrics = data.get("metrics", [])
        if not isinstance(metrics, list):
            raise InvalidRequestError("field 'metrics' must be a list")
        sent_id = data.get("request_id", "")
        try:
            request = cls(
                report=data["report"],
                account=data["account"],
                date=data["date"],
                dimensions=tuple(dimensions),
                search_type=data.get("search_type", "web"),
                data_state=data.get("data_state", "final"),
                row_limit=data.get("row_limit", 1_000),
                start_row=data.get("start_row", 0),
                attempt=data.get("attempt", 0),
                download=data.get("download", ""),
                retries=data.get("retries", 0),
                aggregation_type=data.get("aggregation_type", "auto"),
                filters=data.get("filters", ""),
                partner=data.get("partner", DEFAULT_PARTNER),
                metrics=tuple(metrics),
            )
        except TypeError as exc:
            raise InvalidRequestError(str(exc)) from None
        if sent_id and sent_id != request.request_id:
            raise InvalidRequestError(f"request_id {sent_id!r} does not match its parameters ({request.request_id})")
        return request


def new_download_id(now: dt.datetime | None = None) -> str:
    """A new download's id: its UTC time to the microsecond, then a random suffix (ids sort by time)."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


def download_id_of_message(partition: int, offset: int, timestamp_ms: int) -> str:
    """The download id of a first page enqueued without one (by hand): its message's time and place."""
    at = dt.datetime.fromtimestamp(max(timestamp_ms, 0) / 1000, dt.UTC)
    return f"{at:%Y%m%dT%H%M%S%fZ}-p{partition}o{offset}"


def compute_request_id(request: ReportRequest) -> str:
    """A stable id from the call's parameters (not the attempt): same call, same id, same landing file."""
    identity = {
        "report": request.report,
        "account": request.account,
        "date": request.date,
        "dimensions": list(request.dimensions),
        "search_type": request.search_type,
        "data_state": request.data_state,
        "row_limit": request.row_limit,
        "start_row": request.start_row,
    }
    # Only when set, so plain reports keep their ids (Spark's to_json leaves null fields out too).
    if request.aggregation_type != "auto":
        identity["aggregation_type"] = request.aggregation_type
    if request.filters:
        identity["filters"] = request.filters
    if request.partner != DEFAULT_PARTNER:
        identity["partner"] = request.partner
        identity["metrics"] = list(request.metrics)
        for name in ("search_type", "data_state"):
            del identity[name]
    # Byte-for-byte what Spark's to_json gives for the same struct (see enqueue.py).
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def parse_date(value: object, what: str = "date") -> dt.date:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a YYYY-MM-DD string, got {value!r}")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(f"{what} {value!r} is not a YYYY-MM-DD date") from None
    if len(value) != 10:
        raise InvalidRequestError(f"{what} {value!r} is not a YYYY-MM-DD date")
    if not EARLIEST_DATE <= parsed < LATEST_DATE:
        raise InvalidRequestError(f"{what} {value} is outside {EARLIEST_DATE}..{LATEST_DATE}")
    return parsed


def validate_request_fields(request: ReportRequest) -> None:
    """What every partner's request must be; then the partner's own checks (core/connectors)."""
    from reporting_assets.core.connectors import connector_for  # the connectors import this module

    def fail(message: str) -> None:
        raise InvalidRequestError(message)

    if not isinstance(request.report, str) or not request.report:
        fail("report must be a non-empty string")
    if not isinstance(request.account, str) or not request.account.strip():
        fail("account must be a non-empty string")
    if len(request.account) > MAX_ACCOUNT_LENGTH:
        fail(f"account is {len(request.account)} characters long (limit {MAX_ACCOUNT_LENGTH})")
    if CONTROL_CHARACTER.search(request.account):
        fail("account contains control characters")
    parse_date(request.date)
    if not request.dimensions or not all(isinstance(d, str) for d in request.dimensions):
        fail("dimensions must be a non-empty list of strings")
    if len(set(request.dimensions)) != len(request.dimensions):
        fail("dimensions repeat")
    if not all(isinstance(m, str) for m in request.metrics) or len(set(request.metrics)) != len(request.metrics):
        fail("metrics must be a list of distinct strings")
    if not isinstance(request.filters, str):
        fail(f"filters must be a JSON string, got {type(request.filters).__name__}")
    for name in ("row_limit", "start_row", "attempt", "retries"):
        value = getattr(request, name)
        if not isinstance(value, int) or isinstance(value, bool):
            fail(f"{name} must be an integer, got {value!r}")
    connector = connector_for(request.partner)
    if not 1 <= request.row_limit <= connector.max_row_limit:
        fail(f"row_limit {request.row_limit} is outside 1..{connector.max_row_limit}")
    if request.start_row < 0 or request.start_row % request.row_limit:
        fail(f"start_row {request.start_row} is not a non-negative multiple of row_limit {request.row_limit}")
    if request.attempt < 0:
        fail(f"attempt {request.attempt} is negative")
    if request.retries < 0:
        fail(f"retries {request.retries} is negative")
    check_download_id(request.download)
    connector.validate_request(request)


def validate_search_console_fields(request: ReportRequest) -> None:
    """A Search Console `searchanalytics.query` call as Google checks it."""

    def fail(message: str) -> None:
        raise InvalidRequestError(message)

    unknown = [d for d in request.dimensions if d not in DIMENSIONS]
    if unknown:
        fail(f"unknown dimensions {unknown} (allowed: {', '.join(DIMENSIONS)})")
    if request.metrics:
        fail("Search Console reports have fixed metrics (clicks, impressions, ctr, position): leave metrics out")
    if request.search_type not in SEARCH_TYPES:
        fail(f"unknown search_type {request.search_type!r} (allowed: {', '.join(SEARCH_TYPES)})")
    if request.data_state not in DATA_STATES:
        fail(f"unknown data_state {request.data_state!r} (allowed: {', '.join(DATA_STATES)})")
    if ("hour" in request.dimensions) != (request.data_state == "hourly_all"):
        fail("the hour dimension and data_state hourly_all go together (Google refuses one without the other)")
    if request.aggregation_type not in AGGREGATION_TYPES:
        fail(f"unknown aggregation_type {request.aggregation_type!r} (allowed: {', '.join(AGGREGATION_TYPES)})")
    if request.filters:
        try:
            groups = json.loads(request.filters)
        except ValueError:
            fail(f"filters is not JSON: {request.filters[:200]!r}")
        problems = filter_group_problems(groups)
        if problems:
            fail(f"filters: {problems[0]}")


def check_download_id(download: object) -> None:
    if not isinstance(download, str) or not DOWNLOAD_ID.fullmatch(download):
        raise InvalidRequestError(f"download must be up to 100 letters, digits, '.', '_' or '-', got {download!r}")


@dataclass(frozen=True)
class DeadLetter:
    """A request that could not be completed, with why: kept on the dead-letter topic for re-drive."""

    reason: str  # invalid_message | permission_denied | unknown_site | client_error | server_error | malformed_response | ...
    error: str
    attempts: int
    source_topic: str
    source_partition: int
    source_offset: int
    request: dict[str, Any] | None  # the parsed request, when it parsed
    raw_value: str | None  # the undecodable value, when it did not
    failed_at: str
    status: int | None = None

    def encode(self) -> bytes:
        return json.dumps({"v": DEAD_LETTER_VERSION, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        data = json.loads(raw)
        data.pop("v", None)
        return cls(**data)

    def original_request(self) -> ReportRequest | None:
        if self.request is None:
            return None
        return ReportRequest.decode(json.dumps(self.request).encode())


@dataclass(frozen=True)
class DelayedRequest:
    """A request parked on the delay topic until `due_at_ms` (epoch ms), e.g. after a load-quota refusal."""

    request: dict[str, Any]
    due_at_ms: int
    reason: str

    def encode(self) -> bytes:
        return json.dumps({"v": REQUEST_VERSION, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> DelayedRequest:
        try:
            data = json.loads(raw or b"")
            delayed = cls(request=dict(data["request"]), due_at_ms=int(data["due_at_ms"]), reason=str(data["reason"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequestError(f"not a delayed request: {exc}") from None
        delayed.original_request()  # validates the inner request
        return delayed

    def original_request(self) -> ReportRequest:
        return ReportRequest.decode(json.dumps(self.request).encode())


def filter_group_problems(groups: object) -> list[str]:
    """What is wrong with a `dimensionFilterGroups` value, one message per problem (empty: valid)."""
    if not isinstance(groups, list):
        return [f"dimensionFilterGroups must be a list, got {type(groups).__name__}"]
    problems: list[str] = []
    for g, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("filters"), list) or not group["filters"]:
            problems.append(f"group {g}: needs a non-empty `filters` list")
            continue
        unknown = sorted(set(group) - {"groupType", "filters"})
        if unknown or group.get("groupType", "and") != "and":
            problems.append(f"group {g}: only `groupType: and` and `filters` are allowed")
        for f, spec in enumerate(group["filters"]):
            where = f"group {g} filter {f}"
            if not isinstance(spec, dict) or set(spec) - {"dimension", "operator", "expression"}:
                problems.append(f"{where}: needs dimension, operator and expression only")
                continue
            if spec.get("dimension") not in FILTER_DIMENSIONS:
                problems.append(
                    f"{where}: dimension {spec.get('dimension')!r} is not one of {', '.join(FILTER_DIMENSIONS)}"
                )
            operator = spec.get("operator", "equals")
            if operator not in FILTER_OPERATORS:
                problems.append(f"{where}: operator {operator!r} is not one of {', '.join(FILTER_OPERATORS)}")
            expression = spec.get("expression")
            if not isinstance(expression, str) or not expression:
                problems.append(f"{where}: expression must be a non-empty string")
            elif operator in ("includingRegex", "excludingRegex"):
                try:
                    re.compile(expression)
                except re.error as exc:
                    problems.append(f"{where}: expression {expression!r} is not a regular expression ({exc})")
    return problems


def canonical_filters(groups: list[dict[str, Any]]) -> str:
    """The `filters` string of a request: compact JSON with sorted keys (stable request ids)."""
    return json.dumps(groups, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if groups else ""
