"""Command line for the local Kafka broker.

    python -m reporting_assets.infra.kafka start  [--host H] [--port 9092] [--controller-port 9093]
                                                 [--data-dir data/kafka] [--heap 512m] [--timeout 90] [--reset]
    python -m reporting_assets.infra.kafka stop   [--data-dir data/kafka]
    python -m reporting_assets.infra.kafka status [--data-dir data/kafka]

Prints one line. Exit codes: 0 ok; 1 error (one line on stderr); ``status`` exits 3
when no broker runs (the LSB convention, so ``status || start`` works in scripts).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from reporting_assets.infra.kafka.broker import BrokerSettings, KafkaBrokerError, LocalKafkaBroker
from reporting_assets.infra.maven import MavenError

EXIT_NOT_RUNNING = 3
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(BrokerSettings)}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default=_DEFAULTS["host"], help="listen address (default: %(default)s)")
    common.add_argument("--port", type=int, default=_DEFAULTS["port"], help="broker port (default: %(default)s)")
    common.add_argument(
        "--controller-port",
        type=int,
        default=_DEFAULTS["controller_port"],
        help="KRaft controller port (default: %(default)s)",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=_DEFAULTS["data_dir"],
        help="log dirs, server.properties, pid and broker.log (default: %(default)s)",
    )
    common.add_argument("--heap", default=_DEFAULTS["heap"], help="JVM max heap (default: %(default)s)")

    parser = argparse.ArgumentParser(
        prog="python -m reporting_assets.infra.kafka", description="Run a local single-node Kafka broker (KRaft)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", parents=[common], help="start the broker (no-op if it runs)")
    start.add_argument(
        "--timeout", type=float, default=90, help="seconds to wait for the broker (default: %(default)s)"
    )
    start.add_argument("--reset", action="store_true", help="wipe all topics and offsets and format fresh storage")
    stop = commands.add_parser("stop", parents=[common], help="stop the broker")
    stop.add_argument("--timeout", type=float, default=30, help="seconds before SIGKILL (default: %(default)s)")
    commands.add_parser("status", parents=[common], help="show whether the broker runs and answers")
    return parser


def _run(args: argparse.Namespace) -> int:
    settings = BrokerSettings(
        host=args.host, port=args.port, controller_port=args.controller_port, data_dir=args.data_dir, heap=args.heap
    )
    broker = LocalKafkaBroker(settings)
    if args.command == "start":
        bootstrap = broker.start(timeout_s=args.timeout, reset=args.reset)
        print(f"kafka broker running at {bootstrap} (pid {broker.pid})")
        return 0
    if args.command == "stop":
        pid = broker.stop(timeout_s=args.timeout)
        print(
            f"kafka broker stopped (pid {pid})" if pid else f"kafka broker not running (data dir {settings.data_dir})"
        )
        return 0
    status = broker.status()
    if not status["running"]:
        print(f"kafka broker not running (data dir {settings.data_dir})")
        return EXIT_NOT_RUNNING
    answering = "answering" if status["answering"] else "NOT answering"
    print(f"kafka broker running at {status['bootstrap']} (pid {status['pid']}, {answering})")
    return 0 if status["answering"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # kafka-python logs connection attempts while the broker boots; the CLI only wants its own line.
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    logging.getLogger("kafka").propagate = False
    try:
        return _run(args)
    except (KafkaBrokerError, MavenError, ValueError, OSError) as error:
        # The first line says what went wrong; the rest (a log tail) is for the log file reader.
        lines = str(error).splitlines() or [type(error).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
