"""Helpers for the sandbox tests: configs, a manual clock, real clients and raw HTTP."""

from __future__ import annotations

import functools
import http.client
import json
from typing import Any
from urllib.parse import quote, urlsplit

import google_auth_httplib2
import httplib2
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build

from reporting_assets.sandbox import SandboxConfig, SiteSpec
from reporting_assets_tests import helpers

wait_for = functools.partial(helpers.wait_for, every_s=0.02)

HOSTILE_SITE = "https://exämple.com/a b/?q=1&x=%2F#frag"
FORBIDDEN_SITE = "https://private.example.com/"
DAY = "2024-03-05"


def sandbox_config(**overrides: Any) -> SandboxConfig:
    config = SandboxConfig(
        seed=7,
        sites=[
            SiteSpec("sc-domain:example.com", 120),
            SiteSpec("https://www.example.com/", 1250),
            SiteSpec("https://shop.example.com/", 2600),
            SiteSpec(HOSTILE_SITE, 50),
            SiteSpec("sc-domain:bücher.example", 30),
            SiteSpec(FORBIDDEN_SITE, 100, forbidden=True),
        ],
    )
    return config.updated(overrides) if overrides else config


class ManualClock:
    """A monotonic clock the test moves by hand: rate limits and quota windows become exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_client(url: str, timeout: float | None = None) -> Any:
    """A Search Console client exactly as the partner resource builds it."""
    options = {"api_endpoint": url}
    if timeout is None:
        return build(
            "searchconsole",
            "v1",
            static_discovery=True,
            credentials=AnonymousCredentials(),
            client_options=options,
            cache_discovery=False,
        )
    http = google_auth_httplib2.AuthorizedHttp(AnonymousCredentials(), http=httplib2.Http(timeout=timeout))
    return build("searchconsole", "v1", static_discovery=True, http=http, client_options=options, cache_discovery=False)


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(url: str, method: str, path: str, body: bytes | None = None) -> RawResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body is not None else {})
        resp = conn.getresponse()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def raw_query(url: str, site_url: str, body: dict[str, Any] | bytes) -> RawResponse:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = f"/webmasters/v3/sites/{quote(site_url, safe='')}/searchAnalytics/query?alt=json"
    return raw_request(url, "POST", path, payload)
