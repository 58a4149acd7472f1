"""4. Enqueue: M request messages through the project's Spark job against a kafka-python producer loop."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections import Counter
from typing import Any

from bench import baselines
from bench.common import Bench, site_urls, start_child
from reporting_assets.core.messages import InvalidRequestError, ReportRequest

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
    write_requests(frame, {"kafka.bootstrap.servers": bootstrap_servers}, topic)
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


def read_back(bootstrap_servers: str, topic: str, config: dict[str, Any], days: int) -> dict[str, Any]:
    """In a child process: every message of the topic decoded (request id recomputed), counted per
    (account, date, report) against the pairs the writer was given."""
    from kafka import KafkaConsumer, TopicPartition

    accounts, dates = _pairs(config)
    expected = {(account, date, config["report"]) for date in dates[:days] for account in accounts}
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
        max_poll_records=50_000,
        check_crcs=False,  # kafka-python's CRC32C is pure Python: 40 % of the read-back; the broker checked them
    )
    started = time.perf_counter()
    seen: Counter[tuple[str, str, str]] = Counter()
    invalid = wrong_key = not_first_page = 0
    downloads: set[str] = set()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for records in consumer.poll(timeout_ms=1_000).values():
                for record in records:
                    try:
                        request = ReportRequest.decode(record.value)
                    except InvalidRequestError:
                        invalid += 1
                        continue
                    seen[(request.account, request.date, request.report)] += 1
                    wrong_key += record.key != request.key()
                    not_first_page += request.start_row != 0
                    downloads.add(request.download)
    finally:
        consumer.close()
    return {
        "read": sum(seen.values()) + invalid,
        "read_s": time.perf_counter() - started,
        "distinct": len(seen),
        "missing": len(expected - seen.keys()),
        "unexpected": len(seen.keys() - expected),
        "duplicates": sum(count - 1 for count in seen.values() if count > 1),
        "invalid": invalid,
        "wrong_key": wrong_key,
        "not_first_page": not_first_page,
        "downloads": len(downloads),
    }


def describe(check: dict[str, Any], valid: bool) -> str:
    verdict = "yes" if valid else "NO"
    return (
        f"{verdict}: {check['read']:,} read, {check['distinct']:,} distinct, {check['duplicates']} duplicated, "
        f"{check['missing']} missing, {check['unexpected']} unexpected, {check['invalid']} invalid, "
        f"{check['wrong_key']} wrongly keyed"
    )


def exactly_once(check: dict[str, Any], expected: int) -> bool:
    """Every expected (account, date, report) once, nothing else, every message valid and keyed by its account."""
    return (
        check["read"] == expected
        and check["distinct"] == expected
        and check["missing"] == check["unexpected"] == check["duplicates"] == 0
        and check["invalid"] == check["wrong_key"] == check["not_first_page"] == 0
    )


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
            days = config["days"] if result["expected"] == m else config["kafka_python_days"]
            reader = start_child(
                read_back, bootstrap_servers=bench.bootstrap, topic=kafka.request_topic, config=config, days=days
            )
            result["check"] = reader.result(timeout_s=1_800)
            result["valid"] = exactly_once(result["check"], result["expected"])
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
                describe(outcome["check"], outcome["valid"]),
                f"{outcome['check']['read_s']:.1f}",
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
            "read back: each (account, date, report) exactly once",
            "read-back s (apart)",
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
            "Read back: every message of every partition, from a separate process (kafka-python, 64 MiB fetches), "
            "decoded as the consumer decodes it (request id recomputed and matched) and counted per (account, date, "
            "report) against the pairs the writer was given: each exactly once, none missing, none unexpected, "
            "every one a first page keyed by its account. Its time is shown apart and not counted in the writer's.",
        ],
        "targets": [
            {
                "target": f"<= 60 s for {m:,} messages with Spark"
                + ("" if m >= 1_000_000 else " (quick size; the target is for 1 000 000)"),
                "value": f"{spark['run_s']:.1f} s (+{spark['session_s']:.1f} s session start = {total_spark:.1f} s)",
                "met": spark["run_s"] <= 60 and spark["valid"],
            },
            {
                "target": "every message read back from both topics: each (account, date, report) exactly once",
                "value": "; ".join(
                    f"{name.split(' (')[0]}: {describe(o['check'], o['valid'])}" for name, o in outcomes.items()
                ),
                "met": all(o["valid"] for o in outcomes.values()),
            },
        ],
        "raw": outcomes,
    }
