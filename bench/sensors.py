"""5. Scale of the bookkeeping: every sensor of the code location against A accounts × D days of partitions.

A sqlite Dagster instance (what `make dev` and the daemon use) gets A dynamic account partitions and
one `report_requests` materialization per (date, account) key, with `end_offsets` metadata like the
asset records. A long-lived child process (standing in for the code server the daemon asks) then
evaluates every sensor of `reporting_assets.definitions.defs()` tick after tick through
`build_sensor_context` + `evaluate_tick`, carrying each sensor's cursor from tick to tick, while the
driver moves the world between phases: consumers busy, watermark passed with new work behind it,
topic drained, then every partition downloaded. Asset events a sensor returns are recorded in the
instance like the daemon does; run requests are counted, not launched.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import resource
import statistics
import time
import tracemalloc
import warnings
from typing import Any

from bench.common import SPAWN, Bench, site_urls

SENSORS_MODULE = "reporting_assets/defs/downloads/sensors.py"
STEADY = "5 steady: nothing new"
TRACED = "6 steady, tracemalloc on (not timed)"


def settings(bench: Bench) -> dict[str, Any]:
    accounts = 1_000 if bench.quick else 10_000
    return {
        "accounts": accounts,
        "days": 30,
        "partitions": accounts * 30,
        "topic_partitions": 4,
        "messages_enqueued": 2_000,
        "ticks_per_phase": 3,
        "steady_ticks": 6 if bench.quick else 12,
        "traced_ticks": 3 if bench.quick else 6,
        "instance": "sqlite (DagsterInstance.from_ref(InstanceRef.from_dir(...)))",
    }


# -- seeding ----------------------------------------------------------------------------------------------


def seed_materializations(
    home: str, asset: str, keys: list[str], metadata: dict[str, Any], verify: int = 3
) -> dict[str, Any]:
    """Record one materialization per partition key, as `report_runless_asset_event` would, in bulk.

    The first `verify` go through the public API (~15 ms each on sqlite: 75 minutes for 300 000).
    The rest are the rows `store_event` writes to the cross-run index, built by the storage's own
    `_event_to_row` from one event whose partition is then substituted, inserted in a few large
    transactions; a sample is read back and must equal the event it stands for.
    """
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
    from dagster_shared.serdes import deserialize_value

    started = time.perf_counter()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(home))
    values = {
        name: dg.MetadataValue.json(value) if isinstance(value, dict) else value for name, value in metadata.items()
    }
    stamp = time.time()

    def entry(key: str) -> EventLogEntry:
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            event_specific_data=StepMaterializationData(
                dg.AssetMaterialization(asset_key=asset, partition=key, metadata=values)
            ),
            job_name=RUNLESS_JOB_NAME,
        )
        return EventLogEntry(
            user_message="", level=20, job_name=RUNLESS_JOB_NAME, run_id=RUNLESS_RUN_ID, error_info=None,
            timestamp=stamp, step_key=None, dagster_event=event,
        )  # fmt: skip

    for key in keys[:verify]:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=key, metadata=values))
    storage = instance.event_log_storage
    placeholder = "@@partition@@"
    template = storage._event_to_row(entry(placeholder))

    def row(key: str) -> dict[str, Any]:
        return {**template, "event": template["event"].replace(placeholder, key), "partition": key}

    rest = keys[verify:]
    for start in range(0, len(rest), 20_000):
        with storage.index_transaction() as conn:
            conn.execute(SqlEventLogStorageTable.insert(), [row(key) for key in rest[start : start + 20_000]])
    if rest:
        newest_id = storage.get_maximum_record_id()
        # The asset's row (its last materialization), as store_event leaves it after the newest event.
        with storage.index_transaction() as conn:
            storage._store_asset_event(conn, entry(rest[-1]), newest_id)
        for key in (rest[0], rest[-1]):
            stored = deserialize_value(row(key)["event"], EventLogEntry)
            if stored != entry(key):
                raise AssertionError(f"templated event for {key!r} differs from the real one")
    check = instance.get_latest_storage_id_by_partition(dg.AssetKey(asset), DagsterEventType.ASSET_MATERIALIZATION)
    instance.dispose()
    return {"seconds": time.perf_counter() - started, "partitions_recorded": len(check)}


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
        phase, ticks, trace = command
        records = []
        if trace:
            tracemalloc.start()
        try:
            for tick in range(ticks):
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
                            "rss_mb": _rss_mb(),
                            "traced_mb": tracemalloc.get_traced_memory()[0] / 2**20 if trace else None,
                        }
                    )
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


def _in_child(target: Any, **kwargs: Any) -> dict[str, Any]:
    from bench.common import start_child

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
    home = bench.scratch("sensors-home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    data_dir = bench.scratch("sensors-data")
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
    timings: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    commands, results = SPAWN.Queue(), SPAWN.Queue()
    process = None
    try:
        # Enqueued: the topic holds the requests; the consumers have not committed any yet.
        _produce(kafka, accounts, config["messages_enqueued"])
        watermark = kafka.end_offsets(kafka.request_topic)
        began = time.perf_counter()
        _in_child(add_accounts, home=str(home), accounts=accounts)
        seeded = _in_child(
            seed_materializations,
            home=str(home),
            asset="report_requests",
            keys=keys,
            metadata={"end_offsets": {str(p): o for p, o in watermark.items()}, "requests_enqueued": 1},
        )
        timings["seed_requests_s"] = time.perf_counter() - began
        process = SPAWN.Process(target=sensor_process, args=(str(home), env, commands, results), daemon=True)
        process.start()
        hello = results.get(timeout=300)
        if "error" in hello:
            raise RuntimeError(f"loading the code location failed: {hello['error']}")
        ticks = config["ticks_per_phase"]

        def phase(name: str, count: int = ticks, trace: bool = False) -> None:
            commands.put((name, count, trace))
            records.extend(results.get(timeout=3_600))

        phase("1 enqueued, consumers busy")
        # The group passed the enqueue's watermark, but new work arrived behind it: landing checks decide.
        _commit(kafka, watermark)
        _produce(kafka, accounts, 500)
        phase("2 watermark passed, topic busy")
        _commit(kafka, kafka.end_offsets(kafka.request_topic))
        phase("3 topic drained")
        began = time.perf_counter()
        _in_child(seed_materializations, home=str(home), asset="downloaded_reports", keys=keys, metadata={"rows": 1})
        timings["seed_downloads_s"] = time.perf_counter() - began
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
    errors = [r for r in records if "error" in r]
    if errors:
        raise RuntimeError(f"a sensor tick failed: {errors[0]}")
    return summarize(config, hello, seeded, timings, records, final)


def _says(tick: dict[str, Any]) -> str:
    if tick.get("asset_events"):
        return f"{tick['asset_events']} asset events (observation, check results)"
    return (tick["skip"] or "–").replace("|", "\\|")[:90]


def summarize(
    config: dict[str, Any], hello: dict[str, Any], seeded: dict[str, Any], timings: dict[str, float],
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
                    " / ".join(f"{s:.2f}" for s in seconds),
                    str(sum(r["run_requests"] for r in ticks)),
                    f"{max(r['cursor_kb'] for r in ticks):.0f}",
                    _says(ticks[0]),
                ]
            )
    timed = [r for r in records if r["phase"] != TRACED]
    slowest = max(timed, key=lambda r: r["seconds"])
    last_sensor = hello["sensors"][-1]
    rss_by_tick = [r["rss_mb"] for r in records if r["sensor"] == last_sensor]
    steady_rss = [r["rss_mb"] for r in records if r["phase"] == STEADY and r["sensor"] == last_sensor]
    traced = [r["traced_mb"] for r in records if r["phase"] == TRACED and r["sensor"] == last_sensor]
    rss_growth = steady_rss[-1] - steady_rss[0]
    traced_growth = traced[-1] - traced[0]
    # Flat: the Python heap does not grow from tick to tick, and RSS moves by less than allocator noise.
    flat = traced_growth < 0.5 and rss_growth < 4.0
    return {
        "title": "5. Scale of the bookkeeping (sensors)",
        "settings": config,
        "columns": ["phase", "sensor", "seconds per tick", "run requests", "cursor KiB", "first tick says"],
        "rows": rows,
        "baseline": "none (an absolute target); the ticks are compared with each other",
        "notes": [
            f"{config['accounts']:,} account partitions × {config['days']} days = {config['partitions']:,} "
            f"(date, account) partitions; {seeded['partitions_recorded']:,} report_requests partitions recorded "
            f"(seeding {timings['seed_requests_s']:.0f} s), later as many downloaded_reports "
            f"({timings['seed_downloads_s']:.0f} s).",
            f"Slowest tick: {slowest['sensor']} in phase '{slowest['phase']}', {slowest['seconds']:.2f} s.",
            "Code-server stand-in's RSS after each tick (all phases, after the last sensor), MiB: "
            + ", ".join(f"{v:.0f}" for v in rss_by_tick)
            + f" (after loading the code location: {hello['rss_mb']:.0f}; peak {final['max_rss_mb']:.0f}).",
            "Python heap held after each traced tick (tracemalloc, MiB): "
            + ", ".join(f"{v:.2f}" for v in traced)
            + ".",
            "Flat means: the traced heap grows < 0.5 MiB over the traced ticks and RSS < 4 MiB over the steady ticks.",
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
                "target": "memory flat across ticks",
                "value": f"RSS {rss_growth:+.1f} MiB over {len(steady_rss)} steady ticks; Python heap "
                f"{traced_growth:+.2f} MiB over {len(traced)} traced ticks",
                "met": flat,
            },
        ],
        "raw": records,
    }
