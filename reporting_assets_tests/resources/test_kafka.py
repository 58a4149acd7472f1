"""KafkaResource against the session's local broker (see conftest.kafka_broker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import dagster as dg
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from reporting_assets.infra.ports import free_port
from reporting_assets.resources.kafka import (
    KafkaResource,
    KafkaTopicError,
    KafkaUnavailableError,
    PartitionLag,
)
from reporting_assets_tests.helpers import wait_for as wait_until


def produce(resource: KafkaResource, topic: str, messages: Iterable[tuple[int, bytes, int | None]]) -> None:
    """Send (partition, value, timestamp_ms) tuples and wait until all are written."""
    producer = resource.producer()
    try:
        for partition, value, timestamp_ms in messages:
            producer.send(topic, key=value, value=value, partition=partition, timestamp_ms=timestamp_ms)
        producer.flush()
    finally:
        producer.close()


def commit(resource: KafkaResource, topic: str, offsets: dict[int, int], group_id: str | None = None) -> None:
    """Commit offsets for the group without joining it (a standalone consumer)."""
    consumer = resource.consumer([], group_id=group_id)
    try:
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        consumer.close()


def poll_values(consumer: KafkaConsumer, count: int, timeout_s: float = 120) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count:
        assert time.monotonic() < deadline, f"got {len(values)} of {count} messages"
        for records in consumer.poll(timeout_ms=200).values():
            values.extend(record.value for record in records)
    return values


def test_ensure_topics_twice_is_harmless(kafka_resource: KafkaResource, unique_name: Callable[[str], str]) -> None:
    kafka_resource.ensure_topics()
    kafka_resource.ensure_topics()
    assert kafka_resource.end_offsets(kafka_resource.request_topic) == {0: 0, 1: 0, 2: 0, 3: 0}
    assert sorted(kafka_resource.end_offsets(kafka_resource.dead_letter_topic)) == [0, 1, 2, 3]

    custom = unique_name("custom")
    kafka_resource.ensure_topics({custom: 2})
    kafka_resource.ensure_topics({custom: 2, kafka_resource.request_topic: 4})
    assert kafka_resource.end_offsets(custom) == {0: 0, 1: 0}


def test_round_trip_resumes_after_committed_offsets(kafka_resource: KafkaResource) -> None:
    topic = kafka_resource.request_topic
    kafka_resource.ensure_topics()
    first = [f"first {i}".encode() for i in range(8)]
    produce(kafka_resource, topic, ((None, value, None) for value in first))

    consumer = kafka_resource.consumer([topic])
    try:
        assert sorted(poll_values(consumer, len(first))) == sorted(first)
        consumer.commit()
    finally:
        consumer.close()
    assert kafka_resource.lag(topic).total == 0

    second = [f"second {i}".encode() for i in range(4)]
    produce(kafka_resource, topic, ((None, value, None) for value in second))
    consumer = kafka_resource.consumer([topic])
    try:
        # A partition's old messages come before its new ones, so a consumer that did not
        # resume after the commit would have delivered some of ``first`` here.
        assert sorted(poll_values(consumer, len(second))) == sorted(second)
    finally:
        consumer.close()


def test_a_subscribed_consumer_knows_its_topics_partitions_before_its_first_poll(kafka_resource: KafkaResource) -> None:
    # Joining without them sends kafka-python 3.0.12 into a second join whose result a timed-out
    # poll can drop (resources.kafka.subscribe): the group leader then holds no partitions for good.
    kafka_resource.ensure_topics()
    consumer = kafka_resource.consumer([kafka_resource.request_topic, kafka_resource.dead_letter_topic])
    try:
        cached = consumer._cluster  # the metadata cache the first join assigns from (no public accessor)
        assert cached.partitions_for_topic(kafka_resource.request_topic) == {0, 1, 2, 3}
        assert cached.partitions_for_topic(kafka_resource.dead_letter_topic) == {0, 1, 2, 3}
        assert consumer.assignment() == set()  # not joined yet: this is before any poll
    finally:
        consumer.close()


def test_two_consumers_in_one_group_split_the_partitions(kafka_resource: KafkaResource) -> None:
    topic = kafka_resource.request_topic
    kafka_resource.ensure_topics()
    assignments: dict[str, set[int]] = {}
    stop = threading.Event()

    def run(name: str) -> None:
        # Each consumer polls in its own thread: a rebalance needs both to keep polling.
        consumer = kafka_resource.consumer([topic], heartbeat_interval_ms=300, session_timeout_ms=6000)
        try:
            while not stop.is_set():
                consumer.poll(timeout_ms=100)
                assignments[name] = {tp.partition for tp in consumer.assignment()}
        finally:
            consumer.close()

    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in ("a", "b")]
    for thread in threads:
        thread.start()

    def split() -> bool:
        a, b = assignments.get("a", set()), assignments.get("b", set())
        return bool(a) and bool(b) and not a & b and a | b == {0, 1, 2, 3}

    try:
        wait_until(split, 60, lambda: f"the group to split 4 partitions (now {assignments})")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert len(assignments["a"]) == len(assignments["b"]) == 2


def test_lag_and_offsets_are_exact(kafka_resource: KafkaResource, unique_name: Callable[[str], str]) -> None:
    topic = kafka_resource.request_topic
    kafka_resource.ensure_topics()
    assert kafka_resource.lag(topic).total == 0

    counts = {0: 3, 1: 1, 2: 0, 3: 2}
    produce(kafka_resource, topic, ((p, f"{p}-{i}".encode(), None) for p, n in counts.items() for i in range(n)))
    assert kafka_resource.end_offsets(topic) == counts
    assert kafka_resource.committed_offsets(topic) == {0: 0, 1: 0, 2: 0, 3: 0}
    lag = kafka_resource.lag(topic)
    assert lag.total == 6
    assert lag.partitions[0] == PartitionLag(end=3, committed=0, lag=3)

    commit(kafka_resource, topic, {0: 2, 3: 2})
    assert kafka_resource.committed_offsets(topic) == {0: 2, 1: 0, 2: 0, 3: 2}
    lag = kafka_resource.lag(topic)
    assert {p: part.lag for p, part in lag.partitions.items()} == {0: 1, 1: 1, 2: 0, 3: 0}
    assert lag.total == 2
    assert lag.partitions[3] == PartitionLag(end=2, committed=2, lag=0)

    other_group = unique_name("other")
    assert kafka_resource.lag(topic, group_id=other_group).total == 6
    assert kafka_resource.committed_offsets(topic, group_id=other_group) == {0: 0, 1: 0, 2: 0, 3: 0}

    with pytest.raises(KafkaTopicError, match="does not exist"):
        kafka_resource.lag(unique_name("missing"))


def test_oldest_unconsumed_timestamp(kafka_resource: KafkaResource) -> None:
    topic = kafka_resource.request_topic
    kafka_resource.ensure_topics()
    assert kafka_resource.oldest_unconsumed_timestamp_ms(topic) is None

    # Recent timestamps: records far in the past could be removed by time retention.
    base = int(time.time() * 1000) - 60_000
    produce(
        kafka_resource,
        topic,
        [
            (0, b"p0 first", base + 1000),
            (0, b"p0 second", base + 2000),
            (1, b"p1 only", base + 500),
            (2, b"p2 only", base + 3000),
        ],
    )
    assert kafka_resource.oldest_unconsumed_timestamp_ms(topic) == base + 500
    commit(kafka_resource, topic, {1: 1})
    assert kafka_resource.oldest_unconsumed_timestamp_ms(topic) == base + 1000
    commit(kafka_resource, topic, {0: 1})
    assert kafka_resource.oldest_unconsumed_timestamp_ms(topic) == base + 2000
    commit(kafka_resource, topic, {0: 2, 2: 1})
    assert kafka_resource.oldest_unconsumed_timestamp_ms(topic) is None


def test_check_reachable(kafka_resource: KafkaResource) -> None:
    kafka_resource.check_reachable(timeout_s=5)

    closed = KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as caught:
        closed.check_reachable(timeout_s=5)
    assert time.monotonic() - started < 2
    assert str(caught.value).startswith(
        f"Kafka broker not reachable at {closed.bootstrap_servers} "
        "(setting KafkaResource.bootstrap_servers / env KAFKA_BOOTSTRAP_SERVERS): "
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"topic_partitions": 0}, "topic_partitions must be >= 1"),
        ({"bootstrap_servers": ""}, "at least one host:port"),
        ({"bootstrap_servers": "localhost"}, "'localhost' is not host:port"),
        ({"request_topic": " "}, "must not be empty"),
    ],
)
def test_invalid_config_is_refused(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaResource(**config)


def test_env_vars_are_resolved_before_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19999")
    monkeypatch.setenv("TEST_KAFKA_PARTITIONS", "7")
    seen: dict[str, object] = {}

    @dg.asset
    def probe(kafka: KafkaResource) -> None:
        seen.update(bootstrap=kafka.bootstrap_servers, partitions=kafka.topic_partitions)

    resource = KafkaResource(
        bootstrap_servers=dg.EnvVar("TEST_KAFKA_BOOTSTRAP"),
        topic_partitions=dg.EnvVar.int("TEST_KAFKA_PARTITIONS"),
    )
    assert dg.materialize([probe], resources={"kafka": resource}).success
    assert seen == {"bootstrap": "127.0.0.1:19999", "partitions": 7}


def test_env_var_with_an_invalid_value_fails_at_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KAFKA_PARTITIONS", "0")

    @dg.asset
    def probe(kafka: KafkaResource) -> None:
        pass

    resource = KafkaResource(topic_partitions=dg.EnvVar.int("TEST_KAFKA_PARTITIONS"))
    with pytest.raises(dg.DagsterResourceFunctionError) as caught:
        dg.materialize([probe], resources={"kafka": resource})
    assert "topic_partitions must be >= 1, got 0" in str(caught.value.__cause__)
