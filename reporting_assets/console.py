"""The console: quiet by default, with the download's progress.

What the libraries print (Dagster's warnings and DEBUG lines, Spark's and the JVM's
WARNs, Kafka's logs) goes to a log file, the console keeps the command's own lines.

The redirect is of file descriptor 2 itself, so it covers the Spark JVM and Dagster's step processes,
which inherit it, and not only Python's `sys.stderr`.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from reporting_assets.core.cost import format_duration
from reporting_assets.core.progress import DownloadProgress

LINE_EVERY_S = 5.0  # off a terminal: a progress line this often


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


class ProgressDisplay:
    """A download's progress on the console: a bar in a terminal (rich), else a line every `every_s`
    and a last one at the end. Called from the watcher's thread."""

    def __init__(self, out: TextIO | None = None, every_s: float = LINE_EVERY_S) -> None:
        self._out = out or sys.stdout
        self._every_s = every_s
        self._last_line_at: float | None = None
        self._last_line = ""
        self._latest: DownloadProgress | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressDisplay:
        if self._out.isatty():  # the bar from the start: the download's first seconds are the group joining
            self._bar = Progress(
                TextColumn("download"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("requests  {task.fields[figures]}"),
                console=Console(file=self._out),
            )
            self._task = self._bar.add_task("download", total=None, figures="")
            self._bar.start()
        return self

    def __call__(self, progress: DownloadProgress) -> None:
        self._latest = progress
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=progress.requests_done,
                total=max(progress.requests_total, 1),
                figures=bar_figures(progress),
            )
            return
        now = time.monotonic()
        if self._last_line_at is None or now - self._last_line_at >= self._every_s:
            self._last_line_at = now
            self._print(progress.line())

    def _print(self, line: str) -> None:
        if line != self._last_line:  # nothing moved: no line
            self._last_line = line
            print(line, file=self._out, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()  # the bar stays, at its last figures
        elif self._latest is not None:
            self._print(self._latest.line())


def bar_figures(progress: DownloadProgress) -> str:
    eta = "" if progress.eta_s is None else f"  ETA {format_duration(progress.eta_s)}"
    return (
        f"{progress.calls_per_s:.1f} calls/s  {progress.throttled} x 429  {progress.delayed} delayed  "
        f"{progress.dead_lettered} dead letters{eta}"
    )
