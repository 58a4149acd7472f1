"""The enqueue on a standalone Spark cluster on loopback: a master and a worker from pyspark's distribution,
the report_requests asset with SPARK_MASTER=spark://..., the Kafka sink running in the worker's executor."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from kafka import KafkaConsumer, TopicPartition

from reporting_assets import runner
from reporting_assets.core.messages import ReportRequest
from reporting_assets.defs.partitions import account_partitions
from reporting_assets.infra.ports import free_ports
from reporting_assets.infra.spark import LocalSparkCluster, SparkClusterSettings
from reporting_assets.settings import build_resources

ACCOUNTS = [f"https://site{index}.example.com/" for index in range(5)]
DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
REPORTS = ["search_analytics", "by_device"]
ENQUEUE = {"ops": {"report_requests": {"config": {"reports": REPORTS}}}}


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSparkCluster]:
    port, webui, worker, worker_webui = free_ports(4)
    settings = SparkClusterSettings(
        port=port,
        webui_port=webui,
        worker_port=worker,
        worker_webui_port=worker_webui,
        data_dir=tmp_path_factory.mktemp("spark-cluster"),
    )
    cluster = LocalSparkCluster(settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()  # also after a failed start: no JVM outlives the tests


def stop_spark_sessions() -> None:
    """The process's SparkContext, if any (getOrCreate would hand it back, on its master)."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:  # no public accessor that does not create one
        SparkContext._active_spark_context.stop()


@pytest.fixture
def no_spark_session() -> Iterator[None]:
    stop_spark_sessions()
    yield
    stop_spark_sessions()  # before the cluster stops: later tests start their own session


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.1)
    return result


def every_message(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on `topic`, from each partition's beginning to its end offset."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1_000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        messages: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"read {len(messages)} of {sum(ends.values())} messages in 60 s"
            for records in consumer.poll(timeout_ms=500).values():
                messages.extend((record.key, record.value) for record in records)
    finally:
        consumer.close()
    assert len(messages) == sum(ends.values())
    return messages


def test_the_enqueue_runs_on_the_standalone_cluster_and_puts_every_request_on_the_topic_once(
    spark_cluster: LocalSparkCluster,
    kafka_broker: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    no_spark_session: None,
):
    topic = unique_name("requests")
    env = {
        "SPARK_MASTER": spark_cluster.master_url,
        "SPARK_LOCAL_IP": "127.0.0.1",  # the driver's address, which the executor calls back on
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "REPORTING_REQUEST_TOPIC": topic,
        "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
        "REPORTING_CONSUMER_GROUP": unique_name("group"),
        "REPORTING_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = {app["id"] for app in spark_cluster.state()["completedapps"] + spark_cluster.state()["activeapps"]}

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        instance.add_dynamic_partitions(account_partitions.name, ACCOUNTS)
        # The asset as the CLI and the schedules run it, its resources from the environment (SPARK_MASTER).
        enqueued = runner.enqueue(instance, build_resources(env), DATES, ACCOUNTS, ENQUEUE)

    plan = Counter((account, date, report) for account in ACCOUNTS for date in DATES for report in REPORTS)
    assert enqueued == len(plan) == 30

    # Every message on the topic, each a valid request (its id matches its parameters), each call of the plan once.
    messages = every_message(kafka_broker, topic)
    requests = [ReportRequest.decode(value) for _, value in messages]
    assert Counter((r.account, r.date, r.report) for r in requests) == plan
    assert all(key == request.key() for (key, _), request in zip(messages, requests, strict=True))
    assert {r.start_row for r in requests} == {0} and len({r.download for r in requests}) == 1
    assert len({r.request_id for r in requests}) == len(plan)

    # It ran on the cluster: the master shows the application, whose executor ran on our worker ...
    from pyspark import SparkContext

    context = SparkContext._active_spark_context
    assert context is not None and context.master == spark_cluster.master_url
    app_id = context.applicationId
    state = spark_cluster.state()
    apps = {app["id"]: app for app in state["activeapps"] + state["completedapps"]}
    assert app_id in apps and app_id not in before, (app_id, sorted(apps))
    worker = spark_cluster.worker_state()
    executors = [e for e in worker["executors"] + worker["finishedexecutors"] if e["appid"] == app_id]
    assert executors, f"no executor of {app_id} on worker {worker['id']}"
    # ... which fetched the connector jars from the driver (spark.jars) and ran the Kafka producer:
    # the sink wrote from the executor's JVM, not the driver's.
    (executor,) = executors
    executor_dir = spark_cluster.work_dir / app_id / str(executor["id"])
    assert any(executor_dir.glob("spark-sql-kafka-0-10_*.jar")), sorted(p.name for p in executor_dir.iterdir())
    stderr = (executor_dir / "stderr").read_text()
    assert "ProducerConfig values" in stderr and kafka_broker in stderr
