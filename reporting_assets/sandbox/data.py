"""The sandbox's deterministic truth: which rows a Search Analytics query returns.

A query's answer is a concatenation of *units*: one unit per day when `date`
is a dimension (in date order), otherwise a single unit for the whole range.
Each unit's rows are drawn from a `random.Random` seeded with a stable hash of
(seed, site, unit, dimensions, search type), then sorted by clicks descending
like Google does. Row counts are computed separately from a cheaper hash, so
a server can page through a huge range while generating only the units a page
touches. `expected_rows` is what tests compare against.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from reporting_assets.sandbox.config import PACIFIC, SandboxConfig, SiteSpec

DIMENSIONS: tuple[str, ...] = ("date", "query", "page", "country", "device", "searchAppearance", "hour")
SEARCH_TYPES: tuple[str, ...] = ("web", "image", "video", "news", "discover", "googleNews")
MAX_RANGE_DAYS = 1830  # keeps a typo'd range from planning millions of days
HOURLY_DAYS = 10  # Google keeps hourly data (hourly_all) for the last 10 days

# Share of a site's web rows that other search types have.
_TYPE_SHARE = {"web": 1.0, "image": 0.3, "video": 0.1, "news": 0.15, "discover": 0.2, "googleNews": 0.1}
# Impression scale per search type (heavy-tailed draws are multiplied by it).
_TYPE_SCALE = {"web": 5000, "image": 2000, "video": 800, "news": 1200, "discover": 3000, "googleNews": 900}

COUNTRIES: tuple[str, ...] = (
    "usa", "gbr", "deu", "fra", "ind", "can", "aus", "esp", "ita", "nld",
    "bra", "mex", "jpn", "pol", "swe", "che", "bel", "aut", "irl", "dnk",
    "nor", "fin", "prt", "cze", "tur", "zaf", "arg", "chl", "col", "nzl",
    "sgp", "hkg", "kor", "phl", "idn", "mys", "tha", "vnm", "are", "isr",
)  # fmt: skip
DEVICES: tuple[str, ...] = ("DESKTOP", "MOBILE", "TABLET")
SEARCH_APPEARANCES: tuple[str, ...] = (
    "AMP_BLUE_LINK", "RICHCARD", "VIDEO", "FAQ_RICH_RESULT", "REVIEW_SNIPPET", "PRODUCT_SNIPPETS",
    "MERCHANT_LISTINGS", "TRANSLATED_RESULT", "RECIPE_FEATURE", "EVENT_RICH_RESULT",
)  # fmt: skip
# Dimensions with few values: without query or page, a row per combination of theirs.
BOUNDED_DIMENSIONS: tuple[str, ...] = ("country", "device", "searchAppearance", "hour")
# Operators of a dimension filter -> (value, expression) -> keep the row?
FILTER_OPERATORS = {
    "equals": lambda v, e: v == e,
    "notEquals": lambda v, e: v != e,
    "contains": lambda v, e: e.lower() in v.lower(),
    "notContains": lambda v, e: e.lower() not in v.lower(),
    "includingRegex": lambda v, e: re.search(e, v) is not None,
    "excludingRegex": lambda v, e: re.search(e, v) is None,
}

_HEADS = (
    "best", "cheap", "buy", "free", "new", "top", "how", "why", "compare", "review", "online", "fast",
    "easy", "custom", "used", "local", "premium", "simple", "secure", "smart", "portable", "wireless",
    "organic", "vintage",
)  # fmt: skip
_TAILS = (
    "shoes", "laptop", "coffee", "bike", "camera", "tent", "garden", "desk", "chair", "lamp", "phone",
    "watch", "jacket", "headphones", "backpack", "blender", "mattress", "printer", "monitor", "keyboard",
    "router", "kettle", "stroller", "guitar", "skates",
)  # fmt: skip
# Index 0 means "no modifier". None is numeric, so the numeric suffix stays unambiguous.
_MODS = (
    "", "price", "near me", "cost", "sale", "guide", "vs", "deals", "reviews", "for kids", "repair",
    "size", "colors", "warranty", "delivery", "setup",
)  # fmt: skip
_SECTIONS = (
    "products", "blog", "guides", "help", "category", "news", "compare", "deals", "reviews", "support",
    "stories", "docs",
)  # fmt: skip

# Precomputed (immutable) building blocks: generation runs per row, thousands of times.
_HEAD_TAIL: tuple[str, ...] = tuple(f"{h} {t}" for t in _TAILS for h in _HEADS)
_MOD_SUFFIX: tuple[str, ...] = tuple(f" {m}" if m else "" for m in _MODS)
_PAGE_PATHS: tuple[str, ...] = tuple(f"{s}/{h}-{t}" for t in _TAILS for h in _HEADS for s in _SECTIONS)
_QUERY_SPACE = len(_HEAD_TAIL) * len(_MODS)
_PAGE_SPACE = len(_PAGE_PATHS)

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

Row = tuple[tuple[str, ...], int, int, float, float]  # keys, clicks, impressions, ctr, position


@dataclass(frozen=True)
class Unit:
    """One independently generated block of rows (a day, or a whole range)."""

    key: str  # ISO date, or "start..end" when date is not a dimension
    date: str | None  # the `date` key value, when date is a dimension


# --- argument normalisation (shared with the server's request validation) ---


def normalize_dimensions(dimensions: object) -> tuple[str, ...]:
    """Canonical dimension names in request order; ValueError if unknown, unsupported or repeated."""
    if isinstance(dimensions, str) or not isinstance(dimensions, Sequence):
        raise ValueError(f"dimensions must be a list of strings (got {dimensions!r})")
    by_lower = {d.lower(): d for d in DIMENSIONS}
    result: list[str] = []
    for raw in dimensions:
        name = by_lower.get(raw.lower().replace("_", "")) if isinstance(raw, str) else None
        if name is None:
            raise ValueError(f"dimensions: unknown dimension {raw!r} (allowed: {', '.join(DIMENSIONS)})")
        if name in result:
            raise ValueError(f"dimensions: {name!r} is listed twice")
        result.append(name)
    return tuple(result)


def normalize_search_type(search_type: object) -> str:
    """Canonical search type; accepts any case (the API is case-insensitive)."""
    by_lower = {t.lower(): t for t in SEARCH_TYPES}
    name = by_lower.get(search_type.lower().replace("_", "")) if isinstance(search_type, str) else None
    if name is None:
        raise ValueError(f"type: unknown search type {search_type!r} (allowed: {', '.join(SEARCH_TYPES)})")
    return name


def parse_date(value: str | dt.date, name: str) -> dt.date:
    """A date from an ISO `YYYY-MM-DD` string (strictly that format) or a date."""
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError(f"{name} must be a date in YYYY-MM-DD format (got {value!r})")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not a valid date (got {value!r})") from None


def check_range(start: dt.date, end: dt.date) -> None:
    if start > end:
        raise ValueError(f"startDate {start.isoformat()} is after endDate {end.isoformat()}")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ValueError(f"date range longer than {MAX_RANGE_DAYS} days is not supported by the sandbox")


# --- stable hashing ---


def _stable_int(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _stable_unit_float(*parts: object) -> float:
    return _stable_int(*parts) / 2**64


# --- planning: units and their row counts ---


def plan_units(start: dt.date, end: dt.date, dimensions: Sequence[str]) -> list[Unit]:
    """The units of a query, in serving order."""
    if "date" not in dimensions and "hour" not in dimensions:
        return [Unit(f"{start.isoformat()}..{end.isoformat()}", None)]
    days = (end - start).days + 1
    return [Unit(d.isoformat(), d.isoformat()) for d in (start + dt.timedelta(n) for n in range(days))]


def _combo_dimensions(dimensions: Sequence[str]) -> list[str]:
    return [d for d in dimensions if d in BOUNDED_DIMENSIONS]


def hours_of(day: str) -> tuple[str, ...]:
    """The `hour` keys of a day as Google gives them: ISO-8601 with the Pacific offset of that hour."""
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=PACIFIC)
    return tuple((start + dt.timedelta(hours=h)).isoformat() for h in range(24))


def _choices(dimension: str, unit: Unit) -> tuple[str, ...]:
    if dimension == "country":
        return COUNTRIES
    if dimension == "device":
        return DEVICES
    if dimension == "searchAppearance":
        return SEARCH_APPEARANCES
    return hours_of(unit.date or unit.key[:10])


def _combo_count(dimensions: Sequence[str]) -> int:
    count = 1
    for d in _combo_dimensions(dimensions):
        count *= {"country": len(COUNTRIES), "device": len(DEVICES), "searchAppearance": len(SEARCH_APPEARANCES)}.get(
            d, 24
        )
    return count


def _is_open_ended(dimensions: Sequence[str]) -> bool:
    """True when a dimension with unbounded values (query/page) is grouped by."""
    return "query" in dimensions or "page" in dimensions


def unit_row_count(
    seed: int, site: SiteSpec, unit: Unit, dimensions: Sequence[str], search_type: str, jitter: float
) -> int:
    """How many rows a unit has; must equal len(unit_rows(...)) — and is much cheaper."""
    u = _stable_unit_float(seed, site.url, unit.key, search_type, "rows")
    target = round(site.rows_per_day * _TYPE_SHARE[search_type] * (1.0 + jitter * (2.0 * u - 1.0)))
    if _is_open_ended(dimensions):
        return target
    return min(target, _combo_count(dimensions))


# --- generation ---


def _query_text(k: int) -> str:
    # Mixed-radix decomposition of k: distinct k give distinct strings.
    rest, k = divmod(k, _QUERY_SPACE)
    k, head_tail = divmod(k, len(_HEAD_TAIL))
    text = _HEAD_TAIL[head_tail] + _MOD_SUFFIX[k]
    return f"{text} {rest + 1}" if rest else text


def _page_url(base: str, k: int) -> str:
    # Mixed radix again; heads/tails contain no "-" so the slug parses uniquely.
    rest, k = divmod(k, _PAGE_SPACE)
    path = _PAGE_PATHS[k]
    return f"{base}{path}-p{rest}" if rest else base + path


def page_base(site_url: str) -> str:
    """Where a site's pages live: the prefix itself, or www.<domain> for domain properties."""
    if site_url.startswith("sc-domain:"):
        return f"https://www.{site_url[len('sc-domain:') :]}/"
    return site_url if site_url.endswith("/") else site_url + "/"


