"""The replication of new topics (decided from the brokers, or set) and the cluster nodes' configuration: no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporting_assets.core.kafka import KafkaCluster, KafkaTopicError, Replication, replication_for
from reporting_assets.infra.kafka.broker import BrokerSettings, server_properties
from reporting_assets.infra.kafka.cluster import ClusterSettings
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.settings import Settings


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [(1, Replication(1, 1)), (2, Replication(1, 1)), (3, Replication(3, 2)), (5, Replication(3, 2))],
)
def test_replication_is_decided_from_the_brokers(brokers: int, expected: Replication):
    assert replication_for(brokers) == expected


def test_set_replication_wins_over_the_broker_count():
    assert replication_for(5, factor=5, min_insync=3) == Replication(5, 3)
    assert replication_for(3, factor=2) == Replication(2, 1)
    assert replication_for(3, min_insync=1) == Replication(3, 1)
    assert replication_for(1, factor=1, min_insync=1) == Replication(1, 1)


def test_more_replicas_than_brokers_names_the_setting():
    # E.g. a broker down while the topics are made: the set value is kept, and the error says so.
    with pytest.raises(KafkaTopicError, match="3 replicas but the cluster shows 2 brokers.*KAFKA_REPLICATION_FACTOR"):
        replication_for(2, factor=3)


def test_min_insync_above_the_replicas_names_the_setting():
    with pytest.raises(KafkaTopicError, match="min.insync.replicas 3 is more than the 1 replicas.*KAFKA_MIN_INSYNC"):
        replication_for(1, min_insync=3)


def test_negative_values_are_refused_by_cluster_resource_and_settings():
    with pytest.raises(ValueError, match="replication_factor must be >= 0"):
        KafkaCluster(replication_factor=-1)
    with pytest.raises(ValueError, match="min_insync_replicas must be >= 0"):
        KafkaResource(min_insync_replicas=-1)
    with pytest.raises(ValueError, match="KAFKA_REPLICATION_FACTOR=-1 must be >= 0"):
        Settings.from_env({"KAFKA_REPLICATION_FACTOR": "-1"})


def test_settings_reach_the_cluster():
    settings = Settings.from_env({"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2"})
    resource = KafkaResource(
        replication_factor=settings.replication_factor, min_insync_replicas=settings.min_insync_replicas
    )
    cluster = resource.cluster()
    assert (cluster.replication_factor, cluster.min_insync_replicas) == (3, 2)
    assert (KafkaCluster().replication_factor, KafkaCluster().min_insync_replicas) == (0, 0)


def test_a_single_broker_keeps_its_configuration(tmp_path: Path):
    props = server_properties(BrokerSettings(data_dir=tmp_path), tmp_path / "logs")
    assert props["node.id"] == "1" and props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props
    assert props["offsets.topic.replication.factor"] == "1" and props["min.insync.replicas"] == "1"


def test_cluster_nodes_list_every_controller_and_replicate_internal_topics(tmp_path: Path):
    cluster = ClusterSettings(ports=(1001, 1002, 1003), controller_ports=(2001, 2002, 2003), data_dir=tmp_path)
    node = cluster.node(2)
    assert (node.port, node.controller_port, node.data_dir) == (1002, 2002, tmp_path / "node-2")
    assert cluster.bootstrap == "127.0.0.1:1001,127.0.0.1:1002,127.0.0.1:1003"
    props = server_properties(node, node.data_dir / "logs", node_id=2, voters=cluster.voters, replicas=3)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:2001,2@127.0.0.1:2002,3@127.0.0.1:2003"
    assert "controller.quorum.bootstrap.servers" not in props
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1002,CONTROLLER://127.0.0.1:2002"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "3"
    assert props["transaction.state.log.min.isr"] == props["min.insync.replicas"] == "2"


def test_cluster_ports_must_differ(tmp_path: Path):
    with pytest.raises(ValueError, match="ports must all differ"):
        ClusterSettings(ports=(1, 2, 3), controller_ports=(3, 4, 5), data_dir=tmp_path)
