"""The alternatives the seed article considered, each implemented honestly and small.

All of them call the partner through the project's own client (`PartnerResource.client`: the same
google-api-python-client, retries and response validation) and write the project's own landing
files (`LandingZone.land_page`: one Parquet file per request), so only the bookkeeping differs.
Continuation pages are fetched inline, the way a plain script would page.

- `plain_loop`: no bookkeeping at all (the floor for the bookkeeping-cost benchmark).
- `delete_and_rewrite`: stateless by starting over: wipe the output, then call everything.
- `dedup_table`: remember successful calls in DuckDB; look each one up before calling, insert after.
- `kafka_python_enqueue`: build and send every request message from a Python loop (vs Spark's sink).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import ReportRequest
from reporting_assets.resources.partner import PartnerResource


def _download(client: Any, zone: LandingZone, request: ReportRequest) -> int:
    """Call, land, follow pages; returns the calls made."""
    calls = 0
    while True:
        rows = client.query(request).rows
        calls += 1
        zone.land_page(request, rows)
        if len(rows) < request.row_limit:
            return calls
        request = request.next_page()


def _threads(
    requests: Sequence[ReportRequest],
    concurrency: int,
    partner: PartnerResource,
    work: Callable[[Any, ReportRequest], int],
) -> int:
    """Run `work(client, request)` over the requests with `concurrency` threads, a client each."""
    local = threading.local()
    clients = [partner.client() for _ in range(concurrency)]
    lock = threading.Lock()

    def client() -> Any:
        if not hasattr(local, "client"):
            with lock:
                local.client = clients.pop()
        return local.client

    if concurrency == 1:
        only = clients[0]
        return sum(work(only, request) for request in requests)
    with ThreadPoolExecutor(concurrency, thread_name_prefix="baseline") as pool:
        return sum(pool.map(lambda request: work(client(), request), requests))


def _partner(sandbox_url: str, num_retries: int) -> PartnerResource:
    return PartnerResource(api_endpoint=sandbox_url, num_retries=num_retries)


def plain_loop(
    sandbox_url: str, landing_dir: str, requests: Sequence[dict[str, Any]], concurrency: int = 1, num_retries: int = 5
) -> dict[str, Any]:
    """(c) Call and land each request, nothing else: the floor of any bookkeeping."""
    zone = LandingZone(landing_dir)
    partner = _partner(sandbox_url, num_retries)
    decoded = _decode(requests)
    started = time.perf_counter()
    calls = _threads(decoded, concurrency, partner, lambda client, request: _download(client, zone, request))
    return {"calls": calls, "run_s": time.perf_counter() - started}


def delete_and_rewrite(
    sandbox_url: str, landing_dir: str, requests: Sequence[dict[str, Any]], concurrency: int = 8, num_retries: int = 5
) -> dict[str, Any]:
    """(a) Stateless by starting over: delete everything an earlier (crashed) run wrote, then call it all."""
    zone = LandingZone(landing_dir)
    partner = _partner(sandbox_url, num_retries)
    decoded = _decode(requests)
    started = time.perf_counter()
    shutil.rmtree(landing_dir, ignore_errors=True)
    calls = _threads(decoded, concurrency, partner, lambda client, request: _download(client, zone, request))
    return {"calls": calls, "run_s": time.perf_counter() - started}


DEDUP_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS done_requests (request_id VARCHAR PRIMARY KEY, calls INTEGER, done_at TIMESTAMP)"
)


def dedup_table(
    sandbox_url: str,
    landing_dir: str,
    requests: Sequence[dict[str, Any]],
    database: str,
    concurrency: int = 8,
    num_retries: int = 5,
) -> dict[str, Any]:
    """(b) Remember each successful request in DuckDB: look it up before calling, insert it after landing.

    One process (a DuckDB file takes one writing process), one cursor per thread.
    """
    import duckdb

    zone = LandingZone(landing_dir)
    partner = _partner(sandbox_url, num_retries)
    decoded = _decode(requests)
    started = time.perf_counter()
    connection = duckdb.connect(database)
    connection.execute(DEDUP_SCHEMA)
    cursors = threading.local()
    skipped = 0
    skipped_lock = threading.Lock()

    def work(client: Any, request: ReportRequest) -> int:
        nonlocal skipped
        cursor = getattr(cursors, "cursor", None)
        if cursor is None:
            cursor = cursors.cursor = connection.cursor()
        if cursor.execute("SELECT 1 FROM done_requests WHERE request_id = ?", [request.request_id]).fetchone():
            with skipped_lock:
                skipped += 1
            return 0
        calls = _download(client, zone, request)
        cursor.execute("INSERT INTO done_requests VALUES (?, ?, now())", [request.request_id, calls])
        return calls

    try:
        calls = _threads(decoded, concurrency, partner, work)
    finally:
        connection.close()
    return {"calls": calls, "skipped": skipped, "run_s": time.perf_counter() - started}


def kafka_python_enqueue(
    bootstrap_servers: str, topic: str, accounts: Sequence[str], dates: Sequence[str], report: str, row_limit: int
) -> dict[str, Any]:
    """(d) The request messages from a Python loop with kafka-python (what Spark's Kafka sink replaces).

    Same messages as `enqueue.request_frame` (request id and all), same producer settings as the
    Spark job's sink (acks=all, linger 20 ms), partitioned by the account key.
    """
    from kafka import KafkaProducer

    from reporting_assets.core.reports import get_report

    spec = get_report(report)
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=20)
    started = time.perf_counter()
    sent = 0
    try:
        for account, date in ((account, date) for date in dates for account in accounts):
            request = spec.first_request(account, date, row_limit=row_limit)
            producer.send(topic, key=request.key(), value=request.encode())
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return {"messages": sent, "run_s": time.perf_counter() - started}


def _decode(requests: Sequence[dict[str, Any]]) -> list[ReportRequest]:
    """Requests travel to child processes as JSON dicts."""
    import json

    return [ReportRequest.decode(json.dumps(request).encode()) for request in requests]
