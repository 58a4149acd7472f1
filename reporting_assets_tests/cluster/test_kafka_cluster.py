"""The 3-broker KRaft cluster on loopback: topics replicated 3 / min ISR 2, a broker SIGKILLed mid-download."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from reporting_assets.core.consumer.loop import DownloadLoop
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.reports import get_report
from reporting_assets.infra.kafka.cluster import ClusterSettings, LocalKafkaCluster
from reporting_assets.infra.maven import ensure_jars
from reporting_assets.infra.ports import free_ports
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec, expected_rows

REPORT = get_report("search_analytics")
DATE = "2026-11-02"
SITES = [SiteSpec(f"https://site{index}.example.com/", 1_500) for index in range(3)]
KILLED = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    ports = free_ports(6)
    settings = ClusterSettings(
        ports=tuple(ports[:3]), controller_ports=tuple(ports[3:]), data_dir=tmp_path_factory.mktemp("kafka-cluster")
    )
    nodes = LocalKafkaCluster(settings, jars_dir=ensure_jars("broker"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()  # also after a failed start: no JVM outlives the tests


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.1)


def test_topics_are_replicated_and_a_broker_killed_mid_download_loses_and_doubles_nothing(cluster, tmp_path: Path):
    name = f"requests-{uuid.uuid4().hex[:8]}"
    kafka = KafkaResource(
        bootstrap_servers=cluster.bootstrap,
        request_topic=name,
        dead_letter_topic=f"{name}.dead-letter",
        delay_topic=f"{name}.delayed",
        consumer_group=f"group-{name}",
    )
    kafka.ensure_topics()
    with kafka.cluster().admin() as admin:
        topics = [kafka.request_topic, kafka.dead_letter_topic, kafka.delay_topic]
        described = admin.describe_topics(topics)
        assert {len(p["replica_nodes"]) for t in described for p in t["partitions"]} == {3}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics])
        by_topic = next(iter(configs.values()))  # {resource type: {topic: {key: config data}}}
        min_insync = {topic: by_topic[topic]["min.insync.replicas"]["value"] for topic in topics}
        assert min_insync == dict.fromkeys(topics, "2")

    landing = LandingZone(tmp_path / "landing")
    config = SandboxConfig(
        seed=5, sites=SITES, per_site_qps=None, global_qps=None, faults=[], rows_jitter=0.0, latency_s=0.05
    )
    with SandboxServer(config) as sandbox:
        producer = kafka.producer()
        for site in SITES:
            request = REPORT.first_request(site.url, DATE, row_limit=100)  # 16 pages a site
            producer.send(kafka.request_topic, key=request.key(), value=request.encode())
        producer.flush()
        producer.close()

        settings = ConsumerSettings(
            request_topic=kafka.request_topic,
            dead_letter_topic=kafka.dead_letter_topic,
            delay_topic=kafka.delay_topic,
            idle_timeout_s=15.0,  # longer than a coordinator's move to another broker
            qps_per_account=5.0,  # the download lasts ~3 s: the kill lands in its middle
            transient_waits_s=[],
        )
        partner = PartnerResource(api_endpoint=sandbox.url, timeout_s=10)
        consumer, loop_producer = kafka.consumer([]), kafka.producer()
        loop = DownloadLoop(consumer, loop_producer, partner.clients, landing, settings)
        failure: list[BaseException] = []

        def download() -> None:
            try:
                loop.subscribe()
                loop.run()
            except BaseException as error:  # noqa: BLE001 - reported by the test below
                failure.append(error)
            finally:
                loop_producer.close()
                consumer.close()

        worker = threading.Thread(target=download, name="download")
        worker.start()
        total_pages = len(SITES) * 16
        wait_until(lambda: loop.stats.landed >= 4 or not worker.is_alive(), 120, "the first pages landed")
        assert loop.stats.landed < total_pages, "the download ended before the kill"
        cluster.kill(KILLED)
        worker.join(timeout=300)
        assert not worker.is_alive() and not failure, failure

        stats = sandbox.stats()
    for site in SITES:
        state = landing.completeness(REPORT.name, DATE, site.url)
        assert state.complete and not state.truncated, state
        assert state.rows == len(expected_rows(config, site.url, DATE, DATE, list(REPORT.dimensions)))
    assert loop.stats.dead_lettered == 0
    assert stats["repeat_calls"] <= settings.concurrency  # only calls in flight at the kill can be asked again
    assert kafka.lag(kafka.request_topic).total == 0

    cluster.restart(KILLED)

    def caught_up() -> bool:
        with kafka.cluster().admin() as admin:
            (topic,) = admin.describe_topics([kafka.request_topic])
        return all(KILLED in partition["isr_nodes"] for partition in topic["partitions"])

    wait_until(caught_up, 120, f"broker {KILLED} back in the ISR of every partition")
