"""The whole pipeline on the real broker, real Spark, real consumer processes and the sandbox."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.reports import get_report
from reporting_assets.sandbox import expected_rows

DATES = ["2026-11-01", "2026-11-02"]
# 1 000 rows a page (not the default 25 000) so that the sites' days take several pages: continuations.
PAGES_OF_1000 = {"ops": {"report_requests": {"config": {"row_limit": 1000}}}}
FAST_CONSUMERS = {"idle_timeout_s": 2.0, "qps_per_account": 200.0, "retry_backoff_s": 0.01}
METRICS = ("clicks", "impressions", "ctr", "position")


def truth(config, accounts, dates, report="search_analytics") -> set[tuple]:
    """Every row the sandbox holds for these accounts and dates, as export tuples."""
    spec = get_report(report)
    rows = set()
    for account in accounts:
        for date in dates:
            # As the report asks (dataState all): the demo's last day may be one Google still collects.
            for row in expected_rows(config, account, date, date, list(spec.dimensions), data_state=spec.data_state):
                keys = dict(zip(spec.dimensions, row["keys"], strict=True))
                rows.add(
                    (
                        account,
                        keys["date"],
                        keys["query"],
                        keys["page"],
                        keys["country"],
                        keys["device"],
                        *(float(row[m]) for m in METRICS),
                    )
                )
    return rows


def export_tuple(row: dict) -> tuple:
    """One exported row as the truth's tuple, whatever the file format gave (dates as text or as dates)."""
    date = row["date"] if isinstance(row["date"], str) else row["date"].isoformat()
    keys = (row["query"], row["page"], row["country"], row["device"])
    return (row["account"], date, *keys, *(float(row[m]) for m in METRICS))


def exported(csv_path: Path) -> list[tuple]:
    with csv_path.open(newline="") as handle:
        return [export_tuple(r) for r in csv.DictReader(handle)]


def exported_files(exports: dict[str, str], date: str) -> dict[str, list[tuple]]:
    """The date's rows as read back from each export format, in file order."""
    return {
        "csv": exported(Path(exports[f"{date}/search_analytics.csv"])),
        "parquet": [export_tuple(r) for r in pq.read_table(exports[f"{date}/search_analytics.parquet"]).to_pylist()],
        "json": [export_tuple(r) for r in json.loads(Path(exports[f"{date}/search_analytics.json"]).read_text())],
    }


def digests(paths) -> dict[str, str]:
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths}


def test_pipeline_exports_exactly_the_partner_truth_and_a_rerun_changes_nothing(
    instance, resources, sandbox, sandbox_config, pipeline_env
):
    summary = runner.run_pipeline(
        instance, resources, DATES, ConsumerTuning(consumers=2, **FAST_CONSUMERS), request_config=PAGES_OF_1000
    )

    readable = sorted(s.url for s in sandbox_config.sites if not s.forbidden)
    assert sorted(summary.accounts) == readable  # the forbidden site is not a partition
    assert summary.requests_enqueued == len(readable) * len(DATES)
    assert summary.dead_lettered == 0
    # shop.example.com: 2600 rows a day at 1000 a page -> pages at 0, 1000, 2000 (2 continuations a day)
    assert summary.download["continued"] == 2 * len(DATES) + 1 * len(DATES)

    expected = truth(sandbox_config, readable, DATES)
    rows_seen = []
    for date in DATES:
        files = exported_files(summary.exports, date)
        rows = files["csv"]
        assert len(rows) == len(set(rows)), "no row doubled"
        # Parquet and JSON hold exactly the CSV's rows, in the same order (not merely as many).
        assert files["parquet"] == rows and files["json"] == rows
        rows_seen.extend(rows)
    assert set(rows_seen) == expected and len(rows_seen) == len(expected)
    assert summary.rows_loaded == len(expected)

    with duckdb.connect(str(Path(pipeline_env["REPORTING_DATA_DIR"]) / "warehouse.duckdb"), read_only=True) as db:
        per_site = dict(
            db.execute(
                "SELECT account, count(*) FROM search_analytics WHERE date = '2026-11-01' GROUP BY account"
            ).fetchall()
        )
        assert per_site["https://shop.example.com/"] == len(
            expected_rows(
                sandbox_config,
                "https://shop.example.com/",
                "2026-11-01",
                "2026-11-01",
                list(get_report("search_analytics").dimensions),
            )
        )
        assert db.execute("SELECT count(*) FROM export_search_analytics").fetchone()[0] == len(expected)

    before = digests(summary.exports.values())
    again = runner.run_pipeline(
        instance, resources, DATES, ConsumerTuning(consumers=2, **FAST_CONSUMERS), request_config=PAGES_OF_1000
    )
    assert again.rows_loaded == summary.rows_loaded
    assert digests(again.exports.values()) == before
