"""Resource settings from environment variables, with defaults for the local broker and sandbox."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.resources.spark import spark_resource
from reporting_assets.resources.warehouse import WarehouseResource

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8085/"


class SettingError(ValueError):
    """An environment variable with a value that cannot work; the message names it."""


def env_number(env: Mapping[str, str], name: str, default: float, minimum: float, kind: type = int) -> float:
    """A numeric environment variable, or `default` when unset; SettingError names a bad one."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value < minimum:
        raise SettingError(f"{name}={value} must be >= {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    return int(env_number(env, name, default, minimum))


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    endpoint = env.get("PARTNER_API_ENDPOINT", DEFAULT_SANDBOX_URL) or None  # empty: Google itself
    partner = PartnerResource(
        api_endpoint=endpoint,
        credentials_file=env.get("PARTNER_CREDENTIALS_FILE") or None,
        num_retries=_int(env, "PARTNER_NUM_RETRIES", 5, 0),
    )
    partner.validate()
    return {
        "kafka": KafkaResource(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            request_topic=env.get("REPORTING_REQUEST_TOPIC", "report-requests"),
            dead_letter_topic=env.get("REPORTING_DEAD_LETTER_TOPIC", "report-requests.dead-letter"),
            delay_topic=env.get("REPORTING_DELAY_TOPIC", "report-requests.delayed"),
            topic_partitions=_int(env, "REPORTING_TOPIC_PARTITIONS", 4, 1),
            consumer_group=env.get("REPORTING_CONSUMER_GROUP", "report-downloaders"),
        ),
        "partner": partner,
        "warehouse": WarehouseResource(data_dir=env.get("REPORTING_DATA_DIR", "data")),
        "spark": spark_resource(),
    }
