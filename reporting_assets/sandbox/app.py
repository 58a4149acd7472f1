"""The sandbox's behaviour, independent of HTTP plumbing: route a request, answer it, count it."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from reporting_assets.sandbox import ga4, responses
from reporting_assets.sandbox.config import FaultSpec, SandboxConfig, SiteSpec
from reporting_assets.sandbox.policies import Clock, FaultPicker, LoadQuota, RateLimiter
from reporting_assets.sandbox.query import QueryRequest, RowCache, parse_query_request, response_body, response_metadata
from reporting_assets.sandbox.responses import Response
from reporting_assets.sandbox.stats import CallIdentity, CallRecord, CallTimeline, Stats

SITES_PATH = "/webmasters/v3/sites"
QUERY_SUFFIX = "/searchAnalytics/query"
ADMIN_PREFIX = "/_sandbox/"
TOKEN_PATH = "/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_GRANT = "refresh_token"  # OAuth user credentials (`authorized_user` files)

_MALFORMED_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>upstream hiccup</body></html>"
_WRONG_SCHEMA_BODY = json.dumps({"rows": [{"keys": "x", "clicks": "lots"}]}).encode()
_RATE_SETTINGS = ("per_site_qps", "global_qps", "burst")
_QUOTA_SETTINGS = ("load_quota", "load_quota_window_s")


def _site_entry(site: SiteSpec) -> dict[str, str]:
    level = "siteUnverifiedUser" if site.forbidden else "siteOwner"
    return {"siteUrl": site.url, "permissionLevel": level}


def _unknown_site(site_url: str) -> Response:
    return responses.not_found(f"Site not found: '{site_url}'.")


def _identity(method: str, path: str, body: bytes) -> CallIdentity:
    """What the call asks for, read leniently (a bad body is the API's to refuse, not this note's)."""
    if ga4.is_ga4_path(path):
        return ga4.identity(method, path)
    if path.rstrip("/") == SITES_PATH:
        return CallIdentity("sites.list")
    if not path.startswith(SITES_PATH + "/"):
        return CallIdentity("unknown")
    rest = path[len(SITES_PATH) + 1 :]
    if not (rest.endswith(QUERY_SUFFIX) and method == "POST"):
        return CallIdentity("sites.get" if method == "GET" else "unknown", unquote(rest, errors="replace"))
    site_url = unquote(rest[: -len(QUERY_SUFFIX)], errors="replace")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict):
        return CallIdentity("searchanalytics.query", site_url)

    def number(name: str, default: int | None) -> int | None:
        value = payload.get(name, default)
        return value if isinstance(value, int) else None

    return CallIdentity(
        "searchanalytics.query",
        site_url,
        payload.get("startDate"),
        payload.get("endDate"),
        number("startRow", 0),
        number("rowLimit", None),
    )


def _call_key(site_url: str, payload: Any) -> bytes:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(f"{site_url}\n{canonical}".encode(), digest_size=16).digest()


class SandboxApp:
    """Answers API and `/_sandbox/` admin requests; safe to call from many threads."""

    def __init__(self, config: SandboxConfig, clock: Clock = time.monotonic) -> None:
        self.stop_event = threading.Event()  # set on shutdown: cuts latency/slow sleeps short
        self._config_lock = threading.Lock()
        self._config = config
        self._limiter = RateLimiter(clock)
        self._quota = LoadQuota(clock)
        self._ga4 = ga4.Ga4Api(clock)
        self._faults = FaultPicker()
        self._rows = RowCache()
        self._stats = Stats()
        self._calls = CallTimeline(clock)
        self._tokens: set[str] = set()
        self._limiter.configure(config.per_site_qps, config.global_qps, config.burst)
        self._quota.configure(config.load_quota, config.load_quota_window_s)
        self._faults.configure(config.faults, config.seed)

    # --- configuration and stats ---

    @property
    def config(self) -> SandboxConfig:
        return self._config

    def update_config(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """Replace the given top-level settings (validated; ValueError if bad).

        Setting rate limits refills the buckets, setting the load quota opens
        new windows, and setting faults (or the seed) re-arms their `times`
        counters and restarts the fault random sequence.
        """
        with self._config_lock:
            new = self._config.updated(changes)
            if any(k in changes for k in _RATE_SETTINGS):
                self._limiter.configure(new.per_site_qps, new.global_qps, new.burst)
            if any(k in changes for k in _QUOTA_SETTINGS):
                self._quota.configure(new.load_quota, new.load_quota_window_s)
            if "faults" in changes or "seed" in changes:
                self._faults.configure(new.faults, new.seed)
            if "ga4_properties" in changes:
                self._ga4.quotas.reset()  # new limits start with full token buckets
            self._config = new
            return new

    def stats(self) -> dict[str, Any]:
        return {**self._stats.snapshot(), "open_calls": self._calls.open_count()}

    def calls(self) -> dict[str, Any]:
        """The calls received and not yet answered, and the timeline of answered ones (`CallTimeline`)."""
        return self._calls.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()
        self._calls.reset()

    # --- entry point ---

    def handle(self, method: str, raw_path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
        path = raw_path.split("?", 1)[0]
        if path.startswith(ADMIN_PREFIX):
            return self._admin(method, path, body)
        if path == TOKEN_PATH and method == "POST":
            if self._config.refuse_tokens:
                return responses.json_response(
                    {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400
                )
            return self._issue_token(body)
        call_id = self._calls.received(_identity(method, path, body))
        status = 0
        try:
            response = self._serve(method, path, body, headers, raw_path.partition("?")[2])
            status = response.status
            return response
        finally:
            self._calls.answered(call_id, status)

    def _serve(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None, query_string: str = ""
    ) -> Response:
        config = self._config
        if config.latency_s:
            self.stop_event.wait(config.latency_s)
        if config.require_auth and not self._authorized(headers or {}):
            response = responses.google_error(
                401,
                "Request is missing required authentication credential.",
                reason="required",
                status="UNAUTHENTICATED",
            )
            self._stats.record(CallRecord("unauthenticated", response.status))
            return response
        if ga4.is_ga4_path(path):
            response, record = self._ga4.handle(config, method, path, query_string, body)
        else:
            response, record = self._api(config, method, path, body)
        self._stats.record(record)
        return response

    # --- OAuth2 token endpoint (the service-account JWT-bearer grant, a user's refresh token) ---

    def _issue_token(self, body: bytes) -> Response:
        form = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type", "")
        if grant == JWT_BEARER_GRANT:
            if form.get("assertion", "").count(".") != 2:
                return responses.json_response({"error": "invalid_grant", "error_description": "bad assertion"}, 400)
        elif grant == REFRESH_GRANT:
            if not all(form.get(field) for field in ("refresh_token", "client_id", "client_secret")):
                return responses.json_response({"error": "invalid_request", "error_description": "bad refresh"}, 400)
        else:
            return responses.json_response({"error": "unsupported_grant_type"}, 400)
        token = f"sandbox-{secrets.token_hex(16)}"
        with self._config_lock:
            self._tokens.add(token)
        return responses.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def issued_tokens(self) -> list[str]:
        with self._config_lock:
            return sorted(self._tokens)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and token in self._tokens

    # --- admin endpoints ---

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_sandbox/health"):
            return responses.json_response({"ok": True})
        if route == ("GET", "/_sandbox/stats"):
            return responses.json_response(self.stats())
        if route == ("GET", "/_sandbox/calls"):
            return responses.json_response(self.calls())
        if route == ("POST", "/_sandbox/stats/reset"):
            self.reset_stats()
            return responses.json_response(self.stats())
        if route == ("GET", "/_sandbox/config"):
            return responses.json_response(self._config.to_dict())
        if route == ("POST", "/_sandbox/config"):
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the config update must be a JSON object")
                return responses.json_response(self.update_config(changes).to_dict())
            except ValueError as exc:  # includes json.JSONDecodeError
                return responses.bad_request(f"invalid sandbox config: {exc}")
        return responses.not_found(f"No sandbox endpoint {method} {path}")

    # --- the Search Console API ---

    def _api(self, config: SandboxConfig, method: str, path: str, body: bytes) -> tuple[Response, CallRecord]:
        if path.rstrip("/") == SITES_PATH:
            if method != "GET":
                return self._unknown(method, path)
            return self._sites_list(config)
        if not path.startswith(SITES_PATH + "/"):
            return self._unknown(method, path)
        rest = path[len(SITES_PATH) + 1 :]
        if rest.endswith(QUERY_SUFFIX) and method == "POST":
            site_url = unquote(rest[: -len(QUERY_SUFFIX)], errors="replace")
            return self._query(config, site_url, body)
        if method == "GET":
            # Lenient: a site url sent with raw "/" still names one site.
            return self._sites_get(config, unquote(rest, errors="replace"))
        return self._unknown(method, path)

    def _unknown(self, method: str, path: str) -> tuple[Response, CallRecord]:
        response = responses.not_found(f"Method not found: {method} {path}")
        return response, CallRecord("unknown", response.status)

    def _refused_by_rate_limit(self, site_url: str | None) -> Response | None:
        refusal = self._limiter.try_acquire(site_url)
        if refusal is None:
            return None
        return responses.rate_limited(refusal.retry_after_s, refusal.scope)

    def _sites_list(self, config: SandboxConfig) -> tuple[Response, CallRecord]:
        response = self._refused_by_rate_limit(None) or responses.json_response(
            {"siteEntry": [_site_entry(s) for s in config.sites]}
        )
        return response, CallRecord("sites.list", response.status, success=response.status == 200)

    def _sites_get(self, config: SandboxConfig, site_url: str) -> tuple[Response, CallRecord]:
        site = config.site(site_url)
        if site is None:
            response = _unknown_site(site_url)
        else:
            response = self._refused_by_rate_limit(site_url) or responses.json_response(_site_entry(site))
        return response, CallRecord("sites.get", response.status, site_url, success=response.status == 200)

    def _query(self, config: SandboxConfig, site_url: str, body: bytes) -> tuple[Response, CallRecord]:
        method = "searchanalytics.query"
        site = config.site(site_url)
        if site is None or site.forbidden:
            error = _unknown_site(site_url) if site is None else responses.forbidden(site_url)
            return error, CallRecord(method, error.status, site_url)
        refusal = self._refused_by_rate_limit(site_url)
        if refusal is not None:
            return refusal, CallRecord(method, refusal.status, site_url)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            error = responses.bad_request("Invalid JSON payload received. The request body is not valid JSON.")
            return error, CallRecord(method, error.status, site_url)
        call_key = _call_key(site_url, payload)
        try:
            request = parse_query_request(site, payload)
        except ValueError as exc:
            error = responses.bad_request(str(exc))
            return error, CallRecord(method, error.status, site_url, call_key)
        return self._answer_query(config, request, call_key)

    def _answer_query(
        self, config: SandboxConfig, request: QueryRequest, call_key: bytes
    ) -> tuple[Response, CallRecord]:
        method, site_url = "searchanalytics.query", request.query.site.url
        fault = self._faults.pick(site_url, request.start_row)
        fault_kind = fault.kind if fault is not None else None
        if fault is not None and fault.kind != "slow":
            response = self._fault_response(config, request, fault)
            return response, CallRecord(method, response.status, site_url, call_key, fault=fault.kind)
        if fault is not None:  # slow: late, then a normal answer
            self.stop_event.wait(fault.slow_s)
        if request.expensive and not self._quota.try_consume(site_url):
            response = responses.load_quota_exceeded(site_url)
            return response, CallRecord(method, 403, site_url, call_key, quota_refused=True)
        rows = self._rows.page(config, request.query, request.start_row, request.row_limit)
        record = CallRecord(method, 200, site_url, call_key, fault=fault_kind, rows=len(rows), success=True)
        body = response_body(rows, request.aggregation, response_metadata(config, request.query))
        return Response(200, body), record

    def _fault_response(self, config: SandboxConfig, request: QueryRequest, fault: FaultSpec) -> Response:
        if fault.kind == "http_500":
            return responses.internal_error()
        if fault.kind == "http_503":
            return responses.unavailable()
        if fault.kind == "rate_limit_403":
            return responses.rate_limited_403("rateLimitExceeded")
        if fault.kind == "user_rate_limit_403":
            return responses.rate_limited_403("userRateLimitExceeded")
        if fault.kind == "daily_limit":
            return responses.daily_limit_exceeded()
        if fault.kind == "connection_reset":
            return Response(0, b"", drop_connection=True)
        if fault.kind == "malformed":
            return Response(200, _MALFORMED_BODY, content_type="text/html; charset=UTF-8")
        if fault.kind == "truncated":
            # Cut mid-document; Content-Length matches what is sent, so the client reads it all and fails to parse.
            rows = self._rows.page(config, request.query, request.start_row, request.row_limit)
            body = response_body(rows, request.aggregation)
            return Response(200, body[: max(1, len(body) // 2)])
        return Response(200, _WRONG_SCHEMA_BODY)  # wrong_schema
