"""The code location's resources, configured from the environment through `dg.EnvVar`.

A variable that is set is passed as `dg.EnvVar`: Dagster reads it at launch and the UI shows its
name, never its value. One that is not set takes the default declared in `reporting_assets.settings`.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import SecretStr

from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.resources.spark import spark_resource
from reporting_assets.resources.warehouse import WarehouseResource
from reporting_assets.settings import Settings, load_settings


def resources_from(settings: Settings, env_vars: bool) -> dict[str, Any]:
    """The resources, with values from `settings`, or with dg.EnvVar for every variable set in the
    environment (`env_vars`; the values were validated by `settings` already)."""

    def value(field: str, integer: bool = False) -> Any:
        variable = Settings.model_fields[field].validation_alias.choices[0]  # type: ignore[union-attr]
        if env_vars and os.environ.get(variable, "").strip():
            return dg.EnvVar.int(variable) if integer else dg.EnvVar(variable)
        setting = getattr(settings, field)
        return setting.get_secret_value() if isinstance(setting, SecretStr) else setting

    def flag(field: str) -> bool:
        # A flag is passed as its value: dg.EnvVar gives strings, and its words ("yes", "on") are the settings'.
        return bool(getattr(settings, field))

    return {
        "kafka": KafkaResource(
            bootstrap_servers=value("kafka_bootstrap_servers"),
            request_topic=value("request_topic"),
            dead_letter_topic=value("dead_letter_topic"),
            delay_topic=value("delay_topic"),
            topic_partitions=value("topic_partitions", integer=True),
            replication_factor=value("replication_factor", integer=True),
            min_insync_replicas=value("min_insync_replicas", integer=True),
            consumer_group=value("consumer_group"),
            security_protocol=value("kafka_security_protocol"),
            sasl_mechanism=value("kafka_sasl_mechanism"),
            sasl_username=value("kafka_sasl_username"),
            sasl_password=value("kafka_sasl_password"),
            ssl_cafile=value("kafka_ssl_cafile"),
            ssl_certfile=value("kafka_ssl_certfile"),
            ssl_keyfile=value("kafka_ssl_keyfile"),
            ssl_key_password=value("kafka_ssl_key_password"),
            ssl_check_hostname=flag("kafka_ssl_check_hostname"),
        ),
        "partner": PartnerResource(
            api_endpoint=value("partner_api_endpoint") or None,  # set empty: Google itself
            credentials_file=value("partner_credentials_file") or None,
            num_retries=value("partner_num_retries", integer=True),
        ),
        "warehouse": WarehouseResource(data_dir=value("data_dir")),
        "spark": spark_resource(master=value("spark_master")),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from(load_settings(), env_vars=True))
