"""Rebalances mid-run: a consumer joins a running group, another leaves it (SIGTERM: a clean stop).

Partitions change owners while calls are in flight; the new owners start from the committed offsets
and skip what the previous owner already landed. Same result as a clean run, byte for byte, and
the calls made twice stay within what the consumers handing partitions over had started.
"""

from __future__ import annotations

import dataclasses

from reporting_assets_tests.reliability import trials
from reporting_assets_tests.reliability.conftest import record

WORKLOAD = dataclasses.replace(trials.SMALL, name="rebalance", latency_s=0.08)


def request_partitions(event: dict) -> set[str]:
    return {p for p in event["partitions"] if ".delayed" not in p}


def test_a_consumer_joining_and_one_leaving_mid_run(trials_env: trials.TrialEnv, clean_run: trials.TrialResult):
    plan = trials.Plan((trials.Step(3, "join"), trials.Step(14, "leave", pick=0)))
    result = trials.run_trial(trials_env, WORKLOAD, seed=None, plan=plan)
    record("rebalances", result)
    assert trials.problems(result, clean_run) == [], trials.describe(result)
    assert (result.joins, result.leaves, result.restarts) == (1, 1, 0)
    assert result.export_digests == clean_run.export_digests

    by_pid: dict[int, list[dict]] = {}
    for event in result.events:
        by_pid.setdefault(event["pid"], []).append(event)
    names = {events[0]["name"]: events for events in by_pid.values() if events[0]["event"] == "start"}
    # The joiner got partitions and downloaded pages of them, unless the partitions it drew had no work
    # left (a small account done early; seen once in CI): then it stopped because they were drained.
    joiner = names["consumer-2"]
    assert any(request_partitions(e) for e in joiner if e["event"] == "assigned")
    joiner_stats = next(e for e in joiner if e["event"] == "exit")["stats"]
    assert joiner_stats["landed"] > 0 or joiner_stats["stopped_because"].startswith("topic drained"), joiner_stats
    # The leaver stopped because it was asked to, after downloading pages, with everything committed.
    leaver = next(
        events
        for events in names.values()
        if any(e["event"] == "exit" and e["stats"]["stopped_because"] == "asked to stop" for e in events)
    )
    leaver_exit = next(e for e in leaver if e["event"] == "exit")
    assert leaver_exit["stats"]["landed"] > 0
    # Someone took over the leaver's partitions.
    leaver_partitions = set().union(*(request_partitions(e) for e in leaver if e["event"] == "assigned"))
    others = [events for events in names.values() if events is not leaver]
    taken = set().union(*(request_partitions(e) for events in others for e in events if e["event"] == "assigned"))
    assert leaver_partitions <= taken
    trials.cleanup(result)
