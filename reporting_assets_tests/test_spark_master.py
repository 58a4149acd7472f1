"""SPARK_MASTER: the master URLs Spark takes, one error line naming the variable for the others, and the
Spark resource reading it through dg.EnvVar."""

from __future__ import annotations

import sys

import dagster as dg
import pytest

from reporting_assets.core.spark import check_master, is_local
from reporting_assets.defs.resources import resources_from
from reporting_assets.resources.spark import KafkaSparkResource
from reporting_assets.settings import SettingError, Settings


@pytest.mark.parametrize(
    "master",
    [
        "local",
        "local[1]",
        "local[2]",
        "local[*]",
        "local[4,3]",
        "spark://127.0.0.1:7077",
        "spark://master-1.example.com:7077,master-2.example.com:7078",
        "spark://[::1]:65535",
        "yarn",
        "k8s://https://kubernetes.default.svc:443",
    ],
)
def test_masters_spark_takes(master):
    assert check_master(f" {master} ") == master


@pytest.mark.parametrize(
    ("master", "why"),
    [
        ("local[0]", "at least 1 threads"),
        ("local[2,0]", "at least 1 failures"),
        ("local[]", "is not a Spark master ("),
        ("local[two]", "is not a Spark master ("),
        ("spark://127.0.0.1:65536", "port 65536 is not in 1..65535"),
        ("spark://127.0.0.1:0", "port 0 is not in 1..65535"),
        ("spark://127.0.0.1", "'127.0.0.1' is not host:port"),
        ("spark://a:7077,", "'' is not host:port"),
        ("spark://", "'' is not host:port"),
        ("k8s://", "is not a Spark master ("),
        ("mesos://host:5050", "is not a Spark master ("),
        ("127.0.0.1:7077", "is not a Spark master ("),
        ("", "is not a Spark master ("),
    ],
)
def test_what_spark_would_refuse(master, why):
    with pytest.raises(ValueError, match="is not a Spark master") as raised:
        check_master(master)
    assert why in str(raised.value)


def test_local_masters_run_executors_in_the_driver():
    assert is_local("local[2]") and is_local("local") and is_local("local[*]")
    assert not is_local("spark://127.0.0.1:7077") and not is_local("yarn")


@pytest.mark.parametrize("master", ["local[0]", "spark://127.0.0.1:70777", "spark-master"])
def test_a_bad_spark_master_is_one_error_naming_the_variable(master):
    with pytest.raises(SettingError) as raised:
        Settings.from_env({"SPARK_MASTER": master})
    message = str(raised.value)
    assert message.startswith(f"SPARK_MASTER={master!r} is not a Spark master"), message
    assert "\n" not in message


def test_spark_master_defaults_to_local_and_reaches_the_resource_as_an_env_var(monkeypatch):
    assert Settings.from_env({}).spark_master == "local[2]"
    assert resources_from(Settings.from_env({}), env_vars=False)["spark"].master == "local[2]"
    monkeypatch.setenv("SPARK_MASTER", "spark://127.0.0.1:7077")
    spark = resources_from(Settings.from_env(), env_vars=True)["spark"]
    assert isinstance(spark.master, dg.EnvVar) and spark.master.env_var_name == "SPARK_MASTER"

    # Read at launch, in a run: the configuration the session would start with (none is started).
    @dg.asset
    def probe(spark: KafkaSparkResource) -> dg.MaterializeResult:
        config = spark.session_config()
        return dg.MaterializeResult(
            metadata={"master": config["spark.master"], "python": config.get("spark.pyspark.python", "")}
        )

    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    result = dg.materialize([probe], resources={"spark": spark})
    metadata = result.asset_materializations_for_node("probe")[0].metadata
    assert metadata["master"].value == "spark://127.0.0.1:7077"
    # a cluster's executors start Python workers with the driver's interpreter
    assert metadata["python"].value == sys.executable


def test_a_local_session_keeps_pysparks_own_python_and_every_session_gets_the_connector_jars():
    config = KafkaSparkResource(spark_config={}).session_config()
    assert config["spark.master"] == "local[2]" and "spark.pyspark.python" not in config
    assert "spark-sql-kafka-0-10" in config["spark.jars"]


def test_a_bad_spark_master_read_at_launch_is_one_error_naming_the_variable():
    with pytest.raises(ValueError) as raised:
        KafkaSparkResource(master="spark://127.0.0.1:99999", spark_config={}).session_config()
    assert str(raised.value) == (
        "SPARK_MASTER='spark://127.0.0.1:99999' is not a Spark master: port 99999 is not in 1..65535 "
        "(local, local[N], local[*], spark://host:port[,host:port], yarn or k8s://...)"
    )
