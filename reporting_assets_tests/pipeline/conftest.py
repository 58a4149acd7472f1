"""Fixtures for pipeline tests: a sandbox, an environment pointing the code location at it, an instance."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec
from reporting_assets.settings import build_resources

SITES = [
    SiteSpec("sc-domain:example.com", 120),
    SiteSpec("https://www.example.com/", 1250),
    SiteSpec("https://shop.example.com/", 2600),  # 3 pages of 1000 rows
    SiteSpec("https://locked.example.com/", 50, forbidden=True),
]


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(seed=7, sites=SITES, per_site_qps=None, global_qps=None, faults=[])


@pytest.fixture
def sandbox(sandbox_config: SandboxConfig) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config) as server:
        yield server


@pytest.fixture
def pipeline_env(
    monkeypatch: pytest.MonkeyPatch,
    kafka_broker: str,
    sandbox: SandboxServer,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> dict[str, str]:
    """Environment for the code location (also read by the consumer job's subprocesses)."""
    topic = unique_name("requests")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "REPORTING_REQUEST_TOPIC": topic,
        "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
        "REPORTING_CONSUMER_GROUP": unique_name("group"),
        "REPORTING_TOPIC_PARTITIONS": "4",
        "PARTNER_API_ENDPOINT": sandbox.url,
        "PARTNER_NUM_RETRIES": "3",
        "REPORTING_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def resources(pipeline_env: dict[str, str]) -> dict:
    return build_resources(pipeline_env)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance
