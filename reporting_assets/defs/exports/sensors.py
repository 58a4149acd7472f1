"""`export_when_date_downloaded`: every account partition of a date downloaded, and the date not
exported since -> materialize the `exports/<report>` assets of the reports downloaded that date
(state: `core.automation.exports`)."""

from __future__ import annotations

import dagster as dg

from reporting_assets.core.automation.exports import ExportState
from reporting_assets.core.keys import (
    DOWNLOADS_ASSET,
    EXPORT_SENSOR,
    MAX_RETRIES_TAG,
    SENSOR_TAG,
    key_str,
    parse_key,
)
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.reports import Catalog, load_catalog
from reporting_assets.defs.exports.assets import export_key
from reporting_assets.defs.partitions import account_partitions
from reporting_assets.defs.runs import latest_event_id, new_partition_events, sensor_status
from reporting_assets.resources.warehouse import WarehouseResource
from reporting_assets.settings import Settings, load_settings

PARTITION_QUERY_CHUNK = 2_000
FULL_SCAN_PARTITIONS = 20_000  # above this many (date, account) keys to look up, read the asset's all at once


def downloaded_by_date(
    instance: dg.DagsterInstance, dates: list[str], accounts: list[str]
) -> dict[str, dict[str, int]]:
    """Date -> {account: latest downloaded_reports storage id} over the given dates and current accounts.

    Few partitions: queries restricted to their keys. Many (a cold start after a big backfill): one
    query over the asset's partitions, which costs about the same as a few restricted ones.
    """
    wanted = set(dates)
    known = set(accounts)
    found: dict[str, dict[str, int]] = {date: {} for date in dates}
    if len(dates) * len(accounts) > FULL_SCAN_PARTITIONS:
        latest = instance.get_latest_storage_id_by_partition(
            dg.AssetKey(DOWNLOADS_ASSET), dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        for key, sid in latest.items():
            date, account = parse_key(key)
            if date in wanted and account in known:
                found[date][account] = sid
        return found
    for date in dates:
        for start in range(0, len(accounts), PARTITION_QUERY_CHUNK):
            keys = {key_str(date, a) for a in accounts[start : start + PARTITION_QUERY_CHUNK]}
            latest = instance.get_latest_storage_id_by_partition(
                dg.AssetKey(DOWNLOADS_ASSET), dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=keys
            )
            found[date].update({parse_key(key)[1]: sid for key, sid in latest.items()})
    return found


def exported_by_date(
    instance: dg.DagsterInstance, catalog: Catalog, after: int, upto: int
) -> dict[str, dict[str, int]]:
    """Date -> {report: latest export storage id} in (after, upto]: one indexed query per report."""
    found: dict[str, dict[str, int]] = {}
    for name in catalog.reports:
        for date, sid in new_partition_events(instance, export_key(name), after, upto).items():
            found.setdefault(date, {})[name] = sid
    return found


def evaluate_exports(
    instance: dg.DagsterInstance,
    cursor: str | None,
    settings: Settings,
    zone: LandingZone | None = None,
    catalog: Catalog | None = None,
) -> tuple[list[dg.RunRequest], str, str]:
    """One tick of `export_when_date_downloaded`: (run requests, new cursor, summary).

    A date whose partitions are all downloaded but some dead-lettered is held, not exported: it
    comes back with its next download (after a re-drive), like any date that changed. Without a
    landing zone (`zone` None) every report of the catalog is asked for (those not downloaded skip).
    """
    catalog = catalog or load_catalog()
    state = ExportState.from_cursor(cursor)
    upto = latest_event_id(instance)
    downloaded = new_partition_events(instance, DOWNLOADS_ASSET, state.folded_upto, upto)
    exported = exported_by_date(instance, catalog, state.folded_upto, upto)
    touched: set[str] = set()
    for key, sid in downloaded.items():
        date, _ = parse_key(key)
        entry = state.dates.setdefault(date, {"sid": 0, "checked": None})
        entry["sid"] = max(entry["sid"], sid)
        touched.add(date)
    for date, by_report in exported.items():
        if date not in state.dates:
            continue
        # Exported after its newest download (by hand, or a run we asked for): every report of it.
        expected = set(exportable(zone, catalog, date)) if zone is not None else set(by_report)
        if all(by_report.get(name, 0) > state.dates[date]["sid"] for name in expected):
            del state.dates[date]
            touched.discard(date)
    state.folded_upto = max(state.folded_upto, upto)
    if not state.dates:
        return [], state.to_cursor(), "no downloaded date waits for its export"
    accounts = list(instance.get_dynamic_partitions(account_partitions.name))
    requests = []
    waiting = []
    held: list[str] = []
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
        if zone is not None and zone.dead_lettered(date, zone.reports_of_date(date)):
            held.append(date)
            del state.dates[date]
            continue
        newest = max(latest.values())
        reports = exportable(zone, catalog, date) if zone is not None else sorted(catalog.reports)
        if not reports:
            del state.dates[date]  # downloaded, but of no report the catalog has (any more)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"export-{date}-{newest}",
                asset_selection=[export_key(name) for name in reports],
                partition_key=date,
                tags={SENSOR_TAG: EXPORT_SENSOR, MAX_RETRIES_TAG: str(settings.run_max_retries)},
            )
        )
        del state.dates[date]
    summary = f"export {[r.partition_key for r in requests]}; {len(waiting)} dates wait for downloads"
    if held:
        summary += f"; held with dead-lettered partitions (re-drive them): {held}"
    return requests, state.to_cursor(), summary


def exportable(zone: LandingZone, catalog: Catalog, date: str) -> list[str]:
    """The reports downloaded on `date` that the catalog has: those whose exports a date's run makes."""
    return [name for name in zone.reports_of_date(date) if name in catalog.reports]


def build_export_sensor(settings: Settings, catalog: Catalog | None = None) -> dg.SensorDefinition:
    catalog = catalog or load_catalog()
    interval = settings.sensor_interval_s
    status = sensor_status(settings.sensors_running)

    @dg.sensor(
        name=EXPORT_SENSOR,
        target=[export_key(name) for name in catalog.reports],
        minimum_interval_seconds=interval,
        default_status=status,
        description=(
            "Export a date (the exports/<report> assets of the reports downloaded that date) once all its account "
            "partitions are downloaded, unless some are dead-lettered (then the date waits for its re-drive)."
        ),
    )
    def export_when_date_downloaded(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        zone = warehouse.landing_zone()
        requests, cursor, summary = evaluate_exports(context.instance, context.cursor, settings, zone, catalog)
        context.log.info(summary)
        return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=None if requests else summary)

    return export_when_date_downloaded


@dg.definitions
def sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[build_export_sensor(load_settings())])
