"""Spark for enqueueing requests, with the Kafka connector jars from the project's Maven cache."""

from __future__ import annotations

import os
import sys
from typing import Any

from dagster_pyspark import LazyPySparkResource
from dagster_pyspark.resources import spark_session_from_config
from pydantic import Field

from reporting_assets.core.spark import DEFAULT_MASTER, MASTER_VARIABLE, is_local, master_error

DEFAULT_SPARK_CONFIG: dict[str, Any] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
    "spark.sql.session.timeZone": "UTC",
}


class SparkMasterError(RuntimeError):
    """The process already runs a SparkSession on another master than the one asked for."""


class KafkaSparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session on `master` (SPARK_MASTER), plus `spark.jars` for Spark's native Kafka sink.

    The jars must be on the first SparkSession of the process (getOrCreate ignores them later),
    and they come from Maven Central through the project's pom, never `spark.jars.packages`.
    """

    master: str = Field(default=DEFAULT_MASTER, description=f"The Spark master ({MASTER_VARIABLE}).")

    def session_config(self) -> dict[str, Any]:
        """The configuration the session starts with (SPARK_MASTER checked again: dg.EnvVar is read at launch)."""
        error = master_error(self.master)
        if error is not None:
            raise error
        from reporting_assets.infra.maven import spark_connector_jars

        config = {**DEFAULT_SPARK_CONFIG, **self.spark_config, "spark.master": self.master.strip()}
        # spark.jars reach a cluster's executors too: each fetches them from the driver at start-up.
        jars = [str(path) for path in spark_connector_jars()]
        extra = [j for j in str(config.get("spark.jars", "")).split(",") if j]
        config["spark.jars"] = ",".join(jars + extra)
        if not is_local(self.master) and "PYSPARK_PYTHON" not in os.environ:
            # Executors of a cluster start Python workers with the interpreter the driver names (the
            # enqueue's createDataFrame feeds rows through them); Spark's default, `python3` on the
            # worker's PATH, may lack pyspark's dependencies or be another version. This interpreter
            # is right on a loopback cluster and on nodes built from the same image; PYSPARK_PYTHON
            # (or spark.pyspark.python in spark_config) names another one.
            config.setdefault("spark.pyspark.python", sys.executable)
        return config

    def _init_session(self) -> None:
        if self._spark_session is None:
            config = self.session_config()
            session = spark_session_from_config(config)
            running = session.sparkContext.master
            if running != config["spark.master"]:
                # getOrCreate handed back the process's session: its master and jars were fixed at its start.
                raise SparkMasterError(
                    f"{MASTER_VARIABLE}={config['spark.master']!r} but this process already runs a SparkSession "
                    f"on {running!r}: stop it or start a new process"
                )
            self._spark_session = session


def spark_resource(master: Any = DEFAULT_MASTER, **overrides: Any) -> KafkaSparkResource:
    """`master`: a master URL or dg.EnvVar(SPARK_MASTER); `overrides`: more Spark configuration."""
    return KafkaSparkResource(master=master, spark_config={**DEFAULT_SPARK_CONFIG, **overrides})
