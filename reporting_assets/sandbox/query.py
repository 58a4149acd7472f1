"""searchAnalytics.query: request validation and paged, cached row serving."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reporting_assets.sandbox import data
from reporting_assets.sandbox.config import SandboxConfig, SiteSpec

MAX_ROW_LIMIT = 25_000
DEFAULT_ROW_LIMIT = 1_000
DATA_STATES = ("final", "all", "hourly_all")
# Request spelling (lowercased, without "_") -> the camelCase Google answers with.
AGGREGATION_TYPES = {
    "auto": "auto",
    "byproperty": "byProperty",
    "bypage": "byPage",
    "bynewsshowcasepanel": "byNewsShowcasePanel",
}
REQUEST_FIELDS = (
    "startDate",
    "endDate",
    "dimensions",
    "type",
    "searchType",
    "dimensionFilterGroups",
    "aggregationType",
    "rowLimit",
    "startRow",
    "dataState",
)


@dataclass(frozen=True)
class QueryRequest:
    query: data.Query
    row_limit: int
    start_row: int
    data_state: str
    aggregation: str  # responseAggregationType to answer with

    @property
    def expensive(self) -> bool:
        """Counts against the load quota: grouping by query or page is what costs Google."""
        return "query" in self.query.dimensions or "page" in self.query.dimensions


def _int_field(payload: dict[str, Any], name: str, default: int) -> int:
    value = payload.get(name, default)
    # The API's JSON parser accepts int64/int32 fields as numeric strings too.
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer (got {value!r})")
    return value


def _enum_field(payload: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = payload.get(name, default)
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{name}: unknown value {value!r} (allowed: {', '.join(allowed)})")
    return value.lower()


def _aggregation(payload: dict[str, Any], dimensions: tuple[str, ...], filtered: set[str]) -> str:
    raw = payload.get("aggregationType", "auto")
    name = AGGREGATION_TYPES.get(raw.lower().replace("_", "")) if isinstance(raw, str) else None
    if name is None:
        raise ValueError(f"aggregationType: unknown value {raw!r} (allowed: {', '.join(AGGREGATION_TYPES.values())})")
    if name == "byProperty" and ("page" in dimensions or "page" in filtered):
        raise ValueError("aggregationType byProperty is not allowed when grouping or filtering by page")
    if name == "auto":
        return "byPage" if "page" in dimensions else "byProperty"
    return name


def parse_query_request(site: SiteSpec, payload: Any) -> QueryRequest:
    """Validate a request body like the real API; ValueError with a message naming the field."""
    if not isinstance(payload, dict):
        raise ValueError("Invalid JSON payload received. The request body must be a JSON object.")
    unknown = sorted(set(payload) - set(REQUEST_FIELDS))
    if unknown:
        raise ValueError(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    for name in ("startDate", "endDate"):
        if name not in payload:
            raise ValueError(f"{name} is required")
    start = data.parse_date(payload["startDate"], "startDate")
    end = data.parse_date(payload["endDate"], "endDate")
    data.check_range(start, end)
    dimensions = data.normalize_dimensions(payload.get("dimensions") or [])
    search_type = data.normalize_search_type(payload.get("type") or payload.get("searchType") or "web")
    filters = data.normalize_filters(payload.get("dimensionFilterGroups"), dimensions)
    filtered = {dimension for dimension, _op, _expression in filters}
    if search_type in ("discover", "googleNews") and "query" in dimensions:
        raise ValueError(f"dimensions: query is not supported for type {search_type}")
    row_limit = _int_field(payload, "rowLimit", DEFAULT_ROW_LIMIT)
    if not 1 <= row_limit <= MAX_ROW_LIMIT:
        raise ValueError(f"rowLimit must be between 1 and {MAX_ROW_LIMIT} (got {row_limit})")
    start_row = _int_field(payload, "startRow", 0)
    if start_row < 0:
        raise ValueError(f"startRow must be >= 0 (got {start_row})")
    data_state = _enum_field(payload, "dataState", "final", DATA_STATES)
    if "hour" in dimensions and data_state != "hourly_all":
        raise ValueError("grouping by hour requires dataState HOURLY_ALL")
    aggregation = _aggregation(payload, dimensions, filtered)
    if aggregation == "byNewsShowcasePanel" and (search_type not in ("discover", "googleNews") or "page" in dimensions):
        raise ValueError("aggregationType byNewsShowcasePanel needs type discover or googleNews and no page")
    return QueryRequest(
        query=data.Query(site, start, end, dimensions, search_type, filters, data_state),
        row_limit=row_limit,
        start_row=start_row,
        data_state=data_state,
        aggregation=aggregation,
    )


def encode_row(row: data.Row) -> bytes:
    return json.dumps(data.row_to_dict(row), separators=(",", ":")).encode("utf-8")


class _LruRows:
    """Least recently used lists of rows, bounded by their total length; safe across threads."""

    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self._rows = 0

    def get(self, key: tuple[Any, ...], make: Callable[[], list[Any]]) -> list[Any]:
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached
        rows = make()  # outside the lock; a rare duplicate generation is harmless
        with self._lock:
            if key not in self._entries:
                self._entries[key] = rows
                self._rows += len(rows)
                while self._rows > self._max_rows and len(self._entries) > 1:
                    _old_key, old = self._entries.popitem(last=False)
                    self._rows -= len(old)
        return rows


class RowCache:
    """Serves pages of a query's rows, keeping recently used units as pre-encoded JSON.

    Paging through a query asks for the same units again and again; caching
    their encoded rows makes a page a slice and a join. The generated rows of a
    unit are kept too (before filters), so the filtered slices of one big day
    filter them instead of generating the day again. Bounded by total rows.
    """

    def __init__(self, max_rows: int = 500_000) -> None:
        self._units = _LruRows(max_rows)  # encoded, filtered
        self._generated = _LruRows(max_rows)  # generated, before filters

    def _key(self, config: SandboxConfig, query: data.Query, unit: data.Unit, filters: Any) -> tuple[Any, ...]:
        site = query.site
        return (
            config.seed,
            config.rows_jitter,
            config.revision,
            site.url,
            site.rows_per_day,
            unit.key,
            query.dimensions,
            query.search_type,
            filters,
            data.unit_completeness(config, query, unit),
        )

    def _unit(self, config: SandboxConfig, query: data.Query, unit: data.Unit) -> list[bytes]:
        def encoded() -> list[bytes]:
            if query.filters:
                generated = self._generated.get(
                    self._key(config, query, unit, None), lambda: data.collected_unit_rows(config, query, unit)
                )
                rows = [row for row in generated if query.keep(row)]
            else:
                rows = data.query_unit_rows(config, query, unit)
            return [encode_row(r) for r in rows]

        return self._units.get(self._key(config, query, unit, query.filters), encoded)

    def _counts(self, config: SandboxConfig, query: data.Query) -> Iterator[tuple[data.Unit, int]]:
        if not query.filters:
            yield from data.iter_units(config, query)
            return
        for unit in data.plan_units(query.start, query.end, query.dimensions):
            yield unit, len(self._unit(config, query, unit))

    def page(self, config: SandboxConfig, query: data.Query, start_row: int, row_limit: int) -> list[bytes]:
        """Encoded rows [start_row, start_row + row_limit) of the query, generating only units it touches.

        Like Google, a unit (a day, or the whole range without date) serves its top `row_cap` rows at most.
        """
        end_row = start_row + row_limit
        result: list[bytes] = []
        offset = 0
        for unit, all_rows in self._counts(config, query):
            count = all_rows if config.row_cap is None else min(all_rows, config.row_cap)
            if offset >= end_row:
                break
            if offset + count > start_row and count:
                rows = self._unit(config, query, unit)
                result.extend(rows[max(0, start_row - offset) : min(end_row - offset, count)])
            offset += count
        return result


def response_body(rows: list[bytes], aggregation: str, metadata: dict[str, str] | None = None) -> bytes:
    """The JSON answer; like Google, `rows` is left out when there are none, `metadata` unless it says something."""
    tail = b'"responseAggregationType":' + json.dumps(aggregation).encode() + b"}"
    if metadata:
        tail = b'"metadata":' + json.dumps(metadata, separators=(",", ":")).encode() + b"," + tail
    if not rows:
        return b"{" + tail
    return b'{"rows":[' + b",".join(rows) + b"]," + tail


def response_metadata(config: SandboxConfig, query: data.Query) -> dict[str, str]:
    """Google's `metadata`: where the data still being collected starts, when the query reaches it."""
    metadata = {}
    if (day := data.first_incomplete_date(config, query)) is not None:
        metadata["firstIncompleteDate"] = day
    if (hour := data.first_incomplete_hour(config, query)) is not None:
        metadata["firstIncompleteHour"] = hour
    return metadata
