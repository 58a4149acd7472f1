"""2. Resume after a crash: SIGKILL at 25 %, 50 % and 75 %, run again each time; API calls / N per approach.

The consumers alone (and the two baselines) on N first-page requests; then the user's command,
`python -m reporting_assets run`, on a paged workload of its own: a clean run, then a run whose
whole process group is SIGKILLed at 25 % of the clean run's calls, the same command again killed at
50 %, again at 75 %, and once more to the end (it continues: only what is left is called). There N
is the clean run's query calls.

At each kill, what was in flight is measured from outside (`reporting_assets_tests/reliability/
in_flight.py`): the calls the sandbox had received and not answered, those answered whose page had
not landed, and the pages landed, all three with their message not committed by the group (read
with the admin client). Every call made again must be of a page in flight at a kill between it and
the previous call of that page: the repeats are held to that set, not to a count.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import baselines
from bench.calls import (
    CLI_TIMEOUT_S,
    QUERY_METHOD,
    cli_env,
    cli_kafka,
    cli_summary,
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
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec
from reporting_assets_tests.reliability import in_flight

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
        "kill_at": [0.25, 0.5, 0.75],
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
            "topics and group of its own (the killed run and its reruns share theirs); nothing else set",
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


@dataclass(frozen=True)
class KillSnapshot:
    """What is read at a kill, once every killed process is dead: the rest is read at the end."""

    signalled: float  # the sandbox's clock (time.monotonic) as the SIGKILLs went
    at: float  # once every killed process was dead
    at_ms: float  # the same moment in epoch ms (the messages' timestamps)
    committed: dict[int, int] | None  # the group's committed offsets (None: no Kafka, a baseline)
    landed: set[str]  # request ids of the pages landed
    query_calls: int  # received by the sandbox so far


def _snapshot(sandbox: SandboxServer, kafka: KafkaResource | None, landing: Path, signalled: float) -> KillSnapshot:
    at, at_ms = time.monotonic(), time.time() * 1000
    committed = kafka.committed_offsets(kafka.request_topic) if kafka is not None else None
    received = sum(1 for call in in_flight.query_calls(sandbox.calls()) if call["received_at"] <= at)
    return KillSnapshot(signalled, at, at_ms, committed, in_flight.landed_ids(landing), received)


def held_to_in_flight(
    sandbox: SandboxServer, kills: Sequence[KillSnapshot], kafka: KafkaResource | None
) -> dict[str, Any]:
    """After the last run: what was in flight at each kill, and every call made again, each explained by
    a kill at which its page was in flight (`unexplained`: those no kill explains; must be none)."""
    calls = sandbox.calls()
    on_topic = in_flight.messages(kafka, kafka.request_topic) if kafka is not None else []
    moments = [
        in_flight.measure(calls, kill.signalled, kill.at, on_topic, kill.committed or {}, kill.landed, kill.at_ms)
        for kill in kills
    ]
    again = in_flight.reissues(calls, moments if kafka is not None else [])
    # A call whose body the sandbox could not read (no dates: the process died while sending it) is no
    # page; it is the kill's if it was open across one.
    unreadable = [call for call in in_flight.query_calls(calls) if call["start_date"] is None]
    cut_off = [
        call
        for call in unreadable
        if any(call["received_at"] <= kill.at and (call["answered_at"] or kill.at) >= kill.signalled for kill in kills)
    ]
    return {
        "cut_off": len(cut_off),
        "unreadable_elsewhere": len(unreadable) - len(cut_off),
        "in_flight": [moment.counts() for moment in moments],
        "repeats": len(again),
        "repeats_by_kill": [sum(1 for r in again if r.moment == index) for index in range(len(kills))],
        "unexplained": [list(r.page) for r in again if r.moment is None],
        "timeline_dropped": calls["dropped"],
        "pages": {in_flight.page_of(call) for call in in_flight.page_calls(calls)},  # popped by the caller
    }


def crash_and_resume(
    sandbox: SandboxServer,
    total: int,
    kill_at: Sequence[float],
    start: Callable[[int], list[Child]],
    landing: Path,
    kafka: KafkaResource | None = None,
) -> dict[str, Any]:
    """Start; SIGKILL every process once `kill_at[i]` of the distinct calls have succeeded, start again,
    for each i; then wait for every success. `kafka`: the group whose in-flight pages are measured."""
    began = time.monotonic()
    kills: list[KillSnapshot] = []
    runs_s: list[float] = []
    landed_at_kill: list[int] = []
    for attempt, fraction in enumerate(kill_at, start=1):
        run_began = time.monotonic()
        started = start(attempt)
        try:
            wait_for(
                lambda fraction=fraction: _distinct_successes(sandbox.stats()) >= fraction * total,
                0.1 * total + 120,
                f"{fraction:.0%} of the calls",
                0.01,
            )
        finally:
            signalled = time.monotonic()
            for child in started:
                child.kill()  # SIGKILL, then joined: dead once this returns
        kills.append(_snapshot(sandbox, kafka, landing, signalled))
        landed_at_kill.append(len(kills[-1].landed))
        runs_s.append(kills[-1].at - run_began)
    last_began = time.monotonic()
    last = start(len(kill_at) + 1)
    try:
        wait_for(lambda: _distinct_successes(sandbox.stats()) >= total, 0.1 * total + 120, "every call", 0.02)
        done_at = time.monotonic()
        results = [child.result(timeout_s=120) for child in last]
    finally:
        for child in last:
            child.kill()
    runs_s.append(done_at - last_began)
    stats = sandbox.stats()
    return {
        "calls": stats["calls_total"],
        "query_calls": _query_calls(stats),
        "calls_at_kill": [kill.query_calls for kill in kills],
        "landed_at_kill": landed_at_kill,
        "repeat_calls": stats["repeat_calls"],
        "repeat_successes": stats["repeat_successes"],
        "landed": landed_files(landing),
        "wall_s": done_at - began,
        "runs_s": runs_s,
        "results": results,
        **{k: v for k, v in held_to_in_flight(sandbox, kills, kafka).items() if k != "pages"},
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

            outcome = crash_and_resume(sandbox, len(requests), config["kill_at"], start, landing, kafka)
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


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _kill_midway(
    env: dict[str, str], args: list[str], sandbox: SandboxServer, calls: float, log: Path
) -> tuple[float, float]:
    """Start the command; SIGKILL its whole process group once the sandbox has answered `calls` query
    calls (since its stats were reset), and wait until no process of it is left. Returns the seconds it
    ran and when the SIGKILL went (time.monotonic)."""
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
            signalled = time.monotonic()
            kill_group(process)
            process.wait()
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the command ended (rc {process.returncode}) before the kill (log: {log})")
    with contextlib.suppress(TimeoutError):  # a step process stuck in the kernel: measured as it is
        wait_for(lambda: _group_gone(process.pid), 30, "the command's processes to die", 0.01)
    return time.monotonic() - began, signalled


def _command_run(
    bench: Bench, sandbox: SandboxServer, args: list[str], label: str, kill_at_calls: Sequence[float] = ()
) -> dict[str, Any]:
    """The command on fresh topics, group, Dagster home and data folder, to its end; with `kill_at_calls`,
    first runs of it killed at those many query calls (each rerun continues on the same ones)."""
    scratch = bench.scratch(f"resume-command-{label}")
    kafka = cli_kafka(bench, f"resume-command-{label}")
    data = scratch / "data"
    env = cli_env(bench, dagster_home(scratch / "dagster_home"), data, kafka, sandbox.url)
    logs = bench.logs
    logs.mkdir(parents=True, exist_ok=True)
    sandbox.reset_stats()
    run: dict[str, Any] = {"data": data, "killed_s": [], "calls_at_kill": [], "landed_at_kill": []}
    kills: list[KillSnapshot] = []
    try:
        for number, calls in enumerate(kill_at_calls, start=1):
            log = logs / f"resume-command-{label}-{number}-cli.log"
            ran_s, signalled = _kill_midway(env, args, sandbox, calls, log)
            run["killed_s"].append(ran_s)
            kills.append(_snapshot(sandbox, kafka, data / "landing", signalled))
            run["calls_at_kill"].append(kills[-1].query_calls)
            run["landed_at_kill"].append(len(kills[-1].landed))
        returncode, wall_s, stdout = run_cli(env, args, logs / f"resume-command-{label}-cli.log")
        stats = sandbox.stats()  # since the reset: the killed runs' calls and the last run's
        dead_letters = sum(kafka.end_offsets(kafka.dead_letter_topic).values())
        lag_after = kafka.lag(kafka.request_topic).total
        held = held_to_in_flight(sandbox, kills, kafka)
    finally:
        bench.delete_topics(kafka)
    pages, rows = landed_rows(data)
    return (
        run
        | held
        | {
            "returncode": returncode,
            "wall_s": wall_s,
            "cli_summary": cli_summary(stdout),
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
    )


def run_command(bench: Bench, config: dict[str, Any]) -> dict[str, Any]:
    """The user's command: a clean run; then one SIGKILLed (whole process group) at each `kill_at` of the
    clean run's query calls, each run again on the same topics, group, Dagster home and data folder."""
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
        kill_at_calls = [fraction * clean["query_calls"] for fraction in config["kill_at"]]
        killed = _command_run(bench, sandbox, args, "killed", kill_at_calls)
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
    # A call beyond a clean run's that is no repeat asked for a page a clean run never asks for.
    killed["pages_not_in_clean"] = sorted(list(page) for page in killed.pop("pages") - clean.pop("pages"))
    return {
        "clean": clean,
        "killed": killed,
        "calls": killed["query_calls"],
        "ratio": killed["query_calls"] / clean["query_calls"],
    }


