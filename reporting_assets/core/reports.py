"""The report catalog: which Search Console reports to download, from a YAML file users edit.

The shipped catalog is `reporting_assets/reports.yaml`; `REPORTING_REPORTS_FILE` points at another.
An entry names a report, its dimensions, one or more search types, the aggregation, filters and the
data state (default `all`: a day Google is still collecting is downloaded as it stands, marked
provisional, and pulled again until final; `final` asks for finished days only). An entry with several search types is one report per type (`<name>_<type>`), each with
its own table and exports: Google answers one search type per call. The catalog refuses what the
API would refuse, one line per bad entry, before anything is requested.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reporting_assets.core.messages import (
    AGGREGATION_TYPES,
    DATA_STATES,
    DIMENSIONS,
    SEARCH_TYPES,
    ReportRequest,
    canonical_filters,
    filter_group_problems,
)

CATALOG_VARIABLE = "REPORTING_REPORTS_FILE"
SHIPPED_CATALOG = Path(__file__).resolve().parent.parent / "reports.yaml"
DEFAULT_REPORTS = ("search_analytics",)
# Discover and Google News have no queries (Google: "queries and positions are not supported").
NO_QUERY_TYPES = frozenset({"discover", "googleNews"})
REPORT_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Google keeps hourly data (dataState hourly_all) for the last 10 days of its data day (Pacific time).
HOURLY_DAYS = 10
GOOGLE_DAY_ZONE = ZoneInfo("America/Los_Angeles")


def google_today() -> dt.date:
    """Today's date where Google's data days are counted (Pacific time)."""
    return dt.datetime.now(GOOGLE_DAY_ZONE).date()


class UnknownReportError(ValueError):
    pass


class CatalogError(ValueError):
    """A catalog that cannot be used; one line per bad entry."""


@dataclass(frozen=True)
class ReportSpec:
    name: str
    dimensions: tuple[str, ...]
    search_type: str = "web"
    description: str = ""
    data_state: str = "all"
    aggregation_type: str = "auto"
    filters: str = ""  # canonical dimensionFilterGroups JSON, "" for none
    entry: str = ""  # the catalog entry it comes from (its name when the entry has one search type)

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Dimension columns of the landed table; `date` is its own column already."""
        return tuple(d for d in self.dimensions if d != "date")

    @property
    def hourly(self) -> bool:
        return "hour" in self.dimensions

    def available_on(self, date: str, today: dt.date) -> bool:
        """Whether Google serves this report for `date` at all: hourly data only for the last HOURLY_DAYS days."""
        return not self.hourly or dt.date.fromisoformat(date) > today - dt.timedelta(days=HOURLY_DAYS)

    def first_request(self, account: str, date: str, row_limit: int, data_state: str | None = None) -> ReportRequest:
        return ReportRequest(
            report=self.name,
            account=account,
            date=date,
            dimensions=self.dimensions,
            search_type=self.search_type,
            data_state=data_state or self.data_state,
            row_limit=row_limit,
            start_row=0,
            aggregation_type=self.aggregation_type,
            filters=self.filters,
        )