def _open_ended_columns(
    rng: random.Random, seed: int, site: SiteSpec, unit: Unit, dimensions: Sequence[str], n: int
) -> dict[str, list[str]]:
    """Dimension values per row when query or page is grouped by; query (else page) is injective."""
    base = page_base(site.url)
    columns: dict[str, list[str]] = {}
    if "query" in dimensions:
        offset = _stable_int(seed, site.url, "query-offset") % _QUERY_SPACE
        columns["query"] = [_query_text(j + offset) for j in range(n)]
    if "page" in dimensions:
        offset = _stable_int(seed, site.url, "page-offset") % _PAGE_SPACE
        if "query" in dimensions:  # query keeps rows distinct; pages repeat like real ones
            pool = max(1, n // 3)
            columns["page"] = [_page_url(base, offset + int(pool * rng.random())) for _ in range(n)]
        else:
            columns["page"] = [_page_url(base, j + offset) for j in range(n)]
    # Squared draws skew towards the first (bigger) countries and desktop/mobile.
    if "country" in dimensions:
        columns["country"] = [COUNTRIES[int(len(COUNTRIES) * rng.random() ** 2)] for _ in range(n)]
    if "device" in dimensions:
        columns["device"] = [DEVICES[int(len(DEVICES) * rng.random() ** 2)] for _ in range(n)]
    for dimension in ("searchAppearance", "hour"):
        if dimension in dimensions:
            choices = _choices(dimension, unit)
            columns[dimension] = [choices[int(len(choices) * rng.random() ** 2)] for _ in range(n)]
    return columns


def _combo_columns(rng: random.Random, unit: Unit, dimensions: Sequence[str], n: int) -> dict[str, list[str]]:
    """Distinct combinations of the bounded dimensions when no open-ended dimension is grouped by."""
    combos: list[dict[str, str]] = [{}]
    for d in _combo_dimensions(dimensions):
        combos = [{**c, d: v} for c in combos for v in _choices(d, unit)]
    if n < len(combos):
        combos = [combos[i] for i in sorted(rng.sample(range(len(combos)), n))]
    return {d: [c[d] for c in combos] for d in _combo_dimensions(dimensions)}


def unit_rows(
    seed: int,
    site: SiteSpec,
    unit: Unit,
    dimensions: Sequence[str],
    search_type: str,
    jitter: float,
    revision: int = 0,
) -> list[Row]:
    """All rows of one unit, sorted like Google (clicks desc, ties broken deterministically).

    A `revision` other than 0 keeps the unit's rows (their keys and count) and draws their numbers
    anew, as when the partner revises a day's data.
    """
    n = unit_row_count(seed, site, unit, dimensions, search_type, jitter)
    # Sorted dimensions in the seed: the same grouping in another order gives the same data.
    rng = random.Random(_stable_int(seed, site.url, unit.key, ",".join(sorted(dimensions)), search_type))
    if _is_open_ended(dimensions):
        columns = _open_ended_columns(rng, seed, site, unit, dimensions, n)
        scale, tail = float(_TYPE_SCALE[search_type]), 8
    else:
        columns = _combo_columns(rng, unit, dimensions, n)
        # Few rows that aggregate a whole site's day: bigger, less skewed numbers.
        scale, tail = _TYPE_SCALE[search_type] * max(1.0, site.rows_per_day / max(1, n)), 2
    if unit.date is not None:
        columns["date"] = [unit.date] * n
    key_tuples = list(zip(*(columns[d] for d in dimensions), strict=True)) if dimensions else [()] * n
    rand = rng.random
    if revision:
        rand = random.Random(
            _stable_int(seed, site.url, unit.key, ",".join(sorted(dimensions)), search_type, revision)
        ).random
    rows: list[Row] = []
    for keys in key_tuples:
        impressions = 1 + int(scale * rand() ** tail)
        position = round(1.0 + 60.0 * rand() ** 2.5, 2)
        clicks = min(impressions, int(impressions * (0.3 / position) * (0.4 + 1.2 * rand())))
        rows.append((keys, clicks, impressions, clicks / impressions, position))
    rows.sort(key=lambda r: (-r[1], -r[2], r[4], r[0]))
    return rows


def row_to_dict(row: Row) -> dict[str, Any]:
    keys, clicks, impressions, ctr, position = row
    return {"keys": list(keys), "clicks": clicks, "impressions": impressions, "ctr": ctr, "position": position}


# --- the public truth ---


@dataclass(frozen=True)
class Query:
    """A validated, normalised Search Analytics query."""

    site: SiteSpec
    start: dt.date
    end: dt.date
    dimensions: tuple[str, ...]
    search_type: str
    # (dimension, operator, expression) triples, all of which a row must pass (groups are ANDed).
    filters: tuple[tuple[str, str, str], ...] = ()
    data_state: str = "final"  # final: days still being collected are left out; all / hourly_all: partial

    def keep(self, row: Row) -> bool:
        keys = dict(zip(self.dimensions, row[0], strict=True))
        return all(FILTER_OPERATORS[op](keys[dim], expression) for dim, op, expression in self.filters)


def normalize_filters(groups: object, dimensions: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    """`dimensionFilterGroups` as triples; ValueError like the API's (or the sandbox's limits)."""
    if groups in (None, []):
        return ()
    if not isinstance(groups, list):
        raise ValueError("dimensionFilterGroups must be a list")
    by_lower = {d.lower(): d for d in DIMENSIONS if d not in ("date", "hour")}
    operators = {o.lower(): o for o in FILTER_OPERATORS}
    triples: list[tuple[str, str, str]] = []
    for group in groups:
        if not isinstance(group, dict) or str(group.get("groupType", "and")).lower() != "and":
            raise ValueError("dimensionFilterGroups: groupType must be and")
        for spec in group.get("filters") or []:
            if not isinstance(spec, dict):
                raise ValueError("dimensionFilterGroups: a filter must be an object")
            raw = spec.get("dimension")
            dimension = by_lower.get(raw.lower().replace("_", "")) if isinstance(raw, str) else None
            if dimension is None:
                raise ValueError(f"dimensionFilterGroups: unknown dimension {raw!r}")
            raw_op = spec.get("operator", "equals")
            operator = operators.get(raw_op.lower().replace("_", "")) if isinstance(raw_op, str) else None
            if operator is None:
                raise ValueError(f"dimensionFilterGroups: unknown operator {raw_op!r}")
            expression = spec.get("expression")
            if not isinstance(expression, str):
                raise ValueError("dimensionFilterGroups: expression must be a string")
            if operator.endswith("Regex"):
                try:
                    re.compile(expression)
                except re.error as exc:
                    raise ValueError(
                        f"dimensionFilterGroups: invalid regular expression {expression!r}: {exc}"
                    ) from None
            if dimension not in dimensions:
                # The sandbox's data has no values for a dimension it is not grouped by.
                raise ValueError(f"dimensionFilterGroups: the sandbox filters only grouped dimensions ({dimension})")
            triples.append((dimension, operator, expression))
    return tuple(triples)


def make_query(
    config: SandboxConfig,
    site_url: str,
    start_date: str | dt.date,
    end_date: str | dt.date,
    dimensions: Sequence[str] = (),
    search_type: str = "web",
    filters: object = None,
    data_state: str = "final",
) -> Query:
    site = config.site(site_url)
    if site is None:
        raise ValueError(f"unknown site {site_url!r}")
    start, end = parse_date(start_date, "startDate"), parse_date(end_date, "endDate")
    check_range(start, end)
    dims = normalize_dimensions(dimensions)
    return Query(
        site, start, end, dims, normalize_search_type(search_type), normalize_filters(filters, dims), data_state
    )


def unit_completeness(config: SandboxConfig, query: Query, unit: Unit) -> float:
    """The share of a unit's data served: 1 once final; a day still being collected is partial with
    dataState all / hourly_all and absent from final data; a whole-range unit counts its final days only."""
    if unit.date is None:
        return 1.0
    day = dt.date.fromisoformat(unit.date)
    if "hour" in query.dimensions and day <= config.today_date() - dt.timedelta(days=HOURLY_DAYS):
        return 0.0  # Google keeps hourly data for its last 10 days only
    share = config.completeness(day)
    return share if query.data_state != "final" or share == 1.0 else 0.0


def _partial_count(count: int, share: float) -> int:
    return count if share >= 1.0 else int(count * share)


def iter_units(config: SandboxConfig, query: Query) -> Iterator[tuple[Unit, int]]:
    """(unit, row count) pairs in serving order (a filtered unit is generated to count what passes)."""
    for unit in plan_units(query.start, query.end, query.dimensions):
        if query.filters:
            yield unit, len(query_unit_rows(config, query, unit))
        else:
            count = unit_row_count(
                config.seed, query.site, unit, query.dimensions, query.search_type, config.rows_jitter
            )
            yield unit, _partial_count(count, unit_completeness(config, query, unit))


def collected_unit_rows(config: SandboxConfig, query: Query, unit: Unit) -> list[Row]:
    """The rows of one unit of a query before its filters: its collected share (the top rows, numbers scaled)."""
    rows = unit_rows(
        config.seed, query.site, unit, query.dimensions, query.search_type, config.rows_jitter, config.revision
    )
    share = unit_completeness(config, query, unit)
    if share < 1.0:
        rows = [_partial_row(row, share) for row in rows[: _partial_count(len(rows), share)]]
        rows.sort(key=lambda r: (-r[1], -r[2], r[4], r[0]))
    return rows


def query_unit_rows(config: SandboxConfig, query: Query, unit: Unit) -> list[Row]:
    """The rows of one unit of a query: its collected share, filtered."""
    rows = collected_unit_rows(config, query, unit)
    return [row for row in rows if query.keep(row)] if query.filters else rows


def _partial_row(row: Row, share: float) -> Row:
    keys, clicks, impressions, _ctr, position = row
    impressions = max(1, int(impressions * share))
    clicks = min(impressions, int(clicks * share))
    return (keys, clicks, impressions, clicks / impressions, position)


def first_incomplete_date(config: SandboxConfig, query: Query) -> str | None:
    """`metadata.first_incomplete_date` as Google gives it: dataState all, grouped by date, and the
    range reaching into days still being collected."""
    first = config.first_incomplete_date()
    if query.data_state != "all" or "date" not in query.dimensions or query.end < first:
        return None
    return max(first, query.start).isoformat()


def first_incomplete_hour(config: SandboxConfig, query: Query) -> str | None:
    """`metadata.first_incomplete_hour`: dataState hourly_all, grouped by hour, reaching into them."""
    first = config.first_incomplete_date()
    if query.data_state != "hourly_all" or "hour" not in query.dimensions or query.end < first:
        return None
    return hours_of(max(first, query.start).isoformat())[0]


def expected_rows(
    config: SandboxConfig,
    site_url: str,
    start_date: str | dt.date,
    end_date: str | dt.date,
    dimensions: Sequence[str],
    search_type: str = "web",
    filters: object = None,
    data_state: str = "final",
) -> list[dict[str, Any]]:
    """The complete, ordered list of rows the sandbox serves for this query (before paging)."""
    query = make_query(config, site_url, start_date, end_date, dimensions, search_type, filters, data_state)
    rows: list[dict[str, Any]] = []
    for unit in plan_units(query.start, query.end, query.dimensions):
        rows.extend(row_to_dict(r) for r in query_unit_rows(config, query, unit))
    return rows


def expected_row_count(
    config: SandboxConfig,
    site_url: str,
    start_date: str | dt.date,
    end_date: str | dt.date,
    dimensions: Sequence[str],
    search_type: str = "web",
    filters: object = None,
    data_state: str = "final",
) -> int:
    """len(expected_rows(...)) without generating the rows (unless filtered)."""
    query = make_query(config, site_url, start_date, end_date, dimensions, search_type, filters, data_state)
    return sum(count for _unit, count in iter_units(config, query))
