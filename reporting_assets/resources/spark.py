"""Spark for enqueueing requests, with the Kafka connector jars from the project's Maven cache."""

from __future__ import annotations

from typing import Any

from dagster_pyspark import LazyPySparkResource
from dagster_pyspark.resources import spark_session_from_config

DEFAULT_SPARK_CONFIG: dict[str, Any] = {
    "spark.master": "local[2]",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
    "spark.sql.session.timeZone": "UTC",
}


class KafkaSparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session, plus `spark.jars` for Spark's native Kafka sink.

    The jars must be on the first SparkSession of the process (getOrCreate ignores them later),
    and they come from Maven Central through the project's pom, never `spark.jars.packages`.
    """

    def _init_session(self) -> None:
        if self._spark_session is None:
            from reporting_assets.infra.maven import spark_connector_jars

            config = {**DEFAULT_SPARK_CONFIG, **self.spark_config}
            jars = [str(path) for path in spark_connector_jars()]
            extra = [j for j in str(config.get("spark.jars", "")).split(",") if j]
            config["spark.jars"] = ",".join(jars + extra)
            self._spark_session = spark_session_from_config(config)


def spark_resource(**overrides: Any) -> KafkaSparkResource:
    return KafkaSparkResource(spark_config={**DEFAULT_SPARK_CONFIG, **overrides})
