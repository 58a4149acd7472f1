"""Credentials never reach logs, messages, dead letters, landing files, exports or Dagster's storage."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer

from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.sandbox import FaultSpec, SandboxConfig, SiteSpec
from reporting_assets.settings import build_resources
from reporting_assets_tests.helpers import KEY_ID, service_account_file

SITES = [SiteSpec("https://www.example.com/", 60), SiteSpec("https://broken.example.com/", 20)]


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(
        seed=2,
        sites=SITES,
        per_site_qps=None,
        global_qps=None,
        require_auth=True,
        rows_jitter=0.0,
        faults=[FaultSpec("http_500", site_url="https://broken.example.com/")],
    )


def topic_values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000)
    try:
        return [(record.key or b"") + b"\n" + (record.value or b"") for record in consumer]
    finally:
        consumer.close()


def test_planted_secrets_appear_nowhere(instance, sandbox, pipeline_env, monkeypatch, tmp_path, capfd):
    credentials, key_fragment = service_account_file(tmp_path, sandbox.url + "token")
    monkeypatch.setenv("PARTNER_CREDENTIALS_FILE", str(credentials))
    resources = build_resources({**pipeline_env, "PARTNER_CREDENTIALS_FILE": str(credentials)})

    summary = runner.run_pipeline(
        instance,
        resources,
        ["2026-11-01"],
        ConsumerTuning(consumers=1, idle_timeout_s=2.0, qps_per_account=100.0, transient_waits_s=[]),
        allow_incomplete=True,  # exported all the same, so that the exports are searched too
    )
    assert (
        summary.dead_lettered == 1 and summary.rows_loaded == 60 and summary.exports
    )  # the pipeline really ran, authenticated
    stats = sandbox.stats()
    assert stats["status_counts"].get("401", 0) == 0
    tokens = sandbox.issued_tokens()
    assert tokens, "the service-account flow was not used"
    secrets = [key_fragment.encode(), KEY_ID.encode(), *(t.encode() for t in tokens)]
    assert credentials.read_bytes().count(key_fragment.encode()) == 1  # the probe can find what it looks for

    leaks = []
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != credentials:
            data = path.read_bytes()
            leaks += [f"{path}: {s[:12]!r}" for s in secrets if s in data]
    for topic in (pipeline_env["REPORTING_REQUEST_TOPIC"], pipeline_env["REPORTING_DEAD_LETTER_TOPIC"]):
        values = b"\n".join(topic_values(pipeline_env["KAFKA_BOOTSTRAP_SERVERS"], topic))
        assert values, f"{topic} is empty: nothing was checked"
        leaks += [f"topic {topic}: {s[:12]!r}" for s in secrets if s in values]
    out, err = capfd.readouterr()
    leaks += [f"console: {s[:12]!r}" for s in secrets if s.decode() in out + err]
    assert leaks == []
