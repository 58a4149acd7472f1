"""The Kafka cluster that remembers which report API calls are done.

Each download request is a message on ``request_topic``; a consumer group works
through them and commits an offset once a call is done, so the group's lag is the
work still to do. Requests that keep failing go to ``dead_letter_topic``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    AuthorizationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from reporting_assets.core.kafka_security import KafkaSecurity

T = TypeVar("T")

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno
_UNKNOWN_TOPIC = UnknownTopicOrPartitionError.errno


class KafkaUnavailableError(RuntimeError):
    """No Kafka broker answers at the configured bootstrap servers."""


class KafkaAuthenticationError(KafkaUnavailableError):
    """The brokers answer but refuse the client's login or certificate (the security settings)."""


class KafkaTopicError(RuntimeError):
    """A topic is missing or could not be created."""


@dataclass(frozen=True)
class PartitionLag:
    end: int
    committed: int
    lag: int


@dataclass(frozen=True)
class TopicLag:
    partitions: dict[int, PartitionLag]
    total: int


REPLICATED_FROM_BROKERS = 3  # with this many brokers or more, topics are made with 3 replicas, min ISR 2


@dataclass(frozen=True)
class Replication:
    """How new topics are replicated: ``factor`` copies, a write is acknowledged once ``min_insync`` have it."""

    factor: int
    min_insync: int


def replication_for(brokers: int, factor: int = 0, min_insync: int = 0) -> Replication:
    """The replication of new topics on a cluster of ``brokers`` brokers; 0 means "decide from the cluster".

    Decided: 3 replicas and ``min.insync.replicas`` 2 from 3 brokers up (a broker can die with no write
    lost, and writes go on), else 1 and 1 (a single local broker). Production sets both explicitly
    (KAFKA_REPLICATION_FACTOR, KAFKA_MIN_INSYNC_REPLICAS), so a broker down at creation time does not
    lower them.
    """
    if factor < 0 or min_insync < 0:
        raise ValueError(f"replication {factor} / min.insync.replicas {min_insync} must be >= 0 (0: decided)")
    chosen = factor or (3 if brokers >= REPLICATED_FROM_BROKERS else 1)
    if chosen > brokers:
        raise KafkaTopicError(
            f"topics need {chosen} replicas but the cluster shows {brokers} brokers "
            f"(setting KafkaResource.replication_factor / env KAFKA_REPLICATION_FACTOR)"
        )
    insync = min_insync or (2 if chosen >= 3 else 1)
    if insync > chosen:
        raise KafkaTopicError(
            f"min.insync.replicas {insync} is more than the {chosen} replicas: no write could succeed "
            f"(setting KafkaResource.min_insync_replicas / env KAFKA_MIN_INSYNC_REPLICAS)"
        )
    return Replication(factor=chosen, min_insync=insync)


