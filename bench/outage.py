"""8. A partner outage mid-run: every call answered 503 for a while (Google's two-minute outage).

The consumers try a failing call a few times in memory (`max_attempts`, with backoff), then park it on
the delay topic for the first of `transient_waits_s`, holding its account meanwhile (its other
requests are parked with it, without a call); the other accounts go on. The run must end with every
row, no dead letter, and few calls wasted on the outage: at most `max_attempts` per request in flight
per account and round of waits that fell inside the outage.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from bench.common import Bench, children, landed_files, produce, requests_for, site_urls, wait_for
from bench.workers import consumer_group_jobs
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.sandbox import FaultSpec, SandboxConfig, SandboxServer, SiteSpec

PARTITIONS = 4


def settings(bench: Bench) -> dict[str, Any]:
    waits = list(ConsumerTuning().transient_waits_s)
    scale = 0.1 if bench.quick else 1.0  # quick: the outage and the waits a tenth as long
    return {
        "accounts": 4 if bench.quick else 8,
        "requests_per_account": 10 if bench.quick else 20,
        "rows_per_day": 20,
        "latency_s": 0.02,
        "partitions": PARTITIONS,
        "consumers": 2,
        "outage_s": 120.0 * scale,
        "outage_after_share": 0.3,  # the outage begins once this share of the calls is answered
        "consumer": {
            "idle_timeout_s": 2.0,
            "qps_per_account": 4.0,
            "transient_waits_s": [wait * scale for wait in waits],
        },
    }


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    tuning = ConsumerTuning(**config["consumer"])
    accounts = site_urls(config["accounts"])
    sandbox_config = SandboxConfig(
        seed=8,
        sites=[SiteSpec(url, config["rows_per_day"]) for url in accounts],
        per_site_qps=None,
        global_qps=None,
        latency_s=config["latency_s"],
        rows_jitter=0.0,
    )
    kafka = bench.kafka("outage", config["partitions"])
    requests = requests_for(accounts, config["requests_per_account"])
    produce(kafka, requests)
    landing = bench.scratch("outage-landing")
    try:
        with SandboxServer(sandbox_config) as sandbox:
            jobs = consumer_group_jobs(
                config["consumers"], kafka, sandbox.url, str(landing), config["consumer"], bench.log_file("outage")
            )
            started = time.monotonic()
            with children(jobs) as running:
                wait_for(
                    lambda: (
                        sandbox.stats()["status_counts"].get("200", 0) >= config["outage_after_share"] * len(requests)
                    ),
                    300,
                    "the calls before the outage",
                )
                sandbox.update_config(faults=[FaultSpec("http_503", for_s=config["outage_s"])])
                outage_began_s = time.monotonic() - started
                budget_s = config["outage_s"] + sum(tuning.transient_waits_s) + 600
                results = [child.result(timeout_s=budget_s) for child in running]
            wall_s = time.monotonic() - started
            stats = sandbox.stats()
        lag_after = kafka.lag(kafka.request_topic).total + kafka.lag(kafka.delay_topic).total
        dead_letters = sum(kafka.end_offsets(kafka.dead_letter_topic).values())
    finally:
        bench.delete_topics(kafka)

    # Rounds of tries that met the outage: the first, and one after each wait that ended inside it.
    ends = list(itertools.accumulate(tuning.transient_waits_s))
    rounds = 1 + sum(1 for end in ends if end < config["outage_s"])
    bound = config["accounts"] * tuning.max_in_flight_per_account * tuning.max_attempts * rounds
    failed = stats["faults_served"].get("http_503", 0)
    minimum = len(requests)  # one page each
    rows = sum(r["rows"] for r in results)
    complete = landed_files(landing) == len(requests) and dead_letters == 0 and lag_after == 0
    return {
        "title": "8. A partner outage mid-run (every call 503)",
        "settings": config,
        "columns": [
            "outage s",
            "began at s",
            "wall s",
            "calls",
            "minimum",
            "calls ÷ minimum",
            "503s",
            "503 bound",
            "delayed / released",
            "landed (rows)",
            "dead letters",
            "lag after",
        ],
        "rows": [
            [
                f"{config['outage_s']:g}",
                f"{outage_began_s:.1f}",
                f"{wall_s:.1f}",
                str(stats["calls_total"]),
                str(minimum),
                f"{stats['calls_total'] / minimum:.2f}",
                str(failed),
                str(bound),
                f"{sum(r['delayed'] for r in results)} / {sum(r['released'] for r in results)}",
                f"{landed_files(landing)} ({rows} rows)",
                str(dead_letters),
                str(lag_after),
            ]
        ],
        "baseline": "the minimum: one call per request (each is one short page)",
        "notes": [
            f"{config['accounts']} accounts × {config['requests_per_account']} one-page requests, "
            f"{config['consumers']} consumers at the default tuning but for the pace; waits "
            f"{', '.join(f'{w:g}' for w in tuning.transient_waits_s)} s, {tuning.max_attempts} tries in memory each round.",
            f"503 bound: {config['accounts']} accounts × {tuning.max_in_flight_per_account} calls in flight per account "
            f"× {tuning.max_attempts} tries × {rounds} rounds of tries inside the outage.",
        ],
        "targets": [
            {
                "target": "every row landed, no dead letter, nothing left waiting",
                "value": f"{landed_files(landing)}/{len(requests)} pages, {dead_letters} dead letters, lag {lag_after}",
                "met": complete,
            },
            {
                "target": "calls spent on the outage within the bound (a held account's other requests cost no call)",
                "value": f"{failed} answered 503, bound {bound}",
                "met": failed <= bound,
            },
        ],
        "raw": {"results": results, "stats": stats},
    }
