"""Sandbox settings: sites, rate limits, load quota and injected faults.

Every setting is validated on construction so a bad value fails early with a
`ValueError` naming the setting, whether it came from Python, a JSON file or
the runtime `/_sandbox/config` endpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

FAULT_KINDS: tuple[str, ...] = (
    "http_500",
    "http_503",
    "malformed",
    "truncated",
    "slow",
    "wrong_schema",
    "rate_limit_403",  # 403 rateLimitExceeded: throttling, as Google also sends it
    "user_rate_limit_403",  # 403 userRateLimitExceeded: per-user throttling
    "daily_limit",  # 403 dailyLimitExceeded: the project's daily quota is spent
    "connection_reset",  # the connection is closed with no answer, as by a host going down or unreachable
)


PACIFIC = ZoneInfo("America/Los_Angeles")


def _require_number(name: str, value: Any, *, minimum: float, allow_none: bool = False, strict: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number{' or null' if allow_none else ''} (got {value!r})")
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{name} must be {bound} (got {value!r})")


def _require_int(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer{' or null' if allow_none else ''} (got {value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value!r})")


def _check_keys(name: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{name} must be a JSON object (got {type(data).__name__})")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"unknown setting {name}.{unknown[0]} (allowed: {', '.join(allowed)})")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class SiteSpec:
    """One Search Console property the sandbox serves."""

    url: str
    rows_per_day: int
    forbidden: bool = False  # listed as unverified; queries answer 403

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.strip():
            raise ValueError(f"sites[].url must be a non-empty string (got {self.url!r})")
        _require_int(f"sites[{self.url}].rows_per_day", self.rows_per_day, minimum=0)
        if not isinstance(self.forbidden, bool):
            raise ValueError(f"sites[{self.url}].forbidden must be true or false (got {self.forbidden!r})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SiteSpec:
        _check_keys("sites[]", data, _field_names(cls))
        if "url" not in data or "rows_per_day" not in data:
            raise ValueError("sites[] entries need 'url' and 'rows_per_day'")
        return cls(**data)


@dataclass(frozen=True)
class FaultSpec:
    """A fault served instead of (or, for `slow`, before) a normal query answer.

    A fault matches a searchAnalytics.query call when `site_url` and
    `start_row` match (None matches anything), it still has `times` left
    (None = unlimited) and, if `probability` is set, a seeded draw falls
    under it, and, if `for_s` is set, less than that has passed since it was first served (an outage
    of a given length, from the first call that meets it). The first matching fault in the list is served.
    """

    kind: str
    probability: float | None = None
    site_url: str | None = None
    start_row: int | None = None
    times: int | None = None
    slow_s: float = 5.0  # only for kind "slow": delay before the normal answer
    for_s: float | None = None  # served only this long after it is first served: an outage of a given length

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"faults[].kind {self.kind!r} is unknown (allowed: {', '.join(FAULT_KINDS)})")
        if self.probability is not None:
            _require_number("faults[].probability", self.probability, minimum=0.0)
            if self.probability > 1:
                raise ValueError(f"faults[].probability must be within [0, 1] (got {self.probability!r})")
        if self.site_url is not None and not isinstance(self.site_url, str):
            raise ValueError(f"faults[].site_url must be a string or null (got {self.site_url!r})")
        _require_int("faults[].start_row", self.start_row, minimum=0, allow_none=True)
        _require_int("faults[].times", self.times, minimum=0, allow_none=True)
        _require_number("faults[].slow_s", self.slow_s, minimum=0.0)
        _require_number("faults[].for_s", self.for_s, minimum=0.0, allow_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultSpec:
        _check_keys("faults[]", data, _field_names(cls))
        if "kind" not in data:
            raise ValueError("faults[] entries need a 'kind'")
        return cls(**data)


@dataclass(frozen=True)
class PropertySpec:
    """One Google Analytics 4 property the sandbox serves (Data API runReport, Admin API accountSummaries).

    Token limits follow Google's standard property quotas; `concurrent_requests` is how many runReport
    calls of the property may be open at once. `thresholded` / `sampled`: every report of the property
    says so in its metadata, as Google does for properties with Google signals or huge event counts.
    """

    id: str  # digits, served as "properties/<id>"
    account: str  # digits, served as "accounts/<account>"
    display_name: str = ""
    rows_per_day: int = 100
    tokens_per_day: int = 200_000
    tokens_per_hour: int = 40_000
    concurrent_requests: int = 10
    thresholded: bool = False
    sampled: bool = False

    def __post_init__(self) -> None:
        for name in ("id", "account"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.isdigit():
                raise ValueError(f"ga4_properties[].{name} must be a string of digits (got {value!r})")
        if not isinstance(self.display_name, str):
            raise ValueError(f"ga4_properties[{self.id}].display_name must be a string (got {self.display_name!r})")
        _require_int(f"ga4_properties[{self.id}].rows_per_day", self.rows_per_day, minimum=0)
        _require_int(f"ga4_properties[{self.id}].tokens_per_day", self.tokens_per_day, minimum=0)
        _require_int(f"ga4_properties[{self.id}].tokens_per_hour", self.tokens_per_hour, minimum=0)
        _require_int(f"ga4_properties[{self.id}].concurrent_requests", self.concurrent_requests, minimum=1)
        for name in ("thresholded", "sampled"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ga4_properties[{self.id}].{name} must be true or false")

    @property
    def name(self) -> str:
        return f"properties/{self.id}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PropertySpec:
        _check_keys("ga4_properties[]", data, _field_names(cls))
        if "id" not in data or "account" not in data:
            raise ValueError("ga4_properties[] entries need 'id' and 'account'")
        return cls(**data)


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that shapes the sandbox's answers.

    Rate limits are token buckets: `per_site_qps` per site, `global_qps` over
    all API calls, both holding up to `burst` tokens (None: max(1, qps)).
    `load_quota` (None = off) is the number of expensive queries (dimensions
    include query or page) each site may run per `load_quota_window_s`.
    `rows_jitter` lets the daily row count vary by up to that fraction.
    """

    seed: int = 0
    sites: Sequence[SiteSpec] = ()
    per_site_qps: float | None = None
    global_qps: float | None = None
    burst: float | None = None
    latency_s: float = 0.0
    faults: Sequence[FaultSpec] = ()
    load_quota: int | None = None
    load_quota_window_s: float = 60.0
    rows_jitter: float = 0.1
    revision: int = 0  # the partner revised its data: the same rows, other numbers (0: the original)
    require_auth: bool = False  # API calls need a bearer token from POST /token (service account or user)
    refuse_tokens: bool = False  # POST /token answers 400 invalid_grant (a revoked or wrong key)
    # Google's lateness: the last `incomplete_days` days up to `today` (None: today in Pacific time)
    # are still being collected. Final data leaves them out; dataState all gives them partial.
    today: str | None = None
    incomplete_days: int = 3
    # Google's cap: one query serves at most this many rows of a day and search type (None: no cap).
    row_cap: int | None = 50_000
    # Google Analytics 4 properties (reporting_assets/sandbox/ga4.py); none by default.
    ga4_properties: Sequence[PropertySpec] = ()

    def __post_init__(self) -> None:
        # Stored as tuples so a config can be shared between threads safely.
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "faults", tuple(self.faults))
        object.__setattr__(self, "ga4_properties", tuple(self.ga4_properties))
        self._validate_ga4_properties()
        _require_int("seed", self.seed, minimum=-(2**63))
        self._validate_sites()
        _require_number("per_site_qps", self.per_site_qps, minimum=0.0, allow_none=True, strict=True)
        _require_number("global_qps", self.global_qps, minimum=0.0, allow_none=True, strict=True)
        _require_number("burst", self.burst, minimum=1.0, allow_none=True)
        _require_number("latency_s", self.latency_s, minimum=0.0)
        for fault in self.faults:
            if not isinstance(fault, FaultSpec):
                raise ValueError(f"faults entries must be FaultSpec (got {fault!r})")
        _require_int("load_quota", self.load_quota, minimum=0, allow_none=True)
        _require_number("load_quota_window_s", self.load_quota_window_s, minimum=0.0, strict=True)
        _require_number("rows_jitter", self.rows_jitter, minimum=0.0)
        if not isinstance(self.revision, int) or isinstance(self.revision, bool) or self.revision < 0:
            raise ValueError(f"revision must be a whole number >= 0 (got {self.revision!r})")
        if self.rows_jitter > 1:
            raise ValueError(f"rows_jitter must be within [0, 1] (got {self.rows_jitter!r})")
        if not isinstance(self.require_auth, bool):
            raise ValueError(f"require_auth must be true or false (got {self.require_auth!r})")
        if not isinstance(self.refuse_tokens, bool):
            raise ValueError(f"refuse_tokens must be true or false (got {self.refuse_tokens!r})")
        if self.today is not None:
            try:
                dt.date.fromisoformat(self.today)
            except (TypeError, ValueError):
                raise ValueError(f"today must be a YYYY-MM-DD date or null (got {self.today!r})") from None
        _require_int("incomplete_days", self.incomplete_days, minimum=0)
        _require_int("row_cap", self.row_cap, minimum=1, allow_none=True)

    def today_date(self) -> dt.date:
        """The partner's today: `today`, else the date in Pacific time (Google's data day)."""
        if self.today is not None:
            return dt.date.fromisoformat(self.today)
        return dt.datetime.now(PACIFIC).date()

    def first_incomplete_date(self) -> dt.date:
        """The first day still being collected (tomorrow when `incomplete_days` is 0)."""
        return self.today_date() - dt.timedelta(days=self.incomplete_days - 1)

    def completeness(self, day: dt.date) -> float:
        """How much of a day's data is collected: 1 final, 0 none yet (the future), partial in between."""
        today = self.today_date()
        if day > today:
            return 0.0
        if day < self.first_incomplete_date():
            return 1.0
        age = (today - day).days  # 0 for today
        return (age + 1) / (self.incomplete_days + 1)

    def _validate_sites(self) -> None:
        if not self.sites:
            raise ValueError("sites must list at least one site")
        seen: set[str] = set()
        for site in self.sites:
            if not isinstance(site, SiteSpec):
                raise ValueError(f"sites entries must be SiteSpec (got {site!r})")
            if site.url in seen:
                raise ValueError(f"sites has a duplicate url {site.url!r}")
            seen.add(site.url)

    def _validate_ga4_properties(self) -> None:
        seen: set[str] = set()
        for prop in self.ga4_properties:
            if not isinstance(prop, PropertySpec):
                raise ValueError(f"ga4_properties entries must be PropertySpec (got {prop!r})")
            if prop.id in seen:
                raise ValueError(f"ga4_properties has a duplicate id {prop.id!r}")
            seen.add(prop.id)

    def ga4_property(self, name: str) -> PropertySpec | None:
        """The GA4 property named "properties/<id>", or None."""
        for prop in self.ga4_properties:
            if prop.name == name:
                return prop
        return None

    def site(self, url: str) -> SiteSpec | None:
        """The site with this exact url, or None."""
        for site in self.sites:
            if site.url == url:
                return site
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict(to_dict())` gives an equal config."""
        data = dataclasses.asdict(self)
        data["sites"] = [dataclasses.asdict(s) for s in self.sites]
        data["faults"] = [dataclasses.asdict(f) for f in self.faults]
        data["ga4_properties"] = [dataclasses.asdict(p) for p in self.ga4_properties]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxConfig:
        _check_keys("config", data, _field_names(cls))
        values = dict(data)
        if "sites" in values:
            values["sites"] = [SiteSpec.from_dict(s) for s in _as_list("sites", values["sites"])]
        if "faults" in values:
            values["faults"] = [FaultSpec.from_dict(f) for f in _as_list("faults", values["faults"])]
        if "ga4_properties" in values:
            props = _as_list("ga4_properties", values["ga4_properties"])
            values["ga4_properties"] = [PropertySpec.from_dict(p) for p in props]
        return cls(**values)

    def updated(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """A new config with the top-level settings in `changes` replaced.

        Values may be JSON-style dicts/lists or SiteSpec/FaultSpec objects.
        """
        merged = self.to_dict()
        _check_keys("config", changes, list(merged))
        for key, value in changes.items():
            merged[key] = _jsonable(value)
        return SandboxConfig.from_dict(merged)


def _as_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list (got {type(value).__name__})")
    return list(value)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def default_config(seed: int = 0) -> SandboxConfig:
    """The demo setup: five sites of different sizes, generous rate limits.

    With rowLimit 1000, shop.example.com needs 3 pages a day and
    www.example.com 2. Buckets start with 30 tokens, so the first 30 calls
    always pass; a small run sees at most a few 429s after that.
    """
    return SandboxConfig(
        seed=seed,
        sites=[
            SiteSpec("sc-domain:example.com", 120),
            SiteSpec("https://www.example.com/", 1250),
            SiteSpec("https://shop.example.com/", 2600),
            SiteSpec("https://blog.example.com/", 40),
            SiteSpec("https://help.example.org/", 700),
        ],
        per_site_qps=10.0,
        global_qps=40.0,
        burst=30.0,
        faults=[],
    )


__all__ = ["FAULT_KINDS", "FaultSpec", "PropertySpec", "SandboxConfig", "SiteSpec", "default_config"]
