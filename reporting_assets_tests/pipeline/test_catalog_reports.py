"""Every report of the catalog (and a user's own) through the real broker, Spark, consumers and sandbox."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import dagster as dg

from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.landing import KEY_COLUMNS
from reporting_assets.core.reports import SHIPPED_CATALOG, google_today, load_catalog
from reporting_assets.sandbox import expected_rows

# A final day recent enough for hourly data (Google keeps hours for its last 10 days).
DATE = (google_today() - dt.timedelta(days=5)).isoformat()
FAST_CONSUMERS = ConsumerTuning(consumers=2, idle_timeout_s=2.0, qps_per_account=200.0, retry_backoff_s=0.01)
METRICS = ("clicks", "impressions", "ctr", "position")
COLUMNS = KEY_COLUMNS  # the API's dimension -> its export column
# The user's own reports (entries of the `reports:` list): a filter, an aggregation, two news types.
CUSTOM = """
  - name: mobile_non_brand
    description: Mobile queries without the brand.
    dimensions: [date, query, device]
    dimension_filter_groups:
      - filters:
          - {dimension: device, operator: equals, expression: MOBILE}
          - {dimension: query, operator: excludingRegex, expression: "^best "}
  - name: countries_by_page
    dimensions: [date, country]
    aggregation_type: byPage
  - name: news
    dimensions: [date, page]
    search_types: [news, googleNews]
"""


def truth(config, accounts, spec) -> list[tuple]:
    filters = json.loads(spec.filters) if spec.filters else None
    rows = []
    for account in accounts:
        for row in expected_rows(
            config, account, DATE, DATE, list(spec.dimensions), spec.search_type, filters, spec.data_state
        ):
            keys = dict(zip(spec.dimensions, row["keys"], strict=True))
            rows.append(
                (
                    account,
                    DATE,
                    spec.search_type,
                    *(keys.get(dimension) or "" for dimension in COLUMNS),
                    *(float(row[m]) for m in METRICS),
                )
            )
    return sorted(rows)


def exported(path: Path) -> list[tuple]:
    with path.open(newline="") as handle:
        return sorted(
            (
                r["account"],
                r["date"],
                r["search_type"],
                *(r[column] for column in COLUMNS.values()),
                *(float(r[m]) for m in METRICS),
            )
            for r in csv.DictReader(handle)
        )


def run_catalog(instance, resources, sandbox_config, data_dir: Path) -> dict[str, int]:
    """Run every report of the catalog in force for DATE; check each export row for row; calls per report."""
    catalog = load_catalog()
    request = {"ops": {"report_requests": {"config": {"reports": list(catalog.reports)}}}}
    summary = runner.run_pipeline(instance, resources, [DATE], FAST_CONSUMERS, request_config=request)
    assert summary.dead_lettered == 0 and not summary.held
    accounts = sorted(summary.accounts)
    assert summary.requests_enqueued == len(accounts) * len(catalog.reports)
    rows_per_report = {}
    for name, spec in catalog.reports.items():
        rows = exported(data_dir / "exports" / name / f"{DATE}.csv")
        expected = truth(sandbox_config, accounts, spec)
        assert rows == expected, f"{name}: {len(rows)} rows exported, {len(expected)} expected"
        rows_per_report[name] = len(rows)
        # Each report is an asset of its own (a user's entry too): its export says its rows and state.
        event = instance.get_latest_materialization_event(dg.AssetKey(["exports", name]))
        assert event is not None and event.asset_materialization.partition == DATE, name
        metadata = event.asset_materialization.metadata
        assert (metadata["rows"].value, metadata["accounts_with_rows"].value) == (
            len(rows),
            len({row[0] for row in rows}),
        ), name
        assert metadata["data_state"].value == "final" and metadata["truncated_slices"].value == 0, name
    return rows_per_report


def test_every_report_of_the_shipped_catalog_and_a_users_own_is_exported_row_for_row(
    instance, resources, sandbox, sandbox_config, pipeline_env, tmp_path, monkeypatch
):
    # One run for both (each run costs a Spark enqueue and consumer processes): the shipped entries
    # followed by the user's.
    catalog = tmp_path / "reports.yaml"
    catalog.write_text(SHIPPED_CATALOG.read_text() + CUSTOM)
    monkeypatch.setenv("REPORTING_REPORTS_FILE", str(catalog))
    rows = run_catalog(instance, resources, sandbox_config, Path(pipeline_env["REPORTING_DATA_DIR"]))

    shipped = load_catalog(SHIPPED_CATALOG)
    users = {"mobile_non_brand", "countries_by_page", "news_news", "news_googlenews"}
    assert set(rows) == set(shipped.reports) | users
    # Every search type, search appearance and hours, each with rows of its own.
    assert {spec.search_type for spec in shipped.reports.values()} == {
        "web",
        "image",
        "video",
        "news",
        "discover",
        "googleNews",
    }
    assert all(count > 0 for count in rows.values()), rows
    assert rows["hourly"] == 24 * 3  # three sites, every hour of the day
    assert 0 < rows["mobile_non_brand"] < rows["by_query"]
