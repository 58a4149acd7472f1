"""`python -m bench.profile [--concurrency 4] [--requests 2400] [--commit-every 1]`: profile one consumer.

The bookkeeping benchmark's setting (zero-latency sandbox, no limits, one consumer process), with
the consumer's polling thread under pyinstrument and all its threads sampled by py-spy (both from
the `bench` extra). Prints where the polling thread and the download threads spend their time and
writes the raw profiles to bench/out/profiles/.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
INTERESTING = ("reporting_assets", "googleapiclient", "httplib2", "pyarrow", "kafka/", "concurrent/futures")


def summarize_raw(path: Path, top: int = 25) -> str:
    """Per thread kind: the share of samples each function is on the stack (py-spy --format raw)."""
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = re.sub(r"\(\d+\)|[-_]\d+$|\d+", "", frames[0].split(": ", 1)[-1]).strip()
        totals[thread] += int(count)
        for frame in dict.fromkeys(re.sub(r":\d+\)", ")", f) for f in frames[1:]):
            inclusive[thread][frame] += int(count)
    lines = []
    for thread, total in totals.most_common():
        lines.append(f"{thread}: {total} samples")
        shown = [(f, n) for f, n in inclusive[thread].most_common() if any(k in f for k in INTERESTING)][:top]
        lines.extend(f"  {n / total * 100:5.1f} %  {frame}" for frame, n in shown)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2_400)
    parser.add_argument("--commit-every", type=int, default=1)
    parser.add_argument("--commit-interval-s", type=float, default=0.2)
    parser.add_argument("--seconds", type=int, default=6, help="py-spy sampling time, from 2 s after the start")
    parser.add_argument("--cpu-only", action="store_true", help="py-spy samples only threads on the CPU (no --idle)")
    args = parser.parse_args(argv)

    from bench.common import Bench, produce, requests_for, site_urls, start_child
    from bench.workers import run_consumer
    from reporting_assets.infra.kafka import BrokerSettings, LocalKafkaBroker
    from reporting_assets.infra.maven import ensure_jars
    from reporting_assets.infra.ports import free_ports
    from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec

    out = BENCH_DIR / "out" / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="profile-", dir=BENCH_DIR / "out"))
    port, controller_port = free_ports(2)
    broker = LocalKafkaBroker(
        BrokerSettings(port=port, controller_port=controller_port, data_dir=workdir / "kafka"),
        jars_dir=ensure_jars("broker"),
    )
    try:
        bench = Bench("profile", broker.start(), workdir, out)
        accounts = site_urls(16)
        sandbox_config = SandboxConfig(seed=3, sites=[SiteSpec(url, 20) for url in accounts], rows_jitter=0.0)
        with SandboxServer(sandbox_config) as sandbox:
            kafka = bench.kafka("profile", 8)
            requests = requests_for(accounts, args.requests // len(accounts))
            produce(kafka, requests)
            text_profile = out / f"{stamp}-polling-thread.txt"
            child = start_child(
                run_consumer,
                kafka=kafka.model_dump(),
                sandbox_url=sandbox.url,
                landing_dir=str(workdir / "landing"),
                settings={
                    "concurrency": args.concurrency,
                    "qps_per_account": 100_000.0,
                    "commit_every": args.commit_every,
                    "commit_interval_s": args.commit_interval_s,
                },
                stop_after_landed=len(requests),
                profile_to=str(text_profile),
            )
            raw = out / f"{stamp}-py-spy.txt"
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            time.sleep(2.0)
            spied = subprocess.run(
                [spy, "record", "--pid", str(child.process.pid), "--duration", str(round(args.seconds)), "--rate", "500",
                 "--threads", *([] if args.cpu_only else ["--idle"]), "--nonblocking", "--format", "raw", "-o", str(raw)],
                check=False, capture_output=True, text=True,
            )  # fmt: skip
            result = child.result(timeout_s=1_800)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    per_request = result["run_s"] / len(requests) * 1000
    print(f"{len(requests)} requests, {args.concurrency} in flight, commit every {args.commit_every}: "
          f"{per_request:.2f} ms/request from the first record, {result['commits']} commits, "
          f"{result['polls']} polls ({result['poll_s']:.2f} s, {result['polled_records']} records)")  # fmt: skip
    print("thread CPU s:", result["thread_cpu_s"])
    print(f"\npolling thread (pyinstrument, {text_profile}):\n{text_profile.read_text()}")
    if raw.exists():
        print(f"all threads (py-spy, share of samples a function is on the stack; {raw}):\n{summarize_raw(raw)}")
    else:
        print(f"py-spy wrote nothing (exit {spied.returncode}): {spied.stderr.strip()[-800:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