def parse_bootstrap_servers(value: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` -> ``[("h1", 9092), ("h2", 9093)]``; raises ValueError when malformed."""
    servers = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        host = host.strip("[]")  # IPv6 literals are written [::1]:9092
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bootstrap server {entry!r} is not host:port")
        servers.append((host, int(port)))
    if not servers:
        raise ValueError("bootstrap_servers must name at least one host:port")
    return servers


@dataclass(frozen=True)
class KafkaCluster:
    """The Kafka cluster that remembers which API calls are done: its topics, its group, its clients."""

    bootstrap_servers: str = "127.0.0.1:9092"
    request_topic: str = "report-requests"
    dead_letter_topic: str = "report-requests.dead-letter"
    delay_topic: str = "report-requests.delayed"
    topic_partitions: int = 4
    consumer_group: str = "report-downloaders"
    client_id: str = "reporting-assets"
    request_timeout_ms: int = 30000
    replication_factor: int = 0  # replicas of new topics; 0: 3 on a cluster of 3+ brokers, else 1
    min_insync_replicas: int = 0  # min.insync.replicas of new topics; 0: 2 with 3+ replicas, else 1
    security: KafkaSecurity = KafkaSecurity()  # TLS / SASL of every client and of Spark's sink

    def __post_init__(self) -> None:
        try:
            parse_bootstrap_servers(self.bootstrap_servers)
        except ValueError as error:
            raise ValueError(f"KafkaResource.bootstrap_servers={self.bootstrap_servers!r}: {error}") from None
        for name in ("request_topic", "dead_letter_topic", "delay_topic", "consumer_group", "client_id"):
            if not getattr(self, name).strip():
                raise ValueError(f"KafkaResource.{name} must not be empty")
        for name in ("topic_partitions", "request_timeout_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"KafkaResource.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("replication_factor", "min_insync_replicas"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"KafkaResource.{name} must be >= 0 (0: decided from the cluster), got {getattr(self, name)}"
                )

    @property
    def redrive_group(self) -> str:
        """The consumer group of the re-drive, whose commits on the dead-letter topic say what went back."""
        return f"{self.consumer_group}.redrive"

    # -- topics ------------------------------------------------------------------

    def ensure_topics(self, topics: Mapping[str, int] | None = None) -> None:
        """Create the topics that do not exist yet and wait until metadata shows them.

        ``topics`` maps name -> partition count; by default the request and
        dead-letter and delay topics with ``topic_partitions`` each, kept forever
        (``retention.ms=-1``), replicated as `replication_for` decides from the brokers the
        cluster shows (or the settings say). Existing topics are left
        as they are (adding partitions would move keys to other partitions).
        """
        wanted = dict(topics) if topics is not None else self._default_topics()
        for name, partitions in wanted.items():
            if not name or partitions < 1:
                raise ValueError(f"topic {name!r} needs a name and >= 1 partitions, got {partitions}")
        if not wanted:
            return
        with self._admin() as admin:
            described = {t["name"]: t for t in admin.describe_topics(list(wanted))}
            missing = [
                name for name in wanted if described.get(name, {}).get("error_code", _UNKNOWN_TOPIC) == _UNKNOWN_TOPIC
            ]
            if missing:
                replication = self.replication(admin)
                # Unconsumed requests are the work still to do: never let retention delete them.
                configs = {"retention.ms": "-1", "min.insync.replicas": str(replication.min_insync)}
                missing = {
                    name: {"num_partitions": wanted[name], "replication_factor": replication.factor, "configs": configs}
                    for name in missing
                }
                result = admin.create_topics(missing, timeout_ms=self.request_timeout_ms, raise_errors=False)
                for topic in result["topics"]:
                    # Someone else creating it at the same moment is fine.
                    if topic["error_code"] not in (0, _TOPIC_ALREADY_EXISTS):
                        reason = topic.get("error_message") or for_code(topic["error_code"]).__name__
                        raise KafkaTopicError(f"cannot create Kafka topic {topic['name']!r}: {reason}")
            admin.wait_for_topics(list(wanted), timeout_ms=self.request_timeout_ms)

    def replication(self, admin: KafkaAdminClient | None = None) -> Replication:
        """The replication new topics get, from the brokers in the cluster's metadata (fenced ones too)."""
        if admin is None:
            with self._admin() as own:
                return self.replication(own)
        brokers = len(retry_retriable(admin.describe_cluster, self.request_timeout_ms / 1000)["brokers"])
        return replication_for(brokers, self.replication_factor, self.min_insync_replicas)

    def _default_topics(self) -> dict[str, int]:
        return {
            self.request_topic: self.topic_partitions,
            self.dead_letter_topic: self.topic_partitions,
            self.delay_topic: self.topic_partitions,
        }

    # -- clients (the caller closes them) --------------------------------------

    def producer(self, **overrides: Any) -> KafkaProducer:
        """A producer for bytes keys and values that waits for the write to be durable.

        Idempotent with retries until ``delivery_timeout_ms``, so a retried send
        never duplicates a request. The caller closes it (flush happens on close).
        """
        config = {
            **self._client_config(),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "allow_auto_create_topics": False,
            **overrides,
        }
        return self._connect(KafkaProducer, **config)

    def consumer(self, topics: Sequence[str], group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
        """A consumer in ``group_id`` (default ``consumer_group``) that only commits when told.

        Offsets are committed explicitly after a request is done, never by a timer.
        The caller closes it.
        """
        if isinstance(topics, str):
            raise TypeError("topics must be a sequence of topic names, not a single string")
        config = {
            **self._client_config(),
            "group_id": group_id or self.consumer_group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "allow_auto_create_topics": False,
            **overrides,
        }
        consumer = self._connect(KafkaConsumer, **config)
        if topics:
            try:
                subscribe(consumer, topics)
            except BaseException:
                consumer.close()
                raise
        return consumer

    # -- offsets and lag --------------------------------------------------------

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Partition -> offset the next message will get."""
        with self._admin() as admin:
            return self._end_offsets(admin, topic, self._partitions(admin, topic))

    def committed_offsets(self, topic: str, group_id: str | None = None) -> dict[int, int]:
        """Partition -> the group's committed offset (0 where nothing is committed)."""
        with self._admin() as admin:
            return self._committed_offsets(admin, topic, self._partitions(admin, topic), group_id)

    def committed_partitions(self, topics: Sequence[str], group_id: str | None = None) -> dict[str, set[int]]:
        """Topic -> the partitions where the group has a committed offset (missing topics: none)."""
        group = group_id or self.consumer_group
        found: dict[str, set[int]] = {}
        with self._admin() as admin:
            existing = set(admin.list_topics())
            for topic in topics:
                if topic not in existing:
                    found[topic] = set()
                    continue
                tps = [TopicPartition(topic, p) for p in self._partitions(admin, topic)]
                committed = retry_retriable(
                    lambda tps=tps: admin.list_group_offsets({group: tps}).get(group, {}),
                    self.request_timeout_ms / 1000,
                )
                found[topic] = {tp.partition for tp, entry in committed.items() if entry.offset >= 0}
        return found

    def lag(self, topic: str, group_id: str | None = None) -> TopicLag:
        """How many messages of ``topic`` the group has not committed, per partition and in total."""
        with self._admin() as admin:
            partitions = self._partitions(admin, topic)
            end = self._end_offsets(admin, topic, partitions)
            committed = self._committed_offsets(admin, topic, partitions, group_id)
        per_partition = {
            p: PartitionLag(end=end[p], committed=committed[p], lag=max(end[p] - committed[p], 0)) for p in partitions
        }
        return TopicLag(partitions=per_partition, total=sum(p.lag for p in per_partition.values()))

    def group_members(self, group_id: str | None = None) -> int:
        """How many consumers are in the group now (a killed one leaves it when its session times out)."""
        group = group_id or self.consumer_group
        with self._admin() as admin:  # (a broker's first group lookup may find no coordinator yet: retried)
            descriptions = retry_retriable(lambda: admin.describe_groups([group]), self.request_timeout_ms / 1000)
        return len((descriptions.get(group) or {}).get("members") or [])

    def beginning_offsets(self, topic: str) -> dict[int, int]:
        """Partition -> offset of the oldest message still retained."""
        with self._admin() as admin:
            specs = {TopicPartition(topic, p): OffsetSpec.EARLIEST for p in self._partitions(admin, topic)}
            return {tp.partition: result.offset for tp, result in admin.list_partition_offsets(specs).items()}

    def settled_lags(self, topics: Sequence[str], group_id: str | None = None) -> dict[str, TopicLag]:
        """Like ``lag`` for several topics of one group, reading every committed offset *before* any end offset.

        So when no partition shows lag, every message written before the committed offsets were
        read is consumed and committed, including any continuation page (or delayed copy) a
        consumer wrote before committing the request that led to it: "drained" really means done.
        """
        with self._admin() as admin:
            partitions = {topic: self._partitions(admin, topic) for topic in topics}
            committed = {t: self._committed_offsets(admin, t, ps, group_id) for t, ps in partitions.items()}
            end = {t: self._end_offsets(admin, t, ps) for t, ps in partitions.items()}
        lags = {}
        for topic, ps in partitions.items():
            per_partition = {
                p: PartitionLag(
                    end=end[topic][p], committed=committed[topic][p], lag=max(end[topic][p] - committed[topic][p], 0)
                )
                for p in ps
            }
            lags[topic] = TopicLag(partitions=per_partition, total=sum(p.lag for p in per_partition.values()))
        return lags

    def oldest_unconsumed_timestamp_ms(self, topic: str, group_id: str | None = None) -> int | None:
        """Timestamp (ms) of the oldest message the group has not committed yet; None without lag.

        Reads the first record at the committed offset of every lagging partition with
        a group-less consumer, so it never disturbs the group's assignment.
        """
        lagging = {p: lag for p, lag in self.lag(topic, group_id).partitions.items() if lag.lag > 0}
        if not lagging:
            return None
        consumer = self._reader()
        try:
            first = _first_timestamps(consumer, topic, lagging, self.request_timeout_ms / 1000)
        finally:
            consumer.close()
        return min(first.values()) if first else None

    def uncommitted_values(self, topics: Sequence[str], group_id: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(topic, value) of every message the group has not committed yet: what is left to do.

        Read with a group-less consumer from each partition's committed offset to its end, so it
        never disturbs the group. Existing topics only (a topic not made yet holds nothing).
        """
        existing = [topic for topic in topics if self._topic_exists(topic)]
        lags = self.settled_lags(existing, group_id) if existing else {}
        ranges = {
            TopicPartition(topic, p): (lag.committed, lag.end)
            for topic, topic_lag in lags.items()
            for p, lag in topic_lag.partitions.items()
            if lag.lag > 0
        }
        if not ranges:
            return
        consumer = self._reader()
        try:
            yield from _read_ranges(consumer, ranges, self.request_timeout_ms / 1000)
        finally:
            consumer.close()

    def _reader(self) -> KafkaConsumer:
        """A group-less consumer: it reads without joining, or disturbing, the group. The caller closes it."""
        return self._connect(
            KafkaConsumer,
            **self._client_config(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            fetch_max_wait_ms=100,
        )

    def _topic_exists(self, topic: str) -> bool:
        with self._admin() as admin:
            return topic in admin.list_topics()

    # -- reachability -------------------------------------------------------------

    def check_reachable(self, timeout_s: float = 10) -> None:
        """Raise KafkaUnavailableError unless a broker answers a metadata request within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        refused = []
        for host, port in parse_bootstrap_servers(self.bootstrap_servers):
            # A plain connect fails at once on a closed port, where kafka-python would
            # keep retrying until its bootstrap timeout.
            try:
                socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 0.1)).close()
                break
            except OSError as error:
                refused.append(f"{host}:{port}: {error.strerror or error}")
        else:
            raise self._unavailable("; ".join(refused))
        remaining_ms = max(int((deadline - time.monotonic()) * 1000), 100)
        try:
            with self._admin(timeout_ms=remaining_ms) as admin:
                try:
                    admin.list_topics()
                except KafkaError as error:
                    raise self._unavailable(error) from error
        except KafkaAuthenticationError:
            raise
        except KafkaUnavailableError as error:
            # The port took a TCP connection but no Kafka session came of it: most often a protocol that
            # is not the listener's, or a listener that wants a client certificate.
            hint = f"; {host}:{port} accepts connections: does its listener speak {self.security.protocol}"
            if self.security.uses_sasl:
                # A refused login is sometimes seen only as the broker closing the connection.
                hint += ", and are the login's user and password right (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD)"
            elif self.security.uses_tls and not self.security.ssl_certfile:
                hint += ", or want a client certificate (KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE)"
            raise KafkaUnavailableError(f"{error}{hint}?") from error

    def admin(self) -> KafkaAdminClient:
        """An admin client of the cluster; the caller closes it."""
        return self._connect(KafkaAdminClient, **self._client_config())

    # -- helpers ------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": [entry.strip() for entry in self.bootstrap_servers.split(",") if entry.strip()],
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.request_timeout_ms,
            **self.security.client_config(),
        }

    def _unavailable(self, cause: object) -> KafkaUnavailableError:
        through = "" if self.security.protocol == "PLAINTEXT" else f" with {self.security.describe()}"
        return KafkaUnavailableError(
            f"Kafka broker not reachable at {self.bootstrap_servers}{through} "
            f"(setting KafkaResource.bootstrap_servers / env KAFKA_BOOTSTRAP_SERVERS"
            f"{', KAFKA_SECURITY_PROTOCOL' if through else ''}): {cause}"
        )

    def _connect(self, client_class: type, *args: Any, **config: Any) -> Any:
        # kafka-python clients bootstrap in __init__ and raise KafkaTimeoutError when
        # nothing answers; say which setting points at the wrong place.
        with _refusals() as refused:
            try:
                return client_class(*args, **config)
            except KafkaTimeoutError as error:
                if refused:  # the broker's own answer where one was read
                    cause = next((e for e in refused if not isinstance(e, _LoginLost)), refused[-1])
                    raise self._refused(cause) from error
                raise self._unavailable(error) from error

    def _refused(self, cause: Exception) -> KafkaAuthenticationError:
        if isinstance(cause, ssl.SSLError | KafkaConnectionError):
            settings = "env KAFKA_SSL_CAFILE / KAFKA_SSL_CHECK_HOSTNAME / KAFKA_SECURITY_PROTOCOL"
            what = f"the TLS handshake failed ({str(cause).splitlines()[0][:200]})"
        else:
            settings = "env KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD / KAFKA_SASL_MECHANISM"
            what = f"login refused ({str(cause).splitlines()[0][:200]})"
        return KafkaAuthenticationError(
            f"Kafka at {self.bootstrap_servers} answers but {what} for {self.security.describe()} (settings {settings})"
        )

    @contextlib.contextmanager
    def _admin(self, timeout_ms: int | None = None) -> Iterator[KafkaAdminClient]:
        config = self._client_config()
        if timeout_ms is not None:
            config.update(request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
        admin = self._connect(KafkaAdminClient, **config)
        try:
            yield admin
        finally:
            admin.close()

    @staticmethod
    def _partitions(admin: KafkaAdminClient, topic: str) -> list[int]:
        (described,) = admin.describe_topics([topic])
        if described["error_code"] == _UNKNOWN_TOPIC:
            raise KafkaTopicError(f"Kafka topic {topic!r} does not exist (KafkaResource.ensure_topics creates it)")
        if described["error_code"] != 0:
            raise KafkaTopicError(
                f"cannot describe Kafka topic {topic!r}: {for_code(described['error_code']).__name__}"
            )
        return sorted(p["partition_index"] for p in described["partitions"])

    @staticmethod
    def _end_offsets(admin: KafkaAdminClient, topic: str, partitions: list[int]) -> dict[int, int]:
        specs = {TopicPartition(topic, p): OffsetSpec.LATEST for p in partitions}
        return {tp.partition: result.offset for tp, result in admin.list_partition_offsets(specs).items()}

    def _committed_offsets(
        self, admin: KafkaAdminClient, topic: str, partitions: list[int], group_id: str | None
    ) -> dict[int, int]:
        group = group_id or self.consumer_group
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = retry_retriable(
            lambda: admin.list_group_offsets({group: tps}).get(group, {}), self.request_timeout_ms / 1000
        )
        # The broker answers -1 for partitions the group never committed.
        return {tp.partition: max(committed[tp].offset, 0) if tp in committed else 0 for tp in tps}


@contextlib.contextmanager
def _refusals() -> Iterator[list[Exception]]:
    """The login and TLS failures kafka-python logs while it bootstraps.

    It retries a refused password or an untrusted certificate until its bootstrap timeout and says
    why only in its log; this collects the exceptions it logs, so the error can name the cause. The
    broker's answer to a refused login is often lost to the close that follows it (kafka-python then
    logs "socket disconnected"): a connection lost after the version exchange, while its SASL login
    was under way, counts as a refused login too.
    """
    refused: list[Exception] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            args = record.args if isinstance(record.args, tuple) else ()
            refused.extend(arg for arg in args if _is_refusal(arg))
            if len(args) == 2 and _lost_during_login(*args):
                refused.append(_LoginLost("the broker closed the connection during the login"))

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("kafka")
    logger.addHandler(handler)
    try:
        yield refused
    finally:
        logger.removeHandler(handler)


class _LoginLost(SaslAuthenticationFailedError):
    """A login the broker ended by closing the connection, its answer lost."""


def _lost_during_login(connection: object, error: object) -> bool:
    """A kafka-python connection that was lost between its version exchange and the end of its SASL login."""
    initialized = getattr(connection, "_init_future", None)  # no public name for "still logging in"
    return (
        isinstance(error, KafkaConnectionError)
        and getattr(connection, "sasl_enabled", False) is True
        and getattr(connection, "broker_version", None) is not None
        and initialized is not None
        and not initialized.succeeded()
    )


def _is_refusal(error: object) -> bool:
    if isinstance(error, SaslAuthenticationFailedError | AuthorizationError | ssl.SSLError):
        return True
    return isinstance(error, KafkaConnectionError) and "Handshake failed" in str(error)


def subscribe(
    consumer: KafkaConsumer, topics: Sequence[str], listener: ConsumerRebalanceListener | None = None
) -> None:
    """Subscribe ``consumer`` to ``topics`` with their metadata fetched before the first poll joins the group.

    Joined without metadata, the first assignment is empty and the group joins again when
    the metadata arrives. kafka-python 3.0.12 can drop the result of that second join when
    a poll times out during it: the group leader then holds no partitions, for good, while
    the broker thinks they are assigned (seen in CI: a 60 s wait for a split that never came).
    """
    consumer.subscribe(list(topics), listener=listener)
    consumer.topics()


def retry_retriable(call: Callable[[], T], timeout_s: float) -> T:
    """Run ``call``, retrying Kafka's retriable errors until ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.05
    while True:
        try:
            return call()
        except KafkaError as error:
            # E.g. CoordinatorNotAvailable while a fresh broker creates __consumer_offsets,
            # which kafka-python's admin client does not retry by itself.
            if not error.retriable or time.monotonic() + delay_s >= deadline:
                raise
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, 1.0)


def _first_timestamps(
    consumer: KafkaConsumer, topic: str, lagging: Mapping[int, PartitionLag], timeout_s: float
) -> dict[int, int]:
    """Partition -> timestamp of the first record at or after its committed offset."""
    pending = {TopicPartition(topic, p): lag for p, lag in lagging.items()}
    consumer.assign(list(pending))
    for tp, lag in pending.items():
        consumer.seek(tp, lag.committed)
    first: dict[int, int] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() >= deadline:
            raise KafkaTimeoutError(
                f"no record read from {sorted(tp.partition for tp in pending)} of topic {topic!r} "
                f"within {timeout_s:.0f}s"
            )
        for tp, records in consumer.poll(timeout_ms=200).items():
            if tp in pending and records:
                first[tp.partition] = records[0].timestamp
                del pending[tp]
                consumer.pause(tp)  # one record is all we need from it
        # Lag made only of transaction markers has no record to show: skip it.
        for tp in [tp for tp, lag in pending.items() if consumer.position(tp) >= lag.end]:
            del pending[tp]
    return first


def _read_ranges(
    consumer: KafkaConsumer, ranges: Mapping[TopicPartition, tuple[int, int]], timeout_s: float
) -> Iterator[tuple[str, bytes]]:
    """Every record of each partition within [start, end), as (topic, value)."""
    consumer.assign(list(ranges))
    for tp, (start, _) in ranges.items():
        consumer.seek(tp, start)
    left = dict(ranges)
    deadline = time.monotonic() + timeout_s
    while left:
        batches = consumer.poll(timeout_ms=200)
        if batches:
            deadline = time.monotonic() + timeout_s  # progress: the timeout is for a stalled read
        for tp, records in batches.items():
            end = left.get(tp, (0, 0))[1]
            for record in records:
                if record.offset < end and record.value is not None:
                    yield tp.topic, record.value
        for tp in [tp for tp, (_, end) in left.items() if consumer.position(tp) >= end]:
            consumer.pause(tp)
            del left[tp]
        if left and time.monotonic() >= deadline:
            raise KafkaTimeoutError(f"no progress reading {sorted(map(str, left))} within {timeout_s:.0f}s")
