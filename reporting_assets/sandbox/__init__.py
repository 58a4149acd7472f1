"""A faithful, deterministic stand-in for the Google Search Console v1 API.

Start one with `SandboxServer(default_config()).start()` (or
`python -m reporting_assets.sandbox --port 8085`) and point
google-api-python-client at it via `client_options={"api_endpoint": url}`.
`expected_rows` gives the exact rows any query returns.
"""

from reporting_assets.sandbox.config import (
    FAULT_KINDS,
    FaultSpec,
    PropertySpec,
    SandboxConfig,
    SiteSpec,
    default_config,
)
from reporting_assets.sandbox.data import expected_row_count, expected_rows
from reporting_assets.sandbox.server import SandboxServer

__all__ = [
    "FAULT_KINDS",
    "FaultSpec",
    "PropertySpec",
    "SandboxConfig",
    "SandboxServer",
    "SiteSpec",
    "default_config",
    "expected_row_count",
    "expected_rows",
]
