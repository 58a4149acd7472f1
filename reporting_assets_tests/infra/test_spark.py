"""The standalone Spark cluster's settings and start-up checks that need no JVM (the cluster itself:
reporting_assets_tests/cluster/test_spark_cluster.py)."""

from __future__ import annotations

import socket

import pytest

from reporting_assets.infra.ports import free_ports
from reporting_assets.infra.spark import LocalSparkCluster, SparkClusterError, SparkClusterSettings, main, spark_home


def test_the_distribution_is_pysparks_own():
    assert (spark_home() / "bin" / "spark-class").is_file()
    assert any((spark_home() / "jars").glob("spark-core_*.jar"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 0}, "SparkClusterSettings.port must be a TCP port"),
        ({"worker_webui_port": 65536}, "SparkClusterSettings.worker_webui_port must be a TCP port"),
        ({"worker_port": 7077}, "ports must all differ"),
        ({"worker_cores": 0}, "worker_cores must be >= 1"),
        ({"worker_memory": "lots"}, "worker_memory must look like 512m or 1g"),
    ],
)
def test_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        SparkClusterSettings(**overrides)


def test_stop_and_status_find_the_ports_the_cluster_was_started_with(tmp_path):
    settings = SparkClusterSettings(port=17001, webui_port=17002, worker_port=17003, worker_webui_port=17004)
    (tmp_path / "cluster.json").write_text(
        '{"host": "127.0.0.1", "port": 17001, "webui_port": 17002, "worker_port": 17003, '
        '"worker_webui_port": 17004, "worker_cores": 1, "worker_memory": "1g", "daemon_memory": "512m"}'
    )
    found = LocalSparkCluster.of_data_dir(tmp_path)
    assert found.master_url == "spark://127.0.0.1:17001" and found.settings.worker_webui_port == 17004
    assert found.settings == SparkClusterSettings(**{**settings.__dict__, "data_dir": tmp_path})
    assert LocalSparkCluster.of_data_dir(tmp_path / "none").master_url == "spark://127.0.0.1:7077"


def test_a_taken_port_is_one_error_and_nothing_starts(tmp_path, capsys):
    ports = free_ports(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        settings = SparkClusterSettings(
            port=ports[0], webui_port=ports[1], worker_port=ports[2], worker_webui_port=ports[3], data_dir=tmp_path
        )
        with pytest.raises(SparkClusterError, match=rf"ports \[{ports[1]}\] on 127.0.0.1 are taken"):
            LocalSparkCluster(settings).start()
        assert not (tmp_path / "master.pid").exists() and not (tmp_path / "worker.pid").exists()
        assert main(["status", "--data-dir", str(tmp_path)]) == 3
    assert "spark cluster not running" in capsys.readouterr().out
