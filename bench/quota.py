"""6. Load quota: the same download with the partner's load-quota refusals (403 quotaExceeded) off and on.

Google refuses expensive Search Console queries once a site's load quota for a 10-minute window is
spent and asks callers to wait ~15 minutes. Here the window is a few seconds and the consumers wait
1.5 windows (the same ratio). With the quota on, every account needs several windows, so the wall
time is bounded below by the waits; what matters is that the run ends with every row, without dead
letters, with one refused call per wait and nothing hammering the partner meanwhile.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.calls import recorded_sandbox
from bench.common import Bench, children, landed_files, produce, requests_for, site_urls
from bench.workers import consumer_group_jobs
from reporting_assets.core.landing import KEY_COLUMNS
from reporting_assets.sandbox import SandboxConfig, SiteSpec

PARTITIONS = 4
# A call started this soon after a refusal was answered was sent before the consumer could read it.
ANSWER_GRACE_S = 0.05


def quota_waits(calls: list[dict[str, Any]], wait_s: float) -> dict[str, Any]:
    """From the sandbox's log of query calls: per site, each refusal that pauses it (one not under way
    when an earlier one was answered), the pause observed (its answer to the site's next call), the
    refusals of calls already under way, and any call started during a pause (hammering)."""
    by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        by_site[call["site"]].append(call)
    pauses: list[float] = []
    refused = under_way = during_pause = unfinished = 0
    for site_calls in by_site.values():
        told: float | None = None  # when the refusal that paused the site was answered
        for call in sorted(site_calls, key=lambda c: c["at"]):
            refused += call["status"] == 403
            if told is not None and call["at"] < told + ANSWER_GRACE_S:
                under_way += call["status"] == 403
                continue
            if told is not None:
                pause = call["at"] - told
                if pause < wait_s:
                    during_pause += 1
                    continue
                pauses.append(pause)
                told = None
            if call["status"] == 403:
                told = call["at"] + call["took_s"]
        unfinished += told is not None  # a pause with no call after it: the run ended refused
    return {
        "refused": refused,
        "pauses": len(pauses) + unfinished,
        "under_way_refused": under_way,
        "calls_during_pause": during_pause,
        "shortest_pause_s": min(pauses, default=None),
        "median_pause_s": statistics.median(pauses) if pauses else None,
        "unfinished_pauses": unfinished,
    }


def landed_truth(root: Path) -> dict[str, Any]:
    """The rows of every landed Parquet file: how many, how many distinct, per (account, date)."""
    import pyarrow.dataset as ds

    files = [str(path) for path in root.rglob("*.parquet") if not path.name.startswith(".")]
    if not files:
        return {"rows": 0, "distinct_rows": 0, "partitions": {}}
    table = ds.dataset(files, format="parquet").to_table(columns=["account", "date", *KEY_COLUMNS.values()])
    keys = list(zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True))
    partitions: dict[tuple[str, str], int] = defaultdict(int)
    for key in set(keys):
        partitions[(key[0], str(key[1]))] += 1
    return {"rows": len(keys), "distinct_rows": len(set(keys)), "partitions": dict(partitions)}


def settings(bench: Bench) -> dict[str, Any]:
    return {
        "accounts": 6 if bench.quick else 12,
        "requests_per_account": 24 if bench.quick else 40,
        "rows_per_day": 20,
        "per_site_qps": 10.0,
        "latency_s": 0.02,
        "partitions": PARTITIONS,
        "load_quota": 10,  # expensive queries per site and window
        "load_quota_window_s": 4.0,
        "consumers": 2,
        "consumer": {
            "concurrency": 4,
            "max_in_flight_per_account": 2,
            "idle_timeout_s": 2.0,
            "qps_per_account": 10.0,
            "quota_wait_s": 6.0,
        },
    }


def run_once(bench: Bench, config: dict[str, Any], quota: bool) -> dict[str, Any]:
    accounts = site_urls(config["accounts"])
    sandbox_config = SandboxConfig(
        seed=6,
        sites=[SiteSpec(url, config["rows_per_day"]) for url in accounts],
        per_site_qps=config["per_site_qps"],
        global_qps=None,
        latency_s=config["latency_s"],
        load_quota=config["load_quota"] if quota else None,
        load_quota_window_s=config["load_quota_window_s"],
        rows_jitter=0.0,
    )
    kafka = bench.kafka("quota", config["partitions"])
    requests = requests_for(accounts, config["requests_per_account"])
    produce(kafka, requests)
    landing = bench.scratch("quota-landing")
    label = "on" if quota else "off"
    try:
        with recorded_sandbox(sandbox_config) as (sandbox, log):
            jobs = consumer_group_jobs(
                config["consumers"],
                kafka,
                sandbox.url,
                str(landing),
                config["consumer"],
                bench.log_file(f"quota-{label}"),
            )
            started = time.monotonic()
            with children(jobs) as running:
                results = [child.result(timeout_s=600) for child in running]
            wall_s = time.monotonic() - started
            stats = sandbox.stats()
        request_lag = kafka.lag(kafka.request_topic).total
        delay_lag = kafka.lag(kafka.delay_topic).total
        dead_letters = sum(kafka.end_offsets(kafka.dead_letter_topic).values())
    finally:
        bench.delete_topics(kafka)
    truth = landed_truth(landing)
    expected = {(r.account, r.date) for r in requests}
    return {
        "quota": quota,
        "requests": len(requests),
        "wall_s": wall_s,
        "calls": stats["calls_total"],
        "quota_refused": stats["quota_refused"],
        "rate_limited": stats["rate_limited"],
        "landed_files": landed_files(landing),
        # Read from the landed files: every row of every file, so a page landed twice counts twice.
        "rows": truth["rows"],
        "distinct_rows": truth["distinct_rows"],
        "rows_as_partner": set(truth["partitions"]) == expected
        and all(n == config["rows_per_day"] for n in truth["partitions"].values()),
        "waits": quota_waits(log.calls, config["consumer"]["quota_wait_s"]),
        "delayed": sum(r["delayed"] for r in results),
        "released": sum(r["released"] for r in results),
        "dead_lettered": sum(r["dead_lettered"] for r in results) + dead_letters,
        "lag_after": request_lag + delay_lag,
    }


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    off, on = (run_once(bench, config, quota) for quota in (False, True))
    per_account = config["requests_per_account"]
    wait_s = config["consumer"]["quota_wait_s"]
    in_flight = config["consumer"]["max_in_flight_per_account"]
    # Configuration's minimum, for comparison: `load_quota` calls a window, one wait per window spent.
    waits = math.ceil(per_account / config["load_quota"]) - 1
    floor_s = waits * wait_s
    observed = on["waits"]
    # A refusal pauses the account; only its calls already under way (at most `in_flight`) share it.
    refusal_bound = observed["pauses"] * in_flight
    expected_rows = on["requests"] * config["rows_per_day"]
    rows = [
        [
            "off" if not r["quota"] else f"on ({config['load_quota']} per {config['load_quota_window_s']:g} s)",
            f"{r['wall_s']:.1f}",
            f"{r['wall_s'] / off['wall_s']:.2f}",
            f"{r['calls']} / {r['requests']}",
            f"{r['calls'] / off['calls']:.3f}",
            str(r["quota_refused"]),
            f"{r['waits']['pauses']} / {r['waits']['under_way_refused']} / {r['waits']['calls_during_pause']}",
            _seconds(r["waits"]["shortest_pause_s"]),
            str(r["rate_limited"]),
            f"{r['delayed']} / {r['released']}",
            f"{r['landed_files']} ({r['rows']} rows, {r['distinct_rows']} distinct)",
            str(r["dead_lettered"]),
            str(r["lag_after"]),
        ]
        for r in (off, on)
    ]
    complete = all(
        r["landed_files"] == r["requests"]
        and r["rows"] == r["distinct_rows"] == expected_rows
        and r["rows_as_partner"]
        and r["dead_lettered"] == 0
        and r["lag_after"] == 0
        for r in (off, on)
    )
    return {
        "title": "6. Load quota (403 quotaExceeded) off and on",
        "settings": config,
        "columns": [
            "load quota",
            "wall s",
            "wall ÷ off",
            "calls / requests",
            "calls ÷ off",
            "403 quotaExceeded",
            "pauses / refused under way / calls during a pause",
            "shortest pause s",
            "429",
            "delayed / released",
            "landed files (rows read from them)",
            "dead letters",
            "lag after",
        ],
        "rows": rows,
        "baseline": "the same download with the load quota off, in the same run",
        "notes": [
            f"{config['accounts']} accounts × {per_account} expensive first-page requests, {config['consumers']} consumers "
            f"× {config['consumer']['concurrency']} calls in flight. A refused request goes to the delay topic with its "
            f"due time ({wait_s:g} s later, 1.5 windows like Google's 15 min after a 10-min "
            "window), its offset is committed, and the account's later requests follow it there without a call.",
            "Pauses, from the sandbox's log of every query call (start, answer, site, status): a refusal pauses its "
            "site unless the call was already under way when an earlier refusal was answered (started before that "
            f"answer + {ANSWER_GRACE_S:g} s); the pause is from that answer to the site's next call, and any call "
            f"started less than {wait_s:g} s after it is a call during a pause (hammering). Observed pauses "
            f"{observed['pauses']} (median {_seconds(observed['median_pause_s'])} s); configuration's minimum "
            f"{waits} an account = {waits * config['accounts']}.",
            f"Rows: read from every landed Parquet file (each file's rows, so a page landed twice counts twice), "
            f"against the partner's truth: {config['rows_per_day']} distinct rows for each requested (account, "
            f"date), {expected_rows} in all.",
            f"Lower bound of the wall time with the quota on: {waits} waits of {wait_s:g} s per account "
            f"= {floor_s:.0f} s (accounts wait side by side).",
        ],
        "targets": [
            {
                "target": "quota on and off: every row landed once (read from the files), no dead letters, nothing left waiting",
                "value": f"{on['landed_files']}/{on['requests']} pages, {on['rows']} rows, {on['distinct_rows']} "
                f"distinct, of {expected_rows} (off: {off['rows']}, {off['distinct_rows']} distinct), "
                f"{on['dead_lettered']} dead letters, lag {on['lag_after']}",
                "met": complete,
            },
            {
                "target": "quota on: no call during a pause, and refused calls only those under way when a pause began "
                "(bound: pauses observed × calls in flight per account)",
                "value": f"{on['quota_refused']} refused, bound {refusal_bound} ({observed['pauses']} pauses observed × "
                f"{in_flight}); {observed['calls_during_pause']} calls during a pause; shortest pause "
                f"{_seconds(observed['shortest_pause_s'])} s (wait {wait_s:g} s)",
                "met": on["quota_refused"] <= refusal_bound
                and observed["calls_during_pause"] == 0
                and observed["pauses"] > 0,
            },
        ],
        "raw": [off, on],
    }


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
