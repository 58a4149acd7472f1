"""Sensors of the download stage: consumers when requests wait, loads when their requests are done.

- `launch_consumers_on_lag`: the request topic has lag and no download run is queued or running ->
  launch `download_requests` (so a killed download run is replaced without anyone watching).
- `download_when_requests_done`: a (date, account) partition enqueued and not downloaded since, whose
  requests are all done -> materialize `downloaded_reports` for it (partition ranges, one run per
  rectangle of dates x contiguous accounts).

State lives in JSON cursors (`core.automation.downloads.DownloadState`): the event-log storage id
already folded in, and the partitions still waiting. A tick reads only events newer than its cursor
(one indexed query per asset, no event deserialization for big batches) and every run key is derived
from that state, so a daemon restart re-evaluating a tick asks for the same runs and Dagster drops
the duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from reporting_assets.core.automation.downloads import DownloadState, digest, done_partitions
from reporting_assets.core.automation.ranges import rectangles
from reporting_assets.core.downloads import partition_settled
from reporting_assets.core.kafka import KafkaCluster, KafkaTopicError, TopicLag
from reporting_assets.core.keys import (
    CONSUMER_SENSOR,
    DOWNLOAD_JOB,
    DOWNLOAD_ROLE,
    DOWNLOAD_SENSOR,
    DOWNLOADS_ASSET,
    MAX_RETRIES_TAG,
    MAX_RUNTIME_TAG,
    REQUESTS_ASSET,
    ROLE_TAG,
    SENSOR_TAG,
)
from reporting_assets.core.landing import LandingZone
from reporting_assets.defs.downloads.jobs import consumer_run_config
from reporting_assets.defs.partitions import account_partitions
from reporting_assets.defs.runs import ACTIVE_STATUSES, latest_event_id, new_partition_events, sensor_status
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.warehouse import WarehouseResource
from reporting_assets.settings import Settings, load_settings

# Below this many new enqueued partitions per tick, watermarks come from each materialization's
# recorded end offsets; above it, from the end offsets read right after the event query (an upper
# bound of every recorded one: each was read before its event was stored), so that a 300 000-partition
# backfill never means deserializing 300 000 events in one tick.
EXACT_WATERMARK_MAX_EVENTS = 500


def recorded_watermarks(
    instance: dg.DagsterInstance, after: int, upto: int, expected: int
) -> dict[str, dict[int, int]] | None:
    """Partition -> `end_offsets` metadata of its enqueue, or None when there are too many to read."""
    if expected > EXACT_WATERMARK_MAX_EVENTS:
        return None
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(REQUESTS_ASSET), after_storage_id=after, before_storage_id=upto + 1
        ),
        limit=EXACT_WATERMARK_MAX_EVENTS + 1,
        ascending=True,
    )
    if result.has_more:
        return None
    marks: dict[str, dict[int, int]] = {}
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None or materialization.partition is None:
            continue
        entry = materialization.metadata.get("end_offsets")
        value = getattr(entry, "value", None)
        if isinstance(value, dict):
            marks[str(materialization.partition)] = {int(p): int(o) for p, o in value.items()}
    return marks


def work_lags(kafka: KafkaResource) -> dict[str, TopicLag]:
    """The group's lag on the request topic and on the delay topic (requests parked after a load-quota
    refusal are work not done either), committed offsets read before end offsets."""
    try:
        return kafka.settled_lags([kafka.request_topic, kafka.delay_topic])
    except KafkaTopicError:
        return kafka.settled_lags([kafka.request_topic])  # no delay topic (yet): nothing parked


def evaluate_downloads(
    instance: dg.DagsterInstance,
    cursor: str | None,
    kafka: KafkaCluster | KafkaResource,
    zone: LandingZone,
    settings: Settings,
    log: Any = None,
) -> tuple[list[dg.RunRequest], str, str]:
    """One tick of `download_when_requests_done`: (run requests, new cursor, summary)."""
    state = DownloadState.from_cursor(cursor)
    upto = latest_event_id(instance)
    enqueued = new_partition_events(instance, REQUESTS_ASSET, state.folded_upto, upto)
    downloaded = new_partition_events(instance, DOWNLOADS_ASSET, state.folded_upto, upto)
    if not enqueued and not state.pending:
        state.folded_upto = max(state.folded_upto, upto)
        return [], state.to_cursor(), "nothing enqueued since the last downloads"
    try:
        lags = work_lags(kafka)
    except KafkaTopicError:
        return [], cursor or DownloadState().to_cursor(), f"request topic {kafka.request_topic} does not exist yet"
    offsets = lags[kafka.request_topic]
    end_now = {p: lag.end for p, lag in offsets.partitions.items()}
    recorded = recorded_watermarks(instance, state.folded_upto, upto, len(enqueued)) if enqueued else {}

    def watermark_of(key: str) -> Mapping[int, int]:
        return (recorded or {}).get(key) or end_now

    state.fold(enqueued, downloaded, watermark_of, upto)
    committed = {p: lag.committed for p, lag in offsets.partitions.items()}
    done = done_partitions(
        state,
        committed,
        drained=all(lag.total == 0 for lag in lags.values()),
        settled=lambda date, account: partition_settled(zone, date, account),
        budget_s=settings.landing_check_budget_s,
    )
    if not done:
        summary = (
            f"{state.pending_partitions} partitions wait for their requests (lag {offsets.total})"
            if state.pending
            else "every enqueued partition is downloaded"
        )
        return [], state.to_cursor(), summary
    order = list(instance.get_dynamic_partitions(account_partitions.name))
    known = set(order)
    unknown = {date: {a for a in accounts if a not in known} for date, accounts in done.items()}
    unknown = {date: accounts for date, accounts in unknown.items() if accounts}
    if unknown and log is not None:
        log.warning(f"dropping partitions of accounts that are no longer partitions: {dict(list(unknown.items())[:5])}")
    sids = {date: state.pending[date].enqueued_sid for date in done}
    requests = []
    for rect in rectangles(done, order, settings.download_max_partitions_per_run):
        newest = max(sids[d] for d in sids if rect.first_date <= d <= rect.last_date)
        run_key = f"downloads-{rect.first_date}-{rect.last_date}-" + digest(
            rect.first_account, rect.last_account, newest
        )
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                asset_selection=[dg.AssetKey(DOWNLOADS_ASSET)],
                tags={**rect.tags, SENSOR_TAG: DOWNLOAD_SENSOR, MAX_RETRIES_TAG: str(settings.run_max_retries)},
            )
        )
    state.remove(done)
    summary = (
        f"{sum(len(a) for a in done.values())} partitions done in {len(requests)} runs; "
        f"{state.pending_partitions} still wait (lag {offsets.total})"
    )
    return requests, state.to_cursor(), summary


def evaluate_consumers(
    instance: dg.DagsterInstance, kafka: KafkaResource, settings: Settings
) -> dg.RunRequest | dg.SkipReason:
    try:
        lags = work_lags(kafka)
    except KafkaTopicError:
        return dg.SkipReason(f"request topic {kafka.request_topic} does not exist yet")
    total = sum(lag.total for lag in lags.values())
    if total == 0:
        return dg.SkipReason(f"no lag on {' or '.join(lags)}")
    role = {ROLE_TAG: DOWNLOAD_ROLE}
    active = instance.get_run_records(dg.RunsFilter(tags=role, statuses=ACTIVE_STATUSES), limit=1)
    if active:
        run = active[0].dagster_run
        return dg.SkipReason(f"lag {total}; download run {run.run_id} is {run.status.value}")
    # Keyed by the download run before it: a restarted daemon re-asking gets the same key, and a
    # new run can only be asked for once the previous one has ended (or was marked failed).
    latest = instance.get_run_records(dg.RunsFilter(tags=role), limit=1)
    previous = latest[0].dagster_run.run_id if latest else "none"
    return dg.RunRequest(
        run_key=f"consumers-after-{previous}",
        job_name=DOWNLOAD_JOB,
        run_config=consumer_run_config(settings.consumer),
        tags={
            SENSOR_TAG: CONSUMER_SENSOR,
            # A run whose worker vanished without notice is failed by run monitoring after this.
            MAX_RUNTIME_TAG: str(int(settings.consumer.max_runtime_s + 600)),
        },
    )


def build_consumer_sensor(settings: Settings) -> dg.SensorDefinition:
    interval = settings.sensor_interval_s
    status = sensor_status(settings.sensors_running)

    @dg.sensor(
        name=CONSUMER_SENSOR,
        job_name=DOWNLOAD_JOB,
        minimum_interval_seconds=interval,
        default_status=status,
        description="Launch download_requests when the request topic has lag and no download run is queued or running.",
    )
    def launch_consumers_on_lag(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        return evaluate_consumers(context.instance, kafka, settings)

    return launch_consumers_on_lag


def build_download_sensor(settings: Settings) -> dg.SensorDefinition:
    interval = settings.sensor_interval_s
    status = sensor_status(settings.sensors_running)

    @dg.sensor(
        name=DOWNLOAD_SENSOR,
        target=[dg.AssetKey(DOWNLOADS_ASSET)],
        minimum_interval_seconds=interval,
        default_status=status,
        description=(
            "Materialize downloaded_reports for every (date, account) enqueued and not downloaded since, once "
            "the consumer group has passed its watermark and all its pages are landed."
        ),
    )
    def download_when_requests_done(
        context: dg.SensorEvaluationContext, kafka: KafkaResource, warehouse: WarehouseResource
    ):
        requests, cursor, summary = evaluate_downloads(
            context.instance, context.cursor, kafka, warehouse.landing_zone(), settings, context.log
        )
        context.log.info(summary)
        return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=None if requests else summary)

    return download_when_requests_done


@dg.definitions
def sensors() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(sensors=[build_consumer_sensor(settings), build_download_sensor(settings)])
