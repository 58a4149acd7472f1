"""`python -m bench [--quick] [--only throughput,resume,...]`: run the benchmarks, write the results.

Starts one Kafka broker on free ports for the whole run (each benchmark makes topics and a group of
its own on it, and its own sandbox), runs the benchmarks one after another, stops the broker and
deletes the scratch folder, and writes the figures to `bench/RESULTS.md` (full mode) or
`bench/out/RESULTS-quick.md` (quick mode), with a JSON copy next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = (
    "throughput",
    "resume",
    "bookkeeping",
    "enqueue",
    "sensors",
    "quota",
    "calls",
    "outage",
    "split",
    "catalog",
)
# The code the figures depend on: recorded with the results (commit, and whether they were edited).
MEASURED_GLOBS = (
    "reporting_assets/core/consumer/*.py",
    "reporting_assets/core/landing.py",
    "reporting_assets/core/kafka.py",
    "reporting_assets/core/partner.py",
    "reporting_assets/core/enqueue.py",
    "reporting_assets/core/automation/*.py",
    "reporting_assets/defs/*/sensors.py",
    "reporting_assets/sandbox/app.py",
    # calls: the CLI run a new user makes, and the consumers' Dagster job
    "reporting_assets/cli.py",
    "reporting_assets/runner.py",
    "reporting_assets/defs/downloads/jobs.py",
)
MEASURED_FILES = tuple(
    str(path.relative_to(BENCH_DIR.parent))
    for pattern in MEASURED_GLOBS
    for path in sorted(BENCH_DIR.parent.glob(pattern))
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few minutes")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--out", type=Path, help="results file (default bench/RESULTS.md, quick: bench/out/RESULTS-quick.md)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (landing files, broker data)")
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    mode = "quick" if args.quick else "full"
    out = args.out or (BENCH_DIR / "out" / "RESULTS-quick.md" if args.quick else BENCH_DIR / "RESULTS.md")

    from bench import report
    from bench.common import Bench, code_state, machine
    from reporting_assets.infra.kafka import BrokerSettings, LocalKafkaBroker
    from reporting_assets.infra.maven import ensure_jars
    from reporting_assets.infra.ports import free_ports

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the broker is stopped and the scratch removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    (BENCH_DIR / "out").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=BENCH_DIR / "out"))
    started_at = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    port, controller_port = free_ports(2)
    broker = LocalKafkaBroker(
        BrokerSettings(port=port, controller_port=controller_port, data_dir=workdir / "kafka", heap="768m"),
        jars_dir=ensure_jars("broker"),
    )
    try:
        bootstrap = broker.start()
        print(f"bench ({mode}): broker {bootstrap}, scratch {workdir}", flush=True)
        logs = BENCH_DIR / "out" / f"logs-{mode}"
        shutil.rmtree(logs, ignore_errors=True)
        bench = Bench(mode, bootstrap, workdir, logs)
        for name in selected:
            print(f"-- {name} ...", flush=True)
            began = time.monotonic()
            try:
                result = __import__(f"bench.{name}", fromlist=["run"]).run(bench)
            except Exception as error:  # one broken benchmark must not hide the others' figures
                traceback.print_exc()
                result = {"title": name, "error": f"{type(error).__name__}: {error}", "targets": []}
            result["name"] = name
            result["seconds"] = time.monotonic() - began
            results.append(result)
            print(report.summary(result), flush=True)
    finally:
        broker.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "mode": mode,
        "date": started_at.isoformat(timespec="seconds"),
        "seconds": time.monotonic() - started,
        "machine": machine(),
        "code": code_state(BENCH_DIR.parent, MEASURED_FILES),
        # Other work on the machine (a test suite, another benchmark) slows every side of a comparison.
        "load": {"before": load_before, "after": os.getloadavg()},
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.markdown(document))
    out.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    print(f"wrote {out} ({document['seconds']:.0f} s)")
    # A missed target is a finding (it is in the results), not a failure of the run.
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
