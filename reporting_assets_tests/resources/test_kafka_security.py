"""Kafka security settings: one KafkaSecurity gives kafka-python and Spark's sink the same settings; bad
combinations are one error naming the variable; secrets stay out of reprs, errors and the UI's config.
(The real SASL_SSL broker: cluster/test_kafka_security.py.)"""

from __future__ import annotations

import dagster as dg
import pytest
from kafka.errors import KafkaConnectionError
from kafka.future import Future

from reporting_assets.core.kafka import _lost_during_login
from reporting_assets.core.kafka_security import KafkaSecurity, KafkaSecurityError
from reporting_assets.defs.resources import resources_from
from reporting_assets.settings import SettingError, Settings, env_example

SECRET = "pw-6b1e0f"


@pytest.fixture
def pem(tmp_path):
    files = {}
    for name in ("ca", "client", "client.key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(f"-----BEGIN {name.upper()}-----\n")
    return files


def test_plaintext_adds_nothing_but_the_protocol():
    assert KafkaSecurity().client_config() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity().spark_options() == {"kafka.security.protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_is_the_same_for_kafka_python_and_spark(pem):
    security = KafkaSecurity(
        protocol="sasl_ssl", sasl_mechanism="scram-sha-512", sasl_username="alice", sasl_password='p"w\\1',
        ssl_cafile=str(pem["ca"]),
    )  # fmt: skip
    assert security.client_config() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": 'p"w\\1',
        "ssl_check_hostname": True,
        "ssl_cafile": str(pem["ca"]),
    }
    assert security.spark_options() == {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        # Quotes and backslashes escaped inside JAAS's double-quoted string.
        "kafka.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="alice" password="p\\"w\\\\1";',
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.certificates": pem["ca"].read_text(),  # text: executors may lack the file
    }


def test_plain_and_mutual_tls(pem):
    plain = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    assert plain.spark_options()["kafka.sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
    )
    assert "ssl_cafile" not in plain.client_config()
    mutual = KafkaSecurity(
        protocol="SSL",
        ssl_cafile=str(pem["ca"]),
        ssl_certfile=str(pem["client"]),
        ssl_keyfile=str(pem["client.key"]),
        ssl_key_password=SECRET,
        ssl_check_hostname=False,
    )
    config = mutual.client_config()
    assert (config["ssl_certfile"], config["ssl_keyfile"], config["ssl_password"]) == (
        str(pem["client"]),
        str(pem["client.key"]),
        SECRET,
    )
    assert config["ssl_check_hostname"] is False and "sasl_mechanism" not in config
    options = mutual.spark_options()
    assert options["kafka.ssl.keystore.type"] == "PEM"
    assert options["kafka.ssl.keystore.certificate.chain"] == pem["client"].read_text()
    assert options["kafka.ssl.keystore.key"] == pem["client.key"].read_text()
    assert options["kafka.ssl.endpoint.identification.algorithm"] == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL 'TLS' is not one of"),
        ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
         "KAFKA_SASL_MECHANISM 'GSSAPI' is not one of"),
        ({"protocol": "SASL_SSL", "sasl_password": SECRET}, "KAFKA_SASL_USERNAME is needed with"),
        ({"protocol": "SASL_SSL", "sasl_username": "u"}, "KAFKA_SASL_PASSWORD is needed with"),
        ({"sasl_username": "u", "sasl_password": SECRET}, "KAFKA_SASL_USERNAME is set, but"),
        ({"ssl_cafile": "/etc/hosts"}, "KAFKA_SSL_CAFILE is set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS"),
        ({"protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"}, "KAFKA_SSL_CAFILE '/no/such/ca.pem' is not a file"),
        ({"protocol": "SSL", "ssl_certfile": "/etc/hosts"}, "KAFKA_SSL_KEYFILE and KAFKA_SSL_CERTFILE go together"),
    ],
)  # fmt: skip
def test_a_combination_that_cannot_work_is_one_error_naming_the_variable(fields, message):
    with pytest.raises(KafkaSecurityError) as raised:
        KafkaSecurity(**fields)
    assert str(raised.value).startswith(message), str(raised.value)
    assert SECRET not in str(raised.value)


def test_the_settings_check_the_combination_and_keep_the_password_out_of_sight(monkeypatch):
    with pytest.raises(SettingError, match="^KAFKA_SASL_USERNAME is needed with KAFKA_SECURITY_PROTOCOL=SASL_SSL"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": SECRET})
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": SECRET}
    settings = Settings.from_env(env)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.kafka_security().sasl_password == SECRET
    assert SECRET not in repr(settings.kafka_security())
    assert "# KAFKA_SASL_PASSWORD=\n" in env_example()

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    kafka = resources_from(Settings.from_env(), env_vars=True)["kafka"]
    # What the UI shows of the resource's config: the variable's name, not the password.
    assert isinstance(kafka.sasl_password, dg.EnvVar) and kafka.sasl_password.env_var_name == "KAFKA_SASL_PASSWORD"
    assert SECRET not in repr(kafka)

    @dg.asset
    def probe(kafka: dg.ConfigurableResource) -> dg.MaterializeResult:  # type: ignore[valid-type]
        cluster = kafka.cluster()
        return dg.MaterializeResult(
            metadata={
                "config_has_password": cluster.security.client_config()["sasl_plain_password"] == SECRET,
                "jaas_has_password": SECRET in kafka.spark_options()["kafka.sasl.jaas.config"],
            }
        )

    result = dg.materialize([probe], resources={"kafka": kafka})  # resolved at launch, in the run
    metadata = result.asset_materializations_for_node("probe")[0].metadata
    assert metadata["config_has_password"].value is True and metadata["jaas_has_password"].value is True
    assert SECRET not in str(result.dagster_run.run_config)


class _Connection:
    """What kafka-python's connection shows when it logs "Connection lost"."""

    def __init__(self, sasl: bool, versions_known: bool, logged_in: bool) -> None:
        self.sasl_enabled = sasl
        self.broker_version = (4, 2) if versions_known else None
        self._init_future = Future()
        if logged_in:
            self._init_future.success(None)
        else:
            self._init_future.failure(KafkaConnectionError("socket disconnected"))


def test_a_connection_lost_during_the_sasl_login_counts_as_a_refused_login():
    lost = KafkaConnectionError("socket disconnected")
    assert _lost_during_login(_Connection(sasl=True, versions_known=True, logged_in=False), lost)
    # Not a login: no SASL, lost before the version exchange (another protocol), or lost after a login.
    assert not _lost_during_login(_Connection(sasl=False, versions_known=True, logged_in=False), lost)
    assert not _lost_during_login(_Connection(sasl=True, versions_known=False, logged_in=False), lost)
    assert not _lost_during_login(_Connection(sasl=True, versions_known=True, logged_in=True), lost)
    assert not _lost_during_login(_Connection(sasl=True, versions_known=True, logged_in=False), ValueError("x"))
