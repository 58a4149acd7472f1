"""Life cycle of the local Kafka broker, each test on a broker (and ports) of its own."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from reporting_assets.infra.kafka import (
    BrokerSettings,
    BrokerStartError,
    DataDirError,
    LocalKafkaBroker,
    PortInUseError,
)
from reporting_assets.infra.maven import ensure_jars
from reporting_assets.infra.ports import free_ports
from reporting_assets.resources.kafka import KafkaResource, KafkaTopicError, KafkaUnavailableError
from reporting_assets_tests import helpers

wait_until = functools.partial(helpers.wait_for, every_s=0.1)

CLI = [sys.executable, "-m", "reporting_assets.infra.kafka"]


@pytest.fixture(scope="module")
def broker_jars() -> Path:
    return ensure_jars("broker")


@pytest.fixture
def settings(tmp_path: Path) -> BrokerSettings:
    port, controller_port = free_ports(2)
    return BrokerSettings(port=port, controller_port=controller_port, data_dir=tmp_path / "kafka")


@pytest.fixture
def broker(settings: BrokerSettings, broker_jars: Path) -> Iterator[LocalKafkaBroker]:
    broker = LocalKafkaBroker(settings, jars_dir=broker_jars)
    try:
        yield broker
    finally:
        broker.stop()


def cli(*args: str, settings: BrokerSettings) -> subprocess.CompletedProcess[str]:
    options = [
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--controller-port",
        str(settings.controller_port),
        "--data-dir",
        str(settings.data_dir),
    ]
    return subprocess.run([*CLI, *args, *options], capture_output=True, text=True, timeout=180)


def produce_and_commit(resource: KafkaResource, topic: str, count: int, commit: int) -> None:
    """Write ``count`` messages to partition 0 of ``topic``; the group commits ``commit`` of them."""
    producer = resource.producer()
    try:
        for i in range(count):
            producer.send(topic, key=b"k", value=f"message {i}".encode(), partition=0)
        producer.flush()
    finally:
        producer.close()
    consumer = resource.consumer([])
    try:
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(commit, "", -1)})
    finally:
        consumer.close()


def read_all(resource: KafkaResource, topic: str, count: int) -> list[bytes]:
    consumer = resource.consumer([topic], group_id=f"reader-{time.monotonic_ns()}", consumer_timeout_ms=10_000)
    try:
        return [record.value for _, record in zip(range(count), consumer, strict=False)]
    finally:
        consumer.close()


def test_start_status_stop_and_restart_after_sigkill(broker: LocalKafkaBroker, settings: BrokerSettings) -> None:
    started = time.monotonic()
    bootstrap = broker.start()
    first_start_s = time.monotonic() - started
    assert bootstrap == f"127.0.0.1:{settings.port}"
    status = broker.status()
    assert status["running"] and status["answering"] and status["bootstrap"] == bootstrap
    pid = status["pid"]
    assert (settings.data_dir / "broker.pid").read_text().strip() == str(pid)
    assert (settings.data_dir / "logs" / "meta.properties").exists()

    # A second start, from another object of the same data dir, finds the running broker.
    again = LocalKafkaBroker(settings)
    assert again.start() == bootstrap
    assert again.pid == pid

    resource = KafkaResource(bootstrap_servers=bootstrap, consumer_group="survivors")
    resource.ensure_topics({"durable": 1})
    produce_and_commit(resource, "durable", count=5, commit=3)

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not broker.is_running(), 10, "the killed broker to be gone")
    assert broker.status()["running"] is False

    started = time.monotonic()
    assert LocalKafkaBroker(settings).start() == bootstrap
    restart_s = time.monotonic() - started
    assert broker.pid not in (None, pid)
    assert read_all(resource, "durable", 5) == [f"message {i}".encode() for i in range(5)]
    assert resource.committed_offsets("durable") == {0: 3}
    assert resource.lag("durable").total == 2

    # The memory does not expire: the broker keeps committed offsets as long as it keeps topics.
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        answer = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
    finally:
        admin.close()
    retention = answer["broker"]["1"]["offsets.retention.minutes"]
    assert retention["config_source"] == "STATIC_BROKER_CONFIG"
    assert int(retention["value"]) >= 100 * 365 * 24 * 60  # the default is 10 080 (7 days)

    assert broker.stop() is not None
    assert not broker.is_running()
    assert not (settings.data_dir / "broker.pid").exists()
    with pytest.raises(KafkaUnavailableError):
        resource.check_reachable(timeout_s=2)
    assert broker.stop() is None  # stopping a stopped broker is a no-op
    print(f"first start {first_start_s:.1f}s, restart after SIGKILL {restart_s:.1f}s")


def test_cli_start_status_stop(settings: BrokerSettings, broker_jars: Path) -> None:
    try:
        started = cli("start", settings=settings)
        assert started.returncode == 0, started.stderr
        line = started.stdout.strip()
        assert line.startswith(f"kafka broker running at 127.0.0.1:{settings.port} (pid ")
        pid = int(line.rpartition("pid ")[2].rstrip(")"))

        again = cli("start", settings=settings)
        assert again.returncode == 0 and again.stdout.strip() == line

        status = cli("status", settings=settings)
        assert status.returncode == 0
        assert status.stdout.strip() == f"kafka broker running at 127.0.0.1:{settings.port} (pid {pid}, answering)"

        stopped = cli("stop", settings=settings)
        assert stopped.returncode == 0 and stopped.stdout.strip() == f"kafka broker stopped (pid {pid})"
        status = cli("status", settings=settings)
        assert status.returncode == 3 and "not running" in status.stdout
    finally:
        LocalKafkaBroker(settings).stop()


def test_port_in_use_is_a_clear_error(settings: BrokerSettings, broker_jars: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((settings.host, settings.port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=f"port {settings.port} .*in use"):
            LocalKafkaBroker(settings, jars_dir=broker_jars).start()

        result = cli("start", settings=settings)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: port {settings.port} on 127.0.0.1 (broker port) is already in use")
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not LocalKafkaBroker(settings).is_running()


def test_corrupt_data_dir_is_a_clear_error_and_reset_recovers(
    broker: LocalKafkaBroker, settings: BrokerSettings
) -> None:
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True)
    (logs / "meta.properties").write_text("this is not a properties file\n")

    with pytest.raises(DataDirError, match=r"meta\.properties is unreadable or corrupt.*--reset"):
        broker.start()
    result = cli("start", settings=settings)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "is unusable" in result.stderr and "--reset" in result.stderr

    bootstrap = broker.start(reset=True)
    assert broker.status()["answering"]
    with pytest.raises(KafkaTopicError):  # a fresh cluster: nothing survived the reset
        KafkaResource(bootstrap_servers=bootstrap).end_offsets("durable")


def test_data_dir_of_another_cluster_is_refused(settings: BrokerSettings, broker_jars: Path) -> None:
    logs = settings.data_dir / "logs"
    (logs / "__cluster_metadata-0").mkdir(parents=True)
    (logs / "meta.properties").write_text("version=1\nnode.id=1\ncluster.id=someOtherCluster00000\n")
    (settings.data_dir / "cluster.id").write_text("thisClusterId000000000\n")
    with pytest.raises(DataDirError, match="from cluster someOtherCluster00000"):
        LocalKafkaBroker(settings, jars_dir=broker_jars).start()


def test_jvm_that_dies_at_start_up_reports_its_log(tmp_path: Path, broker_jars: Path) -> None:
    port, controller_port = free_ports(2)
    settings = BrokerSettings(port=port, controller_port=controller_port, data_dir=tmp_path / "kafka", heap="1k")
    broker = LocalKafkaBroker(settings, jars_dir=broker_jars)
    with pytest.raises(BrokerStartError, match="(?s)exited during start-up.*Too small maximum heap"):
        broker.start()
    assert not broker.is_running()
    assert not broker.pid_file.exists()
