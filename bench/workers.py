"""Code that runs in benchmark child processes: the project's consumer loop, driven directly.

`DownloadLoop` is what each `consume_requests` op of the `download_requests` job runs; driving it
here skips Dagster's run machinery (process start, event log), not any of the download path.
"""

from __future__ import annotations

import time
from typing import Any

from reporting_assets.core.consumer.budget import GroupBudget
from reporting_assets.core.consumer.loop import DownloadLoop
from reporting_assets.core.consumer.settled import GroupWatch
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.landing import LandingZone
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource


def client_pool(partner: PartnerResource, size: int):
    """A client factory handing out clients built beforehand (building one takes ~50 ms)."""
    clients = [partner.client() for _ in range(size)]

    def factory():
        return clients.pop() if clients else partner.client()

    return factory


def run_consumer(
    kafka: dict[str, Any],
    sandbox_url: str,
    landing_dir: str,
    settings: dict[str, Any],
    session_timeout_s: float = 6.0,
    stop_after_landed: int | None = None,
    num_retries: int = 5,
    profile_to: str | None = None,
    log_to: str | None = None,
    group_members: int | None = None,
) -> dict[str, Any]:
    """One consumer of the group until drained (or `stop_after_landed` requests landed by it).

    `group_members`: the consumers started together with it; like the job's, it calls nothing until
    they are all in the group (None: it starts at once).
    """
    if log_to:  # the loop's and kafka-python's group coordination, for looking into a result
        import logging

        logging.basicConfig(filename=log_to, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        for name in ("reporting_assets", "kafka.coordinator"):
            logging.getLogger(name).setLevel(logging.INFO)
    resource = KafkaResource(**kafka)
    consumer_settings = ConsumerSettings(
        request_topic=resource.request_topic,
        dead_letter_topic=resource.dead_letter_topic,
        delay_topic=resource.delay_topic,
        join_grace_s=session_timeout_s + 5.0,
        **settings,
    )
    partner = PartnerResource(api_endpoint=sandbox_url, num_retries=num_retries)
    consumer = TimedConsumer(
        resource.consumer(
            [],
            session_timeout_ms=int(session_timeout_s * 1000),
            heartbeat_interval_ms=max(1000, int(session_timeout_s * 1000) // 4),
        )
    )
    producer = resource.producer()
    holder: dict[str, DownloadLoop] = {}
    watch = GroupWatch(resource.cluster().admin, resource.consumer_group, group_members) if group_members else None

    def should_stop() -> bool:
        return stop_after_landed is not None and holder["loop"].stats.landed >= stop_after_landed

    loop = DownloadLoop(
        consumer,
        producer,
        client_pool(partner, consumer_settings.concurrency),
        LandingZone(landing_dir),
        consumer_settings,
        should_stop=should_stop,
        group_watch=watch,
        group_budget=GroupBudget.for_settings(resource.cluster().admin, resource.consumer_group, consumer_settings),
    )
    holder["loop"] = loop
    profiler = None
    if profile_to:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    started = time.perf_counter()
    cpu_before = thread_cpu_s()
    try:
        loop.subscribe()
        stats = loop.run()
    finally:
        ended = time.perf_counter()
        cpu_after = thread_cpu_s()
        if watch is not None:
            watch.close()
        producer.close(timeout=10)
        consumer.close()
    if profiler is not None:
        profiler.stop()
        with open(profile_to, "w") as handle:
            handle.write(profiler.output_text(unicode=False, color=False, show_all=False))
    return {
        **stats.as_metadata(),
        "wall_s": ended - started,
        "first_record_s": None if consumer.first_record_at is None else consumer.first_record_at - started,
        "run_s": ended - (consumer.first_record_at or started),
        "assignment_changes": consumer.assignment_changes,
        "polls": consumer.polls,
        "poll_s": consumer.poll_s,
        "polled_records": consumer.polled_records,
        "partitions": sorted(tp.partition for tp in consumer.assigned),
        "final_rates": loop.pacer.rates(),
        "thread_cpu_s": {name: round(cpu - cpu_before.get(name, 0.0), 3) for name, cpu in cpu_after.items()},
    }


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of this process's threads, by kind (name without its number)."""
    import os
    import re
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    names = {thread.native_id: re.sub(r"[-_]\d+$|\(.*\)", "", thread.name) for thread in threading.enumerate()}
    totals: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(task), "other")
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


def consumer_group_jobs(
    consumers: int, kafka: KafkaResource, sandbox_url: str, landing: str, settings: dict[str, Any], log_to: str
) -> list[tuple[Any, dict[str, Any]]]:
    """`run_consumer` jobs for `consumers` consumers started together, as one group (for `children`)."""
    job = {
        "kafka": kafka.model_dump(),
        "sandbox_url": sandbox_url,
        "landing_dir": landing,
        "settings": settings,
        "log_to": log_to,
        "group_members": consumers,
    }
    return [(run_consumer, dict(job)) for _ in range(consumers)]


class TimedConsumer:
    """A KafkaConsumer that notes when its first record arrived and when its assignment last changed."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.first_record_at: float | None = None  # perf_counter
        self.assigned: frozenset[Any] = frozenset()
        self.assignment_changes: list[float] = []  # epoch seconds: comparable across processes
        self.polls = 0
        self.poll_s = 0.0
        self.polled_records = 0

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        batch = self._consumer.poll(*args, **kwargs)
        self.polls += 1
        self.poll_s += time.perf_counter() - began
        self.polled_records += sum(len(records) for records in batch.values())
        if batch and self.first_record_at is None:
            self.first_record_at = time.perf_counter()
        assigned = frozenset(self._consumer.assignment())
        if assigned != self.assigned:
            self.assigned = assigned
            self.assignment_changes.append(time.time())
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)
