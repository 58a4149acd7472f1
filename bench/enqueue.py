"""4. Enqueue: M request messages through the project's Spark job against a kafka-python producer loop."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from typing import Any

from bench import baselines
from bench.common import Bench, site_urls, start_child
from reporting_assets.core.messages import ReportRequest

REPORT = "search_analytics"
ROW_LIMIT = 1_000


def settings(bench: Bench) -> dict[str, Any]:
    accounts, days = (1_000, 50) if bench.quick else (10_000, 100)
    return {
        "messages": accounts * days,
        "accounts": accounts,
        "days": days,
        # The Python loop's rate is steady after a few thousand messages; a quarter of a million
        # measures it well at a quarter of the time (about 75 s here).
        "kafka_python_days": days if bench.quick else 25,
        "report": REPORT,
        "row_limit": ROW_LIMIT,
        "partitions": 4,  # REPORTING_TOPIC_PARTITIONS' default
        "spark": "local[2], reporting_assets.resources.spark.DEFAULT_SPARK_CONFIG",
        "sink": "enqueue.write_requests: acks=all, linger.ms=20",
        "kafka_python": "acks=all, linger_ms=20, other settings default",
    }


def _pairs(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    first = dt.date(2025, 1, 1)
    dates = [(first + dt.timedelta(days=day)).isoformat() for day in range(config["days"])]
    return site_urls(config["accounts"]), dates


def spark_enqueue(bootstrap_servers: str, topic: str, config: dict[str, Any]) -> dict[str, Any]:
    """In a child process: the report_requests asset's two calls, on a fresh local[2] session."""
    from reporting_assets.core.enqueue import request_frame, write_requests
    from reporting_assets.core.landing import LandingZone
    from reporting_assets.core.messages import new_download_id
    from reporting_assets.core.reports import get_report
    from reporting_assets.resources.spark import spark_resource

    began = time.perf_counter()
    spark = spark_resource().spark_session
    session_s = time.perf_counter() - began
    accounts, dates = _pairs(config)
    started = time.perf_counter()
    pairs = [(account, date) for date in dates for account in accounts]  # what the asset builds from its partition keys
    download = new_download_id()
    with tempfile.TemporaryDirectory() as landing:  # a first enqueue: no older download to replace
        LandingZone(landing).begin_downloads(((config["report"], d, a) for a, d in pairs), download)
    frame = request_frame(spark, pairs, [get_report(config["report"])], config["row_limit"], download)
    write_requests(frame, bootstrap_servers, topic)
    run_s = time.perf_counter() - started
    spark.stop()
    return {"session_s": session_s, "run_s": run_s}


def python_enqueue(bootstrap_servers: str, topic: str, config: dict[str, Any]) -> dict[str, Any]:
    accounts, dates = _pairs(config)
    dates = dates[: config["kafka_python_days"]]
    result = baselines.kafka_python_enqueue(
        bootstrap_servers, topic, accounts, dates, config["report"], config["row_limit"]
    )
    return {**result, "expected": len(accounts) * len(dates)}


def _check(bench: Bench, kafka: Any, expected: int) -> tuple[int, bool]:
    """Messages on the topic, and whether a sample of them decode as valid requests (ids included)."""
    from kafka import KafkaConsumer, TopicPartition

    count = sum(kafka.end_offsets(kafka.request_topic).values())
    consumer = KafkaConsumer(bootstrap_servers=bench.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5_000)
    try:
        consumer.assign([TopicPartition(kafka.request_topic, 0)])
        consumer.seek_to_beginning()
        sample = []
        for record in consumer:
            sample.append(ReportRequest.decode(record.value).key() == record.key)
            if len(sample) >= 100:
                break
    finally:
        consumer.close()
    return count, count == expected and len(sample) > 0 and all(sample)


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    m = config["messages"]
    outcomes: dict[str, dict[str, Any]] = {}
    for name, target in (
        ("Spark job (request_frame + write_requests)", spark_enqueue),
        ("(d) kafka-python loop", python_enqueue),
    ):
        kafka = bench.kafka("enqueue", config["partitions"])
        try:
            child = start_child(target, bootstrap_servers=bench.bootstrap, topic=kafka.request_topic, config=config)
            result = child.result(timeout_s=3_600)
            result.setdefault("expected", m)
            result["rate"] = result["expected"] / result["run_s"]
            result["count"], result["valid"] = _check(bench, kafka, result["expected"])
        finally:
            bench.delete_topics(kafka)
        outcomes[name] = result
    spark = outcomes["Spark job (request_frame + write_requests)"]
    python = outcomes["(d) kafka-python loop"]
    rows = []
    for name, outcome in outcomes.items():
        measured_all = outcome["expected"] == m
        rows.append(
            [
                name,
                f"{outcome['expected']:,}",
                f"{outcome['run_s']:.1f}",
                f"{outcome['rate']:,.0f}",
                f"{m / outcome['rate']:.0f}" + ("" if measured_all else " (at that rate)"),
                f"{outcome['session_s']:.1f}" if "session_s" in outcome else "–",
                f"{outcome['rate'] / python['rate']:.2f}",
                "yes" if outcome["valid"] else "NO",
            ]
        )
    total_spark = spark["run_s"] + spark["session_s"]
    return {
        "title": "4. Enqueue",
        "settings": config,
        "columns": [
            "writer",
            "messages written",
            "seconds",
            "messages/s",
            f"s for {m:,}",
            "Spark session start s (apart)",
            "messages/s ÷ kafka-python",
            "all on the topic, valid",
        ],
        "rows": rows,
        "baseline": "(d) `kafka_python_enqueue` in bench/baselines.py: build each ReportRequest and send it from a Python loop",
        "notes": [
            f"M = {m:,} first-page requests = {config['accounts']:,} accounts × {config['days']} dates, one report. "
            f"The kafka-python loop writes {config['accounts']:,} × {config['kafka_python_days']} dates of them; its "
            "time for M is its measured rate applied to M.",
            "Seconds: from the (account, date) pairs to every message acknowledged by the broker (acks=all). The Spark "
            "side builds the pairs list, the DataFrame (pairs shipped from Python to the JVM) and runs the Kafka sink; "
            "its session start-up is shown apart (once per run of the asset).",
            "Valid: the topic holds exactly the messages written, and the first 100 of partition 0 decode as valid "
            "requests (request id recomputed and matched) keyed by their account.",
        ],
        "targets": [
            {
                "target": f"<= 60 s for {m:,} messages with Spark"
                + ("" if m >= 1_000_000 else " (quick size; the target is for 1 000 000)"),
                "value": f"{spark['run_s']:.1f} s (+{spark['session_s']:.1f} s session start = {total_spark:.1f} s)",
                "met": spark["run_s"] <= 60 and spark["valid"],
            }
        ],
        "raw": outcomes,
    }