class CatalogEntry(BaseModel):
    """One entry of the YAML catalog, checked as Google checks a query."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    dimensions: list[str] = Field(min_length=1)
    search_types: list[str] = Field(default_factory=lambda: ["web"], min_length=1)
    aggregation_type: str = "auto"
    dimension_filter_groups: list[dict[str, Any]] = Field(default_factory=list)
    data_state: str | None = None  # default: all (fresh, then final), hourly_all with the hour dimension

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not REPORT_NAME.fullmatch(value):
            raise ValueError("must be lower-case letters, digits and _ (a table name), starting with a letter")
        return value

    @field_validator("dimensions")
    @classmethod
    def _dimensions(cls, value: list[str]) -> list[str]:
        unknown = [d for d in value if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown {unknown} (allowed: {', '.join(DIMENSIONS)})")
        if len(set(value)) != len(value):
            raise ValueError("a dimension is listed twice")
        return value

    @field_validator("search_types")
    @classmethod
    def _search_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in SEARCH_TYPES]
        if unknown:
            raise ValueError(f"unknown {unknown} (allowed: {', '.join(SEARCH_TYPES)})")
        if len(set(value)) != len(value):
            raise ValueError("a search type is listed twice")
        return value

    @field_validator("aggregation_type")
    @classmethod
    def _aggregation(cls, value: str) -> str:
        if value not in AGGREGATION_TYPES:
            raise ValueError(f"{value!r} is not one of {', '.join(AGGREGATION_TYPES)}")
        return value

    @field_validator("data_state")
    @classmethod
    def _data_state(cls, value: str | None) -> str | None:
        if value is not None and value not in DATA_STATES:
            raise ValueError(f"{value!r} is not one of {', '.join(DATA_STATES)}")
        return value

    @model_validator(mode="after")
    def _as_google_allows(self) -> CatalogEntry:
        problems = filter_group_problems(self.dimension_filter_groups)
        filtered = {f.get("dimension") for g in self.dimension_filter_groups for f in g.get("filters", [])}
        no_query = sorted(set(self.search_types) & NO_QUERY_TYPES)
        if no_query and ("query" in self.dimensions or "query" in filtered):
            problems.append(f"search types {no_query} have no queries: drop the query dimension or filter")
        if self.aggregation_type == "byProperty" and ("page" in self.dimensions or "page" in filtered):
            problems.append("aggregation_type byProperty is refused when grouping or filtering by page")
        if self.aggregation_type == "byNewsShowcasePanel" and (
            set(self.search_types) - NO_QUERY_TYPES or "page" in self.dimensions
        ):
            problems.append("aggregation_type byNewsShowcasePanel needs search types discover or googleNews, no page")
        if "date" not in self.dimensions:
            problems.append("dimensions need date (Google says which days are final only when grouped by date)")
        if "hour" in self.dimensions and self.data_state not in (None, "hourly_all"):
            problems.append("the hour dimension needs data_state hourly_all")
        if self.data_state == "hourly_all" and "hour" not in self.dimensions:
            problems.append("data_state hourly_all needs the hour dimension")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def specs(self) -> list[ReportSpec]:
        state = self.data_state or ("hourly_all" if "hour" in self.dimensions else "all")
        several = len(self.search_types) > 1
        return [
            ReportSpec(
                name=f"{self.name}_{search_type.lower()}" if several else self.name,
                dimensions=tuple(self.dimensions),
                search_type=search_type,
                description=self.description,
                data_state=state,
                aggregation_type=self.aggregation_type,
                filters=canonical_filters(self.dimension_filter_groups),
                entry=self.name,
            )
            for search_type in self.search_types
        ]


@dataclass(frozen=True)
class Catalog:
    path: Path
    reports: dict[str, ReportSpec]

    def get(self, name: str) -> ReportSpec:
        try:
            return self.reports[name]
        except KeyError:
            raise UnknownReportError(
                f"unknown report {name!r} (the catalog {self.path} has: {', '.join(sorted(self.reports))})"
            ) from None


def parse_catalog(text: str, path: Path) -> Catalog:
    """The catalog of a YAML text; CatalogError with one line per bad entry."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"report catalog {path}: not YAML: {' '.join(str(exc).split())}") from None
    entries = document.get("reports") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"report catalog {path}: needs a non-empty `reports:` list")
    problems: list[str] = []
    reports: dict[str, ReportSpec] = {}
    for index, raw in enumerate(entries):
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            entry = CatalogEntry.model_validate(raw)
        except ValidationError as exc:
            reasons = "; ".join(
                (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
            problems.append(f"report {label}: {reasons}")
            continue
        for spec in entry.specs():
            if spec.name in reports:
                problems.append(f"report {label}: the name {spec.name!r} is taken by an earlier entry")
            reports[spec.name] = spec
    missing = [name for name in DEFAULT_REPORTS if name not in reports]
    if missing and not problems:
        problems.append(f"the default report {missing[0]!r} is missing")
    if problems:
        raise CatalogError(f"report catalog {path}: " + ("\n" if len(problems) > 1 else "") + "\n".join(problems))
    return Catalog(path, reports)


@functools.lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> Catalog:
    return parse_catalog(path.read_text(), path)


def load_catalog(path: Path | str | None = None) -> Catalog:
    """The catalog at `path` (default: $REPORTING_REPORTS_FILE, else the shipped one); read again when edited."""
    chosen = Path(path or os.environ.get(CATALOG_VARIABLE) or SHIPPED_CATALOG).expanduser()
    try:
        mtime = chosen.stat().st_mtime_ns
    except OSError as exc:
        raise CatalogError(f"report catalog {chosen}: cannot be read ({exc.strerror})") from None
    return _load(chosen.resolve(), mtime)


def get_report(name: str) -> ReportSpec:
    return load_catalog().get(name)
