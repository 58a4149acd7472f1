"""Fixtures for sensor and schedule ticks: a test instance, the session broker, a landing zone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import ReportRequest
from reporting_assets.core.reports import get_report
from reporting_assets.defs.partitions import account_partitions, partition_key
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.warehouse import WarehouseResource

ACCOUNTS = ["https://a.example.com/", "sc-domain:b.example.com", "https://c.example.com/"]
DATES = ["2026-11-01", "2026-11-02"]
ROW_LIMIT = 10


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        test_instance.add_dynamic_partitions(account_partitions.name, ACCOUNTS)
        yield test_instance


@pytest.fixture
def warehouse(tmp_path: Path) -> WarehouseResource:
    return WarehouseResource(data_dir=str(tmp_path / "data"))


@pytest.fixture
def kafka(kafka_resource: KafkaResource) -> KafkaResource:
    kafka_resource.ensure_topics()
    return kafka_resource


class Pipeline:
    """Drives the event log and the topic the way the real runs would, without Spark or consumers."""

    def __init__(self, instance: dg.DagsterInstance, kafka: KafkaResource, zone: LandingZone) -> None:
        self.instance = instance
        self.kafka = kafka
        self.zone = zone

    def first_request(self, date: str, account: str, report: str = "search_analytics") -> ReportRequest:
        return get_report(report).first_request(account, date, ROW_LIMIT)

    def enqueue(self, dates: list[str], accounts: list[str], record: bool = True) -> dict[int, int]:
        """First-page requests on the topic, then report_requests materializations with the watermark."""
        producer = self.kafka.producer()
        try:
            for date in dates:
                for account in accounts:
                    request = self.first_request(date, account)
                    producer.send(self.kafka.request_topic, key=request.key(), value=request.encode())
            producer.flush()
        finally:
            producer.close()
        watermark = self.kafka.end_offsets(self.kafka.request_topic)
        if record:
            for date in dates:
                for account in accounts:
                    self.instance.report_runless_asset_event(
                        dg.AssetMaterialization(
                            asset_key="report_requests",
                            partition=str(partition_key(date, account)),
                            metadata={"end_offsets": dg.MetadataValue.json({str(p): o for p, o in watermark.items()})},
                        )
                    )
        return watermark

    def produce_other(self, count: int = 1) -> None:
        """Requests of some other partition: lag that is not ours."""
        producer = self.kafka.producer()
        try:
            for _ in range(count):
                request = self.first_request("2026-10-15", "https://other.example.com/")
                producer.send(self.kafka.request_topic, key=request.key(), value=request.encode())
            producer.flush()
        finally:
            producer.close()

    def commit(self, offsets: dict[int, int] | None = None) -> None:
        """The group commits up to `offsets` (default: the end of every partition)."""
        offsets = self.kafka.end_offsets(self.kafka.request_topic) if offsets is None else offsets
        consumer = self.kafka.consumer([])
        try:
            consumer.commit(
                {TopicPartition(self.kafka.request_topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
            )
        finally:
            consumer.close()

    def land(
        self, date: str, account: str, rows_per_page: list[int], download: str = "", report: str = "search_analytics"
    ) -> None:
        """Land pages 0.. of the partition with the given row counts (a full page promises another).

        `download`: the download the pages belong to (an enqueue's id; consumers name one otherwise).
        """
        request = self.first_request(date, account, report).in_download(download)
        for rows in rows_per_page:
            self.zone.land_page(request, [_row(request, i) for i in range(rows)])
            request = request.next_page()

    def materialize(self, asset: str | list[str], date: str, account: str | None = None) -> None:
        partition = date if account is None else str(partition_key(date, account))
        key = dg.AssetKey(asset) if isinstance(asset, list) else dg.AssetKey.from_user_string(asset)
        self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


def _row(request: ReportRequest, index: int) -> dict:
    keys = {
        "date": request.date,
        "query": f"q{request.start_row + index}",
        "page": "/p",
        "country": "usa",
        "device": "DESKTOP",
    }
    return {"keys": [keys[d] for d in request.dimensions], "clicks": 1, "impressions": 2, "ctr": 0.5, "position": 1.0}


@pytest.fixture
def pipeline(instance: dg.DagsterInstance, kafka: KafkaResource, warehouse: WarehouseResource) -> Pipeline:
    return Pipeline(instance, kafka, warehouse.landing_zone())
