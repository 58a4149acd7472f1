"""Shared fixtures. Kafka: one local broker per test session, unique names per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from reporting_assets.infra.kafka import BrokerSettings, LocalKafkaBroker
from reporting_assets.infra.maven import ensure_jars
from reporting_assets.infra.ports import free_ports
from reporting_assets.resources.kafka import KafkaResource


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap ``host:port`` of a Kafka broker that lives for the whole test session."""
    jars = ensure_jars("broker")
    port, controller_port = free_ports(2)
    settings = BrokerSettings(port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka"))
    broker = LocalKafkaBroker(settings, jars_dir=jars)
    try:
        yield broker.start()
    finally:
        broker.stop()  # also after a failed start: a JVM must never outlive the session


@pytest.fixture(autouse=True)
def no_stale_defs_state_storage() -> Iterator[None]:
    """Each test starts with no current DefsStateStorage. Dagster 1.13's `DagsterInstance.__exit__`
    disposes the instance but leaves it the current storage, so after a test's `instance_for_test`
    the next test that loads definitions (the components loader) or materializes without an instance
    read a dead weakref: "Attempted to resolve undefined DagsterInstance weakref" (the unit tier)."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage  # no public name

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("requests")`` -> ``"requests-1f3a9c0b2d"``: topics and groups no other test sees."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def kafka_resource(kafka_broker: str, unique_name: Callable[[str], str]) -> KafkaResource:
    """A KafkaResource on the session broker with topics and a group of its own."""
    request_topic = unique_name("requests")
    return KafkaResource(
        bootstrap_servers=kafka_broker,
        request_topic=request_topic,
        dead_letter_topic=f"{request_topic}.dead-letter",
        delay_topic=f"{request_topic}.delayed",
        consumer_group=unique_name("group"),
    )


# Tests that need a real broker, Spark, a Dagster daemon or pipeline runs in subprocesses: the
# integration tier. Everything else is the unit tier (`make test-fast`).
INTEGRATION_FOLDERS = {"pipeline", "reliability", "ui", "cluster"}
# Real clusters on loopback (`make test-cluster`, run by CI after `make test`).
CLUSTER_FOLDER = "cluster"
INTEGRATION_FIXTURES = {"kafka_broker"}
INTEGRATION_MODULES = {"test_demo.py", "test_maven.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.relative_to(config.rootpath / "reporting_assets_tests")
        integration = (
            bool(INTEGRATION_FOLDERS & set(path.parts[:-1]))
            or path.name in INTEGRATION_MODULES
            or bool(INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())))
        )
        item.add_marker(pytest.mark.integration if integration else pytest.mark.unit)
        if CLUSTER_FOLDER in path.parts[:-1]:
            item.add_marker(pytest.mark.cluster)
