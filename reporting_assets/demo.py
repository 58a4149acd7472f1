"""`make demo`: the whole pipeline on the local broker and the partner sandbox, then a summary.

Starts what is not running (Kafka on 9092, the sandbox on 8085), runs accounts -> requests ->
downloads -> partitions -> exports for 5 sites x 3 days, prints what happened, and stops what it
started. Rerunning it adds nothing: the topic's committed offsets and the idempotent landing see to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dagster as dg

from reporting_assets.console import failed, libraries_to, log_path
from reporting_assets.core.consumer.tuning import ConsumerTuning

DEMO_QPS_PER_SITE = 8.0
# The demo's own tuning, where the environment (REPORTING_CONSUMER_*) says nothing: a short idle
# timeout (the demo ends as soon as the topic is drained) and a pace above the sandbox's limit.
DEMO_TUNING = {"idle_timeout_s": 3.0, "qps_per_account": DEMO_QPS_PER_SITE}


def demo_tuning(env: Mapping[str, str], consumers: int | None = None) -> ConsumerTuning:
    """The environment's consumer tuning, with the demo's defaults for what it leaves unset."""
    from reporting_assets.settings import Settings, consumer_variables

    base = Settings.from_env(env).consumer.model_dump()
    variables = consumer_variables()
    unset = {field: value for field, value in DEMO_TUNING.items() if not env.get(variables[field], "").strip()}
    chosen = {"consumers": consumers} if consumers is not None else {}
    return ConsumerTuning(**{**base, **unset, **chosen})


def default_dates(days: int = 3, lateness_days: int = 3) -> list[str]:
    """The last `days` complete days Search Console has data for (it is 2–3 days late)."""
    last = dt.date.today() - dt.timedelta(days=lateness_days)
    return [(last - dt.timedelta(days=offset)).isoformat() for offset in reversed(range(days))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--kafka-controller-port", type=int, default=9093)
    parser.add_argument("--sandbox-port", type=int, default=8085)
    parser.add_argument("--consumers", type=int, default=None, help="default: REPORTING_CONSUMERS, else 2")
    parser.add_argument("--log-level", default="WARNING", help="Dagster console log level of the runs.")
    parser.add_argument(
        "--verbose", action="store_true", help="the libraries' output on the console (default: data/logs/demo-*.log)"
    )
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    dates = default_dates()
    log = log_path(data_dir, "demo")
    try:
        summary, stats, quiet = run_demo(args, data_dir, dates, log)
    except Exception:
        if args.verbose:
            raise
        return failed(log, "reporting_assets demo")
    print("\nreporting_assets demo summary")
    print(f"  accounts discovered : {len(summary.accounts)}")
    print(
        f"  requests enqueued   : {summary.requests_enqueued} (+{summary.download.get('continued', 0)} continuation pages)"
    )
    print(f"  API calls           : {stats['calls_total']} ({stats['rate_limited']} answered 429)")
    print(f"  rows loaded         : {summary.rows_loaded}")
    print(f"  dead letters        : {summary.dead_lettered}")
    print("  exports             :")
    for name, path in sorted(summary.exports.items()):
        print(f"    {name:28} {path}")
    for date, why in sorted(summary.held.items()):
        print(f"  not exported {date} : {why}")
    if quiet:
        print(f"  log (Dagster, Spark, Kafka): {quiet}")
    return 0 if not summary.held else 1


def run_demo(args: argparse.Namespace, data_dir: Path, dates: list[str], log: Path) -> tuple[Any, dict, Path | None]:
    """Broker, sandbox, the pipeline: (its summary, the sandbox's counters, the log the libraries wrote)."""
    from reporting_assets.infra.kafka import BrokerSettings, LocalKafkaBroker
    from reporting_assets.sandbox import SandboxServer, default_config

    with ExitStack() as stack:
        quiet = stack.enter_context(libraries_to(log, verbose=args.verbose))  # restored last
        broker = LocalKafkaBroker(
            BrokerSettings(
                port=args.kafka_port, controller_port=args.kafka_controller_port, data_dir=data_dir / "kafka"
            )
        )
        started_broker = not broker.is_running()
        bootstrap = broker.start()
        if started_broker:
            stack.callback(broker.stop)
        # Stricter than our starting pace, so the run meets a few 429s and paces itself down.
        config = default_config().updated({"per_site_qps": 5.0, "burst": 3.0})
        sandbox = stack.enter_context(SandboxServer(config, port=args.sandbox_port))
        os.environ.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "PARTNER_API_ENDPOINT": sandbox.url,
                "REPORTING_DATA_DIR": str(data_dir),
            }
        )
        from reporting_assets.runner import run_pipeline
        from reporting_assets.settings import build_resources

        print(f"kafka {bootstrap} | sandbox {sandbox.url} | dates {dates[0]}..{dates[-1]}", flush=True)
        instance = dg.DagsterInstance.get()
        summary = run_pipeline(
            instance,
            build_resources(),
            dates,
            demo_tuning(os.environ, args.consumers),
            log_level=args.log_level,
            progress=True,
            say=lambda line: print(line, flush=True),
        )
        stats = sandbox.stats()
    return summary, stats, quiet


if __name__ == "__main__":
    sys.exit(main())
