"""`KafkaResource`: the Kafka cluster's settings as a Dagster resource, over `core.kafka.KafkaCluster`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from kafka import KafkaConsumer, KafkaProducer
from pydantic import ValidationInfo, ValidatorFunctionWrapHandler, field_validator

from reporting_assets.core.kafka import (  # noqa: F401  (re-exported for the resource's users)
    KafkaCluster,
    KafkaTopicError,
    KafkaUnavailableError,
    PartitionLag,
    TopicLag,
    parse_bootstrap_servers,
)
from reporting_assets.core.kafka_security import KafkaSecurity

# What dg.EnvVar.int() returns: not exported by Dagster under a public name.
_INT_ENV_VAR = type(dg.EnvVar.int("_"))


def _is_env_var(value: object) -> bool:
    # dg.EnvVar fields hold a placeholder until Dagster resolves them at launch;
    # the resource is validated again then, with the real value.
    return isinstance(value, (dg.EnvVar, _INT_ENV_VAR))


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster that remembers which API calls are done (see `KafkaCluster`)."""

    # Defaults are KafkaCluster's (declared there once).
    bootstrap_servers: str = KafkaCluster.bootstrap_servers
    request_topic: str = KafkaCluster.request_topic
    dead_letter_topic: str = KafkaCluster.dead_letter_topic
    delay_topic: str = KafkaCluster.delay_topic
    topic_partitions: int = KafkaCluster.topic_partitions
    consumer_group: str = KafkaCluster.consumer_group
    client_id: str = KafkaCluster.client_id
    request_timeout_ms: int = KafkaCluster.request_timeout_ms
    replication_factor: int = KafkaCluster.replication_factor
    min_insync_replicas: int = KafkaCluster.min_insync_replicas
    # TLS / SASL (see KafkaSecurity); passwords come as dg.EnvVar, so the UI shows their names only.
    security_protocol: str = KafkaSecurity.protocol
    sasl_mechanism: str = KafkaSecurity.sasl_mechanism
    sasl_username: str = KafkaSecurity.sasl_username
    sasl_password: str = KafkaSecurity.sasl_password
    ssl_cafile: str = KafkaSecurity.ssl_cafile
    ssl_certfile: str = KafkaSecurity.ssl_certfile
    ssl_keyfile: str = KafkaSecurity.ssl_keyfile
    ssl_key_password: str = KafkaSecurity.ssl_key_password
    ssl_check_hostname: bool = KafkaSecurity.ssl_check_hostname

    # Wrap validators: pydantic turns a dg.EnvVar placeholder into a plain str/int before
    # an "after" validator sees it, and the placeholder must not be checked.
    @field_validator("bootstrap_servers", mode="wrap")
    @classmethod
    def _check_bootstrap_servers(cls, value: object, handler: ValidatorFunctionWrapHandler) -> str:
        result = handler(value)
        if not _is_env_var(value):
            try:
                parse_bootstrap_servers(result)
            except ValueError as error:
                raise ValueError(f"KafkaResource.bootstrap_servers={result!r}: {error}") from None
        return result

    @field_validator("request_topic", "dead_letter_topic", "delay_topic", "consumer_group", "client_id", mode="wrap")
    @classmethod
    def _check_not_blank(cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> str:
        result = handler(value)
        if not _is_env_var(value) and not result.strip():
            raise ValueError(f"KafkaResource.{info.field_name} must not be empty")
        return result

    @field_validator("topic_partitions", "request_timeout_ms", mode="wrap")
    @classmethod
    def _check_positive(cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> int:
        result = handler(value)
        if not _is_env_var(value) and result < 1:
            raise ValueError(f"KafkaResource.{info.field_name} must be >= 1, got {result}")
        return result

    @field_validator("replication_factor", "min_insync_replicas", mode="wrap")
    @classmethod
    def _check_not_negative(cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> int:
        result = handler(value)
        if not _is_env_var(value) and result < 0:
            raise ValueError(
                f"KafkaResource.{info.field_name} must be >= 0 (0: decided from the cluster), got {result}"
            )
        return result

    def security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ssl_cafile=self.ssl_cafile,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            ssl_key_password=self.ssl_key_password,
            ssl_check_hostname=self.ssl_check_hostname,
        )

    def cluster(self) -> KafkaCluster:
        fields = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(KafkaCluster)
            if field.name != "security"
        }
        return KafkaCluster(**fields, security=self.security())

    def spark_options(self) -> dict[str, str]:
        """Spark's Kafka sink options for this cluster: bootstrap servers and security."""
        return {"kafka.bootstrap.servers": self.bootstrap_servers, **self.security().spark_options()}

    # The cluster's operations, for code that holds the resource.
    @property
    def redrive_group(self) -> str:
        return self.cluster().redrive_group

    def ensure_topics(self, topics: Mapping[str, int] | None = None) -> None:
        self.cluster().ensure_topics(topics)

    def producer(self, **overrides: Any) -> KafkaProducer:
        return self.cluster().producer(**overrides)

    def consumer(self, topics: Sequence[str], group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
        return self.cluster().consumer(topics, group_id, **overrides)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self.cluster().end_offsets(topic)

    def beginning_offsets(self, topic: str) -> dict[int, int]:
        return self.cluster().beginning_offsets(topic)

    def committed_offsets(self, topic: str, group_id: str | None = None) -> dict[int, int]:
        return self.cluster().committed_offsets(topic, group_id)

    def lag(self, topic: str, group_id: str | None = None) -> TopicLag:
        return self.cluster().lag(topic, group_id)

    def settled_lags(self, topics: Sequence[str], group_id: str | None = None) -> dict[str, TopicLag]:
        return self.cluster().settled_lags(topics, group_id)

    def oldest_unconsumed_timestamp_ms(self, topic: str, group_id: str | None = None) -> int | None:
        return self.cluster().oldest_unconsumed_timestamp_ms(topic, group_id)

    def check_reachable(self, timeout_s: float = 10) -> None:
        self.cluster().check_reachable(timeout_s)
