"""The whole pipeline through a SASL_SSL listener (SCRAM-SHA-512) of a real broker: a CA and a broker
certificate made here with openssl, the user created with the broker's own StorageTool. A wrong password
is one clear error with nothing written; the password is found in no log, message, file or Dagster storage.
The enqueue (Spark's sink) and the clients through a mutual-TLS listener, with a client certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from kafka import KafkaConsumer

from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.kafka import KafkaAuthenticationError, KafkaCluster, KafkaUnavailableError
from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.reports import DEFAULT_REPORTS
from reporting_assets.defs.partitions import account_partitions
from reporting_assets.infra.kafka import BrokerSettings
from reporting_assets.infra.kafka.secured import SaslSslListener, SecuredKafkaBroker, TlsFiles, make_tls_files
from reporting_assets.infra.maven import ensure_jars
from reporting_assets.infra.ports import free_ports
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec
from reporting_assets.settings import build_resources
from reporting_assets_tests.pipeline.test_end_to_end import FAST_CONSUMERS, PAGES_OF_1000, exported_files, truth

USER, PASSWORD = "downloader", "Scram-pw-7c1f93e2b4"  # the probe: no other string in the run looks like it
SITES = [SiteSpec("sc-domain:example.com", 300), SiteSpec("https://shop.example.com/", 2100)]
DATES = ["2026-11-01"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecuredKafkaBroker, TlsFiles]]:
    """A broker with PLAINTEXT (inside), SASL_SSL (the pipeline) and mutual-TLS listeners, and its TLS files."""
    root = tmp_path_factory.mktemp("secured")
    tls = make_tls_files(root / "tls", keystore_password="keystore-pw-5d2a")
    port, controller_port, secured_port, mutual_port = free_ports(4)
    broker = SecuredKafkaBroker(
        BrokerSettings(port=port, controller_port=controller_port, data_dir=root / "kafka"),
        SaslSslListener(port=secured_port, tls=tls, ssl_port=mutual_port, scram_users={USER: PASSWORD}),
        jars_dir=ensure_jars("broker"),
    )
    try:
        broker.start()
        yield broker, tls
    finally:
        broker.stop()


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(seed=11, sites=SITES, per_site_qps=None, global_qps=None, faults=[])


@pytest.fixture
def secured_env(
    secured: tuple[SecuredKafkaBroker, TlsFiles],
    sandbox_config: SandboxConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> Iterator[dict[str, str]]:
    broker, tls = secured
    topic = unique_name("requests")
    with SandboxServer(sandbox_config) as sandbox:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.secured_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD": PASSWORD,
            "KAFKA_SSL_CAFILE": str(tls.ca_cert),
            "REPORTING_REQUEST_TOPIC": topic,
            "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
            "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
            "REPORTING_CONSUMER_GROUP": unique_name("group"),
            "PARTNER_API_ENDPOINT": sandbox.url,
            "REPORTING_DATA_DIR": str(tmp_path / "data"),
        }
        for name, value in env.items():  # the download job's processes read them too
            monkeypatch.setenv(name, value)
        yield env


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as test_instance:
        yield test_instance


def inside(broker: SecuredKafkaBroker, env: dict[str, str]) -> KafkaCluster:
    """The same topics seen through the broker's PLAINTEXT listener (what the broker really holds)."""
    return KafkaCluster(
        bootstrap_servers=broker.settings.bootstrap,
        request_topic=env["REPORTING_REQUEST_TOPIC"],
        dead_letter_topic=env["REPORTING_DEAD_LETTER_TOPIC"],
        delay_topic=env["REPORTING_DELAY_TOPIC"],
        consumer_group=env["REPORTING_CONSUMER_GROUP"],
    )


