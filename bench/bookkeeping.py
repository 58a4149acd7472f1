"""3. Bookkeeping cost: the whole Kafka path per request against a plain loop, on a zero-latency sandbox."""

from __future__ import annotations

import statistics
from typing import Any

from bench import baselines
from bench.common import Bench, produce, requests_for, site_urls, start_child
from bench.workers import run_consumer
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec

PARTITIONS = 8
COMMIT_DEFAULTS = {"commit_every": 1, "commit_interval_s": 0.2}  # ConsumerSettings' defaults
COMMIT_BATCHED = {"commit_every": 200, "commit_interval_s": 1.0}


def settings(bench: Bench) -> dict[str, Any]:
    return {
        # Five short rounds say more than two long ones: rounds differ by more than the margin.
        "requests": 800 if bench.quick else 1_200,
        "accounts": 16,
        "rows_per_day": 20,
        "latency_s": 0.0,
        "rate_limits": None,
        "partitions": PARTITIONS,
        "rounds": 5 if bench.quick else 7,
        "qps_per_account": 100_000.0,  # no limit to respect, so no pacing
        "variants": [
            {"concurrency": 1, "commit": COMMIT_DEFAULTS},
            {"concurrency": 1, "commit": COMMIT_BATCHED},
            {"concurrency": 4, "commit": COMMIT_DEFAULTS},
            {"concurrency": 4, "commit": COMMIT_BATCHED},
        ],
    }


def _sandbox(config: dict[str, Any]) -> SandboxServer:
    sites = [SiteSpec(url, config["rows_per_day"]) for url in site_urls(config["accounts"])]
    return SandboxServer(SandboxConfig(seed=3, sites=sites, per_site_qps=None, global_qps=None, rows_jitter=0.0))


def kafka_path(
    bench: Bench, config: dict[str, Any], requests: list[Any], concurrency: int, commit: dict[str, Any]
) -> dict[str, Any]:
    """Produce the requests, then one consumer until every one is landed and committed."""
    kafka = bench.kafka("bookkeeping", config["partitions"])
    landing = bench.scratch("bookkeeping-kafka")
    try:
        with _sandbox(config) as sandbox:
            produce_s = produce(kafka, requests)
            child = start_child(
                run_consumer,
                kafka=kafka.model_dump(),
                sandbox_url=sandbox.url,
                landing_dir=str(landing),
                settings={
                    "concurrency": concurrency,
                    "qps_per_account": config["qps_per_account"],
                    **commit,
                },
                stop_after_landed=len(requests),
                log_to=bench.log_file(f"bookkeeping-{concurrency}"),
            )
            result = child.result(timeout_s=0.1 * len(requests) + 120)  # 10× the slowest variant seen
            calls = sandbox.stats()["calls_total"]
        lag = kafka.lag(kafka.request_topic).total
    finally:
        bench.delete_topics(kafka)
    return {
        "produce_s": produce_s,
        "consume_s": result["run_s"],
        "join_s": result["first_record_s"],
        "total_s": produce_s + result["run_s"],
        "cpu_s": result["cpu_s"],
        "calls": calls,
        "commits": result["commits"],
        "lag_after": lag,
    }


def plain(bench: Bench, config: dict[str, Any], requests: list[Any], concurrency: int) -> dict[str, Any]:
    landing = bench.scratch("bookkeeping-plain")
    with _sandbox(config) as sandbox:
        child = start_child(
            baselines.plain_loop,
            sandbox_url=sandbox.url,
            landing_dir=str(landing),
            requests=[request.to_json() for request in requests],
            concurrency=concurrency,
        )
        result = child.result(timeout_s=0.1 * len(requests) + 120)
        calls = sandbox.stats()["calls_total"]
    return {"total_s": result["run_s"], "cpu_s": result["cpu_s"], "calls": calls}


