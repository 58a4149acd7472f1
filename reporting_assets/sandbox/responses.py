"""HTTP answers, including errors in Google's JSON error shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json; charset=UTF-8"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    drop_connection: bool = False  # send nothing and close the socket (a host that went away)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode("utf-8"))


def google_error(
    code: int,
    message: str,
    *,
    reason: str,
    status: str,
    domain: str = "global",
    headers: dict[str, str] | None = None,
) -> Response:
    """An error body exactly as Google APIs send it (what googleapiclient's HttpError parses)."""
    payload = {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": status,
        }
    }
    return Response(code, json.dumps(payload).encode("utf-8"), headers=dict(headers or {}))


def bad_request(message: str) -> Response:
    return google_error(400, message, reason="badRequest", status="INVALID_ARGUMENT")


def not_found(message: str) -> Response:
    return google_error(404, message, reason="notFound", status="NOT_FOUND")


def forbidden(site_url: str) -> Response:
    message = (
        f"User does not have sufficient permission for site '{site_url}'. "
        "See also: https://support.google.com/webmasters/answer/2451999."
    )
    return google_error(403, message, reason="forbidden", status="PERMISSION_DENIED")


def rate_limited(retry_after_s: int, scope: str) -> Response:
    message = f"Quota exceeded: too many requests ({scope}). Retry after {retry_after_s} s."
    return google_error(
        429,
        message,
        reason="rateLimitExceeded",
        status="RESOURCE_EXHAUSTED",
        domain="usageLimits",
        headers={"Retry-After": str(retry_after_s)},
    )


def rate_limited_403(reason: str) -> Response:
    """Throttling as a 403 (`rateLimitExceeded` / `userRateLimitExceeded`), which Google sends too."""
    message = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user'."
    return google_error(403, message, reason=reason, status="PERMISSION_DENIED", domain="usageLimits")


def daily_limit_exceeded() -> Response:
    message = "Quota exceeded for quota metric 'Queries' and limit 'Queries per day'."
    return google_error(403, message, reason="dailyLimitExceeded", status="PERMISSION_DENIED", domain="usageLimits")


def load_quota_exceeded(site_url: str) -> Response:
    message = f"Search Analytics load quota exceeded for site '{site_url}'."
    return google_error(403, message, reason="quotaExceeded", status="RESOURCE_EXHAUSTED", domain="usageLimits")


def internal_error() -> Response:
    return google_error(500, "Internal error encountered.", reason="backendError", status="INTERNAL")


def unavailable() -> Response:
    return google_error(503, "The service is currently unavailable.", reason="backendError", status="UNAVAILABLE")
