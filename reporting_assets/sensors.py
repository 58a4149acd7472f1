"""Sensors that finish the work once requests are enqueued, and make lag visible.

- `launch_consumers_on_lag`: the request topic has lag and no download run is queued or running ->
  launch `download_requests` (so a killed download run is replaced without anyone watching).
- `download_when_requests_done`: a (date, account) partition enqueued and not downloaded since, whose
  requests are all done -> materialize `downloaded_reports` for it (partition ranges, one run per
  rectangle of dates x contiguous accounts).
- `export_when_date_downloaded`: every account partition of a date is downloaded and the date was
  not exported since -> materialize `exported_reports` for the date.
- `observe_request_lag`: each tick, an observation of `report_requests` with the lag, and the two
  request-topic checks.

State lives in JSON cursors: the event-log storage id already folded in, and the partitions still
waiting. A tick reads only events newer than its cursor (one indexed query per asset, no event
deserialization for big batches) and every run key is derived from that state, so a daemon restart
re-evaluating a tick asks for the same runs and Dagster drops the duplicates.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date as Date
from typing import Any

import dagster as dg
from dagster._core.event_api import AssetRecordsFilter
from dagster._core.events import DagsterEventType

from reporting_assets.assets.downloads import LoadConfig, PartitionLoad
from reporting_assets.automation_settings import AutomationSettings
from reporting_assets.consumer.landing import LandingZone
from reporting_assets.consumer.ops import download_requests
from reporting_assets.lag import LagLimits, check_evaluations, measure, observation
from reporting_assets.partitions import account_partitions
from reporting_assets.resources.kafka import KafkaResource, KafkaTopicError, TopicLag
from reporting_assets.resources.warehouse import WarehouseResource

REQUESTS_ASSET = dg.AssetKey("report_requests")
DOWNLOADS_ASSET = dg.AssetKey("downloaded_reports")
EXPORTS_ASSET = dg.AssetKey("exported_reports")

CONSUMER_SENSOR = "launch_consumers_on_lag"
DOWNLOAD_SENSOR = "download_when_requests_done"
EXPORT_SENSOR = "export_when_date_downloaded"
LAG_SENSOR = "observe_request_lag"

SENSOR_TAG = "reporting_assets/sensor"
ROLE_TAG = "reporting_assets/role"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
MAX_RETRIES_TAG = "dagster/max_retries"
MAX_RUNTIME_TAG = "dagster/max_runtime"

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# Below this many new enqueued partitions per tick, watermarks come from each materialization's
# recorded end offsets; above it, from the end offsets read right after the event query (an upper
# bound of every recorded one: each was read before its event was stored), so that a 300 000-partition
# backfill never means deserializing 300 000 events in one tick.
EXACT_WATERMARK_MAX_EVENTS = 500
PARTITION_QUERY_CHUNK = 2_000
FULL_SCAN_PARTITIONS = 20_000  # above this many (date, account) keys to look up, read the asset's all at once


def _status(running: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED


# -- partition keys -------------------------------------------------------------------------------


def key_str(date: str, account: str) -> str:
    """String form of the (date, account) multi-partition key: dimensions sorted by name, '|'-joined."""
    return f"{account}|{date}"


def parse_key(key: str) -> tuple[str, str]:
    """(date, account) of a key string; account ids never contain '|'."""
    account, _, date = key.rpartition("|")
    return date, account


def _digest(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


# -- event log --------------------------------------------------------------------------------------


def new_partition_events(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, after: int, upto: int
) -> dict[str, int]:
    """Partition -> latest materialization storage id in (after, upto]; one indexed query, no decoding.

    A partition whose latest event is newer than `upto` is left for the next tick (its newest
    event supersedes the older one anyway).
    """
    latest = instance.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, after_cursor=after
    )
    return {key: sid for key, sid in latest.items() if sid <= upto}


def latest_event_id(instance: dg.DagsterInstance) -> int:
    return instance.event_log_storage.get_maximum_record_id() or 0


def recorded_watermarks(
    instance: dg.DagsterInstance, after: int, upto: int, expected: int
) -> dict[str, dict[int, int]] | None:
    """Partition -> `end_offsets` metadata of its enqueue, or None when there are too many to read."""
    if expected > EXACT_WATERMARK_MAX_EVENTS:
        return None
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=REQUESTS_ASSET, after_storage_id=after, before_storage_id=upto + 1),
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


# -- downloads: pending partitions ------------------------------------------------------------------


@dataclass
class PendingDate:
    """Accounts of one date enqueued and not downloaded since, with the watermark they wait for."""

    watermark: dict[int, int]  # Kafka partition -> offset the group must have committed
    enqueued_sid: int  # newest enqueue (storage id) folded into this date
    accounts: frozenset[str]

    def merge(self, watermark: Mapping[int, int], sid: int, accounts: Iterable[str]) -> None:
        for partition, offset in watermark.items():
            self.watermark[partition] = max(self.watermark.get(partition, 0), offset)
        self.enqueued_sid = max(self.enqueued_sid, sid)
        self.accounts = self.accounts | frozenset(accounts)


@dataclass
class DownloadState:
    folded_upto: int = 0  # event-log storage id up to which enqueues and downloads are folded in
    pending: dict[str, PendingDate] = field(default_factory=dict)

    # Account sets are interned in the cursor: 30 dates of the same 10 000 accounts store them once.
    def to_cursor(self) -> str:
        sets: dict[str, list[str]] = {}
        refs: dict[frozenset[str], str] = {}
        dates = {}
        for date, pending in sorted(self.pending.items()):
            ref = refs.get(pending.accounts)
            if ref is None:
                members = sorted(pending.accounts)
                ref = refs[pending.accounts] = _digest(*members)
                sets[ref] = members
            dates[date] = {
                "wm": {str(p): o for p, o in sorted(pending.watermark.items())},
                "sid": pending.enqueued_sid,
                "accounts": ref,
            }
        return json.dumps({"v": 1, "upto": self.folded_upto, "dates": dates, "sets": sets}, separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> DownloadState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        sets = {ref: frozenset(members) for ref, members in data.get("sets", {}).items()}
        pending = {
            date: PendingDate(
                watermark={int(p): int(o) for p, o in entry["wm"].items()},
                enqueued_sid=int(entry["sid"]),
                accounts=sets[entry["accounts"]],
            )
            for date, entry in data.get("dates", {}).items()
        }
        return cls(folded_upto=int(data.get("upto", 0)), pending=pending)

    @property
    def pending_partitions(self) -> int:
        return sum(len(p.accounts) for p in self.pending.values())

    def fold(
        self,
        enqueued: Mapping[str, int],
        downloaded: Mapping[str, int],
        watermark_of: Callable[[str], Mapping[int, int]],
        upto: int,
    ) -> None:
        """Add partitions enqueued in (folded_upto, upto]; drop those downloaded after their enqueue."""
        added: dict[str, tuple[dict[int, int], int, set[str]]] = {}
        for key, sid in enqueued.items():
            if downloaded.get(key, -1) > sid:
                continue  # enqueued and already downloaded since (e.g. by hand), both within this tick
            date, account = parse_key(key)
            marks, newest, accounts = added.setdefault(date, ({}, 0, set()))
            for partition, offset in watermark_of(key).items():
                marks[partition] = max(marks.get(partition, 0), offset)
            accounts.add(account)
            added[date] = (marks, max(newest, sid), accounts)
        for date, (marks, newest, accounts) in added.items():
            if date in self.pending:
                self.pending[date].merge(marks, newest, accounts)
            else:
                self.pending[date] = PendingDate(dict(marks), newest, frozenset(accounts))
        # A download newer than the cursor is newer than every enqueue folded in earlier ticks.
        removed: dict[str, set[str]] = defaultdict(set)
        for key, sid in downloaded.items():
            if enqueued.get(key, -1) > sid:
                continue  # enqueued again after this download: still pending
            date, account = parse_key(key)
            if date in self.pending and account in self.pending[date].accounts:
                removed[date].add(account)
        self.remove(removed)
        self.folded_upto = max(self.folded_upto, upto)

    def remove(self, accounts_by_date: Mapping[str, Iterable[str]]) -> None:
        for date, accounts in accounts_by_date.items():
            pending = self.pending.get(date)
            if pending is None:
                continue
            pending.accounts = pending.accounts - frozenset(accounts)
            if not pending.accounts:
                del self.pending[date]


def work_lags(kafka: KafkaResource) -> dict[str, TopicLag]:
    """The group's lag on the request topic and on the delay topic (requests parked after a load-quota
    refusal are work not done either), committed offsets read before end offsets."""
    try:
        return kafka.settled_lags([kafka.request_topic, kafka.delay_topic])
    except KafkaTopicError:
        return kafka.settled_lags([kafka.request_topic])  # no delay topic (yet): nothing parked


def watermark_passed(watermark: Mapping[int, int], committed: Mapping[int, int]) -> bool:
    return all(committed.get(partition, 0) >= offset for partition, offset in watermark.items())


def partition_settled(zone: LandingZone, date: str, account: str, reports: Iterable[str]) -> bool:
    """Every page of every report of the partition is landed or dead-lettered (what downloaded_reports needs)."""
    for report in reports:
        load = PartitionLoad(date, account, report, zone.completeness(report, date, account))
        if load.still_downloading:
            return False
        # Pages of one download share the chain of their first page. A mix means the partition is
        # being downloaded again (re-enqueued) and only part of the new chain has landed so far.
        if len({getattr(page.request, "chain", "") for page in load.completeness.pages}) > 1:
            return False
    return True


def done_partitions(
    state: DownloadState,
    committed: Mapping[int, int],
    drained: bool,
    settled: Callable[[str, str], bool],
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, set[str]]:
    """Date -> accounts whose requests, continuation pages included, are all done.

    The group's committed offsets must have passed the date's watermark. If the topic is drained as
    well (committed offsets read before end offsets and equal to them), every continuation page of
    those requests is consumed too, since a consumer writes a continuation before it commits the
    request that led to it. Otherwise the landing zone says whether each partition's page chain is
    complete (a short page or a dead letter ends it); those checks stop after `budget_s`.
    """
    done: dict[str, set[str]] = {}
    deadline = clock() + budget_s
    for date, pending in sorted(state.pending.items(), key=lambda item: (item[1].enqueued_sid, item[0])):
        if not watermark_passed(pending.watermark, committed):
            continue
        if drained:
            done[date] = set(pending.accounts)
            continue
        for account in sorted(pending.accounts):
            if clock() >= deadline:
                return done
            if settled(date, account):
                done.setdefault(date, set()).add(account)
    return done


@dataclass(frozen=True)
class Rectangle:
    """Consecutive dates x accounts contiguous in the dynamic partition order: one partition range."""

    first_date: str
    last_date: str
    first_account: str
    last_account: str
    size: int

    @property
    def tags(self) -> dict[str, str]:
        return {
            RANGE_START_TAG: key_str(self.first_date, self.first_account),
            RANGE_END_TAG: key_str(self.last_date, self.last_account),
        }


def _runs(sorted_ints: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in sorted_ints:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def rectangles(done: Mapping[str, Iterable[str]], account_order: list[str], max_partitions: int) -> list[Rectangle]:
    """Cover the done partitions with few partition ranges of at most `max_partitions` each."""
    index = {account: i for i, account in enumerate(account_order)}
    dates_by_span: dict[tuple[int, int], list[Date]] = defaultdict(list)
    for date, accounts in done.items():
        positions = sorted(index[a] for a in accounts if a in index)
        for span in _runs(positions):
            dates_by_span[span].append(Date.fromisoformat(date))
    result = []
    for (start, end), dates in sorted(dates_by_span.items()):
        width = end - start + 1
        ordinals = _runs(sorted(d.toordinal() for d in dates))
        for first, last in ordinals:
            if width >= max_partitions:
                for day in range(first, last + 1):
                    iso = Date.fromordinal(day).isoformat()
                    for chunk in range(start, end + 1, max_partitions):
                        chunk_end = min(chunk + max_partitions - 1, end)
                        result.append(
                            Rectangle(iso, iso, account_order[chunk], account_order[chunk_end], chunk_end - chunk + 1)
                        )
                continue
            days_per_run = max(max_partitions // width, 1)
            for day in range(first, last + 1, days_per_run):
                day_end = min(day + days_per_run - 1, last)
                result.append(
                    Rectangle(
                        Date.fromordinal(day).isoformat(),
                        Date.fromordinal(day_end).isoformat(),
                        account_order[start],
                        account_order[end],
                        width * (day_end - day + 1),
                    )
                )
    return sorted(result, key=lambda r: (r.first_date, r.first_account))


def evaluate_downloads(
    instance: dg.DagsterInstance,
    cursor: str | None,
    kafka: KafkaResource,
    zone: LandingZone,
    settings: AutomationSettings,
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
    reports = list(LoadConfig().reports)
    done = done_partitions(
        state,
        committed,
        drained=all(lag.total == 0 for lag in lags.values()),
        settled=lambda date, account: partition_settled(zone, date, account, reports),
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
        run_key = f"downloads-{rect.first_date}-{rect.last_date}-" + _digest(
            rect.first_account, rect.last_account, newest
        )
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                asset_selection=[DOWNLOADS_ASSET],
                tags={**rect.tags, SENSOR_TAG: DOWNLOAD_SENSOR, MAX_RETRIES_TAG: str(settings.run_max_retries)},
            )
        )
    state.remove(done)
    summary = (
        f"{sum(len(a) for a in done.values())} partitions done in {len(requests)} runs; "
        f"{state.pending_partitions} still wait (lag {offsets.total})"
    )
    return requests, state.to_cursor(), summary


# -- exports ------------------------------------------------------------------------------------------


@dataclass
class ExportState:
    folded_upto: int = 0
    # date -> newest downloaded_reports storage id of the date not exported since, and the
    # (account count, storage id) at the last completeness check that found the date incomplete
    dates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_cursor(self) -> str:
        return json.dumps({"v": 1, "upto": self.folded_upto, "dates": self.dates}, separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> ExportState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(folded_upto=int(data.get("upto", 0)), dates=dict(data.get("dates", {})))


def downloaded_by_date(instance: dg.DagsterInstance, dates: list[str], accounts: list[str]) -> dict[str, dict[str, int]]:
    """Date -> {account: latest downloaded_reports storage id} over the given dates and current accounts.

    Few partitions: queries restricted to their keys. Many (a cold start after a big backfill): one
    query over the asset's partitions, which costs about the same as a few restricted ones.
    """
    wanted = set(dates)
    known = set(accounts)
    found: dict[str, dict[str, int]] = {date: {} for date in dates}
    if len(dates) * len(accounts) > FULL_SCAN_PARTITIONS:
        latest = instance.get_latest_storage_id_by_partition(DOWNLOADS_ASSET, DagsterEventType.ASSET_MATERIALIZATION)
        for key, sid in latest.items():
            date, account = parse_key(key)
            if date in wanted and account in known:
                found[date][account] = sid
        return found
    for date in dates:
        for start in range(0, len(accounts), PARTITION_QUERY_CHUNK):
            keys = {key_str(date, a) for a in accounts[start : start + PARTITION_QUERY_CHUNK]}
            latest = instance.get_latest_storage_id_by_partition(
                DOWNLOADS_ASSET, DagsterEventType.ASSET_MATERIALIZATION, partitions=keys
            )
            found[date].update({parse_key(key)[1]: sid for key, sid in latest.items()})
    return found


def evaluate_exports(
    instance: dg.DagsterInstance, cursor: str | None, settings: AutomationSettings
) -> tuple[list[dg.RunRequest], str, str]:
    """One tick of `export_when_date_downloaded`: (run requests, new cursor, summary)."""
    state = ExportState.from_cursor(cursor)
    upto = latest_event_id(instance)
    downloaded = new_partition_events(instance, DOWNLOADS_ASSET, state.folded_upto, upto)
    exported = new_partition_events(instance, EXPORTS_ASSET, state.folded_upto, upto)
    touched: set[str] = set()
    for key, sid in downloaded.items():
        date, _ = parse_key(key)
        entry = state.dates.setdefault(date, {"sid": 0, "checked": None})
        entry["sid"] = max(entry["sid"], sid)
        touched.add(date)
    for date, sid in exported.items():
        if date in state.dates and sid > state.dates[date]["sid"]:
            del state.dates[date]  # exported after its newest download (by hand, or a run we asked for)
            touched.discard(date)
    state.folded_upto = max(state.folded_upto, upto)
    if not state.dates:
        return [], state.to_cursor(), "no downloaded date waits for its export"
    accounts = list(instance.get_dynamic_partitions(account_partitions.name))
    requests = []
    waiting = []
    to_check = []
    for date in sorted(state.dates):
        entry = state.dates[date]
        if date not in touched and entry.get("checked") == [len(accounts), entry["sid"]]:
            waiting.append(date)  # nothing new since the last check found it incomplete
        else:
            to_check.append(date)
    present = downloaded_by_date(instance, to_check, accounts) if accounts and to_check else {}
    for date in to_check:
        entry = state.dates[date]
        latest = present.get(date, {})
        if not accounts or len(latest) < len(accounts):
            entry["checked"] = [len(accounts), entry["sid"]]
            waiting.append(date)
            continue
        newest = max(latest.values())
        requests.append(
            dg.RunRequest(
                run_key=f"export-{date}-{newest}",
                asset_selection=[EXPORTS_ASSET],
                partition_key=date,
                tags={SENSOR_TAG: EXPORT_SENSOR, MAX_RETRIES_TAG: str(settings.run_max_retries)},
            )
        )
        del state.dates[date]
    summary = f"export {[r.partition_key for r in requests]}; {len(waiting)} dates wait for downloads"
    return requests, state.to_cursor(), summary


# -- consumers ----------------------------------------------------------------------------------------


def evaluate_consumers(
    instance: dg.DagsterInstance, kafka: KafkaResource, settings: AutomationSettings
) -> dg.RunRequest | dg.SkipReason:
    try:
        lags = work_lags(kafka)
    except KafkaTopicError:
        return dg.SkipReason(f"request topic {kafka.request_topic} does not exist yet")
    total = sum(lag.total for lag in lags.values())
    if total == 0:
        return dg.SkipReason(f"no lag on {' or '.join(lags)}")
    role = {ROLE_TAG: "download"}
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
        job_name=download_requests.name,
        run_config=settings.consumer_run_config(),
        tags={
            SENSOR_TAG: CONSUMER_SENSOR,
            # A run whose worker vanished without notice is failed by run monitoring after this.
            MAX_RUNTIME_TAG: str(int(settings.consumer_max_runtime_s + 600)),
        },
    )


# -- the sensor definitions ------------------------------------------------------------------------------


def build_sensors(settings: AutomationSettings) -> list[dg.SensorDefinition]:
    interval = settings.sensor_interval_s
    status = _status(settings.sensors_running)
    limits = LagLimits(max_messages=settings.lag_max_messages, max_age_s=settings.lag_max_age_s)

    @dg.sensor(
        name=CONSUMER_SENSOR,
        job=download_requests,
        minimum_interval_seconds=interval,
        default_status=status,
        description="Launch download_requests when the request topic has lag and no download run is queued or running.",
    )
    def launch_consumers_on_lag(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        return evaluate_consumers(context.instance, kafka, settings)

    @dg.sensor(
        name=DOWNLOAD_SENSOR,
        target=[DOWNLOADS_ASSET],
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

    @dg.sensor(
        name=EXPORT_SENSOR,
        target=[EXPORTS_ASSET],
        minimum_interval_seconds=interval,
        default_status=status,
        description="Materialize exported_reports for a date once all its account partitions are downloaded.",
    )
    def export_when_date_downloaded(context: dg.SensorEvaluationContext):
        requests, cursor, summary = evaluate_exports(context.instance, context.cursor, settings)
        context.log.info(summary)
        return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=None if requests else summary)

    @dg.sensor(
        name=LAG_SENSOR,
        minimum_interval_seconds=interval,
        default_status=status,
        description=(
            "Record the request topic's lag as an observation of report_requests and report its two checks "
            "(lag within limits, dead-letter topic empty)."
        ),
    )
    def observe_request_lag(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        try:
            snapshot = measure(kafka)
        except KafkaTopicError as error:
            return dg.SkipReason(f"nothing enqueued yet: {error}")
        return dg.SensorResult(asset_events=[observation(snapshot), *check_evaluations(snapshot, limits)])

    return [launch_consumers_on_lag, download_when_requests_done, export_when_date_downloaded, observe_request_lag]