def round_overheads_ms(plains: list[dict[str, Any]], paths: list[dict[str, Any]], n: int) -> list[float]:
    """Per round: the Kafka path's ms per request minus the plain loop's of the same round."""
    return [(path["total_s"] - plain["total_s"]) / n * 1000 for plain, path in zip(plains, paths, strict=True)]


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    requests = requests_for(site_urls(config["accounts"]), config["requests"] // config["accounts"])
    n = len(requests)
    plains: dict[int, list[dict[str, Any]]] = {}
    paths: dict[int, list[dict[str, Any]]] = {}
    # Interleaved rounds: a noisy neighbour hurts both sides alike. The order turns each round (the run
    # after a topic's deletion shares the broker with its clean-up), so no variant always goes first.
    for round_index in range(config["rounds"]):
        for concurrency in sorted({v["concurrency"] for v in config["variants"]}):
            order: list[int | None] = [None] + [
                i for i, v in enumerate(config["variants"]) if v["concurrency"] == concurrency
            ]
            shift = round_index % len(order)
            for index in order[shift:] + order[:shift]:
                if index is None:
                    plains.setdefault(concurrency, []).append(plain(bench, config, requests, concurrency))
                else:
                    commit = config["variants"][index]["commit"]
                    paths.setdefault(index, []).append(kafka_path(bench, config, requests, concurrency, commit))

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    rows = []
    overhead: dict[int, float] = {}
    spread: dict[int, tuple[float, float]] = {}
    for index, variant in enumerate(config["variants"]):
        concurrency = variant["concurrency"]
        base_ms = median(plains[concurrency], "total_s") / n * 1000
        base_cpu_ms = median(plains[concurrency], "cpu_s") / n * 1000
        runs = paths[index]
        path_ms = median(runs, "total_s") / n * 1000
        # Each round's Kafka run against the plain loop of the same round: a noisy moment hits both.
        paired = round_overheads_ms(plains[concurrency], runs, n)
        overhead[index] = statistics.median(paired)
        spread[index] = (min(paired), max(paired))
        rows.append(
            [
                str(concurrency),
                f"every {variant['commit']['commit_every']} / {variant['commit']['commit_interval_s']:g} s",
                f"{base_ms:.2f}",
                f"{median(runs, 'produce_s') / n * 1000:.2f} + {median(runs, 'consume_s') / n * 1000:.2f} = {path_ms:.2f}",
                f"{overhead[index]:+.2f} ({spread[index][0]:+.2f} .. {spread[index][1]:+.2f})",
                f"{path_ms / base_ms:.2f}",
                f"{base_cpu_ms:.2f} / {median(runs, 'cpu_s') / n * 1000:.2f}",
                f"{median(runs, 'commits'):.0f}",
                f"{median(runs, 'join_s'):.1f}",
            ]
        )
    default_index = next(
        i for i, v in enumerate(config["variants"]) if v["concurrency"] == 4 and v["commit"] == COMMIT_DEFAULTS
    )
    sequential_index = next(
        i for i, v in enumerate(config["variants"]) if v["concurrency"] == 1 and v["commit"] == COMMIT_DEFAULTS
    )
    all_landed = all(run["lag_after"] == 0 and run["calls"] == n for runs in paths.values() for run in runs)
    return {
        "title": "3. Bookkeeping cost per request",
        "settings": config,
        "columns": [
            "calls in flight",
            "commit (every n / interval)",
            "plain loop ms/request",
            "Kafka path ms/request (produce + consume·land·commit)",
            "overhead ms/request: median of rounds (min .. max)",
            "ratio",
            "CPU ms/request plain / Kafka consumer",
            "commits",
            "group join s (excluded)",
        ],
        "rows": rows,
        "baseline": "(c) `plain_loop` in bench/baselines.py: the same client, endpoint and Parquet files, no Kafka",
        "notes": [
            f"N = {n} requests, {config['accounts']} accounts, one page each ({config['rows_per_day']} rows); sandbox "
            f"latency 0, no rate limits. {config['rounds']} interleaved rounds (per concurrency the plain loop and "
            "the Kafka variants, in an order that turns each round); the overhead is each round's Kafka run minus that round's plain loop, its median "
            "over the rounds (the verdict's figure) with the lowest and highest round beside it; the other columns "
            "are medians of the rounds.",
            "Kafka path = the driver producing the N requests (kafka-python, acks=all) + one consumer process from its "
            "first record until all N are landed and their offsets committed. The consumer's group join (and client "
            "construction, for both sides, and the producer's connection and first metadata fetch) is a fixed start-up "
            "cost, not spread over the requests; the join is shown apart.",
            "CPU: the consumer process's user+sys seconds (its imports included) against the plain loop process's.",
            f"Every Kafka run landed all N with one call each and left no lag: {all_landed}.",
        ],
        "targets": [
            {
                "target": "<= 1 ms per request of overhead (default settings: 4 in flight, commit after every request, asynchronous, one at a time)",
                "value": f"{overhead[default_index]:+.2f} ms, median of {config['rounds']} rounds (rounds "
                f"{spread[default_index][0]:+.2f} .. {spread[default_index][1]:+.2f}; sequential: "
                f"{overhead[sequential_index]:+.2f} ms)",
                "met": overhead[default_index] <= 1.0,
            }
        ],
        "raw": {"plain": plains, "kafka": {str(i): runs for i, runs in paths.items()}},
    }
