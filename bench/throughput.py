"""1. Throughput against the partner's limit: 1, 2 and 4 consumers against S accounts at q calls/s each."""

from __future__ import annotations

from typing import Any

from bench.common import Bench, StatsSampler, children, partition_spread, produce, requests_for, site_urls
from bench.workers import consumer_group_jobs
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec

PARTITIONS = 8


def settings(bench: Bench) -> dict[str, Any]:
    accounts, qps = (16, 2.0) if bench.quick else (32, 3.0)
    seconds = 15 if bench.quick else 30  # at the limit, each run lasts about this long
    return {
        "accounts": accounts,
        "per_site_qps": qps,
        # None: each bucket holds one second's worth (the sandbox's default): q calls per account,
        # and the global bucket 1.5·S·q. A 2-call global bucket instead refuses the few calls that arrive
        # together whenever several accounts' paces line up, which no per-minute project quota does.
        "burst": None,
        "global_qps": accounts * qps * 1.5,
        "latency_s": 0.03,
        "rows_per_day": 20,
        "requests_per_account": int(qps * seconds),
        "partitions": PARTITIONS,
        "consumer": {"concurrency": 4, "idle_timeout_s": 2.0},
        # (consumers, qps_per_account ÷ q): the pace at the limit, then 10 % above it (the pacer must adapt down).
        "runs": [[1, 1.0], [2, 1.0], [4, 1.0], [4, 1.1]],
        "steady_window": [0.1, 0.9],
    }


