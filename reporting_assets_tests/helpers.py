"""Helpers shared by the test suites: waiting on a condition (never on a clock), a service-account key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout_s: float = 10.0,
    what: str | Callable[[], str] = "the condition",
    every_s: float = 0.05,
    error: type[Exception] = AssertionError,
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    After `timeout_s` raise `error` naming `what`; a callable `what` describes the state at the
    timeout, not at the call.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout_s:g}s waiting for {what() if callable(what) else what}")
        time.sleep(every_s)


KEY_ID = "PLANTED-KEY-ID-7f3a9c"  # planted in every key made here: it must never show up anywhere


def service_account_file(tmp_path: Path, token_uri: str) -> tuple[Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "secrets" / "service-account.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "sandbox",
                "private_key_id": KEY_ID,
                "private_key": pem,
                "client_email": "robot@sandbox.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    key_fragment = pem.splitlines()[5]  # a line from the middle of the key material
    return path, key_fragment
