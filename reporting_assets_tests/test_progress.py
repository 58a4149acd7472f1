"""The download's progress: the consumers' reports, the group's figures, the console's bar and lines."""

from __future__ import annotations

import io
import os
import pty
import re

from reporting_assets.console import ProgressDisplay
from reporting_assets.core.consumer.work import ConsumerStats
from reporting_assets.core.kafka import PartitionLag, TopicLag
from reporting_assets.core.progress import ConsumerProgress, DownloadProgress, DownloadWatch, ProgressReporter

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lag(**partitions: tuple[int, int]) -> TopicLag:
    """p0=(end, committed), ..."""
    per = {int(p[1:]): PartitionLag(end=e, committed=c, lag=max(e - c, 0)) for p, (e, c) in partitions.items()}
    return TopicLag(partitions=per, total=sum(v.lag for v in per.values()))


def test_a_consumers_report_round_trips_through_observation_metadata_and_others_are_ignored():
    report = ConsumerProgress(
        consumer=1, api_calls=7, throttled=2, landed=5, rows=900, dead_lettered=1, calls_per_s=2.5
    )
    metadata = report.metadata()
    assert metadata["consumer"] == "consumer_1" and metadata["consumer_1_api_calls"] == 7
    assert ConsumerProgress.from_metadata(metadata) == report
    lag_sensor = {"lag_total": 3, "delayed_requests": 0, "request_topic": "requests"}
    assert ConsumerProgress.from_metadata(lag_sensor) is None
    assert ConsumerProgress.from_metadata({"consumer": "consumer_x"}) is None


def test_the_reporter_reports_at_most_every_interval_with_the_calls_per_second_of_that_interval():
    clock, seen = Clock(), []
    reporter = ProgressReporter(0, seen.append, every_s=3.0, clock=clock)
    stats = ConsumerStats()
    for second in range(1, 7):
        clock.now += 1
        stats.api_calls = 4 * second
        reporter(stats)
    assert [r.api_calls for r in seen] == [12, 24]  # at 3 s and 6 s
    assert [r.calls_per_s for r in seen] == [4.0, 4.0]
    clock.now += 0.5
    stats.api_calls, stats.throttled, stats.dead_lettered = 26, 1, 1
    reporter.report(stats)  # the loop's end: now, whatever the interval
    assert seen[-1] == ConsumerProgress(0, 26, 1, 0, 0, 1, 4.0)


def test_the_watch_counts_from_the_offsets_at_its_start_and_parked_requests_are_not_done():
    clock = Clock()
    readings = [(lag(p0=(10, 4), p1=(6, 6)), 0)]  # 4 requests done before this run: not counted
    watch = DownloadWatch(lambda: readings[-1], quota_qps=2.0, clock=clock)
    start = watch.progress()
    assert (start.requests_done, start.requests_total) == (0, 6)
    assert start.eta_s == 3.0  # nothing measured yet: at the quota's pace, 6 requests at 2/s
    clock.now += 4
    readings.append((lag(p0=(12, 9), p1=(7, 7)), 1))  # 2 pages found on the way; 1 parked on the delay topic
    watch.note([ConsumerProgress(0, 6, 1, 5, 50, 0, 1.0), ConsumerProgress(1, 2, 0, 1, 10, 0, 0.5)])
    middle = watch.progress()
    assert (middle.requests_done, middle.requests_total, middle.delayed) == (5, 9, 1)
    assert (middle.api_calls, middle.throttled) == (8, 1)
    assert middle.calls_per_s == 8 / 4
    assert middle.eta_s == 4 / (5 / 4)  # what is left at the pace measured
    assert not middle.complete
    clock.now += 4
    readings.append((lag(p0=(12, 12), p1=(7, 7)), 0))
    watch.note([ConsumerProgress(0, 9, 1, 8, 80, 0, 1.0)])
    end = watch.progress()
    assert end.complete and end.eta_s is None and (end.requests_done, end.api_calls) == (9, 11)
    assert end.line() == "download: 9/9 requests, 11 calls (1.4/s), 1 throttled (429), 0 delayed, 0 dead letters"


def progress(done: int, total: int = 4) -> DownloadProgress:
    return DownloadProgress(done, total, 0, done, 0, 0, 1.0, float(total - done) or None)


def test_off_a_terminal_a_line_at_most_every_interval_and_the_last_one_at_the_end():
    out = io.StringIO()
    with ProgressDisplay(out, every_s=3600) as display:
        for done in range(5):
            display(progress(done))
    assert out.getvalue().splitlines() == [progress(0).line(), progress(4).line()]
    out = io.StringIO()
    with ProgressDisplay(out, every_s=0) as display:
        for done in (0, 1, 1, 2):
            display(progress(done))
    assert out.getvalue().splitlines() == [progress(d).line() for d in (0, 1, 2)]  # nothing moved: no line


def test_in_a_terminal_the_bar_ends_complete():
    master, replica = pty.openpty()
    with os.fdopen(replica, "w") as terminal, ProgressDisplay(terminal) as display:
        for done in range(5):
            display(progress(done))
    rendered = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end closed: all read
            break
        if not chunk:
            break
        rendered += chunk
    os.close(master)
    frames = [f.strip() for f in re.split(r"[\r\n]", ANSI.sub("", rendered.decode())) if f.strip()]
    assert frames[-1].startswith("download") and "4/4 requests" in frames[-1], frames[-3:]
    assert "━" in frames[-1] and "dead letters" in frames[-1]