def _percentages(counts: Sequence[int], whole: int) -> str:
    return ", ".join(f"{count} ({count / whole:.0%})" for count in counts)


def _in_flight_text(outcome: dict[str, Any]) -> str:
    """Per kill: pages in flight (open + answered, not landed + landed, not committed) and repeats it explains."""
    return "; ".join(
        f"kill {index + 1}: {f['pages']} in flight ({f['open']} open + {f['answered']} answered + "
        f"{f['landed']} landed), {repeats} called again"
        for index, (f, repeats) in enumerate(zip(outcome["in_flight"], outcome["repeats_by_kill"], strict=True))
    )


def _held(outcome: dict[str, Any]) -> bool:
    """Every call made again was in flight at a kill, and every call the sandbox could not read was cut
    off by one."""
    return not outcome["unexplained"] and not outcome["unreadable_elsewhere"] and outcome["timeline_dropped"] == 0


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
    kills = ", ".join(f"{fraction:.0%}" for fraction in config["kill_at"])
    rows = []
    for name, outcome in contenders.items():
        rows.append(
            [
                name,
                f"{outcome['calls']}",
                f"{outcome['calls'] / total:.4f}",
                f"{outcome['calls'] - total}",
                _percentages(outcome["landed_at_kill"], total),
                f"{outcome['wall_s']:.1f} = " + " + ".join(f"{s:.1f}" for s in outcome["runs_s"]),
                f"{outcome['wall_s'] / project['wall_s']:.2f}",
                f"{outcome['calls'] / project['calls']:.3f}",
            ]
        )
    killed_wall = sum(killed["killed_s"]) + killed["wall_s"]
    rows += [
        ["the command (`python -m reporting_assets run`), clean run", f"{clean['query_calls']}", "1.0000", "0"]
        + ["–", f"{clean['wall_s']:.1f}", "–", "–"],
        [
            f"the command, whole process group SIGKILLed at {kills}, run again each time",
            f"{command['calls']}",
            f"{command['ratio']:.4f}",
            f"{command['calls'] - clean['query_calls']}",
            _percentages(killed["landed_at_kill"], clean["landed_pages"]),
            f"{killed_wall:.1f} = " + " + ".join(f"{s:.1f}" for s in [*killed["killed_s"], killed["wall_s"]]),
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
            "landed at the kills",
            "wall s (each run)",
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
            f"sandbox has answered {kills} of the distinct calls, started again after each kill; the end is when "
            "every distinct call has succeeded.",
            f"Project: {config['project']['consumers']} consumer processes × {config['project']['concurrency']} calls "
            f"in flight, one group, session timeout {config['project']['session_timeout_s']:g} s (the restarted "
            "consumers wait for the killed members' sessions to expire before the group rebalances: part of each "
            "later run's wall time). Baselines: one process × "
            f"{config['baselines']['threads']} threads (a DuckDB file takes one writing process).",
            f"Every approach ended with all {total} landing files: {complete}; project's lag after the last run: "
            f"{project['lag_after']}.",
            "In flight at a kill, measured from outside once every killed process is dead: the calls the sandbox "
            "had received and not answered (open), those answered whose page had not landed, and the pages "
            "landed, each with its request message at or beyond the group's committed offset (admin client). A "
            "call made again is explained by a kill between it and the page's previous call at which the page was "
            f"in flight. Project: {_in_flight_text(project)}; calls no kill explains: "
            f"{len(project['unexplained'])} {project['unexplained'][:5]}; calls cut off by a kill (their body "
            f"never arrived whole): {project['cut_off']}, calls unreadable otherwise: "
            f"{project['unreadable_elsewhere']}.",
            f"The command: its own workload and sandbox ({spec['sites']} sites × {spec['rows_per_day']} rows a day × "
            f"{spec['days']} days, {spec['dates'][0]}..{spec['dates'][-1]}, `--row-limit {spec['row_limit']}`, "
            f"{config['latency_s'] * 1000:g} ms per call, no limits), every other setting at its default; for its "
            f"rows N = the clean run's searchAnalytics.query calls ({clean['query_calls']}; the sites.list calls "
            "are not counted), and the wall and calls ÷ project do not apply. Its whole process group (the CLI and "
            "its consumer step processes) was SIGKILLed once the sandbox had received "
            f"{', '.join(str(c) for c in killed['calls_at_kill'])} query calls ({kills} of the clean run's), run "
            "again after each kill on the same topics, group, Dagster home and data folder; the last run: "
            f"`{killed['cli_summary']}` (the clean run: `{clean['cli_summary']}`).",
            f"The command's calls made again: {killed['repeats']} ({killed['repeat_successes']} answered twice); "
            f"{_in_flight_text(killed)}; calls no kill explains: {len(killed['unexplained'])} "
            f"{killed['unexplained'][:5]}; cut off by a kill: {killed['cut_off']}, unreadable otherwise: "
            f"{killed['unreadable_elsewhere']}; in the clean run: {clean['repeats']}; pages asked that a clean run never "
            f"asks for: {len(killed['pages_not_in_clean'])} {killed['pages_not_in_clean'][:5]}. Wall ÷ the clean run: "
            f"{killed_wall / clean['wall_s']:.2f} (each run of the command starts Spark and the consumer processes "
            "anew, and a rerun's consumers wait for the killed members' sessions to expire).",
            "The command's runs ended complete (exit 0, every row landed and exported, no dead letters, no lag): "
            f"clean {clean['complete']}, killed + reruns {killed['complete']} ({killed['exported_rows']} of "
            f"{killed['expected_rows']} rows exported); the last run's exports are byte for byte the clean run's: "
            f"{killed['same_exports']}. Its logs: `bench/out/logs-<mode>/resume-command-{{clean,killed-1,killed-2,"
            "killed-3,killed}-cli.log`.",
        ],
        "targets": [
            {
                "target": "this project: every call made again was in flight at a kill (measured from outside)",
                "value": f"{project['calls'] - total} extra calls of N = {total} ({project['calls'] / total:.4f} N), "
                f"{project['repeats']} calls made again, {len(project['unexplained'])} of them not in flight at a "
                f"kill; in flight at the kills: {', '.join(str(f['pages']) for f in project['in_flight'])} pages",
                "met": _held(project)
                and project["query_calls"] - total == project["repeats"] + project["cut_off"]
                and complete,
            },
            {
                "target": "the command rerun after each kill: every call beyond a clean run's was in flight at a kill",
                "value": f"{command['ratio']:.4f} × ({command['calls']} query calls, a clean run's "
                f"{clean['query_calls']}; {killed['repeats']} made again, {len(killed['unexplained'])} of them "
                "not in flight at a kill; in flight at the kills: "
                f"{', '.join(str(f['pages']) for f in killed['in_flight'])} pages; all runs complete and the same "
                f"exports: {clean['complete'] and killed['complete'] and killed['same_exports']})",
                "met": _held(killed)
                and clean["repeats"] == 0
                and command["calls"] - clean["query_calls"] == killed["repeats"] + killed["cut_off"]
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
