"""10. A month of the whole catalog: S sites × D days × every standard report, against Google's limits.

Every report of the shipped catalog (each search type, search appearance, hourly for the days Google
keeps hourly data) for each site-day of the month that ends yesterday (Pacific time: Google's day),
enqueued as first pages and downloaded by a consumer group. The sandbox holds the run to Search
Console's published limits: 1 200 queries a minute per site and per user (20/s each; one credential is
one user), a realistic burst. The consumers are set as a user who read those limits sets them
(REPORTING_CONSUMER_GLOBAL_QPS=20).

Baselines, both from the run itself: the calls Google's recipe needs (a chain of r rows costs
r // row_limit + 1 pages, a report with no rows one call), and the time those calls take at the
binding limit (`core.cost.quota_seconds`, what `plan` promises a user).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from typing import Any

from bench.common import Bench, children, produce, site_urls, wait_for
from bench.workers import consumer_group_jobs
from reporting_assets.core.cost import SITE_QPS_LIMIT, USER_QPS_LIMIT, quota_seconds
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.reports import google_today, load_catalog
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec, expected_row_count

ROW_LIMIT = 25_000
PROJECT_DAILY_QUOTA = 30_000_000  # Search Console: queries per day per project


def settings(bench: Bench) -> dict[str, Any]:
    consumers = 2
    return {
        "sites": 4 if bench.quick else 20,
        "days": 5 if bench.quick else 30,
        "row_limit": ROW_LIMIT,
        # rows of search_analytics per site-day, from small sites to ones a page does not hold
        "rows_per_day": [300, 1_000, 3_000, 6_000],
        "latency_s": 0.05,
        "partitions": 8,
        "consumers": consumers,
        "site_qps": SITE_QPS_LIMIT,
        "user_qps": USER_QPS_LIMIT,
        "consumer": {
            "idle_timeout_s": 3.0,
            "qps_per_account": SITE_QPS_LIMIT,
            "global_qps": USER_QPS_LIMIT,  # REPORTING_CONSUMER_GLOBAL_QPS=20, shared by the lag as the job does
            "consumers": consumers,
        },
    }


def month(days: int, today: dt.date) -> list[str]:
    """The `days` days that end yesterday, Google's day: the newest ones still provisional, as in real use."""
    yesterday = today - dt.timedelta(days=1)
    return [(yesterday - dt.timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    catalog = load_catalog()
    reports = list(catalog.reports.values())
    sites = site_urls(config["sites"])
    sizes = config["rows_per_day"]
    # One today for the plan, the truth and the sandbox: a run across Pacific midnight would otherwise
    # drop the oldest hourly day from the sandbox's last 10 after it was asked for.
    today = google_today()
    sandbox_config = SandboxConfig(
        today=today.isoformat(),
        seed=10,
        sites=[SiteSpec(url, sizes[index % len(sizes)]) for index, url in enumerate(sites)],
        per_site_qps=config["site_qps"],
        global_qps=config["user_qps"],
        burst=None,  # the bucket holds a second of calls (max(1, qps)), as a minute's quota refills
        latency_s=config["latency_s"],
    )
    dates = month(config["days"], today)
    requests = [
        report.first_request(site, date, row_limit=config["row_limit"])
        for date in dates
        for site in sites
        for report in reports
        if report.available_on(date, today)
    ]
    truth = {
        (r.report, r.account, r.date): expected_row_count(
            sandbox_config,
            r.account,
            r.date,
            r.date,
            list(r.dimensions),
            search_type=r.search_type,
            filters=json.loads(r.filters) if r.filters else None,
            data_state=r.data_state,
        )
        for r in requests
    }
    minimum = Counter({(report, site): 0 for report, site, _ in truth})
    for (report, site, _), rows in truth.items():
        minimum[(report, site)] += rows // config["row_limit"] + 1
    minimum_calls = sum(minimum.values())
    calls_by_site = Counter()
    for (_, site), calls in minimum.items():
        calls_by_site[site] += calls
    bound_s = quota_seconds(calls_by_site, config["site_qps"], config["user_qps"])

    kafka = bench.kafka("catalog", config["partitions"])
    landing = bench.scratch("catalog-landing")
    zone = LandingZone(landing)
    try:
        with SandboxServer(sandbox_config) as sandbox:
            produce(kafka, requests)
            began = time.monotonic()
            jobs = consumer_group_jobs(
                config["consumers"], kafka, sandbox.url, str(landing), config["consumer"], bench.log_file("catalog")
            )
            with children(jobs) as running:
                results = [child.result(timeout_s=3600) for child in running]
            wall_s = time.monotonic() - began
            stats = sandbox.stats()
            timeline = sandbox.calls()
        wait_for(lambda: kafka.lag(kafka.request_topic).total == 0, 30, "the group's last commits")
        lag_after = kafka.lag(kafka.request_topic).total
        dead_letters = sum(kafka.end_offsets(kafka.dead_letter_topic).values())
    finally:
        bench.delete_topics(kafka)

    # Rows from the landed files, against what the partner holds for each (report, site, date).
    wrong = []
    landed_rows = 0
    for (report, site, date), rows in truth.items():
        state = zone.completeness(report, date, site)
        landed_rows += state.rows
        if not state.complete or state.rows != rows:
            wrong.append(f"{report} {site} {date}: {state.rows} of {rows}")
    calls = stats["calls_by_method"].get("searchanalytics.query", 0)
    served = stats["status_counts"].get("200", 0)
    throttled = stats["rate_limited"]
    # The download as the partner saw it: its first query received to its last answered (the group's
    # start and the consumers' idle wait at the end are not the partner's limit).
    queries = [c for c in timeline["answered"] if c["method"] == "searchanalytics.query"]
    assert timeline["dropped"] == 0 and len(queries) == calls, "the sandbox's timeline lost calls"
    run_s = max(c["answered_at"] for c in queries) - min(c["received_at"] for c in queries)
    by_report = Counter()
    for (report, _), needed in minimum.items():
        by_report[report] += needed
    hourly = sum(1 for r in requests if catalog.get(r.report).hourly)
    rows = [
        [
            f"{len(sites)} × {len(dates)} days × {len(reports)} reports",
            f"{len(requests)}",
            f"{calls} ({served})",
            f"{minimum_calls}",
            f"{served / minimum_calls:.3f}",
            f"{run_s:.1f} s (group's wall {wall_s:.1f} s)",
            f"{bound_s:.1f} s",
            f"{run_s / bound_s:.3f}",
            f"{calls / run_s:.2f}",
            f"{throttled} ({throttled / max(calls, 1):.2%})",
            f"{landed_rows} of {sum(truth.values())}",
        ]
    ]
    complete = not wrong and dead_letters == 0 and lag_after == 0
    return {
        "title": "10. A month of the whole catalog against Google's limits",
        "settings": {**config, "dates": f"{dates[0]} .. {dates[-1]}", "reports": [r.name for r in reports]},
        "columns": [
            "workload",
            "requests",
            "query calls (answered)",
            "recipe minimum",
            "calls ÷ minimum",
            "download time",
            "at the limit (quota_seconds)",
            "time ÷ limit",
            "calls/s",
            "429s",
            "rows landed",
        ],
        "rows": rows,
        "baseline": (
            "the recipe minimum: each (report, site, day) chain of r rows costs r // 25 000 + 1 calls; the time at "
            "the limit: those calls at Search Console's 20 calls/s per site and per user (core.cost.quota_seconds)"
        ),
        "notes": [
            f"{len(reports)} reports of the shipped catalog; hourly ({hourly} requests) only on the days Google keeps "
            f"hourly data (the last 10); the newest days are provisional (dataState all) and a refresh pulls them "
            "again until final, which this one pass does not count.",
            f"{config['consumers']} consumers, {config['latency_s'] * 1000:g} ms a call; rows per site-day of "
            f"search_analytics: {sizes}. Calls per report: "
            + ", ".join(f"{name} {count}" for name, count in sorted(by_report.items())),
            f"A month of {len(sites)} sites costs {calls} calls: {calls / PROJECT_DAILY_QUOTA:.4%} of a project's "
            f"daily {PROJECT_DAILY_QUOTA:,}; the per-user 1 200 a minute is the ceiling (add credentials, not "
            "consumers, to go faster).",
        ],
        "targets": [
            {
                "target": "every row of every (report, site, day) landed from the files, no dead letter, no lag",
                "value": (f"{landed_rows} rows, {len(wrong)} wrong" + (f" (e.g. {wrong[0]})" if wrong else ""))
                + f"; {dead_letters} dead, lag {lag_after}",
                "met": complete,
            },
            {
                "target": "query calls answered ÷ the recipe minimum: 1.00 (a 429 is counted apart, below)",
                "value": f"{served / minimum_calls:.3f} ({served} of {minimum_calls}; {calls} calls with the 429s)",
                "met": served == minimum_calls,
            },
            {
                "target": "download time <= 1.10 × the time at the partner's limit, < 1 % 429s",
                "value": f"{run_s / bound_s:.3f} ({run_s:.1f} s of {bound_s:.1f} s), {throttled / max(calls, 1):.2%}",
                "met": run_s <= 1.10 * bound_s and throttled < 0.01 * calls,
            },
        ],
        "raw": {"results": results, "stats": stats},
    }
