"""`python -m reporting_assets.sandbox --port 8085 [--host H] [--config path.json] [--seed N]`.

Serves in the foreground until SIGTERM/SIGINT. Bad settings end the process
with one line on stderr naming the setting and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from reporting_assets.sandbox.config import SandboxConfig, default_config
from reporting_assets.sandbox.server import SandboxServer

PROG = "reporting_assets.sandbox"


class SettingError(Exception):
    """A bad command-line setting; its message is the one line shown to the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the brief for every bad setting.
        self.exit(2, f"{PROG}: error: {message}\n")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(prog=f"python -m {PROG}", description="Google Search Console v1 sandbox server.")
    parser.add_argument("--port", type=int, default=8085, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--config", help="JSON file with a SandboxConfig (default: the built-in demo config)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be within 0..65535 (got {args.port})")
    return args


def load_config(path: str | None, seed: int | None) -> SandboxConfig:
    """The config from `path` (or the default), with `seed` applied; SettingError names what is wrong."""
    if path is None:
        config = default_config()
    else:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except OSError as exc:
            raise SettingError(f"--config {path}: cannot read file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SettingError(f"--config {path}: file is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise SettingError(
                f"--config {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        try:
            config = SandboxConfig.from_dict(raw)
        except (ValueError, TypeError) as exc:
            raise SettingError(f"--config {path}: {exc}") from None
    if seed is not None:
        try:
            config = config.updated({"seed": seed})
        except ValueError as exc:
            raise SettingError(f"--seed: {exc}") from None
    return config


def _start(server: SandboxServer, host: str, port: int) -> str:
    try:
        return server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SettingError(f"--port {port}: address already in use on {host}") from None
        if exc.errno == errno.EACCES:
            raise SettingError(f"--port {port}: permission denied") from None
        raise SettingError(f"--host {host} / --port {port}: cannot listen: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        config = load_config(args.config, args.seed)
        server = SandboxServer(config, host=args.host, port=args.port, verbose=args.verbose)
        url = _start(server, args.host, args.port)
    except SettingError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    print(f"Search Console sandbox listening on {url}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
