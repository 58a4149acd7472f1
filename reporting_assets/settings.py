"""Every environment setting of the code location, declared once (`Settings`), with its default.

Resources read their values through `dg.EnvVar` at launch (`defs/resources.py`); what shapes the
definitions themselves (the partitions' first date, sensor intervals, crons, lag limits, the consumer
tuning of sensor-launched runs) is read once when the code location loads: a changed value needs a
reload (`dagster dev` restart or "Reload" in the UI). `.env.example` lists every variable; a test
keeps it in step with this model. A bad value fails with one line naming the variable.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.kafka import KafkaCluster
from reporting_assets.core.kafka_security import KafkaSecurity, KafkaSecurityError
from reporting_assets.core.messages import MAX_ROW_LIMIT
from reporting_assets.core.partner import Partner
from reporting_assets.core.reports import CATALOG_VARIABLE, DEFAULT_REPORTS, load_catalog
from reporting_assets.core.spark import DEFAULT_MASTER, MASTER_FORMS, MASTER_VARIABLE, check_master
from reporting_assets.core.warehouse import Warehouse

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8085/"
_TRUE = {"1", "true", "yes", "on", "running"}
_FALSE = {"0", "false", "no", "off", "stopped"}


class SettingError(ValueError):
    """An environment variable with a value that cannot work; the message names it."""


def _flag(value: object) -> object:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"is not one of {sorted(_TRUE | _FALSE)}")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]


def _env(name: str, default: Any, description: str, **constraints: Any) -> Any:
    """A field read from environment variable `name`."""
    return Field(default=default, validation_alias=AliasChoices(name), description=description, **constraints)


class Settings(BaseModel):
    """The environment settings; names are the variables', defaults work with the local broker and sandbox."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)

    # Resources (read again at launch through dg.EnvVar when set)
    kafka_bootstrap_servers: str = _env("KAFKA_BOOTSTRAP_SERVERS", KafkaCluster.bootstrap_servers, "The Kafka cluster.")
    request_topic: str = _env("REPORTING_REQUEST_TOPIC", KafkaCluster.request_topic, "One message per API call.")
    dead_letter_topic: str = _env("REPORTING_DEAD_LETTER_TOPIC", KafkaCluster.dead_letter_topic, "Failed requests.")
    delay_topic: str = _env("REPORTING_DELAY_TOPIC", KafkaCluster.delay_topic, "Requests waiting for the load quota.")
    topic_partitions: int = _env(
        "REPORTING_TOPIC_PARTITIONS", KafkaCluster.topic_partitions, "Partitions of new topics.", ge=1
    )
    replication_factor: int = _env(
        "KAFKA_REPLICATION_FACTOR",
        KafkaCluster.replication_factor,
        "Replicas of new topics; 0: 3 when the cluster shows 3+ brokers, else 1 (production: set 3).",
        ge=0,
    )
    min_insync_replicas: int = _env(
        "KAFKA_MIN_INSYNC_REPLICAS",
        KafkaCluster.min_insync_replicas,
        "min.insync.replicas of new topics; 0: 2 with 3+ replicas, else 1 (production: set 2).",
        ge=0,
    )
    kafka_security_protocol: str = _env(
        "KAFKA_SECURITY_PROTOCOL",
        KafkaSecurity.protocol,
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL: the same for every client and Spark's sink.",
    )
    kafka_sasl_mechanism: str = _env(
        "KAFKA_SASL_MECHANISM", KafkaSecurity.sasl_mechanism, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_*)."
    )
    kafka_sasl_username: str = _env("KAFKA_SASL_USERNAME", KafkaSecurity.sasl_username, "SASL user (SASL_*).")
    kafka_sasl_password: SecretStr = _env(
        "KAFKA_SASL_PASSWORD", SecretStr(""), "SASL password (SASL_*): read at launch, never logged or shown."
    )
    kafka_ssl_cafile: str = _env(
        "KAFKA_SSL_CAFILE",
        KafkaSecurity.ssl_cafile,
        "PEM CA bundle the brokers' certificates chain to (empty: system CAs).",
    )
    kafka_ssl_certfile: str = _env(
        "KAFKA_SSL_CERTFILE", KafkaSecurity.ssl_certfile, "PEM client certificate, for mutual TLS (with the key file)."
    )
    kafka_ssl_keyfile: str = _env("KAFKA_SSL_KEYFILE", KafkaSecurity.ssl_keyfile, "PEM key of the client certificate.")
    kafka_ssl_key_password: SecretStr = _env(
        "KAFKA_SSL_KEY_PASSWORD", SecretStr(""), "Password of an encrypted client key file."
    )
    kafka_ssl_check_hostname: Flag = _env(
        "KAFKA_SSL_CHECK_HOSTNAME", KafkaSecurity.ssl_check_hostname, "Check the brokers' certificates name them."
    )
    consumer_group: str = _env(
        "REPORTING_CONSUMER_GROUP", KafkaCluster.consumer_group, "The group whose commits are the memory."
    )
    partner_api_endpoint: str = _env(
        "PARTNER_API_ENDPOINT", DEFAULT_SANDBOX_URL, "Partner API base URL; set it empty to call Google itself."
    )
    partner_credentials_file: str = _env(
        "PARTNER_CREDENTIALS_FILE",
        "",
        "Service-account key or OAuth user JSON for Google (empty: application default credentials).",
    )
    partner_num_retries: int = _env(
        "PARTNER_NUM_RETRIES",
        Partner.num_retries,
        "google-api-python-client num_retries of sites.list (account discovery); report queries: the consumer's.",
        ge=0,
    )
    data_dir: str = _env("REPORTING_DATA_DIR", Warehouse.data_dir, "Landing zone, exports and warehouse.duckdb.")
    row_limit: int = _env(
        "REPORTING_ROW_LIMIT",
        MAX_ROW_LIMIT,
        "Rows per Search Console page: 25 000, the most Google allows, makes the fewest calls.",
        ge=1,
        le=MAX_ROW_LIMIT,
    )
    reports_file: str = _env(
        CATALOG_VARIABLE,
        "",
        "The report catalog, a YAML file (empty: the shipped reporting_assets/reports.yaml); "
        "`python -m reporting_assets reports` lists it.",
    )
    reports: str = _env(
        "REPORTING_REPORTS",
        ",".join(DEFAULT_REPORTS),
        "Reports the schedules and a run without config enqueue: catalog names, comma-separated, or `all`.",
    )
    spark_master: str = _env(
        MASTER_VARIABLE,
        DEFAULT_MASTER,
        f"The Spark master of the enqueue: {MASTER_FORMS}; a cluster's executors need the connector jars "
        "(shipped as spark.jars), this Python and the package (docs/deploy.md).",
    )
    # Definitions
    start_date: dt.date = _env("REPORTING_START_DATE", dt.date(2026, 10, 1), "First daily partition.")
    sensors_running: Flag = _env("REPORTING_SENSORS_RUNNING", True, "Default status of the sensors.")
    sensor_interval_s: int = _env("REPORTING_SENSOR_INTERVAL_S", 30, "Minimum interval between sensor ticks.", ge=1)
    lag_max_messages: int = _env("REPORTING_LAG_MAX_MESSAGES", 100_000, "The lag check fails above this lag.", ge=0)
    lag_max_age_s: int = _env(
        "REPORTING_LAG_MAX_AGE_S", 6 * 3600, "The lag check fails when the oldest waiting request is older.", ge=0
    )
    download_max_partitions_per_run: int = _env(
        "REPORTING_DOWNLOAD_MAX_PARTITIONS_PER_RUN", 10_000, "Partitions per downloaded_reports run.", ge=1
    )
    landing_check_budget_s: float = _env(
        "REPORTING_LANDING_CHECK_BUDGET_S", 2.0, "Time per tick for landing-zone checks while the topic is busy.", ge=0
    )
    run_max_retries: int = _env("REPORTING_RUN_MAX_RETRIES", 2, "dagster/max_retries of sensor-launched runs.", ge=0)
    schedules_running: Flag = _env("REPORTING_SCHEDULES_RUNNING", True, "Default status of the schedules.")
    lateness_days: int = _env(
        "REPORTING_LATENESS_DAYS", 3, "The daily enqueue asks for the day this many days before its tick.", ge=0
    )
    enqueue_cron: str = _env("REPORTING_ENQUEUE_CRON", "0 6 * * *", "When the daily enqueue ticks.")
    refresh_cron: str = _env(
        "REPORTING_REFRESH_CRON", "0 7 * * *", "When provisional days and the lookback day are pulled again."
    )
    lookback_days: int = _env(
        "REPORTING_LOOKBACK_DAYS",
        4,
        "A day is pulled once more this many days after the daily enqueue's day (Google revises final data).",
        ge=0,
    )
    accounts_cron: str = _env("REPORTING_ACCOUNTS_CRON", "0 5 * * *", "When the daily account discovery ticks.")
    schedule_timezone: str = _env("REPORTING_SCHEDULE_TIMEZONE", "UTC", "Time zone of the schedules.")
    # The tuning of sensor-launched download runs: REPORTING_CONSUMERS and REPORTING_CONSUMER_<FIELD>.
    consumer: ConsumerTuning = Field(default_factory=ConsumerTuning, description="Consumer tuning.")

    @field_validator("enqueue_cron", "accounts_cron", "refresh_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        import dagster as dg

        value = value.strip()
        try:  # Dagster's own check of a cron string, through a public constructor
            dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
        except (dg.DagsterInvalidDefinitionError, dg.DagsterInvariantViolationError, ValueError):
            raise ValueError("is not a cron expression (e.g. '0 6 * * *')") from None
        return value

    @field_validator("reports_file")
    @classmethod
    def _reports_file(cls, value: str) -> str:
        value = value.strip()
        if value and not Path(value).expanduser().is_file():
            raise ValueError("is not a file (a YAML report catalog, see reporting_assets/reports.yaml)")
        return value

    @field_validator("spark_master")
    @classmethod
    def _spark_master(cls, value: str) -> str:
        return check_master(value)

    @field_validator("reports")
    @classmethod
    def _reports(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise ValueError("names no report (catalog names, comma-separated, or `all`)")
        return ",".join(names)

    def report_names(self) -> list[str]:
        """REPORTING_REPORTS resolved against the catalog; UnknownReportError / CatalogError name the problem."""
        catalog = load_catalog(self.reports_file or None)
        if self.reports == "all":
            return list(catalog.reports)
        names = self.reports.split(",")
        for name in names:
            catalog.get(name)
        return names

    @field_validator("schedule_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return value.strip()

    def kafka_security(self) -> KafkaSecurity:
        """The Kafka security settings, checked together; KafkaSecurityError names the variable."""
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password.get_secret_value(),
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password.get_secret_value(),
            ssl_check_hostname=self.kafka_ssl_check_hostname,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings from `env` (default: the process environment); empty variables take the default.

        Raises SettingError naming the first bad variable and its value.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            if field.validation_alias is None:
                continue
            (variable,) = field.validation_alias.choices
            raw = env.get(variable)
            if raw is not None and (raw.strip() or name == "partner_api_endpoint"):
                values[variable] = raw
        tuning = {
            field: env[variable]
            for field, variable in consumer_variables().items()
            if env.get(variable) is not None and env[variable].strip()
        }
        try:
            consumer = ConsumerTuning(**tuning)
        except ValidationError as error:
            variables = consumer_variables()
            raw = {variables[field]: value for field, value in tuning.items()}
            raise _setting_error(error, variables, raw) from None
        try:
            settings = cls.model_validate({**values, "consumer": consumer})
        except ValidationError as error:
            aliases = {
                name: field.validation_alias.choices[0]
                for name, field in cls.model_fields.items()
                if field.validation_alias
            }
            raise _setting_error(
                error, aliases, {aliases.get(k, k): v for k, v in values.items()}, by_alias=True
            ) from None
        try:
            settings.kafka_security()
        except KafkaSecurityError as error:
            raise SettingError(str(error)) from None
        return settings


def load_settings() -> Settings:
    """The settings of this process's environment (read when the code location loads)."""
    return Settings.from_env()


def consumer_variables() -> dict[str, str]:
    """ConsumerTuning field -> its environment variable."""
    return {
        name: "REPORTING_CONSUMERS" if name == "consumers" else f"REPORTING_CONSUMER_{name.upper()}"
        for name in ConsumerTuning.model_fields
    }


def variables() -> dict[str, tuple[str, str]]:
    """Every environment variable -> (default as text, description): what `.env.example` lists."""
    result: dict[str, tuple[str, str]] = {}
    for field in Settings.model_fields.values():
        if field.validation_alias is not None:
            result[field.validation_alias.choices[0]] = (_text(field.default), field.description or "")
    for name, variable in consumer_variables().items():
        field = ConsumerTuning.model_fields[name]
        result[variable] = (_text(field.default), field.description or "")
    return result


def env_example() -> str:
    """The text of `.env.example`: every variable, commented out at its default, with what it means."""
    lines = [
        "# Every environment setting of reporting_assets, at its default (reporting_assets/settings.py declares them).",
        "# Copy to .env (`dagster dev` reads it) and uncomment what you change.",
    ]
    for variable, (default, description) in variables().items():
        lines += [f"# {description}" if description else "#", f"# {variable}={default}"]
    return "\n".join(lines) + "\n"


def _text(value: object) -> str:
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, list):
        return ",".join(f"{item:g}" for item in value) or "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _setting_error(
    error: ValidationError, variable_of: Mapping[str, str], raw: Mapping[str, Any], by_alias: bool = False
) -> SettingError:
    """One line for the first problem: `NAME='value' <what is wrong>`."""
    problem = error.errors()[0]
    field = str(problem["loc"][0]) if problem["loc"] else ""
    variable = field if by_alias and field in raw else variable_of.get(field, field)
    value = raw.get(variable, problem.get("input"))
    kind, context = problem["type"], problem.get("ctx") or {}
    if kind == "int_parsing" or kind == "int_from_float":
        what = "is not an integer"
    elif kind == "float_parsing":
        what = "is not a number"
    elif kind == "greater_than_equal":
        return SettingError(f"{variable}={value} must be >= {context['ge']}")
    elif kind == "greater_than":
        return SettingError(f"{variable}={value} must be > {context['gt']}")
    elif kind == "less_than_equal":
        return SettingError(f"{variable}={value} must be <= {context['le']}")
    elif kind in ("date_parsing", "date_from_datetime_parsing", "date_from_datetime_inexact"):
        what = "is not a YYYY-MM-DD date"
    else:
        what = str(problem["msg"]).removeprefix("Value error, ")
    return SettingError(f"{variable}={value!r} {what}")


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resources with the settings' values (the CLI, the runner and tests; the code location uses
    `defs/resources.py`, which reads them at launch through dg.EnvVar)."""
    from reporting_assets.defs.resources import resources_from

    resources = resources_from(Settings.from_env(env), env_vars=False)
    resources["partner"].validate()
    return resources