def run_once(bench: Bench, config: dict[str, Any], consumers: int, pace: float) -> dict[str, Any]:
    accounts = site_urls(config["accounts"])
    sandbox_config = SandboxConfig(
        seed=1,
        sites=[SiteSpec(url, config["rows_per_day"]) for url in accounts],
        per_site_qps=config["per_site_qps"],
        global_qps=config["global_qps"],
        burst=config["burst"],
        latency_s=config["latency_s"],
        rows_jitter=0.0,
    )
    kafka = bench.kafka("throughput", config["partitions"])
    requests = requests_for(accounts, config["requests_per_account"])
    produce(kafka, requests)
    landing = bench.scratch("throughput-landing")
    limit = config["accounts"] * config["per_site_qps"]
    try:
        with SandboxServer(sandbox_config) as sandbox, StatsSampler(sandbox.stats) as sampler:
            consumer_settings = {**config["consumer"], "qps_per_account": pace * config["per_site_qps"]}
            log_to = bench.log_file(f"throughput-{consumers}x{pace:g}q")
            jobs = consumer_group_jobs(consumers, kafka, sandbox.url, str(landing), consumer_settings, log_to)
            with children(jobs) as running:
                # At the limit a run takes requests / (S·q) seconds; far longer means a stalled consumer.
                deadline_s = 4 * len(requests) / limit + 120
                results = [child.result(timeout_s=deadline_s) for child in running]
            stats = sandbox.stats()
    finally:
        bench.delete_topics(kafka)
    # Steady: once the startup rebalances are over (no consumer's assignment changes any more before
    # the end of the window), from 10 % of the successes, until 90 % of them.
    changes = [at for r in results for at in r["assignment_changes"]]
    window = sampler.window(*config["steady_window"], changes=changes)
    if window is None:
        raise RuntimeError(f"{consumers} consumers: the group never settled before 90 % of the calls were made")
    low, high = window
    first, last = sampler.busy_span()
    steady_rate = (high.ok - low.ok) / (high.at - low.at)
    steady_429 = (high.throttled - low.throttled) / max(high.calls - low.calls, 1)
    whole_rate = (last.ok - first.ok) / (last.at - first.at)
    landed = sum(r["landed"] for r in results)
    return {
        "consumers": consumers,
        "pace": pace,
        "requests": len(requests),
        "landed": landed,
        "calls": stats["calls_total"],
        "rate_limited": stats["rate_limited"],
        "share_429": stats["rate_limited"] / max(stats["calls_total"], 1),
        "steady_share_429": steady_429,
        # A pace above the limit costs each account at least one 429 before it knows the limit.
        "settling_share_429": max(0, stats["rate_limited"] - config["accounts"]) / max(stats["calls_total"], 1),
        "steady_calls_per_s": steady_rate,
        "steady_fraction": steady_rate / limit,
        "whole_calls_per_s": whole_rate,
        "whole_fraction": whole_rate / limit,
        "busy_s": last.at - first.at,
        "settled_after_s": max(0.0, low.at - first.at),
        "steady_s": high.at - low.at,
        "per_consumer_landed": [r["landed"] for r in results],
        "cpu_s": sum(r["cpu_s"] for r in results),
        "dead_lettered": sum(r["dead_lettered"] for r in results),
        "consumer_results": [{k: v for k, v in r.items() if k != "final_rates"} for r in results],
        "samples": [(round(s.at - sampler.samples[0].at, 2), s.ok) for s in sampler.samples[::4]],
        "min_final_rate": min((rate for r in results for rate in r["final_rates"].values()), default=None),
    }


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    limit = config["accounts"] * config["per_site_qps"]
    runs = [run_once(bench, config, consumers, pace) for consumers, pace in config["runs"]]
    spread = partition_spread(site_urls(config["accounts"]), config["partitions"])
    rows = [
        [
            str(r["consumers"]),
            f"{r['pace']:g} q",
            f"{r['steady_calls_per_s']:.1f}",
            f"{r['steady_fraction']:.3f}",
            f"{r['whole_fraction']:.3f}",
            f"{r['share_429'] * 100:.2f} % ({r['steady_share_429'] * 100:.2f} %)",
            f"{r['calls']} / {r['requests']}",
            f"{r['busy_s']:.1f} ({r['settled_after_s']:.1f})",
            " / ".join(map(str, r["per_consumer_landed"])),
        ]
        for r in runs
    ]
    four = next(r for r in runs if r["consumers"] == 4 and r["pace"] == 1.0)
    over = next((r for r in runs if r["consumers"] == 4 and r["pace"] > 1.0), None)
    return {
        "title": "1. Throughput against the partner's rate limit",
        "settings": config,
        "columns": [
            "consumers",
            "pace per account",
            "calls/s (steady)",
            "÷ limit (steady)",
            "÷ limit (whole run)",
            "429 share (steady)",
            "calls / requests",
            "busy s (steady from)",
            "landed per consumer",
        ],
        "rows": rows,
        "baseline": f"the aggregate limit S×q = {config['accounts']}×{config['per_site_qps']:g} = {limit:g} calls/s",
        "notes": [
            f"Accounts per Kafka partition (murmur2 key hashing, {config['partitions']} partitions): {spread}; "
            "consumers get whole partitions, so their shares of the work differ by as much.",
            "Steady = from the moment the group settled (every consumer's assignment final: the startup rebalances "
            "are over) or 10 % of the successful calls were made, whichever is later, to 90 % of them (sandbox "
            "counters sampled every 0.25 s); whole run = from the first call to the last success, startup "
            "rebalances included.",
            "Lowest per-account pace left in a consumer's pacer at the end (configured pace): "
            + "; ".join(f"{r['consumers']} × {r['pace']:g} q: {r['min_final_rate']:.2f}" for r in runs)
            + f" calls/s (q = {config['per_site_qps']:g}).",
            "Where a run above the limit loses time: each 429 holds its account for the Retry-After (whole seconds "
            "from the sandbox) and then for google-api-python-client's own back-off before it retries (random, "
            "0-2 s for the first retry), and the pacer's cut (-30 %) takes a while to climb back. With "
            f"{config['requests_per_account']} calls an account, the one 429 that reveals the limit costs an "
            "account about 2 s of its run.",
        ],
        "targets": [
            {
                "target": ">= 0.95 of the limit with 4 consumers (pace = q)",
                "value": f"{four['steady_fraction']:.3f} (whole run {four['whole_fraction']:.3f})",
                "met": four["steady_fraction"] >= 0.95,
            },
            {
                "target": "< 1 % of calls answered 429 with 4 consumers (pace = q)",
                "value": f"{four['share_429'] * 100:.2f} %",
                "met": four["share_429"] < 0.01,
            },
        ]
        + (
            [
                {
                    "target": f"the same two with the pace set {over['pace']:g} × q (adapting down on 429s; not "
                    "counting the one 429 per account that reveals the limit: with 90 calls an account, it alone is 1.1 %)",
                    "value": f"{over['steady_fraction']:.3f} of the limit, {over['settling_share_429'] * 100:.2f} % 429s "
                    f"beyond one per account (all 429s: {over['share_429'] * 100:.2f} %)",
                    "met": over["steady_fraction"] >= 0.95 and over["settling_share_429"] < 0.01,
                }
            ]
            if over
            else []
        ),
        "raw": runs,
    }
