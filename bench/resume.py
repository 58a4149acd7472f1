"""2. Resume after a crash: SIGKILL at ~50 %, run again to the end; API calls / N for each approach."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import baselines
from bench.common import Bench, Child, landed_files, produce, requests_for, site_urls, start_child, wait_for
from bench.workers import run_consumer
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec

PARTITIONS = 8


def settings(bench: Bench) -> dict[str, Any]:
    requests = 1_200 if bench.quick else 6_000
    accounts = 16
    return {
        "requests": requests,
        "accounts": accounts,
        "requests_per_account": requests // accounts,
        "rows_per_day": 20,
        "latency_s": 0.02,
        "rate_limits": None,
        "kill_at": 0.5,
        "partitions": PARTITIONS,
        # No rate limit in the sandbox, so no pacing either (the default pace is 10 calls/s per account).
        "project": {
            "consumers": 2,
            "concurrency": 4,
            "qps_per_account": 1_000.0,
            "session_timeout_s": 6.0,
            "idle_timeout_s": 2.0,
        },
        "baselines": {"processes": 1, "threads": 8},
    }


def _distinct_successes(stats: dict[str, Any]) -> int:
    return int(stats["status_counts"].get("200", 0)) - int(stats["repeat_successes"])


def _sandbox(config: dict[str, Any]) -> SandboxServer:
    sites = [SiteSpec(url, config["rows_per_day"]) for url in site_urls(config["accounts"])]
    return SandboxServer(
        SandboxConfig(
            seed=2, sites=sites, per_site_qps=None, global_qps=None, latency_s=config["latency_s"], rows_jitter=0.0
        )
    )


def crash_and_resume(
    sandbox: SandboxServer,
    total: int,
    kill_at: float,
    start: Callable[[int], list[Child]],
    landing: Any,
) -> dict[str, Any]:
    """Start, SIGKILL every process at `kill_at` of the successes, start again, wait for every success."""
    began = time.monotonic()
    first = start(1)
    try:
        wait_for(
            lambda: _distinct_successes(sandbox.stats()) >= kill_at * total, 0.1 * total + 120, "half the calls", 0.01
        )
    finally:
        for child in first:
            child.kill()
    killed_at = time.monotonic()
    at_kill = sandbox.stats()
    landed_at_kill = landed_files(landing)
    second = start(2)
    try:
        wait_for(lambda: _distinct_successes(sandbox.stats()) >= total, 0.1 * total + 120, "every call", 0.02)
        done_at = time.monotonic()
        results = [child.result(timeout_s=120) for child in second]
    finally:
        for child in second:
            child.kill()
    stats = sandbox.stats()
    return {
        "calls": stats["calls_total"],
        "calls_before_kill": at_kill["calls_total"],
        "successes_before_kill": _distinct_successes(at_kill),
        "repeats_before_kill": at_kill["repeat_calls"],
        "landed_at_kill": landed_at_kill,
        "repeat_calls": stats["repeat_calls"],
        "repeat_successes": stats["repeat_successes"],
        "landed": landed_files(landing),
        "wall_s": done_at - began,
        "first_run_s": killed_at - began,
        "second_run_s": done_at - killed_at,
        "results": results,
    }


def run_project(bench: Bench, config: dict[str, Any], requests: list[Any]) -> dict[str, Any]:
    kafka = bench.kafka("resume", config["partitions"])
    produce(kafka, requests)
    landing = bench.scratch("resume-project")
    project = config["project"]
    try:
        with _sandbox(config) as sandbox:

            def start(attempt: int) -> list[Child]:
                return [
                    start_child(
                        run_consumer,
                        kafka=kafka.model_dump(),
                        sandbox_url=sandbox.url,
                        landing_dir=str(landing),
                        settings={
                            "concurrency": project["concurrency"],
                            "qps_per_account": project["qps_per_account"],
                            "idle_timeout_s": project["idle_timeout_s"],
                        },
                        session_timeout_s=project["session_timeout_s"],
                        log_to=bench.log_file(f"resume-run{attempt}"),
                        group_members=project["consumers"],
                    )
                    for _ in range(project["consumers"])
                ]

            outcome = crash_and_resume(sandbox, len(requests), config["kill_at"], start, landing)
        outcome["lag_after"] = kafka.lag(kafka.request_topic).total
    finally:
        bench.delete_topics(kafka)
    return outcome


def run_baseline(bench: Bench, config: dict[str, Any], requests: list[Any], name: str) -> dict[str, Any]:
    landing = bench.scratch(f"resume-{name}")
    payload = [request.to_json() for request in requests]
    threads = config["baselines"]["threads"]
    with _sandbox(config) as sandbox:

        def start(_attempt: int) -> list[Child]:
            common = {
                "sandbox_url": sandbox.url,
                "landing_dir": str(landing),
                "requests": payload,
                "concurrency": threads,
            }
            if name == "delete_and_rewrite":
                return [start_child(baselines.delete_and_rewrite, **common)]
            return [
                start_child(baselines.dedup_table, database=str(landing.parent / f"{landing.name}.duckdb"), **common)
            ]

        return crash_and_resume(sandbox, len(requests), config["kill_at"], start, landing)


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    requests = requests_for(site_urls(config["accounts"]), config["requests_per_account"])
    total = len(requests)
    contenders = {
        "project (Kafka offsets)": run_project(bench, config, requests),
        "(a) delete-and-rewrite": run_baseline(bench, config, requests, "delete_and_rewrite"),
        "(b) dedup table (DuckDB)": run_baseline(bench, config, requests, "dedup_table"),
    }
    project = contenders["project (Kafka offsets)"]
    rows = []
    for name, outcome in contenders.items():
        rows.append(
            [
                name,
                f"{outcome['calls']}",
                f"{outcome['calls'] / total:.4f}",
                f"{outcome['calls'] - total}",
                f"{outcome['landed_at_kill']} ({outcome['landed_at_kill'] / total:.0%})",
                f"{outcome['wall_s']:.1f} = {outcome['first_run_s']:.1f} + {outcome['second_run_s']:.1f}",
                f"{outcome['wall_s'] / project['wall_s']:.2f}",
                f"{outcome['calls'] / project['calls']:.3f}",
            ]
        )
    complete = all(outcome["landed"] == total for outcome in contenders.values())
    return {
        "title": "2. Resume after a crash",
        "settings": config,
        "columns": [
            "approach",
            "API calls",
            "calls / N",
            "extra calls",
            "landed at the kill",
            "wall s (1st + 2nd run)",
            "wall ÷ project",
            "calls ÷ project",
        ],
        "rows": rows,
        "baseline": (
            "the seed's two alternatives in bench/baselines.py, killed and restarted the same way against a sandbox "
            "of their own with the same settings"
        ),
        "notes": [
            f"N = {total} first-page requests ({config['accounts']} accounts); every process is SIGKILLed once the "
            f"sandbox has answered {config['kill_at']:.0%} of the distinct calls, then started again; the end is when "
            "every distinct call has succeeded.",
            f"Project: {config['project']['consumers']} consumer processes × {config['project']['concurrency']} calls "
            f"in flight, one group, session timeout {config['project']['session_timeout_s']:g} s (the restarted "
            "consumers wait for the killed members' sessions to expire before the group rebalances: part of the "
            "2nd run's wall time). Baselines: one process × "
            f"{config['baselines']['threads']} threads (a DuckDB file takes one writing process).",
            f"Every approach ended with all {total} landing files: {complete}; project's lag after the second run: "
            f"{project['lag_after']}.",
            "Calls repeated by the project = those in flight, or landed and not yet committed, at the kill: "
            f"{project['repeat_calls']} repeats.",
        ],
        "targets": [
            {
                "target": "this project <= 1.01 N calls",
                "value": f"{project['calls'] / total:.4f} N ({project['calls'] - total} extra of N = {total})",
                "met": project["calls"] <= 1.01 * total,
            }
        ],
        "raw": {name: {k: v for k, v in o.items() if k != "results"} for name, o in contenders.items()},
    }
