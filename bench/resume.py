"""2. Resume after a crash: SIGKILL at ~50 %, run again to the end; API calls / N for each approach.

The consumers alone (and the two baselines) on N first-page requests; then the user's command,
`python -m reporting_assets run`, on a paged workload of its own: a clean run, then a run whose
whole process group is SIGKILLed at ~50 % of the clean run's calls and the same command again to
the end (it continues: only what is left is called). There N is the clean run's query calls.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import baselines
from bench.calls import (
    CLI_TIMEOUT_S,
    QUERY_METHOD,
    cli_env,
    cli_kafka,
    dagster_home,
    day_rows,
    exported_rows,
    kill_group,
    landed_rows,
    run_cli,
    start_cli,
)
from bench.common import Bench, Child, landed_files, produce, requests_for, site_urls, start_child, wait_for
from bench.workers import run_consumer
from reporting_assets.demo import default_dates
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
        # The user's command at its defaults (2 consumers × 4 calls in flight, 10 calls/s per account) but
        # for the row limit: 100 rows a page, so that a (site, day) of 3 950 rows is 40 calls (39 full pages
        # and a short one), each page asked after the one before it landed. 960 calls in quick mode: a kill
        # may repeat up to 2 consumers × 4 calls in flight, under 1 % of them. Besides its calls each run of
        # the command spends tens of seconds on Spark, the step processes and the idle timeout; 12 accounts
        # (paced at 10 calls/s each) keep the calls' share of it short.
        "command": {
            "sites": 12,
            "days": 2 if bench.quick else 4,
            "rows_per_day": 3_950,
            "row_limit": 100,
            "args": "python -m reporting_assets run --start-date D1 --end-date Dn --row-limit 100",
            "environment": "KAFKA_BOOTSTRAP_SERVERS, PARTNER_API_ENDPOINT, REPORTING_DATA_DIR, DAGSTER_HOME, "
            "topics and group of its own (the killed run and its rerun share theirs); nothing else set",
        },
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


def _query_calls(stats: dict[str, Any]) -> int:
    return int(stats["calls_by_method"].get(QUERY_METHOD, 0))


def _exports(data_dir: Path) -> dict[str, bytes]:
    root = data_dir / "exports"
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.csv"))}


def _kill_midway(env: dict[str, str], args: list[str], sandbox: SandboxServer, calls: float, log: Path) -> float:
    """Start the command; SIGKILL its whole process group once the sandbox has answered `calls` query
    calls. Returns the seconds it ran."""
    began = time.monotonic()
    with log.open("w") as out:
        process = start_cli(env, args, out, stdout=out)
        try:
            wait_for(
                lambda: process.poll() is not None or _query_calls(sandbox.stats()) >= calls,
                CLI_TIMEOUT_S,
                f"{calls:.0f} query calls",
                0.01,
            )
        finally:
            kill_group(process)
            process.wait()
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the command ended (rc {process.returncode}) before the kill (log: {log})")
    return time.monotonic() - began


def _command_run(
    bench: Bench, sandbox: SandboxServer, args: list[str], label: str, kill_at_calls: float | None = None
) -> dict[str, Any]:
    """The command on fresh topics, group, Dagster home and data folder, to its end; with `kill_at_calls`,
    first a run of it killed at that many query calls (the rerun continues on the same ones)."""
    scratch = bench.scratch(f"resume-command-{label}")
    kafka = cli_kafka(bench, f"resume-command-{label}")
    data = scratch / "data"
    env = cli_env(bench, dagster_home(scratch / "dagster_home"), data, kafka, sandbox.url)
    logs = bench.logs
    logs.mkdir(parents=True, exist_ok=True)
    sandbox.reset_stats()
    run: dict[str, Any] = {"data": data}
    try:
        if kill_at_calls is not None:
            run["killed_s"] = _kill_midway(env, args, sandbox, kill_at_calls, logs / f"resume-command-{label}-cli.log")
            at_kill = sandbox.stats()
            run |= {
                "calls_at_kill": _query_calls(at_kill),
                "repeats_at_kill": at_kill["repeat_calls"],
                "landed_at_kill": landed_rows(data)[0],
            }
        rerun = "" if kill_at_calls is None else "-rerun"
        returncode, wall_s, stdout = run_cli(env, args, logs / f"resume-command-{label}{rerun}-cli.log")
        stats = sandbox.stats()  # since the reset: the killed run's calls and the rerun's
        dead_letters = sum(kafka.end_offsets(kafka.dead_letter_topic).values())
        lag_after = kafka.lag(kafka.request_topic).total
    finally:
        bench.delete_topics(kafka)
    pages, rows = landed_rows(data)
    return run | {
        "returncode": returncode,
        "wall_s": wall_s,
        "cli_summary": stdout.strip().splitlines()[0] if stdout.strip() else "",
        "query_calls": _query_calls(stats),
        "calls_by_method": stats["calls_by_method"],
        "repeat_calls": stats["repeat_calls"],
        "repeat_successes": stats["repeat_successes"],
        "landed_pages": pages,
        "landed_rows": rows,
        "exported_rows": exported_rows(data),
        "dead_letters": dead_letters,
        "lag_after": lag_after,
    }


def run_command(bench: Bench, config: dict[str, Any]) -> dict[str, Any]:
    """The user's command: a clean run; then one SIGKILLed (whole process group) at `kill_at` of the clean
    run's query calls and run again to the end on the same topics, group, Dagster home and data folder."""
    command = config["command"]
    dates = default_dates(command["days"])
    command["dates"] = dates
    sandbox_settings = SandboxConfig(
        seed=8,
        sites=[SiteSpec(url, command["rows_per_day"]) for url in site_urls(command["sites"])],
        per_site_qps=None,
        global_qps=None,
        latency_s=config["latency_s"],
        rows_jitter=0.0,
    )
    args = ["--start-date", dates[0], "--end-date", dates[-1], "--row-limit", str(command["row_limit"])]
    with SandboxServer(sandbox_settings) as sandbox:
        clean = _command_run(bench, sandbox, args, "clean")
        killed = _command_run(bench, sandbox, args, "killed", config["kill_at"] * clean["query_calls"])
    expected = sum(day_rows(sandbox_settings, dates))
    for run in (clean, killed):
        run["expected_rows"] = expected
        run["complete"] = (
            run["returncode"] == 0
            and run["landed_rows"] == run["exported_rows"] == expected
            and run["dead_letters"] == 0
            and run["lag_after"] == 0
        )
    killed["same_exports"] = _exports(killed.pop("data")) == _exports(clean.pop("data"))
    return {
        "clean": clean,
        "killed": killed,
        "calls": killed["query_calls"],
        "ratio": killed["query_calls"] / clean["query_calls"],
    }


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
    command = run_command(bench, config)
    clean, killed = command["clean"], command["killed"]
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
    killed_wall = killed["killed_s"] + killed["wall_s"]
    rows += [
        ["the command (`python -m reporting_assets run`), clean run", f"{clean['query_calls']}", "1.0000", "0"]
        + ["–", f"{clean['wall_s']:.1f}", "–", "–"],
        [
            "the command, whole process group SIGKILLed, then run again",
            f"{command['calls']}",
            f"{command['ratio']:.4f}",
            f"{command['calls'] - clean['query_calls']}",
            f"{killed['landed_at_kill']} ({killed['landed_at_kill'] / clean['landed_pages']:.0%})",
            f"{killed_wall:.1f} = {killed['killed_s']:.1f} + {killed['wall_s']:.1f}",
            "–",
            "–",
        ],
    ]
    complete = all(outcome["landed"] == total for outcome in contenders.values())
    spec = config["command"]
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
            f"The command: its own workload and sandbox ({spec['sites']} sites × {spec['rows_per_day']} rows a day × "
            f"{spec['days']} days, {spec['dates'][0]}..{spec['dates'][-1]}, `--row-limit {spec['row_limit']}`, "
            f"{config['latency_s'] * 1000:g} ms per call, no limits), every other setting at its default; for its "
            f"rows N = the clean run's searchAnalytics.query calls ({clean['query_calls']}; the sites.list calls "
            "are not counted), and the wall and calls ÷ project do not apply. Its whole process group (the CLI and "
            f"its consumer step processes) was SIGKILLed once the sandbox had answered {killed['calls_at_kill']} "
            f"query calls ({killed['calls_at_kill'] / clean['query_calls']:.0%} of the clean run's; "
            f"{killed['repeats_at_kill']} repeats by then), then the same command was run again on the same topics, "
            f"group, Dagster home and data folder: `{killed['cli_summary']}` (the clean run: "
            f"`{clean['cli_summary']}`).",
            f"The command's calls repeated after the kill (those in flight, or landed and not yet committed, at the "
            f"kill): {killed['repeat_calls']} ({killed['repeat_successes']} answered twice); in the clean run: "
            f"{clean['repeat_calls']}. Wall ÷ the clean run: {killed_wall / clean['wall_s']:.2f} (each run of the "
            "command starts Spark and the consumer processes anew, and the rerun's consumers wait for the killed "
            "members' sessions to expire).",
            "The command's runs ended complete (exit 0, every row landed and exported, no dead letters, no lag): "
            f"clean {clean['complete']}, killed + rerun {killed['complete']} ({killed['exported_rows']} of "
            f"{killed['expected_rows']} rows exported); the rerun's exports are byte for byte the clean run's: "
            f"{killed['same_exports']}. Its logs: `bench/out/logs-<mode>/resume-command-{{clean,killed,killed-rerun}}-cli.log`.",
        ],
        "targets": [
            {
                "target": "this project <= 1.01 N calls",
                "value": f"{project['calls'] / total:.4f} N ({project['calls'] - total} extra of N = {total})",
                "met": project["calls"] <= 1.01 * total,
            },
            {
                "target": "the command rerun after a kill <= 1.01 × a clean run's calls",
                "value": f"{command['ratio']:.4f} × ({command['calls']} query calls, a clean run's "
                f"{clean['query_calls']}; {killed['repeat_calls']} repeats; killed at {killed['calls_at_kill']}; "
                f"both runs complete and the same exports: "
                f"{clean['complete'] and killed['complete'] and killed['same_exports']})",
                "met": command["calls"] <= 1.01 * clean["query_calls"]
                and clean["complete"]
                and killed["complete"]
                and killed["same_exports"],
            },
        ],
        "raw": {
            **{name: {k: v for k, v in o.items() if k != "results"} for name, o in contenders.items()},
            "command": command,
        },
    }
