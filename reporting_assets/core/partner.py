"""The partner API (Google Search Console v1) through google-api-python-client.

Offline the same client points at the partner sandbox through `api_endpoint`; in production it
points at Google. A report query is one HTTP call: the consumer's scheduler is the one layer that
retries it (pacing, Retry-After, backoff, the delay topic), so the client's own `num_retries` (blind
random·2ⁿ sleeps in a worker thread) only serves account discovery's `sites.list`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import google.auth
import google.auth.exceptions
import httplib2
from google.auth.credentials import AnonymousCredentials, Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from reporting_assets.core.messages import ReportRequest

if TYPE_CHECKING:
    from reporting_assets.core.consumer.work import QuotaExhausted

SCOPES = ["https://www.googleapis.com/auth/webmasters.readonly"]
READABLE_PERMISSIONS = frozenset({"siteOwner", "siteFullUser", "siteRestrictedUser"})
# 403s that mean "too fast", not "not allowed": google-api-python-client retries them as throttling.
THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
LOAD_QUOTA_REASON = "quotaExceeded"  # Search Analytics load quota: Google asks to wait ~15 minutes
DAILY_QUOTA_REASON = "dailyLimitExceeded"  # the project's queries per day: they refill at Pacific midnight
QUOTA_DAY_ZONE = ZoneInfo("America/Los_Angeles")


class PartnerConfigError(ValueError):
    """A partner setting that cannot work; the message names the setting."""


class MalformedResponseError(ValueError):
    """The partner answered 200 with a body that is not a valid Search Analytics response."""


@dataclass(frozen=True)
class Site:
    url: str
    permission_level: str

    @property
    def readable(self) -> bool:
        return self.permission_level in READABLE_PERMISSIONS


def is_throttling(status: int, content: bytes | None) -> bool:
    """429, or 403 whose reason is throttling (`rateLimitExceeded`, `userRateLimitExceeded`)."""
    return status == 429 or (status == 403 and error_reason(content) in THROTTLE_REASONS)


def error_reason(content: bytes | None) -> str:
    """Google's `errors[0].reason` of an error body (e.g. rateLimitExceeded, quotaExceeded), or ''."""
    try:
        body = json.loads((content or b"").decode("utf-8"))
        return str(body["error"]["errors"][0].get("reason", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


def next_quota_day_ms(now: dt.datetime | None = None) -> int:
    """Epoch ms of the next midnight in Pacific time, when Google's daily quotas refill."""
    local = (now or dt.datetime.now(dt.UTC)).astimezone(QUOTA_DAY_ZONE)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=QUOTA_DAY_ZONE)
    return int(midnight.timestamp() * 1000)


def credentials_refused(detail: str) -> str:
    """One line for credentials the partner refuses: what happened, and which setting to fix."""
    first = " ".join(detail.split())[:300]
    return (
        f"the partner refused the credentials ({first}); check PARTNER_CREDENTIALS_FILE "
        "(PartnerResource.credentials_file) or the application default credentials"
    )


def throttle_wait_s(error: HttpError) -> float | None:
    """The Retry-After of a refused call, in seconds, if the partner gave one."""
    return retry_after_seconds(error.resp.get("retry-after") if error.resp is not None else None)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds form; HTTP dates are rare from Google)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


class SearchConsoleClient:
    """A built Search Console service plus response validation. Not thread-safe (httplib2)."""

    def __init__(self, service: Any, num_retries: int) -> None:
        self._service = service
        self._num_retries = num_retries  # of sites.list only: a query is retried by the consumer

    def list_sites(self) -> list[Site]:
        answer = self._service.sites().list().execute(num_retries=self._num_retries)
        entries = answer.get("siteEntry", []) if isinstance(answer, dict) else None
        if not isinstance(entries, list):
            raise MalformedResponseError("sites.list answer has no siteEntry list")
        return sorted(
            (Site(entry["siteUrl"], entry.get("permissionLevel", "")) for entry in entries),
            key=lambda site: site.url,
        )

    def query(self, request: ReportRequest) -> Answer:
        """One page of rows for the request, validated, in exactly one HTTP call (no retries here).

        Raises HttpError, MalformedResponseError, or the transport's errors (timeouts, DNS, resets).
        """
        answer = (
            self._service.searchanalytics()
            .query(siteUrl=request.account, body=request.api_body())
            .execute(num_retries=0)
        )
        return Answer(validate_rows(answer, request), provisional(answer, request))


