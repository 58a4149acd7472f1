"""`make soak`: the crash trials of `make test`, for 100 seeds on a bigger workload, with a summary table.

    python -m bench.soak [--trials 100] [--first-seed 0] [--workload big|small] [--out docs/reliability-soak.md]

Starts a broker of its own (free ports, a temporary data dir), runs the clean reference once, then
one seeded trial per seed (consumer processes SIGKILLed at seeded moments, one or all of them,
restarted until the topic is drained; see `reporting_assets_tests/reliability/trials.py`), and
writes a markdown table of trials, kills, faults, rows lost and doubled, and re-issued calls
against the in-flight bound. Exits 1 if any trial broke a guarantee; its data dir is kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from reporting_assets.infra.kafka import BrokerSettings, LocalKafkaBroker
from reporting_assets.infra.maven import ensure_jars
from reporting_assets.infra.ports import free_ports
from reporting_assets_tests.reliability import trials

WORKLOADS = {"big": trials.BIG, "small": trials.SMALL}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "reliability-soak.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="big")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-exports", action="store_true", help="skip the Dagster export comparison (faster)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    workload = WORKLOADS[args.workload]
    seeds = list(range(args.first_seed, args.first_seed + args.trials))
    exports = not args.no_exports

    root = Path(tempfile.mkdtemp(prefix="soak-"))
    port, controller_port = free_ports(2)
    broker = LocalKafkaBroker(
        BrokerSettings(port=port, controller_port=controller_port, data_dir=root / "kafka"),
        jars_dir=ensure_jars("broker"),
    )
    started = time.monotonic()
    results: list[trials.TrialResult] = []
    failures: list[str] = []
    try:
        bootstrap = broker.start()
        with trials.trial_env(bootstrap, root, exports=exports) as env:
            reference = trials.run_trial(env, workload, seed=None, exports=exports)
            if trials.problems(reference, None):
                print(f"the clean run is wrong: {trials.problems(reference, None)}", file=sys.stderr)
                return 1
            print(f"clean {trials.describe(reference)}", flush=True)
            for seed in seeds:
                try:
                    result = trials.run_trial(env, workload, seed, exports=exports)
                except trials.TrialError as exc:
                    failures.append(f"seed {seed}: {exc}")
                    print(f"seed {seed}: FAILED {exc}", flush=True)
                    continue
                results.append(result)
                found = trials.problems(result, reference if exports else None)
                print(f"{trials.describe(result)}{'  FAILED ' + str(found) if found else ''}", flush=True)
                if found:
                    failures.append(f"seed {seed}: {found} (data kept in {result.data_dir})")
                else:
                    trials.cleanup(result)
        elapsed = time.monotonic() - started
        write_report(args.out, workload, results, reference, failures, elapsed, exports)
        print(f"wrote {args.out}")
    finally:
        broker.stop()
        if not failures:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


def write_report(
    out: Path,
    workload: trials.Workload,
    results: list[trials.TrialResult],
    reference: trials.TrialResult,
    failures: list[str],
    elapsed: float,
    exports: bool,
) -> None:
    seeds = [r.seed for r in results]
    lines = [
        "# Soak results",
        "",
        f"Written by `make soak` (`python -m bench.soak`) on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} with {os.cpu_count()} cores, in {elapsed / 60:.1f} minutes.",
        f"Workload `{workload.name}`: {len(workload.sites)} accounts × {len(workload.dates)} dates, "
        f"row limit {workload.row_limit} ({reference.pages} API calls in a perfect run, chains of up to "
        f"{max(rows for _, rows in workload.sites) // workload.row_limit + 1} pages), {workload.partitions} partitions, "
        f"{workload.consumers} consumer processes × {workload.concurrency} calls in flight, sandbox latency "
        f"{workload.latency_s * 1000:.0f} ms and {workload.per_site_qps:g} calls/s per site (burst {workload.burst:g}), "
        f"session timeout {workload.session_timeout_s:g} s. Seeds {min(seeds, default=0)}..{max(seeds, default=0)}.",
        "",
        trials.summary_markdown("Summary", results, reference if exports else None),
        "Failures: " + ("none." if not failures else ""),
        *[f"- {failure}" for failure in failures],
        "",
        "### Every trial",
        "",
        trials.trial_markdown(results, reference if exports else None),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
