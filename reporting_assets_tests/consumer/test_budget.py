"""A consumer's share of the group's budget: from the group's lag, read on the real broker."""

from __future__ import annotations

import datetime as dt

import pytest
from kafka import OffsetAndMetadata, TopicPartition

from reporting_assets.core.consumer.budget import MIN_SHARE, GroupBudget, budget_share
from reporting_assets.core.consumer.loop import DownloadLoop
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.reports import get_report
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec
from reporting_assets_tests.helpers import wait_for


def test_shares_follow_the_lag_and_add_up_to_the_budget():
    lag = {0: 600, 1: 0, 2: 300, 3: 100}
    shares = [budget_share(lag, held, 20.0, 2) for held in ([0, 1], [2, 3])]
    assert shares == pytest.approx([12.0, 8.0])
    # Nothing read yet, or nothing left: even shares.
    assert budget_share({}, [0], 20.0, 2) == budget_share({0: 0, 1: 0}, [0], 20.0, 2) == 10.0
    # No lag on its partitions: a small share still, for what is produced to them next.
    assert budget_share({0: 50, 1: 0}, [1], 20.0, 2) == pytest.approx(MIN_SHARE * 10.0)


def test_the_budget_is_shared_by_the_lag_the_group_has_on_each_consumers_partitions(kafka_resource: KafkaResource):
    kafka = kafka_resource
    kafka.ensure_topics({kafka.request_topic: 4})
    producer = kafka.producer()
    for partition, messages in {0: 30, 1: 10, 2: 0, 3: 40}.items():
        for _ in range(messages):
            producer.send(kafka.request_topic, value=b"{}", partition=partition)
    producer.flush()
    producer.close()
    # The group has done 20 of partition 3's 40 (committed by a member that then left).
    committer = kafka.consumer([])
    tp3 = TopicPartition(kafka.request_topic, 3)
    committer.assign([tp3])
    committer.commit({tp3: OffsetAndMetadata(20, "", -1)})
    committer.close()

    budget = GroupBudget(kafka.cluster().admin, kafka.consumer_group, kafka.request_topic, 30.0, 2, every_s=0.1)
    first = [TopicPartition(kafka.request_topic, p) for p in (0, 1)]
    second = [TopicPartition(kafka.request_topic, p) for p in (2, 3)]
    assert budget.rate(first) == budget.rate(second) == 15.0  # before the first reading
    budget.start()
    try:
        # Lag 30 + 10 against 0 + 20: two thirds of the budget for the first consumer.
        wait_for(lambda: budget.rate(first) != 15.0, timeout_s=30, what="the first reading of the lag")
        assert budget.rate(first) == pytest.approx(20.0)
        assert budget.rate(second) == pytest.approx(10.0)
        # The delay topic's partitions are not the request topic's.
        assert budget.rate([TopicPartition(f"{kafka.request_topic}.delayed", 0)]) == pytest.approx(MIN_SHARE * 15.0)
    finally:
        budget.close()


def test_a_consumer_holding_all_the_work_takes_the_whole_budget(kafka_resource: KafkaResource, tmp_path):
    """Split evenly, the only consumer with work left would call at half the budget; by the lag, at all of it."""
    kafka = kafka_resource
    kafka.ensure_topics({kafka.request_topic: 2, kafka.dead_letter_topic: 1, kafka.delay_topic: 1})
    site = "https://budget.example.com/"
    report = get_report("search_analytics")
    days = [(dt.date(2026, 9, 1) + dt.timedelta(days=n)).isoformat() for n in range(60)]
    producer = kafka.producer()
    for day in days:
        request = report.first_request(site, day, row_limit=100)
        producer.send(kafka.request_topic, key=request.key(), value=request.encode())
    producer.flush()
    producer.close()
    settings = ConsumerSettings(
        request_topic=kafka.request_topic,
        dead_letter_topic=kafka.dead_letter_topic,
        delay_topic=kafka.delay_topic,
        consumers=2,  # its partner in the group has nothing to do (it holds no partition)
        global_qps=4.0,
        qps_per_account=100.0,
        idle_timeout_s=1.0,
    )
    config = SandboxConfig(seed=3, sites=[SiteSpec(site, 20)], per_site_qps=None, global_qps=None, faults=[])
    budget = GroupBudget(kafka.cluster().admin, kafka.consumer_group, kafka.request_topic, 4.0, 2, every_s=0.1)
    holder: dict[str, DownloadLoop] = {}
    with SandboxServer(config) as sandbox:
        partner = PartnerResource(api_endpoint=sandbox.url, timeout_s=5)
        consumer, producer = kafka.consumer([]), kafka.producer()
        loop = holder["loop"] = DownloadLoop(
            consumer,
            producer,
            partner.client,
            LandingZone(tmp_path),
            settings,
            should_stop=lambda: holder["loop"].pacer.global_qps == pytest.approx(4.0),
            group_budget=budget,
        )
        assert loop.pacer.global_qps == pytest.approx(2.0)  # an even share, before any reading
        try:
            loop.subscribe()
            stats = loop.run()
        finally:
            producer.close()
            consumer.close()
    assert stats.stopped_because == "asked to stop"
    assert loop.pacer.global_qps == pytest.approx(4.0) and stats.api_calls < len(days)
