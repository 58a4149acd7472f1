"""Quiet by default: what the libraries print (Dagster's warnings and DEBUG lines, Spark's and the JVM's
WARNs, Kafka's logs) goes to a log file, the console keeps the command's own lines.

The redirect is of file descriptor 2 itself, so it covers the Spark JVM and Dagster's step processes,
which inherit it, and not only Python's `sys.stderr`.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def log_path(data_dir: str | Path, command: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return Path(data_dir) / "logs" / f"{command}-{stamp}-{os.getpid()}.log"


@contextmanager
def libraries_to(log: Path, verbose: bool = False) -> Iterator[Path | None]:
    """Within: stderr (fd 2) appends to `log`, or stays the console when `verbose`. Yields the log's path
    (None when verbose). The command's own messages belong on stdout."""
    if verbose:
        yield None
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    console = os.dup(2)
    with log.open("ab") as handle:
        os.dup2(handle.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(console, 2)
            os.close(console)


def failed(log: Path, command: str) -> int:
    """In the handler of an exception a quiet run let escape: its traceback to the log, one line on the
    console naming the log; the exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        traceback.print_exc(file=handle)
    print(f"{command}: error: the run failed; the traceback is in {log}", file=sys.stderr)
    return 1
