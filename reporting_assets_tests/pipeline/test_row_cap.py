"""Past Google's 50 000-row cap: a big site-day split into filtered slices, through the real broker,
Spark, consumers and the sandbox (which serves at most 50 000 rows a query of a day, like Google)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.keys import COVERAGE_CHECK, DOWNLOADS_ASSET
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.status import partition_status
from reporting_assets.sandbox import SandboxConfig, SiteSpec, expected_rows

DATE = "2026-11-02"
BIG = "https://big.example.com/"
SMALL = "sc-domain:small.example.com"
DIMENSIONS = ["date", "query", "page", "country", "device"]  # search_analytics, the default report
FAST_CONSUMERS = ConsumerTuning(consumers=2, idle_timeout_s=2.0, qps_per_account=200.0, retry_backoff_s=0.01)


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    sites = [SiteSpec(BIG, 200_000), SiteSpec(SMALL, 300)]
    return SandboxConfig(seed=7, sites=sites, per_site_qps=None, global_qps=None, faults=[], rows_jitter=0.0)


def coverage_check(instance: dg.DagsterInstance):
    key = dg.AssetCheckKey(dg.AssetKey(DOWNLOADS_ASSET), COVERAGE_CHECK)
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    return history[0].event.dagster_event.event_specific_data


def label_of(site: str) -> tuple[str, str, str]:
    return ("search_analytics", DATE, site)


def exported(path: Path) -> list[tuple]:
    with path.open(newline="") as handle:
        return sorted(
            (r["account"], r["query"], r["page"], r["country"], r["device"], int(r["clicks"]), int(r["impressions"]))
            for r in csv.DictReader(handle)
        )


def truth(config: SandboxConfig, account: str) -> list[tuple]:
    return sorted(
        (account, *row["keys"][1:], int(row["clicks"]), int(row["impressions"]))
        for row in expected_rows(config, account, DATE, DATE, DIMENSIONS)
    )


def test_a_200_000_row_site_day_is_recovered_whole_by_splitting(
    instance, resources, sandbox, sandbox_config, pipeline_env
):
    summary = runner.run_pipeline(instance, resources, [DATE], FAST_CONSUMERS)
    assert summary.dead_lettered == 0 and not summary.held

    big = truth(sandbox_config, BIG)
    assert len(big) > 4 * 50_000 * 0.95  # far past the cap: one query serves a quarter of it
    rows = exported(Path(pipeline_env["REPORTING_DATA_DIR"]) / "exports" / "search_analytics" / f"{DATE}.csv")
    assert rows == sorted(big + truth(sandbox_config, SMALL))  # every row once: no slice overlaps another

    zone = LandingZone(Path(pipeline_env["REPORTING_DATA_DIR"]) / "landing")
    state = zone.completeness("search_analytics", DATE, BIG)
    assert state.complete and not state.truncated and state.rows == len(big)
    # Split by device, the device still past the cap by country; no page of a query past the cap.
    pages = zone.pages("search_analytics", DATE, BIG, state.download)
    splits = zone.splits("search_analytics", DATE, BIG, state.download)
    assert [split.dimension for split in splits.values()].count("device") == 1
    assert all(page.request.start_row + page.request.row_limit <= 50_000 for page in pages)
    assert state.slices == sum(len(split.slices) for split in splits.values())
    for page in state.pages:
        groups = json.loads(page.request.filters)
        assert groups and all(f["operator"] in ("includingRegex", "excludingRegex") for f in groups[0]["filters"])
    # Every call the sandbox answered is a page landed in the download: the split asks nothing twice.
    assert sandbox.stats()["calls_by_site"][BIG] == len(pages)
    small = zone.completeness("search_analytics", DATE, SMALL)
    assert small.complete and small.slices == 0
    check = coverage_check(instance)
    assert check.passed and check.metadata["split"].value == 1
    label = f"search_analytics {DATE} {BIG}"
    figures = check.metadata["coverage"].data[label]
    assert figures == {"rows": len(big), "slices": state.slices, "truncated_slices": 0}
    status = partition_status(zone, Path(pipeline_env["REPORTING_DATA_DIR"]) / "exports", Counter(), label_of(BIG))
    assert status.state == "downloaded" and f"{len(big)} rows landed in {state.slices} slices past the row cap" in (
        status.detail
    )


def test_a_report_with_nothing_to_split_on_is_loaded_as_served_and_its_coverage_check_warns(
    instance, resources, sandbox, sandbox_config, pipeline_env
):
    # by_query groups by date and query only: no filter narrows a query's rows (the cap, made small here,
    # keeps its top rows). Its rows as served are loaded; the check names what is missing.
    sandbox.update_config(row_cap=500)
    tuning = FAST_CONSUMERS.model_copy(update={"row_cap": 500})
    request = {"ops": {"report_requests": {"config": {"reports": ["by_query"], "row_limit": 250}}}}
    summary = runner.run_pipeline(instance, resources, [DATE], tuning, request_config=request)
    assert summary.dead_lettered == 0 and not summary.held

    zone = LandingZone(Path(pipeline_env["REPORTING_DATA_DIR"]) / "landing")
    state = zone.completeness("by_query", DATE, BIG)
    assert state.complete and state.rows == 500 and [p.request.start_row for p in state.truncated] == [250]
    assert sandbox.stats()["calls_by_site"][BIG] == 2  # no page asked for past the cap
    check = coverage_check(instance)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["truncated"].value == 1 and f"by_query {DATE} {BIG}" in check.description
    assert check.metadata["coverage"].data[f"by_query {DATE} {BIG}"]["truncated_slices"] == 1
    exports = Path(pipeline_env["REPORTING_DATA_DIR"]) / "exports"
    status = partition_status(zone, exports, Counter(), ("by_query", DATE, BIG))
    assert "500 rows landed, 1 still at the cap (rows past it missing)" in status.detail, status.detail
