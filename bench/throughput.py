"""1. Throughput against the partner's limit: consumers against S accounts at q calls/s each, the limit
unknown to them: 4 consumers start at several paces (0.5 q .. 5 q) and must find it."""

from __future__ import annotations

from typing import Any

from bench.common import Bench, StatsSampler, children, partition_spread, produce, requests_for, site_urls
from bench.workers import consumer_group_jobs
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec

PARTITIONS = 8


def settings(bench: Bench) -> dict[str, Any]:
    # Few accounts at a high q: an account makes q·T calls a run, and the 429 or two that reveal the
    # limit to it must stay well under 1 % of them (240 calls in full mode, 120 in quick).
    accounts, qps = (8, 6.0) if bench.quick else (12, 8.0)
    seconds = 20 if bench.quick else 30  # at the limit, each run lasts about this long
    return {
        "accounts": accounts,
        "per_site_qps": qps,
        # None: each bucket holds one second's worth (the sandbox's default): q calls per account,
        # and the global bucket 1.5·S·q, as a per-minute quota lets a second's calls arrive together.
        # A pace above q drains an account's bucket within a second and is answered 429.
        "burst": None,
        "global_qps": accounts * qps * 1.5,
        "latency_s": 0.03,
        "rows_per_day": 20,
        "requests_per_account": int(qps * seconds),
        "partitions": PARTITIONS,
        "consumer": {"concurrency": 4, "idle_timeout_s": 2.0},
        # (consumers, starting qps_per_account ÷ q): 4 told the limit (the reference), then 4 starting at
        # paces that do not know it: the pacer must find q from below and from above.
        "runs": [[4, 1.0], [4, 0.5], [4, 1.1], [4, 2.0], [4, 5.0]],
        "targets": {"fraction": 0.97, "share_429": 0.01},
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
    sweep = [r for r in runs if r["consumers"] == 4]
    return {
        "title": "1. Throughput against the partner's rate limit",
        "settings": config,
        "columns": [
            "consumers",
            "starting pace per account",
            "calls/s (steady)",
            "÷ limit (steady)",
            "÷ limit (whole run)",
            "429 share: whole run (steady)",
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
            "The consumers are given only a starting pace (`qps_per_account` = the pace column × q); the sandbox's "
            "limit q is theirs to find. Targets: steady ÷ limit and the share of all the run's calls answered 429.",
            "Every starting pace costs about one 429 an account (0.8 % of the 120 calls of quick mode): a pace at or "
            "below q climbs until refused, one above q is refused within its first second, and the cut goes to just "
            "under what the partner served. A call already under way when its account is refused is answered 429 "
            "too; each 429 holds its account for the Retry-After (whole seconds from the sandbox, so 1 s).",
        ],
        "targets": [pace_target(r, config["targets"]) for r in sweep],
        "raw": runs,
    }


def pace_target(run: dict[str, Any], targets: dict[str, float]) -> dict[str, Any]:
    """The verdict of one starting pace: near the limit, and few 429s over the whole run."""
    fraction, share = targets["fraction"], targets["share_429"]
    return {
        "target": f">= {fraction:g} of the limit (steady) and < {share * 100:g} % of all calls answered 429, "
        f"{run['consumers']} consumers starting at {run['pace']:g} q",
        "value": f"{run['steady_fraction']:.3f} (whole run {run['whole_fraction']:.3f}), "
        f"{run['share_429'] * 100:.2f} % 429s ({run['rate_limited']} of {run['calls']} calls)",
        "met": run["steady_fraction"] >= fraction and run["share_429"] < share,
    }
