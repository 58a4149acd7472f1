"""6. Load quota: the same download with the partner's load-quota refusals (403 quotaExceeded) off and on.

Google refuses expensive Search Console queries once a site's load quota for a 10-minute window is
spent and asks callers to wait ~15 minutes. Here the window is a few seconds and the consumers wait
1.5 windows (the same ratio). With the quota on, every account needs several windows, so the wall
time is bounded below by the waits; what matters is that the run ends with every row, without dead
letters, with one refused call per wait and nothing hammering the partner meanwhile.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.common import Bench, children, landed_files, landed_rows, produce, requests_for, site_urls
from bench.workers import consumer_group_jobs
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec

PARTITIONS = 4


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
        with SandboxServer(sandbox_config) as sandbox:
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
    return {
        "quota": quota,
        "requests": len(requests),
        "wall_s": wall_s,
        "calls": stats["calls_total"],
        "quota_refused": stats["quota_refused"],
        "rate_limited": stats["rate_limited"],
        "landed_files": landed_files(landing),
        "rows": landed_rows(landing),  # each page once (a page landed twice counts once)
        "delayed": sum(r["delayed"] for r in results),
        "released": sum(r["released"] for r in results),
        "dead_lettered": sum(r["dead_lettered"] for r in results) + dead_letters,
        "lag_after": request_lag + delay_lag,
    }


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    off, on = (run_once(bench, config, quota) for quota in (False, True))
    per_account = config["requests_per_account"]
    # Each account gets `load_quota` calls a window; a refusal costs one wait of `quota_wait_s`.
    waits = math.ceil(per_account / config["load_quota"]) - 1
    floor_s = waits * config["consumer"]["quota_wait_s"]
    # A refusal pauses the account; only its calls already under way can be refused with it.
    refusal_bound = config["accounts"] * waits * config["consumer"]["max_in_flight_per_account"]
    rows = [
        [
            "off" if not r["quota"] else f"on ({config['load_quota']} per {config['load_quota_window_s']:g} s)",
            f"{r['wall_s']:.1f}",
            f"{r['wall_s'] / off['wall_s']:.2f}",
            f"{r['calls']} / {r['requests']}",
            f"{r['calls'] / off['calls']:.3f}",
            str(r["quota_refused"]),
            str(r["rate_limited"]),
            f"{r['delayed']} / {r['released']}",
            f"{r['landed_files']} ({r['rows']} rows)",
            str(r["dead_lettered"]),
            str(r["lag_after"]),
        ]
        for r in (off, on)
    ]
    complete = all(
        r["landed_files"] == r["requests"]
        and r["rows"] == off["rows"]
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
            "429",
            "delayed / released",
            "landed (rows)",
            "dead letters",
            "lag after",
        ],
        "rows": rows,
        "baseline": "the same download with the load quota off, in the same run",
        "notes": [
            f"{config['accounts']} accounts × {per_account} expensive first-page requests, {config['consumers']} consumers "
            f"× {config['consumer']['concurrency']} calls in flight. A refused request goes to the delay topic with its "
            f"due time ({config['consumer']['quota_wait_s']:g} s later, 1.5 windows like Google's 15 min after a 10-min "
            "window), its offset is committed, and the account's later requests follow it there without a call.",
            f"Lower bound with the quota on: {waits} waits of {config['consumer']['quota_wait_s']:g} s per account "
            f"= {floor_s:.0f} s (accounts wait side by side).",
        ],
        "targets": [
            {
                "target": "quota on: every row landed, no dead letters, nothing left waiting",
                "value": f"{on['landed_files']}/{on['requests']} pages, {on['rows']} rows (off: {off['rows']}), "
                f"{on['dead_lettered']} dead letters, lag {on['lag_after']}",
                "met": complete,
            },
            {
                "target": "quota on: refused calls only those under way when an account's quota ran out (nothing hammers the partner)",
                "value": f"{on['quota_refused']} refused, bound {refusal_bound} ({config['accounts']} accounts × "
                f"{waits} waits × {config['consumer']['max_in_flight_per_account']} calls in flight per account)",
                "met": on["quota_refused"] <= refusal_bound,
            },
        ],
        "raw": [off, on],
    }
