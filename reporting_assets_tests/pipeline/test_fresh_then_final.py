"""Fresh, then final: a day Google still collects is landed as provisional, pulled again, and final at last."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb

from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.reports import get_report
from reporting_assets.sandbox import expected_rows

FRESH_DAY = "2026-11-05"
CONSUMERS = ConsumerTuning(consumers=1, idle_timeout_s=2.0, qps_per_account=200.0, retry_backoff_s=0.01)
REFRESH = {"ops": {"report_requests": {"config": {"refresh": True}}}}
METRICS = ("clicks", "impressions", "ctr", "position")


def partner_today(days_after_fresh_day: int) -> str:
    return (dt.date.fromisoformat(FRESH_DAY) + dt.timedelta(days=days_after_fresh_day)).isoformat()


def truth(config, accounts, date: str, data_state: str) -> list[tuple]:
    spec = get_report("search_analytics")
    rows = []
    for account in accounts:
        for row in expected_rows(config, account, date, date, list(spec.dimensions), data_state=data_state):
            rows.append((account, *row["keys"], *(float(row[m]) for m in METRICS)))
    return sorted(rows)


def exported(data_dir: Path, date: str) -> tuple[list[tuple], set[str]]:
    """The export's rows as the truth's tuples, and the values of its provisional column."""
    with (data_dir / "exports" / "search_analytics" / f"{date}.csv").open(newline="") as handle:
        records = list(csv.DictReader(handle))
    rows = sorted(
        (
            r["account"],
            r["date"],
            r["query"],
            r["page"],
            r["country"],
            r["device"],
            *(float(r[m]) for m in METRICS),
        )
        for r in records
    )
    return rows, {r["provisional"] for r in records}


def export_state(instance: dg.DagsterInstance) -> tuple[str, int, int]:
    """The latest export asset materialization of search_analytics: (data_state, rows, provisional_rows)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(["exports", "search_analytics"]))
    assert event is not None and event.asset_materialization.partition == FRESH_DAY
    metadata = event.asset_materialization.metadata
    return metadata["data_state"].value, metadata["rows"].value, metadata["provisional_rows"].value


def test_a_provisional_day_is_marked_pulled_again_while_it_changes_and_ends_final(
    instance, resources, sandbox, pipeline_env
):
    data_dir = Path(pipeline_env["REPORTING_DATA_DIR"])
    # Google is one day past FRESH_DAY: it has half of that day.
    sandbox.update_config(today=partner_today(1), incomplete_days=3)
    summary = runner.run_pipeline(instance, resources, [FRESH_DAY], CONSUMERS)
    accounts = sorted(summary.accounts)
    assert summary.dead_lettered == 0 and not summary.held

    first, flags = exported(data_dir, FRESH_DAY)
    # What Google has so far, never "no data", and marked provisional on every row.
    assert first == truth(sandbox.config, accounts, FRESH_DAY, "all") and first and flags == {"true"}
    assert truth(sandbox.config, accounts, FRESH_DAY, "final") == []  # final data would have been nothing
    assert len(first) < len(truth(sandbox.config.updated({"today": partner_today(5)}), accounts, FRESH_DAY, "all"))
    # The report's export asset says so in the UI too.
    assert export_state(instance) == ("provisional", len(first), len(first))

    # A day later Google has more of it: pulled again, still provisional, the export follows.
    sandbox.update_config(today=partner_today(2))
    runner.run_pipeline(instance, resources, [FRESH_DAY], CONSUMERS, request_config=REFRESH)
    second, flags = exported(data_dir, FRESH_DAY)
    assert second == truth(sandbox.config, accounts, FRESH_DAY, "all") and flags == {"true"}
    assert len(second) > len(first)
    assert export_state(instance) == ("provisional", len(second), len(second))

    # Google calls it final: the last pull gives the final rows, marked final.
    sandbox.update_config(today=partner_today(3))
    runner.run_pipeline(instance, resources, [FRESH_DAY], CONSUMERS, request_config=REFRESH)
    final, flags = exported(data_dir, FRESH_DAY)
    assert final == truth(sandbox.config, accounts, FRESH_DAY, "final") and flags == {"false"}
    assert len(final) > len(second)
    assert export_state(instance) == ("final", len(final), 0)

    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as db:
        states = db.execute(
            "SELECT date::VARCHAR, bool_or(provisional), count(*) FROM search_analytics GROUP BY 1"
        ).fetchall()
    assert states == [(FRESH_DAY, False, len(final))]
