"""Helpers shared by the test suites (and the benchmarks): waiting on a condition, never on a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
