"""Hostile account ids go through partitions, Kafka, landing, DuckDB and exports unchanged and contained."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest

from reporting_assets import runner
from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.sandbox import SandboxConfig, SiteSpec

HOSTILE = [
    "../../etc",
    "https://a.example.com/x?y=1&z=/../",
    "https://exämple.com/ü/页面",
    "sc-domain:" + "x" * 300 + ".com",
    'https://quote.example.com/it\'s "quoted"; DROP TABLE accounts;--',
]
UNPARTITIONABLE = "https://pipe.example.com/a|b"


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    sites = [SiteSpec(url, 7) for url in HOSTILE] + [SiteSpec(UNPARTITIONABLE, 3)]
    return SandboxConfig(seed=4, sites=sites, per_site_qps=None, global_qps=None, faults=[], rows_jitter=0.0)


def test_hostile_account_ids_round_trip_and_stay_inside(instance, resources, sandbox, pipeline_env, tmp_path):
    summary = runner.run_pipeline(
        instance, resources, ["2026-11-01"], ConsumerTuning(consumers=1, idle_timeout_s=2.0, qps_per_account=100.0)
    )
    assert sorted(summary.accounts) == sorted(HOSTILE)  # the '|' account is reported, not a partition
    assert summary.dead_lettered == 0 and summary.rows_loaded == 7 * len(HOSTILE)

    with open(summary.exports["2026-11-01/search_analytics.csv"], newline="") as handle:
        exported = [row["account"] for row in csv.DictReader(handle)]
    assert sorted(set(exported)) == sorted(HOSTILE) and len(exported) == 7 * len(HOSTILE)

    data_dir = Path(pipeline_env["REPORTING_DATA_DIR"])
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM accounts").fetchone()[0] == len(HOSTILE) + 1
        stored = {row[0] for row in db.execute("SELECT DISTINCT account FROM search_analytics").fetchall()}
    assert stored == set(HOSTILE)

    landing = (data_dir / "landing").resolve()
    for path in data_dir.rglob("*.parquet"):
        resolved = path.resolve()
        assert resolved.is_relative_to(landing) or resolved.is_relative_to((data_dir / "exports").resolve())
        assert all(len(part) < 256 for part in resolved.parts)
    assert not (tmp_path / "etc").exists() and not (data_dir / "etc").exists()
