"""`make demo`'s program from a clean data folder: it runs end to end and stops what it started."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from reporting_assets.infra.ports import free_ports, port_in_use
from reporting_assets.sandbox import default_config
from reporting_assets_tests.pipeline.test_end_to_end import exported_files, truth


def test_demo_runs_the_whole_pipeline_and_cleans_up(tmp_path: Path):
    kafka_port, controller_port, sandbox_port = free_ports(3)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "reporting_assets.demo",
            "--data-dir",
            str(tmp_path / "data"),
            "--kafka-port",
            str(kafka_port),
            "--kafka-controller-port",
            str(controller_port),
            "--sandbox-port",
            str(sandbox_port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # Quiet: no library warning, Spark WARN or Dagster DEBUG line on the console; they are in the named log.
    assert result.stderr == "", result.stderr[-3000:]
    assert not any(word in out for word in ("Warning", "WARN", "DEBUG")), out
    log = Path(out.rsplit("log (Dagster, Spark, Kafka): ", 1)[1].strip())
    assert "STEP_WORKER_STARTED" in log.read_text()
    assert "accounts discovered : 5" in out
    assert "requests enqueued   : 15" in out
    assert "dead letters        : 0" in out
    # Progress while it downloads (lines, off a terminal); the last one ends complete, its 429s the partner's.
    progress = [line for line in out.splitlines() if line.startswith("download: ")]
    assert progress and progress[-1].startswith("download: 15/15 requests, "), out
    answered_429 = re.search(r"API calls +: \d+ \((\d+) answered 429\)", out).group(1)
    assert f" {answered_429} throttled (429), 0 delayed, 0 dead letters" in progress[-1], (answered_429, progress)
    exports = sorted((tmp_path / "data" / "exports" / "search_analytics").iterdir())
    assert [p.suffix for p in exports] == [".csv", ".json", ".parquet"] * 3
    assert all(str(p) in out for p in exports)
    # Every format holds exactly the partner's rows of its day (not merely a file, or as many rows).
    config = default_config()
    accounts = [site.url for site in config.sites if not site.forbidden]
    files = {f"{p.stem}/search_analytics{p.suffix}": str(p) for p in exports}
    for date in sorted({p.stem for p in exports}):
        formats = exported_files(files, date)
        assert set(formats["csv"]) == truth(config, accounts, [date]) and len(formats["csv"]) == len(
            set(formats["csv"])
        )
        assert formats["parquet"] == formats["csv"] and formats["json"] == formats["csv"]
    assert not port_in_use("127.0.0.1", kafka_port) and not port_in_use("127.0.0.1", sandbox_port)
