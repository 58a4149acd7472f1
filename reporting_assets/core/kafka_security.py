"""How the clients reach a secured Kafka cluster: TLS, SASL (PLAIN, SCRAM), or both.

One `KafkaSecurity` gives the same settings to every kafka-python client (consumer, producer,
admin: `client_config`) and to Spark's Kafka sink (`spark_options`, the sink's ``kafka.*``
options), so a managed Kafka (Confluent Cloud, MSK, Aiven) is reached the same way by all of them.
Secrets are kept out of ``repr`` and out of every error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
# The setting each field comes from (reporting_assets.settings), named in error messages.
VARIABLES = {
    "protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "ssl_certfile": "KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "KAFKA_SSL_KEYFILE",
    "ssl_key_password": "KAFKA_SSL_KEY_PASSWORD",
    "ssl_check_hostname": "KAFKA_SSL_CHECK_HOSTNAME",
}


class KafkaSecurityError(ValueError):
    """Security settings that cannot work together; the message names the variable, never a secret."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The cluster's security protocol and what it needs; the default is PLAINTEXT (the local broker)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""  # PEM CA bundle; empty: the system's trusted CAs
    ssl_certfile: str = ""  # PEM client certificate (mutual TLS), with ssl_keyfile
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False)
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", self.protocol.strip().upper())
        object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.strip().upper())
        if self.protocol not in PROTOCOLS:
            raise self._error("protocol", f"{self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.uses_sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise self._error("sasl_mechanism", f"{self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}")
            for name in ("sasl_username", "sasl_password"):
                if not getattr(self, name):
                    raise self._error(name, f"is needed with {VARIABLES['protocol']}={self.protocol}")
        elif self.sasl_username or self.sasl_password:
            raise self._error("sasl_username", f"is set, but {VARIABLES['protocol']}={self.protocol} uses no SASL")
        tls_files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if not self.uses_tls:
            for name in tls_files:
                if getattr(self, name):
                    raise self._error(name, f"is set, but {VARIABLES['protocol']}={self.protocol} uses no TLS")
        for name in tls_files:
            path = getattr(self, name)
            if path and not Path(path).expanduser().is_file():
                raise self._error(name, f"{path!r} is not a file")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise self._error("ssl_keyfile", f"and {VARIABLES['ssl_certfile']} go together (mutual TLS)")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def describe(self) -> str:
        """What the clients do, for messages and logs: no secret in it."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} user {self.sasl_username!r}")
        return " ".join(parts)

    def client_config(self) -> dict[str, Any]:
        """kafka-python's settings (the same for KafkaConsumer, KafkaProducer and KafkaAdminClient)."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            config.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.uses_tls:
            config["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                config["ssl_cafile"] = str(Path(self.ssl_cafile).expanduser())
            if self.ssl_certfile:
                config["ssl_certfile"] = str(Path(self.ssl_certfile).expanduser())
                config["ssl_keyfile"] = str(Path(self.ssl_keyfile).expanduser())
                if self.ssl_key_password:
                    config["ssl_password"] = self.ssl_key_password
        return config

    def spark_options(self) -> dict[str, str]:
        """Spark's Kafka sink options (``kafka.`` + the Java client's setting).

        The Java client reads PEM (``ssl.*.type=PEM``), so the same files serve both. They are passed as
        text, not paths: the sink runs in the executors, which may sit on machines without the files.
        Spark redacts option values holding "password" from its plans and logs.
        """
        options = {"kafka.security.protocol": self.protocol}
        if self.uses_sasl:
            module = _LOGIN_MODULES[self.sasl_mechanism]
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f'{module} required username="{_jaas_quote(self.sasl_username)}" '
                f'password="{_jaas_quote(self.sasl_password)}";'
            )
        if self.uses_tls:
            if self.ssl_cafile:
                options["kafka.ssl.truststore.type"] = "PEM"
                options["kafka.ssl.truststore.certificates"] = Path(self.ssl_cafile).expanduser().read_text()
            if self.ssl_certfile:
                options["kafka.ssl.keystore.type"] = "PEM"
                options["kafka.ssl.keystore.certificate.chain"] = Path(self.ssl_certfile).expanduser().read_text()
                options["kafka.ssl.keystore.key"] = Path(self.ssl_keyfile).expanduser().read_text()
                if self.ssl_key_password:
                    options["kafka.ssl.key.password"] = self.ssl_key_password
            if not self.ssl_check_hostname:
                options["kafka.ssl.endpoint.identification.algorithm"] = ""
        return options

    def _error(self, name: str, what: str) -> KafkaSecurityError:
        return KafkaSecurityError(f"{VARIABLES[name]} {what}")


def _jaas_quote(value: str) -> str:
    """A value inside a JAAS double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