@dataclass(frozen=True)
class Answer:
    """A page of a report: its rows, and what the partner said about them.

    `provisional`: the partner still collects that day's data. `more`: whether rows follow this page,
    where the partner says so (GA4's rowCount); None: a full page means more. `quota_spent`: the call
    succeeded, and the partner's quota says the account's next call would be refused (wait, do not
    ask). `details`: what the partner's landed schema needs (GA4: metric types, thresholding).
    """

    rows: list[dict[str, Any]]
    provisional: bool = False
    more: bool | None = None
    quota_spent: QuotaExhausted | None = None
    details: dict[str, Any] = field(default_factory=dict)


def provisional(answer: dict[str, Any], request: ReportRequest) -> bool:
    """Whether the request's day is still being collected, by the answer's `metadata`.

    Google says it only for `dataState` all / hourly_all (final data leaves such days out): the first
    incomplete date (grouped by date) or hour (grouped by hour), when the range reaches into them.
    """
    if request.data_state == "final":
        return False
    metadata = answer.get("metadata")
    if not isinstance(metadata, dict):
        return False
    first = metadata.get("firstIncompleteDate") or str(metadata.get("firstIncompleteHour") or "")[:10]
    if not isinstance(first, str) or not first:
        return False
    try:
        return dt.date.fromisoformat(request.date) >= dt.date.fromisoformat(first)
    except ValueError:
        raise MalformedResponseError(f"metadata: {first!r} is not a date") from None


def validate_rows(answer: object, request: ReportRequest) -> list[dict[str, Any]]:
    if not isinstance(answer, dict):
        raise MalformedResponseError(f"answer is a JSON {type(answer).__name__}, expected an object")
    rows = answer.get("rows", [])
    if not isinstance(rows, list):
        raise MalformedResponseError("'rows' is not a list")
    if len(rows) > request.row_limit:
        raise MalformedResponseError(f"{len(rows)} rows for rowLimit {request.row_limit}")
    width = len(request.dimensions)
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise MalformedResponseError(f"row {index} is not an object")
        keys = row.get("keys")
        if not isinstance(keys, list) or len(keys) != width or not all(isinstance(k, str) for k in keys):
            raise MalformedResponseError(f"row {index}: 'keys' is not a list of {width} strings")
        for metric in ("clicks", "impressions", "ctr", "position"):
            value = row.get(metric)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise MalformedResponseError(f"row {index}: '{metric}' is not a number")
            if value < 0:
                raise MalformedResponseError(f"row {index}: '{metric}' is negative")
            if metric in ("clicks", "impressions") and value != int(value):
                raise MalformedResponseError(f"row {index}: '{metric}' is not a whole number")
    return rows


def http_error_reason(error: HttpError) -> str:
    """Google's `errors[0].reason` (e.g. rateLimitExceeded, quotaExceeded, forbidden), or ''."""
    return error_reason(error.content)


