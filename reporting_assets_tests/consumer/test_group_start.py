"""The consumers of a run start calling only once their whole group is in: no call is made twice."""

from __future__ import annotations

import threading

from kafka.partitioner.default import murmur2

from reporting_assets.core.consumer.loop import DownloadLoop
from reporting_assets.core.consumer.settled import GroupWatch, group_settled
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.reports import get_report
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec
from reporting_assets_tests.helpers import wait_for

REPORT = get_report("search_analytics")
PARTITIONS = 2


def one_site_per_partition() -> list[str]:
    """Site URLs whose keys land on distinct partitions (murmur2, as the producer does)."""
    chosen: dict[int, str] = {}
    for index in range(100):
        url = f"https://site{index}.example.com/"
        chosen.setdefault((murmur2(url.encode()) & 0x7FFFFFFF) % PARTITIONS, url)
    return [chosen[p] for p in range(PARTITIONS)]


def start_consumer(
    kafka: KafkaResource, sandbox: SandboxServer, landing: LandingZone, name: str
) -> tuple[DownloadLoop, threading.Thread]:
    settings = ConsumerSettings(
        request_topic=kafka.request_topic,
        dead_letter_topic=kafka.dead_letter_topic,
        delay_topic=kafka.delay_topic,
        idle_timeout_s=1.5,
        qps_per_account=100.0,
        join_grace_s=20.0,
    )
    # Heartbeats every 0.5 s: the first consumer hears of the second's join quickly, while its 3 s
    # calls are still under way (the window in which, before, the calls were handed over and repeated).
    consumer = kafka.consumer([], client_id=name, heartbeat_interval_ms=500)
    producer = kafka.producer()
    watch = GroupWatch(kafka.cluster().admin, kafka.consumer_group, expected_members=2)
    loop = DownloadLoop(
        consumer, producer, PartnerResource(api_endpoint=sandbox.url).client, landing, settings, group_watch=watch
    )

    def run() -> None:
        try:
            loop.subscribe()
            loop.run()
        finally:
            watch.close()
            producer.close()
            consumer.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return loop, thread


def test_the_first_consumer_waits_for_the_second_and_no_call_is_made_twice(kafka_resource, tmp_path):
    # Before: the first consumer got every partition and called at once (here it landed both sites);
    # the second one's join took half of them away with the calls under way, and where their new owner
    # found the page not landed yet it called it again (1-2 repeated calls in every clean run of the
    # CLI, bench 7). Now the first calls nothing until the second is in: each calls its own partition.
    kafka = kafka_resource
    kafka.ensure_topics({kafka.request_topic: PARTITIONS, kafka.dead_letter_topic: 1, kafka.delay_topic: 1})
    sites = one_site_per_partition()
    config = SandboxConfig(
        seed=3, sites=[SiteSpec(url, 40) for url in sites], per_site_qps=None, global_qps=None, latency_s=3.0
    )
    landing = LandingZone(tmp_path)
    with SandboxServer(config) as sandbox:
        producer = kafka.producer()
        for site in sites:
            request = REPORT.first_request(site, "2026-11-02", row_limit=1000)
            producer.send(kafka.request_topic, key=request.key(), value=request.encode())
        producer.flush()
        producer.close()

        first, first_thread = start_consumer(kafka, sandbox, landing, "first")
        wait_for(lambda: first.consumer.assignment(), 30, "the first consumer's partitions")
        second, second_thread = start_consumer(kafka, sandbox, landing, "second")
        first_thread.join(120)
        second_thread.join(120)
        assert not first_thread.is_alive() and not second_thread.is_alive()

        stats = sandbox.stats()
        assert stats["repeat_calls"] == 0, stats
        assert stats["calls_by_method"]["searchanalytics.query"] == len(sites)
        assert first.stats.landed + second.stats.landed == len(sites)
        assert first.stats.landed == second.stats.landed == 1  # each called its own partition's site
        for site in sites:
            assert landing.completeness(REPORT.name, "2026-11-02", site).complete


def test_a_group_is_settled_once_stable_with_every_member_and_this_ones_partitions():
    from kafka import TopicPartition

    mine = {TopicPartition("t", 0), TopicPartition("t", 1)}

    def described(state: str, members: list[tuple[str, list[int]]]) -> dict:
        return {
            "group_state": state,
            "members": [
                {"member_id": member, "member_assignment": {"assigned_partitions": [{"topic": "t", "partitions": ps}]}}
                for member, ps in members
            ],
        }

    assert group_settled(described("Stable", [("a", [0, 1]), ("b", [2, 3])]), "a", mine, 2)
    assert not group_settled(described("PreparingRebalance", [("a", [0, 1]), ("b", [])]), "a", mine, 2)
    assert not group_settled(described("Stable", [("a", [0, 1])]), "a", mine, 2)  # the other is not in yet
    assert not group_settled(described("Stable", [("a", [0, 1, 2, 3]), ("b", [])]), "a", mine, 2)  # old assignment
    assert not group_settled(described("Stable", [("b", [0, 1]), ("c", [2, 3])]), "a", mine, 2)  # not a member
    assert group_settled(described("Stable", [("a", [0, 1])]), "a", mine, 1)
