"""Turn (account, date) pairs × reports into request messages with Spark's native Kafka sink.

The request id is computed inside Spark (sha2 of the same canonical JSON `compute_request_id`
hashes), so enqueueing a million requests never loops over them in Python.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reporting_assets.core.connectors.ga4 import MAX_LIMIT as GA4_MAX_LIMIT
from reporting_assets.core.connectors.ga4 import Ga4Connector, Ga4Report
from reporting_assets.core.messages import REQUEST_VERSION
from reporting_assets.core.reports import ReportSpec

# Alphabetical, as `compute_request_id`'s sorted keys; null columns (a plain report's aggregation_type
# and filters) are left out by to_json, as Python leaves out the defaults.
IDENTITY_FIELDS = (
    "account",
    "aggregation_type",
    "data_state",
    "date",
    "dimensions",
    "filters",
    "report",
    "row_limit",
    "search_type",
    "start_row",
)


def request_frame(
    spark: SparkSession,
    pairs: Sequence[tuple[str, str]],
    reports: Sequence[ReportSpec],
    row_limit: int,
    download: str,
    data_state: str | None = None,
    skip: Collection[tuple[str, str, str]] = (),
) -> DataFrame:
    """One row per first-page request: columns `key` (account) and `value` (request JSON).

    `download`: the id of this enqueue's downloads (`new_download_id`), carried by every request.
    `data_state`: instead of each report's own (its catalog entry's).
    `skip`: (report, date, account) partitions to leave out (downloaded, or still on their way).
    """
    pairs_frame = spark.createDataFrame(list(pairs), "account string, date string")
    reports_frame = spark.createDataFrame(
        [
            (
                spec.name,
                list(spec.dimensions),
                spec.search_type,
                data_state or spec.data_state,
                None if spec.aggregation_type == "auto" else spec.aggregation_type,
                spec.filters or None,
            )
            for spec in reports
        ],
        "report string, dimensions array<string>, search_type string, data_state string, "
        "aggregation_type string, filters string",
    )
    calls = pairs_frame.crossJoin(F.broadcast(reports_frame)).select(
        "account",
        "date",
        "report",
        "dimensions",
        "search_type",
        "data_state",
        "aggregation_type",
        "filters",
        F.lit(row_limit).alias("row_limit"),
        F.lit(0).alias("start_row"),
    )
    if skip:
        skipped = spark.createDataFrame(sorted(skip), "report string, date string, account string")
        calls = calls.join(F.broadcast(skipped), ["report", "date", "account"], "left_anti")
    identity = F.to_json(F.struct(*[F.col(name) for name in IDENTITY_FIELDS]))
    calls = calls.withColumn("request_id", F.substring(F.sha2(identity, 256), 1, 32))
    value = F.to_json(
        F.struct(
            F.col("account"),
            F.col("aggregation_type"),
            F.lit(0).alias("attempt"),
            *[F.col(name) for name in ("data_state", "date", "dimensions")],
            F.lit(download).alias("download"),
            *[F.col(name) for name in ("filters", "report", "request_id")],
            *[F.col(name) for name in ("row_limit", "search_type", "start_row")],
            F.lit(REQUEST_VERSION).alias("v"),
        )
    )
    return calls.select(F.col("account").alias("key"), value.alias("value"))


# GA4's identity: no search type, data state or aggregation; its metrics and partner instead.
GA4_IDENTITY_FIELDS = (
    "account",
    "date",
    "dimensions",
    "filters",
    "metrics",
    "partner",
    "report",
    "row_limit",
    "start_row",
)


def ga4_request_frame(
    spark: SparkSession,
    pairs: Sequence[tuple[str, str]],
    reports: Sequence[Ga4Report],
    download: str,
    row_limit: int = GA4_MAX_LIMIT,
) -> DataFrame:
    """GA4's first pages, (property, date) pairs × GA4 reports: the same `key` / `value` columns and the
    same request ids as `Ga4Report.first_request` (computed in Spark, as for Search Console)."""
    pairs_frame = spark.createDataFrame(list(pairs), "account string, date string")
    reports_frame = spark.createDataFrame(
        [(report.name, list(report.dimensions), list(report.metrics)) for report in reports],
        "report string, dimensions array<string>, metrics array<string>",
    )
    calls = pairs_frame.crossJoin(F.broadcast(reports_frame)).select(
        "account",
        "date",
        "report",
        "dimensions",
        "metrics",
        F.lit(None).cast("string").alias("filters"),
        F.lit(Ga4Connector.name).alias("partner"),
        F.lit(row_limit).alias("row_limit"),
        F.lit(0).alias("start_row"),
    )
    identity = F.to_json(F.struct(*[F.col(name) for name in GA4_IDENTITY_FIELDS]))
    calls = calls.withColumn("request_id", F.substring(F.sha2(identity, 256), 1, 32))
    value = F.to_json(
        F.struct(
            F.col("account"),
            F.lit(0).alias("attempt"),
            *[F.col(name) for name in ("date", "dimensions")],
            F.lit(download).alias("download"),
            *[F.col(name) for name in ("filters", "metrics", "partner", "report", "request_id")],
            *[F.col(name) for name in ("row_limit", "start_row")],
            F.lit(REQUEST_VERSION).alias("v"),
        )
    )
    return calls.select(F.col("account").alias("key"), value.alias("value"))


def write_requests(frame: DataFrame, kafka_options: Mapping[str, str], topic: str) -> None:
    """Spark's Kafka sink; the key (account) picks the Kafka partition with Kafka's own partitioner.

    `kafka_options`: ``kafka.bootstrap.servers`` and the cluster's security (``kafka.*``), as
    `KafkaResource.spark_options` gives them.
    """
    (
        frame.write.format("kafka")
        .options(**kafka_options)
        .option("kafka.acks", "all")
        .option("kafka.linger.ms", "20")
        .option("topic", topic)
        .save()
    )
