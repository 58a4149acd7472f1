"""Fixtures for the sandbox tests: servers started per test and a real client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reporting_assets.sandbox import SandboxConfig, SandboxServer
from reporting_assets_tests.sandbox.helpers import make_client, sandbox_config


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Factory: start a sandbox (stopped after the test)."""
    servers: list[SandboxServer] = []

    def start(config: SandboxConfig | None = None, **kwargs: Any) -> SandboxServer:
        server = SandboxServer(config if config is not None else sandbox_config(), **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    return start_sandbox()


@pytest.fixture
def client(sandbox: SandboxServer) -> Any:
    return make_client(sandbox.url)
