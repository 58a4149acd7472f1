"""5. Scale of the bookkeeping: every sensor of the code location against A accounts × D days of partitions.

A sqlite Dagster instance (what `make dev` and the daemon use) gets A dynamic account partitions and
one `report_requests` materialization per (date, account) key, with `end_offsets` metadata like the
asset records, each through the public `report_runless_asset_event`; the landing zone gets a landed
first page (a short one: the download is complete) for every partition. A long-lived child process (standing in for the code server the daemon asks) then
evaluates every sensor of `reporting_assets.definitions.defs()` tick after tick through
`build_sensor_context` + `evaluate_tick`, carrying each sensor's cursor from tick to tick, while the
driver moves the world between phases: consumers busy, watermark passed with new work behind it,
topic drained, then every partition downloaded. With the watermark passed and the topic busy, the
download sensor checks the landing zone within its time budget per tick: that phase runs until every
partition is resolved, and each tick's progress is counted. Asset events a sensor returns are recorded in the
instance like the daemon does; run requests are counted, not launched.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

from bench.common import SPAWN, Bench, site_urls, start_child

SENSORS_MODULE = "reporting_assets/defs/downloads/sensors.py"
BUSY = "2 watermark passed, topic busy"
STEADY = "5 steady: nothing new"
TRACED = "6 steady, tracemalloc on (not timed)"


def settings(bench: Bench) -> dict[str, Any]:
    # Every event goes through the public API (~5-10 ms each on sqlite): 10 000 accounts × 1 day in full
    # mode, twice (enqueued, downloaded), is what a full run affords; 30 days would take an hour.
    accounts, days = (1_000, 2) if bench.quick else (10_000, 1)
    return {
        "accounts": accounts,
        "days": days,
        "partitions": accounts * days,
        "topic_partitions": 4,
        "messages_enqueued": 2_000,
        "ticks_per_phase": 3,
        "max_progress_ticks": 30,  # the watermark passed with the topic busy: ticks until all are resolved
        "steady_ticks": 6 if bench.quick else 12,
        "traced_ticks": 3 if bench.quick else 6,
        "rows_per_page": 3,
        "instance": "sqlite (DagsterInstance.from_ref(InstanceRef.from_dir(...))); DAGSTER_HOME and the data folder on tmpfs if there is one",
        "events": "instance.report_runless_asset_event(dg.AssetMaterialization(...)), one per partition",
        "landing": "LandingZone.land_page: one short first page per partition (its download complete)",
    }


# -- seeding ----------------------------------------------------------------------------------------------


def record_materializations(home: str, asset: str, keys: list[str], metadata: dict[str, Any]) -> dict[str, Any]:
    """One materialization per partition key, each through `report_runless_asset_event`."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    started = time.perf_counter()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(home))
    values = {
        name: dg.MetadataValue.json(value) if isinstance(value, dict) else value for name, value in metadata.items()
    }
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=key, metadata=values))
    seconds = time.perf_counter() - started
    recorded = instance.get_latest_storage_id_by_partition(
        dg.AssetKey(asset), dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    instance.dispose()
    return {
        "seconds": seconds,
        "ms_per_event": seconds / max(len(keys), 1) * 1000,
        "partitions_recorded": len(recorded),
    }


def land_pages(landing_dir: str, keys: list[str], rows_per_page: int) -> dict[str, Any]:
    """A short first page (fewer rows than the row limit: the download is complete) per partition."""
    from bench.common import REPORT
    from reporting_assets.core.downloads import partition_settled
    from reporting_assets.core.landing import LandingZone
    from reporting_assets.core.messages import new_download_id

    started = time.perf_counter()
    zone = LandingZone(landing_dir)
    download = new_download_id()
    pairs = [key.split("|") for key in keys]  # account|date, as the multi-partition key prints
    zone.begin_downloads(((REPORT.name, date, account) for account, date in pairs), download)
    for account, date in pairs:
        request = REPORT.first_request(account, date, row_limit=1_000).in_download(download)
        rows = [
            {"keys": [date, f"query {n}", "https://example.com/", "usa", "DESKTOP"], "clicks": n, "impressions": 10,
             "ctr": n / 10, "position": 1.0}
            for n in range(rows_per_page)
        ]  # fmt: skip
        zone.land_page(request, rows)
    settled = sum(partition_settled(zone, date, account) for account, date in pairs[:: max(1, len(pairs) // 50)])
    return {"seconds": time.perf_counter() - started, "files": len(pairs), "sample_settled": settled}


def add_accounts(home: str, accounts: list[str]) -> dict[str, Any]:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(home))
    instance.add_dynamic_partitions("account", accounts)
    instance.dispose()
    return {"accounts": len(accounts)}


# -- the code server stand-in ---------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pending(sensor: str, cursor: str | None) -> int | None:
    """Partitions the download sensor's cursor still holds as waiting for their requests."""
    from reporting_assets.core.automation.downloads import DownloadState
    from reporting_assets.core.keys import DOWNLOAD_SENSOR

    return DownloadState.from_cursor(cursor).pending_partitions if sensor == DOWNLOAD_SENSOR else None


def sensor_process(home: str, env: dict[str, str], commands: Any, results: Any) -> None:
    """Evaluate every sensor once per tick, on command, carrying cursors; report time and memory."""
    os.environ.update(env)
    # The sensors' per-tick log lines go to a file, not the benchmark's console.
    log = os.open(os.path.join(home, "sensor-ticks.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 2)
    warnings.filterwarnings("ignore")  # Dagster's beta/preview notices, once per definition
    try:
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        from reporting_assets.definitions import defs as load_defs

        defs = load_defs()
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(home))
        sensors = list(defs.sensors or [])
        results.put({"sensors": [sensor.name for sensor in sensors], "rss_mb": _rss_mb()})
    except BaseException as error:
        results.put({"error": f"{type(error).__name__}: {error}"})
        return
    cursors: dict[str, str | None] = {}
    while True:
        command = commands.get()
        if command is None:
            break
        phase, ticks, trace, until_resolved = command
        records = []
        last_pending: int | None = None
        if trace:
            tracemalloc.start()
        try:
            for tick in range(ticks):
                if until_resolved and last_pending == 0:
                    break
                for sensor in sensors:
                    context = dg.build_sensor_context(
                        instance=instance,
                        cursor=cursors.get(sensor.name),
                        definitions=defs,
                        sensor_name=sensor.name,
                        resources=defs.resources,
                    )
                    began = time.perf_counter()
                    data = sensor.evaluate_tick(context)
                    seconds = time.perf_counter() - began
                    cursors[sensor.name] = data.cursor
                    for event in data.asset_events or []:  # what the daemon does with them
                        instance.report_runless_asset_event(event)
                    gc.collect()
                    records.append(
                        {
                            "phase": phase,
                            "tick": tick,
                            "sensor": sensor.name,
                            "seconds": seconds,
                            "run_requests": len(data.run_requests or []),
                            "skip": (data.skip_message or "")[:160],
                            "asset_events": len(data.asset_events or []),
                            "cursor_kb": len(data.cursor or "") / 1024,
                            "pending": _pending(sensor.name, data.cursor),
                            "rss_mb": _rss_mb(),
                            "traced_mb": tracemalloc.get_traced_memory()[0] / 2**20 if trace else None,
                        }
                    )
                    if records[-1]["pending"] is not None:
                        last_pending = records[-1]["pending"]
        except BaseException as error:
            records.append({"phase": phase, "error": f"{type(error).__name__}: {error}"})
        finally:
            if trace:
                tracemalloc.stop()
        results.put(records)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put({"max_rss_mb": usage.ru_maxrss / 1024})
    instance.dispose()


# -- the world around the sensors -------------------------------------------------------------------------------


def _commit(kafka: Any, offsets: dict[int, int]) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.consumer_group, enable_auto_commit=False
    )
    try:
        consumer.commit(
            {TopicPartition(kafka.request_topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        )
    finally:
        consumer.close()


def _produce(kafka: Any, accounts: list[str], count: int) -> None:
    from bench.common import REPORT

    producer = kafka.producer(linger_ms=20)
    try:
        for index in range(count):
            request = REPORT.first_request(accounts[index % len(accounts)], "2026-10-01", row_limit=1_000)
            producer.send(kafka.request_topic, key=request.key(), value=request.encode())
        producer.flush()
    finally:
        producer.close()


def fast_scratch(bench: Bench) -> Path:
    """A scratch folder on tmpfs where there is one, for DAGSTER_HOME and the data folder: each event's
    sqlite commit and each page's fsync are then memory writes, which halves the seeding (~9 against
    ~19 ms an event, measured); the sensors read both from memory either way (the page cache)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="bench-sensors-", dir=shm))
    return bench.scratch("sensors")


def _in_child(target: Any, **kwargs: Any) -> dict[str, Any]:
    return start_child(target, **kwargs).result(timeout_s=3_600)


def run(bench: Bench) -> dict[str, Any]:
    config = settings(bench)
    if not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(__file__)), SENSORS_MODULE)):
        return {
            "title": "5. Scale of the bookkeeping (sensors)",
            "settings": config,
            "skipped": f"{SENSORS_MODULE} does not exist: not run.",
            "targets": [{"target": "<= 5 s a tick, memory flat across ticks", "value": "not run", "met": None}],
        }
    accounts = site_urls(config["accounts"])
    first = dt.date(2026, 10, 1)
    dates = [(first + dt.timedelta(days=day)).isoformat() for day in range(config["days"])]
    keys = [f"{account}|{date}" for date in dates for account in accounts]
    scratch = fast_scratch(bench)
    home, data_dir = scratch / "home", scratch / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    kafka = bench.kafka("sensors", config["topic_partitions"])
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "REPORTING_REQUEST_TOPIC": kafka.request_topic,
        "REPORTING_DEAD_LETTER_TOPIC": kafka.dead_letter_topic,
        "REPORTING_DELAY_TOPIC": kafka.delay_topic,
        "REPORTING_CONSUMER_GROUP": kafka.consumer_group,
        "REPORTING_TOPIC_PARTITIONS": str(config["topic_partitions"]),
        "REPORTING_DATA_DIR": str(data_dir),
        "REPORTING_START_DATE": dates[0],
        "DAGSTER_HOME": str(home),
    }
    timings: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    commands, results = SPAWN.Queue(), SPAWN.Queue()
    process = None
    try:
        # Enqueued: the topic holds the requests; the consumers have not committed any yet.
        _produce(kafka, accounts, config["messages_enqueued"])
        watermark = kafka.end_offsets(kafka.request_topic)
        _in_child(add_accounts, home=str(home), accounts=accounts)
        # The enqueue's events and the consumers' pages, side by side (the instance and the landing zone
        # are apart).
        recording = start_child(
            record_materializations,
            home=str(home),
            asset="report_requests",
            keys=keys,
            metadata={"end_offsets": {str(p): o for p, o in watermark.items()}, "requests_enqueued": 1},
        )
        landing = start_child(
            land_pages, landing_dir=str(data_dir / "landing"), keys=keys, rows_per_page=config["rows_per_page"]
        )
        seeded = recording.result(timeout_s=3_600)
        timings["landed"] = landing.result(timeout_s=3_600)
        process = SPAWN.Process(target=sensor_process, args=(str(home), env, commands, results), daemon=True)
        process.start()
        hello = results.get(timeout=300)
        if "error" in hello:
            raise RuntimeError(f"loading the code location failed: {hello['error']}")
        ticks = config["ticks_per_phase"]

        def phase(name: str, count: int = ticks, trace: bool = False, until_resolved: bool = False) -> None:
            commands.put((name, count, trace, until_resolved))
            records.extend(results.get(timeout=3_600))

        phase("1 enqueued, consumers busy")
        # The group passed the enqueue's watermark, but new work arrived behind it: landing checks decide.
        _commit(kafka, watermark)
        _produce(kafka, accounts, 500)
        phase(BUSY, config["max_progress_ticks"], until_resolved=True)
        _commit(kafka, kafka.end_offsets(kafka.request_topic))
        phase("3 topic drained")
        timings["downloads"] = _in_child(
            record_materializations, home=str(home), asset="downloaded_reports", keys=keys, metadata={"rows": 1}
        )
        phase("4 all downloaded")
        phase(STEADY, config["steady_ticks"])
        phase(TRACED, config["traced_ticks"], trace=True)
        commands.put(None)
        final = results.get(timeout=300)
    finally:
        if process is not None:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
        bench.delete_topics(kafka)
        shutil.rmtree(scratch, ignore_errors=True)
    errors = [r for r in records if "error" in r]
    if errors:
        raise RuntimeError(f"a sensor tick failed: {errors[0]}")
    return summarize(config, hello, seeded, timings, records, final)


def _says(tick: dict[str, Any]) -> str:
    if tick.get("asset_events"):
        return f"{tick['asset_events']} asset events (observation, check results)"
    return (tick["skip"] or "–").replace("|", "\\|")[:90]


def progress(records: list[dict[str, Any]], partitions: int) -> list[dict[str, Any]]:
    """The download sensor's ticks of the busy phase: seconds, partitions resolved, still pending, RSS."""
    from reporting_assets.core.keys import DOWNLOAD_SENSOR

    ticks = [r for r in records if r["phase"] == BUSY and r["sensor"] == DOWNLOAD_SENSOR]
    before = partitions  # every partition pending once the watermark has passed
    out = []
    for tick in ticks:
        out.append({**tick, "resolved": before - tick["pending"]})
        before = tick["pending"]
    return out


def summarize(
    config: dict[str, Any], hello: dict[str, Any], seeded: dict[str, Any], timings: dict[str, Any],
    records: list[dict[str, Any]], final: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    rows = []
    phases = list(dict.fromkeys(r["phase"] for r in records))
    for phase in phases:
        for sensor in hello["sensors"]:
            ticks = [r for r in records if r["phase"] == phase and r["sensor"] == sensor]
            seconds = [r["seconds"] for r in ticks]
            rows.append(
                [
                    phase,
                    sensor,
                    _ticks(seconds),
                    str(sum(r["run_requests"] for r in ticks)),
                    f"{max(r['cursor_kb'] for r in ticks):.0f}",
                    _says(ticks[0]),
                ]
            )
    busy = progress(records, config["partitions"])
    timed = [r for r in records if r["phase"] != TRACED]
    slowest = max(timed, key=lambda r: r["seconds"])
    last_sensor = hello["sensors"][-1]
    rss_by_tick = [r["rss_mb"] for r in records if r["sensor"] == last_sensor]
    steady_rss = [r["rss_mb"] for r in records if r["phase"] == STEADY and r["sensor"] == last_sensor]
    busy_rss = [r["rss_mb"] for r in records if r["phase"] == BUSY and r["sensor"] == last_sensor]
    traced = [r["traced_mb"] for r in records if r["phase"] == TRACED and r["sensor"] == last_sensor]
    rss_growth = steady_rss[-1] - steady_rss[0]
    busy_growth = busy_rss[-1] - busy_rss[0]
    traced_growth = traced[-1] - traced[0]
    # Flat: the Python heap does not grow from tick to tick, and RSS moves by less than allocator noise,
    # across the steady ticks and across the busy ones (where the cursor shrinks as partitions resolve).
    flat = traced_growth < 0.5 and rss_growth < 4.0 and busy_growth < 4.0
    resolved = [t["resolved"] for t in busy]
    finished = bool(busy) and busy[-1]["pending"] == 0
    stalled = [t for t in busy if t["resolved"] <= 0]
    landed = timings["landed"]
    return {
        "title": "5. Scale of the bookkeeping (sensors)",
        "settings": config,
        "columns": ["phase", "sensor", "seconds per tick", "run requests", "cursor KiB", "first tick says"],
        "rows": rows,
        "tables": [
            {
                "title": f"Phase '{BUSY}': the download sensor's ticks (landing checks within "
                "REPORTING_LANDING_CHECK_BUDGET_S, 2 s by default)",
                "columns": ["tick", "seconds", "partitions resolved", "still pending", "run requests", "RSS MiB"],
                "rows": [
                    [
                        str(t["tick"] + 1),
                        f"{t['seconds']:.2f}",
                        str(t["resolved"]),
                        str(t["pending"]),
                        str(t["run_requests"]),
                        f"{t['rss_mb']:.0f}",
                    ]
                    for t in busy
                ],  # fmt: skip
            }
        ],
        "baseline": "none (an absolute target); the ticks are compared with each other",
        "notes": [
            f"{config['accounts']:,} account partitions × {config['days']} day(s) = {config['partitions']:,} "
            f"(date, account) partitions; {seeded['partitions_recorded']:,} report_requests partitions recorded "
            f"through report_runless_asset_event ({seeded['seconds']:.0f} s, {seeded['ms_per_event']:.1f} ms an "
            f"event), later {timings['downloads']['partitions_recorded']:,} downloaded_reports "
            f"({timings['downloads']['seconds']:.0f} s). The 30 days × 10 000 accounts of a cold backfill would "
            f"take {30 * 10_000 * 2 * seeded['ms_per_event'] / 60_000:.0f} minutes to record that way, so the count "
            "is cut to what a full run affords; the 10 000 accounts are kept.",
            f"Landing zone: {landed['files']:,} first pages landed with LandingZone.land_page, each shorter than its "
            f"row limit, so each partition's download is complete ({landed['seconds']:.0f} s); "
            f"partition_settled on a sample: {landed['sample_settled']} settled.",
            f"Busy phase: {len(busy)} ticks of the download sensor to resolve {config['partitions']:,} partitions"
            + (f" (median {statistics.median(resolved):.0f} a tick)" if resolved else "")
            + ("" if finished else f"; NOT finished within {config['max_progress_ticks']} ticks")
            + f"; ticks that resolved nothing: {len(stalled)}.",
            f"Slowest tick: {slowest['sensor']} in phase '{slowest['phase']}', {slowest['seconds']:.2f} s.",
            "Code-server stand-in's RSS after each tick (all phases, after the last sensor), MiB: "
            + ", ".join(f"{v:.0f}" for v in rss_by_tick)
            + f" (after loading the code location: {hello['rss_mb']:.0f}; peak {final['max_rss_mb']:.0f}).",
            "Python heap held after each traced tick (tracemalloc, MiB): "
            + ", ".join(f"{v:.2f}" for v in traced)
            + ".",
            "Flat means: the traced heap grows < 0.5 MiB over the traced ticks, and RSS < 4 MiB over the steady "
            "ticks and over the busy ones.",
            f"Sensors evaluated: {', '.join(hello['sensors'])}.",
        ],
        "targets": [
            {
                "target": "<= 5 s a tick (every sensor, every phase)",
                "value": f"slowest {slowest['seconds']:.2f} s ({slowest['sensor']}, {slowest['phase']}); median "
                f"{statistics.median(r['seconds'] for r in timed):.2f} s",
                "met": slowest["seconds"] <= 5.0,
            },
            {
                "target": "watermark passed, topic busy: every tick resolves partitions from the landing zone, "
                f"all of them within {config['max_progress_ticks']} ticks",
                "value": f"{config['partitions'] - (busy[-1]['pending'] if busy else config['partitions']):,} of "
                f"{config['partitions']:,} resolved in {len(busy)} ticks (per tick: "
                + ", ".join(map(str, resolved))
                + f"); {len(stalled)} ticks resolved nothing",
                "met": finished and not stalled,
            },
            {
                "target": "memory flat across ticks",
                "value": f"RSS {rss_growth:+.1f} MiB over {len(steady_rss)} steady ticks, {busy_growth:+.1f} MiB over "
                f"{len(busy_rss)} busy ticks; Python heap {traced_growth:+.2f} MiB over {len(traced)} traced ticks",
                "met": flat,
            },
        ],
        "raw": records,
    }


def _ticks(seconds: list[float]) -> str:
    """Every tick's seconds, or a summary of a long phase."""
    if len(seconds) <= 6:
        return " / ".join(f"{s:.2f}" for s in seconds)
    return f"{len(seconds)} ticks: {min(seconds):.2f} .. {max(seconds):.2f}, median {statistics.median(seconds):.2f}"
