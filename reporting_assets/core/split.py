"""Past the row cap: a (site, day, search type) chain that reaches it is split into filtered slices.

Search Console returns at most 50 000 rows for one query of a day and search type (sorted by
clicks), however the pages are asked for. A query with `dimensionFilterGroups` has a cap of its
own, so the rows past the cap come back as slices: the same call narrowed by one dimension's
values, each slice a request chain of its own in the same download, the load taking their union.

The slices of a dimension cover all of it: a slice per group of the values seen on the page that
reached the cap (balanced by their rows, an `includingRegex` on the whole value) and, unless the
dimension's values are a closed set all seen, a remainder slice (`excludingRegex` of every value
seen). Dimensions are tried in `SPLIT_ORDER`, only those the report groups by (their values are in
the rows); `page` splits by path prefix (scheme, host and first path segment). A slice that still
reaches the cap splits again, on the first dimension with two values or more in its own rows; one
with none left stays truncated, and the coverage says so. `query` is never split on: the rows Google
drops for anonymized queries are not returned by any filter.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from reporting_assets.core.messages import ReportRequest

ROW_CAP = 50_000  # Google's: rows of one query per day and search type
SPLIT_ORDER = ("device", "country", "searchAppearance", "page")
SPLIT_WAYS = 4  # slices of values per split, besides the remainder
# Values Google gives a dimension, where they are a closed set: no remainder slice once all are seen.
CLOSED_VALUES = {"device": frozenset({"DESKTOP", "MOBILE", "TABLET"})}


@dataclass(frozen=True)
class Split:
    """What became of a chain's page that reached the cap: the slices' filters, or none (truncated)."""

    dimension: str | None
    slices: tuple[str, ...]  # each slice's canonical `filters`

    def encode(self) -> bytes:
        return json.dumps({"dimension": self.dimension, "slices": list(self.slices)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Split:
        data = json.loads(raw)
        return cls(dimension=data["dimension"], slices=tuple(data["slices"]))


def reaches_cap(request: ReportRequest, rows: int, cap: int) -> bool:
    """This full page ends at (or past) the cap: asking for the next page would get nothing."""
    return rows >= request.row_limit and request.start_row + rows >= cap


def split_value(dimension: str, value: str) -> str:
    """The value a slice selects on: the page's prefix for `page`, the value itself otherwise."""
    if dimension != "page":
        return value
    parts = urllib.parse.urlsplit(value)
    segment = parts.path.lstrip("/").split("/", 1)[0]
    return f"{parts.scheme}://{parts.netloc}/{segment}"


def _pattern(dimension: str, values: Sequence[str]) -> str:
    body = "|".join(re.escape(value) for value in sorted(values))
    # A page prefix matches the page and everything under it; other values match whole.
    return f"^({body})(/|$|\\?)" if dimension == "page" else f"^({body})$"


def _balanced(counts: Counter[str], ways: int) -> list[list[str]]:
    """The values in `ways` groups of about equal rows (largest first into the lightest group)."""
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(min(ways, len(counts)))]
    for value, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        index = min(range(len(groups)), key=lambda i: (groups[i][0], i))
        total, members = groups[index]
        groups[index] = (total + count, [*members, value])
    return [members for _total, members in groups]


def _with_filter(filters: str, dimension: str, operator: str, expression: str) -> str:
    """The request's filters and one more, ANDed into its first group (the API's one `and` group)."""
    groups: list[dict[str, Any]] = json.loads(filters) if filters else []
    added = {"dimension": dimension, "operator": operator, "expression": expression}
    if groups:
        first = dict(groups[0])
        first["filters"] = [*first.get("filters", []), added]
        groups = [first, *groups[1:]]
    else:
        groups = [{"groupType": "and", "filters": [added]}]
    return json.dumps(groups, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_split(request: ReportRequest, rows: Sequence[dict[str, Any]]) -> Split:
    """The slices of the chain whose page `rows` reached the cap (none left to split on: truncated)."""
    for dimension in SPLIT_ORDER:
        if dimension not in request.dimensions:
            continue
        position = request.dimensions.index(dimension)
        counts = Counter(split_value(dimension, row["keys"][position]) for row in rows)
        if len(counts) < 2:
            continue
        groups = _balanced(counts, SPLIT_WAYS)
        slices = [_with_filter(request.filters, dimension, "includingRegex", _pattern(dimension, g)) for g in groups]
        closed = CLOSED_VALUES.get(dimension)
        if closed is None or not closed <= set(counts):
            slices.append(_with_filter(request.filters, dimension, "excludingRegex", _pattern(dimension, list(counts))))
        return Split(dimension, tuple(slices))
    return Split(None, ())


def slice_requests(request: ReportRequest, split: Split) -> list[ReportRequest]:
    """The first page of each slice: the same call and download, filtered, from row 0."""
    return [
        replace(request, filters=filters, start_row=0, attempt=0, retries=0, request_id="") for filters in split.slices
    ]