def every_value(cluster: KafkaCluster, topic: str) -> bytes:
    """Every key and value ever written to ``topic``, read past the group's commits."""
    reader = KafkaConsumer(
        topic, bootstrap_servers=cluster.bootstrap_servers, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        return b"\n".join((r.key or b"") + b"\t" + (r.value or b"") for r in reader)
    finally:
        reader.close()


def test_the_pipeline_runs_through_sasl_ssl_and_the_password_is_nowhere(
    secured, secured_env, sandbox_config, instance, tmp_path, capfd
):
    broker, _ = secured
    summary = runner.run_pipeline(
        instance,
        build_resources(secured_env),
        DATES,
        ConsumerTuning(consumers=2, **FAST_CONSUMERS),
        request_config=PAGES_OF_1000,
    )

    accounts = sorted(site.url for site in SITES)
    assert sorted(summary.accounts) == accounts and summary.dead_lettered == 0
    expected = truth(sandbox_config, accounts, DATES)
    files = exported_files(summary.exports, DATES[0])
    assert sorted(files["csv"]) == sorted(expected) and files["parquet"] == files["csv"] == files["json"]
    # Spark's sink wrote the first pages through SASL_SSL; the consumers wrote the continuations.
    cluster = inside(broker, secured_env)
    requests = every_value(cluster, secured_env["REPORTING_REQUEST_TOPIC"])
    assert requests.count(b'"start_row":0,') == len(accounts)  # 1 first page each
    assert requests.count(b'"start_row":') == 1 + 3  # 300 rows: 1 page; 2 100 rows: 3 pages of 1 000
    assert cluster.lag(secured_env["REPORTING_REQUEST_TOPIC"]).total == 0

    secret = PASSWORD.encode()
    leaks = [f"topic {topic}" for topic in cluster._default_topics() if secret in every_value(cluster, topic)]
    files_read = 0
    for path in tmp_path.rglob("*"):  # landing, exports, DuckDB, Dagster's storage and compute logs
        if path.is_file():
            files_read += 1
            if secret in path.read_bytes():
                leaks.append(str(path))
    broker_dir = broker.data_dir  # its logs and storage: SCRAM keeps a salted hash, never the password
    for path in broker_dir.rglob("*"):
        if path.is_file() and secret in path.read_bytes():
            leaks.append(str(path))
    out, err = capfd.readouterr()
    if PASSWORD in out + err:
        leaks.append("console")
    assert files_read > 20 and (broker_dir / "broker.log").stat().st_size > 0  # there was something to search
    assert leaks == []


def test_a_wrong_password_is_one_clear_error_and_nothing_is_written(secured, secured_env, instance, monkeypatch):
    broker, _ = secured
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "not-the-password")
    resources = build_resources({**secured_env, "KAFKA_SASL_PASSWORD": "not-the-password"})
    with pytest.raises(KafkaAuthenticationError) as refused:
        resources["kafka"].cluster().check_reachable()
    message = str(refused.value)
    assert "login refused" in message and "KAFKA_SASL_PASSWORD" in message and f"user '{USER}'" in message
    assert "not-the-password" not in message and "\n" not in message

    with pytest.raises(Exception) as failed:  # the whole pipeline: it stops at its first Kafka call
        runner.run_pipeline(instance, resources, DATES, ConsumerTuning(consumers=1, **FAST_CONSUMERS))
    assert "login refused" in str(failed.value) or "login refused" in _run_errors(instance)
    topics = inside(broker, secured_env).admin()
    try:
        assert not set(topics.list_topics()) & set(inside(broker, secured_env)._default_topics())
    finally:
        topics.close()
    data = Path(secured_env["REPORTING_DATA_DIR"])
    assert not any(data.rglob("*.parquet"))  # no download was begun, nothing landed


def _run_errors(instance: dg.DagsterInstance) -> str:
    """The failure messages of every run of ``instance`` (a materialization's error stays in its run)."""
    messages = []
    for record in instance.get_run_records():
        for event in instance.all_logs(record.dagster_run.run_id):
            if event.dagster_event and event.dagster_event.is_failure:
                messages.append(str(event.dagster_event.event_specific_data))
    return "\n".join(messages)


def test_the_enqueue_and_the_clients_go_through_mutual_tls_with_a_client_certificate(
    secured, secured_env, instance, monkeypatch
):
    broker, tls = secured
    env = {
        **secured_env,
        "KAFKA_BOOTSTRAP_SERVERS": broker.mutual_tls_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SASL_USERNAME": "",
        "KAFKA_SASL_PASSWORD": "",
        "KAFKA_SSL_CERTFILE": str(tls.client_cert),
        "KAFKA_SSL_KEYFILE": str(tls.client_key),
    }
    without_certificate = build_resources({**env, "KAFKA_SSL_CERTFILE": "", "KAFKA_SSL_KEYFILE": ""})["kafka"]
    with pytest.raises(KafkaUnavailableError, match="want a client certificate \\(KAFKA_SSL_CERTFILE"):
        without_certificate.cluster().check_reachable(timeout_s=5)

    accounts = sorted(site.url for site in SITES)
    instance.add_dynamic_partitions(account_partitions.name, accounts)
    # Spark's sink takes the certificate and key as PEM text (kafka.ssl.keystore.*), kafka-python as files.
    enqueued = runner.enqueue(instance, build_resources(env), DATES, accounts)
    assert enqueued == len(accounts) * len(DATES) * len(DEFAULT_REPORTS)
    values = every_value(inside(broker, env), env["REPORTING_REQUEST_TOPIC"]).split(b"\n")
    requests = [ReportRequest.decode(value.partition(b"\t")[2]) for value in values]
    planned = {(a, d, r) for a in accounts for d in DATES for r in DEFAULT_REPORTS}
    assert sorted((r.account, r.date, r.report) for r in requests) == sorted(planned)  # each exactly once
    mutual = build_resources(env)["kafka"].cluster()
    assert sum(mutual.end_offsets(env["REPORTING_REQUEST_TOPIC"]).values()) == enqueued  # read through mTLS too
