"""Run the whole pipeline headless: accounts -> requests -> downloads -> partitions -> exports.

Used by `make demo` and by the end-to-end tests. Each step is a real Dagster run on the given
instance; the consumers run as the `download_requests` job in their own processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from reporting_assets.console import ProgressDisplay
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.cost import group_pace
from reporting_assets.core.keys import PROGRESS_TAG, RANGE_END_TAG, RANGE_START_TAG
from reporting_assets.core.progress import DownloadProgress
from reporting_assets.core.reports import load_catalog
from reporting_assets.defs.accounts.assets import accounts
from reporting_assets.defs.downloads.assets import downloaded_reports
from reporting_assets.defs.downloads.jobs import consumer_run_config
from reporting_assets.defs.exports.assets import build_exports, export_key
from reporting_assets.defs.partitions import account_partitions, partition_key
from reporting_assets.defs.requests.assets import report_requests
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.watch import RunWatcher


def quiet(run_config: Mapping[str, Any] | None, log_level: str | None) -> dict[str, Any]:
    """Run config with the console logger at `log_level` (None: Dagster's default)."""
    config = dict(run_config or {})
    if log_level:
        config["loggers"] = {"console": {"config": {"log_level": log_level}}}
    return config


@dataclass
class PipelineSummary:
    accounts: list[str] = field(default_factory=list)
    requests_enqueued: int = 0
    download: dict[str, Any] = field(default_factory=dict)
    rows_loaded: int = 0
    dead_lettered: int = 0
    exports: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # dates not exported, and why


def range_tags(dates: Sequence[str], accounts_: Sequence[str]) -> dict[str, str]:
    """Run tags selecting the rectangle dates × accounts of the multi-partitions definition."""
    return {
        RANGE_START_TAG: str(partition_key(dates[0], accounts_[0])),
        RANGE_END_TAG: str(partition_key(dates[-1], accounts_[-1])),
    }


def _metadata(result: dg.ExecuteInProcessResult, asset: str, key: str) -> Any:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == dg.AssetKey(asset) and key in materialization.metadata:
            return materialization.metadata[key].value
    raise KeyError(f"{asset} materialization has no {key!r} metadata")


def discover_accounts(
    instance: dg.DagsterInstance, resources: Mapping[str, Any], log_level: str | None = None
) -> list[str]:
    dg.materialize([accounts], resources=resources, instance=instance, run_config=quiet(None, log_level))
    return list(instance.get_dynamic_partitions(account_partitions.name))


def enqueue(
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    dates: Sequence[str],
    accounts_: Sequence[str],
    run_config: Mapping[str, Any] | None = None,
    log_level: str | None = None,
) -> int:
    """One Spark run for all accounts; one run per account when only some are chosen.

    A partition range is the rectangle of its dimension ranges, so a subset of accounts that is
    not contiguous in the dynamic partition order cannot be one range.
    """
    results = materialize_ranges(report_requests, instance, resources, dates, accounts_, run_config, log_level)
    return sum(int(_metadata(result, "report_requests", "requests_enqueued")) for result in results)


def materialize_ranges(
    asset: dg.AssetsDefinition,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    dates: Sequence[str],
    accounts_: Sequence[str],
    run_config: Mapping[str, Any] | None,
    log_level: str | None,
) -> list[dg.ExecuteInProcessResult]:
    """dates × accounts of a multi-partitioned asset: one run for all accounts, else one per account."""
    every = list(instance.get_dynamic_partitions(account_partitions.name))
    groups = [list(accounts_)] if list(accounts_) == every else [[account] for account in accounts_]
    return [
        dg.materialize(
            [asset],
            resources=resources,
            instance=instance,
            tags=range_tags(dates, group),
            run_config=quiet(run_config, log_level),
        )
        for group in groups
    ]


def download(
    instance: dg.DagsterInstance,
    tuning: ConsumerTuning | None = None,
    log_level: str | None = None,
    watch: DownloadWatching | None = None,
) -> dict[str, Any]:
    """The consumer job, out of process (multiprocess executor); resources come from the environment.
    With `watch`, its `on_progress` hears how the run goes every second and once at its end."""
    from reporting_assets import definitions

    run_config = quiet(consumer_run_config(tuning or ConsumerTuning()), log_level)
    token = uuid.uuid4().hex
    watcher = None
    if watch is not None:
        watcher = RunWatcher(instance, token, watch.kafka, watch.quota_qps, watch.on_progress)
        watcher.start()
    try:
        with dg.execute_job(
            dg.reconstructable(definitions.download_requests_job),
            instance,
            run_config=run_config,
            tags={PROGRESS_TAG: token},
        ) as result:
            if not result.success:
                raise RuntimeError(f"download_requests run {result.run_id} failed")
            return result.output_for_node("summarize_downloads")
    finally:
        if watcher is not None:
            watcher.stop()


@dataclass(frozen=True)
class DownloadWatching:
    """Who hears a download's progress, and what it needs to measure it."""

    kafka: KafkaResource
    quota_qps: float  # the pace the partner allows the run, for an ETA before one is measured
    on_progress: Callable[[DownloadProgress], None]


def download_watched(
    instance: dg.DagsterInstance, kafka: KafkaResource, tuning: ConsumerTuning, accounts: int, log_level: str | None
) -> dict[str, Any]:
    """`download` with its progress on the console: a bar in a terminal, a line every few seconds otherwise."""
    pace = group_pace(tuning.qps_per_account, accounts, tuning.global_qps)
    with ProgressDisplay() as display:
        return download(instance, tuning, log_level, DownloadWatching(kafka, pace, display))


def export_assets() -> dg.AssetsDefinition:
    """The `exports/<report>` assets of the catalog as it is now (its file may have been edited)."""
    return build_exports(load_catalog())


@dataclass
class Loaded:
    rows: int = 0
    dead_lettered: int = 0
    exports: dict[str, str] = field(default_factory=dict)  # "<date>/<report>.<ext>" -> path
    held: dict[str, str] = field(default_factory=dict)  # date -> why it was not exported (dead letters)


def load_and_export(
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    dates: Sequence[str],
    accounts_: Sequence[str],
    log_level: str | None = None,
    reports: Sequence[str] | None = None,
    allow_incomplete: bool = False,
) -> Loaded:
    """Load the partitions, then export each date; a date with dead-lettered partitions is held, not
    exported, unless `allow_incomplete`."""
    load_config = {"ops": {"downloaded_reports": {"config": {"reports": list(reports)}}}} if reports else None
    export = {"allow_incomplete": allow_incomplete}
    exports = export_assets()
    # Reports not downloaded on a date are skipped by the export, so the default asks for all of them.
    selection = [export_key(name) for name in reports] if reports else list(exports.keys)
    loaded = Loaded()
    for result in materialize_ranges(downloaded_reports, instance, resources, dates, accounts_, load_config, log_level):
        loaded.rows += int(_metadata(result, "downloaded_reports", "rows"))
        loaded.dead_lettered += int(_metadata(result, "downloaded_reports", "requests_dead_lettered"))
    for date in dates:
        exported = dg.materialize(
            [exports],
            selection=selection,
            resources=resources,
            instance=instance,
            partition_key=date,
            run_config=quiet({"ops": {"exported_reports": {"config": export}}}, log_level),
            raise_on_error=False,
        )
        if not exported.success:
            loaded.held[date] = _failure(exported)
            continue
        for event in exported.get_asset_materialization_events():
            files = event.step_materialization_data.materialization.metadata["files"].value
            loaded.exports.update({f"{date}/{k}": v for k, v in files.items()})
    return loaded


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The failed step's own message (a dg.Failure's description), or re-raise what is not one."""
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data.user_failure_data:
            return event.step_failure_data.user_failure_data.description or "export refused"
    raise RuntimeError(f"run {result.run_id} failed: {result.all_events[-1].message}")


def run_pipeline(
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    dates: Sequence[str],
    tuning: ConsumerTuning | None = None,
    request_config: Mapping[str, Any] | None = None,
    log_level: str | None = None,
    allow_incomplete: bool = False,
    progress: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> PipelineSummary:
    """Every step in turn; `say` hears a line as each one ends; with `progress`, the download's progress
    on the console."""
    tuning = tuning or ConsumerTuning()
    summary = PipelineSummary()
    summary.accounts = discover_accounts(instance, resources, log_level)
    say(f"accounts: {len(summary.accounts)}")
    summary.requests_enqueued = enqueue(instance, resources, dates, summary.accounts, request_config, log_level)
    say(f"enqueue: {summary.requests_enqueued} requests")
    if progress:
        summary.download = download_watched(instance, resources["kafka"], tuning, len(summary.accounts), log_level)
    else:
        summary.download = download(instance, tuning, log_level)
    say(f"load and export: {len(dates)} dates x {len(summary.accounts)} accounts")
    loaded = load_and_export(instance, resources, dates, summary.accounts, log_level, allow_incomplete=allow_incomplete)
    summary.rows_loaded, summary.dead_lettered = loaded.rows, loaded.dead_lettered
    summary.exports, summary.held = loaded.exports, loaded.held
    return summary