def http_error_summary(error: HttpError) -> str:
    """Status, reason and message of an HttpError, without the request URI (which may carry keys)."""
    try:
        body = json.loads(error.content.decode("utf-8"))
        message = str(body["error"].get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        message = error.content[:200].decode("utf-8", "replace") if error.content else ""
    reason = http_error_reason(error)
    return f"HTTP {error.status_code}" + (f" {reason}" if reason else "") + (f": {message}" if message else "")


@dataclass(frozen=True)
class Partner:
    """Where and as whom to call Search Console: Google itself, or the partner sandbox offline."""

    api_endpoint: str | None = None  # base URL; None: Google itself
    credentials_file: str | None = None  # service-account key or OAuth user JSON; None: anonymous (sandbox) or ADC
    num_retries: int = 5  # google-api-python-client's retries of sites.list (queries: the consumer's)
    # Socket timeout of one HTTP call. Long: a call the partner answers after the client gave up is a
    # call paid twice (bench 9 saw 25 000-row slices answered in over 30 s, then asked again).
    timeout_s: float = 120.0

    def validate(self) -> None:
        if self.num_retries < 0:
            raise PartnerConfigError(f"PartnerResource.num_retries must be >= 0, got {self.num_retries}")
        if not self.timeout_s > 0:
            raise PartnerConfigError(f"PartnerResource.timeout_s must be > 0, got {self.timeout_s}")
        if self.api_endpoint is not None and not self.api_endpoint.startswith(("http://", "https://")):
            raise PartnerConfigError(f"PartnerResource.api_endpoint must be an http(s) URL, got {self.api_endpoint!r}")

    def credentials(self) -> Credentials:
        if self.credentials_file:
            # Offline, the sandbox plays Google's token endpoint too (google-auth ignores a user
            # file's own token_uri, so that a file cannot send the refresh token elsewhere).
            sandbox_token_uri = f"{self.api_endpoint.rstrip('/')}/token" if self.api_endpoint else None
            return load_credentials_file(self.credentials_file, user_token_uri=sandbox_token_uri)
        if self.api_endpoint:
            return AnonymousCredentials()
        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except google.auth.exceptions.DefaultCredentialsError:
            raise PartnerConfigError(
                "PartnerResource.credentials_file is not set and no application default credentials were found"
            ) from None
        return credentials

    def client(self) -> SearchConsoleClient:
        """Build the Search Console client from the discovery document the package ships (no network)."""
        self.validate()
        transport = httplib2.Http(timeout=self.timeout_s)
        options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        service = build(
            "searchconsole",
            "v1",
            http=AuthorizedHttp(self.credentials(), http=transport),
            static_discovery=True,
            cache_discovery=False,
            client_options=options,
        )
        return SearchConsoleClient(service, self.num_retries)


def load_credentials_file(path: str, user_token_uri: str | None = None) -> Credentials:
    """The credentials of a JSON file: a service-account key, or OAuth user credentials (a refresh token).

    `user_token_uri`: where a user's refresh token is exchanged, if not Google's. Errors name the setting, the file and the field at fault, never the file's contents.
    """
    from google.oauth2 import service_account
    from google.oauth2.credentials import Credentials as UserCredentials

    file = Path(os.path.expanduser(path))
    try:
        info = json.loads(file.read_text())
    except OSError as exc:
        raise PartnerConfigError(f"PartnerResource.credentials_file: cannot read {file}: {exc.strerror}") from None
    except ValueError:
        raise PartnerConfigError(f"PartnerResource.credentials_file: {file} is not JSON") from None
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "authorized_user":
            # What `gcloud auth application-default login` or an OAuth consent flow saves for a user.
            user = UserCredentials.from_authorized_user_info(info, scopes=SCOPES)
            if user_token_uri is None:
                return user
            return UserCredentials(
                token=None,
                refresh_token=user.refresh_token,
                token_uri=user_token_uri,
                client_id=user.client_id,
                client_secret=user.client_secret,
                scopes=SCOPES,
            )
        return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    except (ValueError, KeyError) as exc:
        missing = str(exc).split(":")[0] if isinstance(exc, KeyError) else _missing_fields(exc, kind)
        what = "OAuth user credentials" if kind == "authorized_user" else "service-account key"
        raise PartnerConfigError(
            f"PartnerResource.credentials_file: {file} is not a usable {what} ({missing})"
        ) from None


def _missing_fields(error: ValueError, kind: object) -> str:
    # google-auth's message for user credentials lists the missing field names only (no values).
    text = str(error)
    if kind == "authorized_user" and "missing fields" in text:
        return text.split("missing fields", 1)[1].strip(" .")
    return "a service-account key" if kind != "authorized_user" else "client_id, client_secret, refresh_token"
