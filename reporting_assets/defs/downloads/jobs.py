"""Dagster jobs around the consumer: `download_requests` (N consumers) and `redrive_dead_letters`."""

from typing import Any

import dagster as dg
from kafka.errors import KafkaError
from pydantic import Field, create_model

from reporting_assets.core.consumer.budget import GroupBudget
from reporting_assets.core.consumer.loop import DownloadLoop
from reporting_assets.core.consumer.memory import OffsetsLostError
from reporting_assets.core.consumer.redrive import redrive
from reporting_assets.core.consumer.settled import GroupWatch
from reporting_assets.core.consumer.tuning import ConsumerSettings, ConsumerTuning
from reporting_assets.core.kafka import KafkaTopicError
from reporting_assets.core.keys import DOWNLOAD_JOB, DOWNLOAD_ROLE, REDRIVE_JOB, REQUESTS_ASSET, ROLE_TAG, key_str
from reporting_assets.core.progress import ConsumerProgress, ProgressReporter
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.resources.warehouse import WarehouseResource

PLAN_FIELDS = ("consumers",)


def _config_class(name: str, fields: list[str], doc: str) -> type[dg.Config]:
    """A Dagster config class with ConsumerTuning's fields, defaults and descriptions (checked by it)."""
    declared = ConsumerTuning.model_fields
    return create_model(  # type: ignore[call-overload]
        name,
        __base__=dg.Config,
        __doc__=doc,
        **{
            n: (declared[n].annotation, Field(default=declared[n].default, description=declared[n].description))
            for n in fields
        },
    )


ConsumerPlanConfig = _config_class("ConsumerPlanConfig", list(PLAN_FIELDS), "How many consumers the run starts.")
ConsumerConfig = _config_class(
    "ConsumerConfig", [n for n in ConsumerTuning.model_fields if n not in PLAN_FIELDS], "One consumer's tuning."
)


def consumer_run_config(tuning: ConsumerTuning) -> dict[str, Any]:
    """Run config of a `download_requests` run with this tuning (the lag sensor's, the runner's)."""
    values = {name: value for name, value in tuning.model_dump().items() if value is not None}
    plan = {name: values.pop(name) for name in PLAN_FIELDS}
    return {"ops": {"plan_consumers": {"config": plan}, "consume_requests": {"config": values}}}


def group_topics(kafka: KafkaResource) -> list[str]:
    return [kafka.request_topic, kafka.delay_topic]


def check_memory(kafka: KafkaResource, warehouse: WarehouseResource, group: str, topics: list[str]) -> None:
    """Fail loudly, before any call, if the group's committed offsets vanished (see `consumer.memory`)."""
    try:
        warehouse.group_memory(group).check(kafka.cluster().committed_partitions(topics, group))
    except OffsetsLostError as lost:
        raise dg.Failure(description=str(lost)) from None


def remember_commits(kafka: KafkaResource, warehouse: WarehouseResource, group: str, topics: list[str]) -> None:
    warehouse.group_memory(group).mark(kafka.cluster().committed_partitions(topics, group))


@dg.op(out=dg.DynamicOut(tuple))
def plan_consumers(
    context: dg.OpExecutionContext, config: ConsumerPlanConfig, kafka: KafkaResource, warehouse: WarehouseResource
):
    """One dynamic output per consumer of the group."""
    consumers = ConsumerTuning(consumers=config.consumers).consumers  # checks it
    kafka.check_reachable()
    kafka.ensure_topics()
    check_memory(kafka, warehouse, kafka.consumer_group, group_topics(kafka))
    lag = kafka.lag(kafka.request_topic)
    context.log.info(f"starting {consumers} consumers; lag {lag.total} on {kafka.request_topic}")
    for index in range(consumers):
        yield dg.DynamicOutput((index, consumers), mapping_key=f"consumer_{index}")


@dg.op
def consume_requests(
    context: dg.OpExecutionContext,
    consumer_slot: tuple,
    config: ConsumerConfig,
    kafka: KafkaResource,
    partner: PartnerResource,
    warehouse: WarehouseResource,
) -> dict:
    """One consumer of the group: poll, call, land, commit until drained or out of time."""
    consumer_index, consumers = consumer_slot
    tuning = ConsumerTuning(**config.model_dump())
    settings = ConsumerSettings.for_topics(
        tuning, kafka.request_topic, kafka.dead_letter_topic, kafka.delay_topic, consumers
    )
    # A short session lets a killed run's consumers leave the group quickly, so a new run starts soon.
    consumer = kafka.consumer(
        [],
        client_id=f"{kafka.client_id}-consumer-{consumer_index}",
        session_timeout_ms=int(tuning.session_timeout_s * 1000),
        heartbeat_interval_ms=max(1000, int(tuning.session_timeout_s * 1000) // 4),
    )
    producer = kafka.producer()
    watch = GroupWatch(kafka.cluster().admin, kafka.consumer_group, expected_members=consumers)
    reporter = ProgressReporter(consumer_index, lambda progress: record_progress(context, kafka, progress))
    try:
        loop = DownloadLoop(
            consumer,
            producer,
            partner.clients,
            warehouse.landing_zone(),
            settings,
            group_watch=watch,
            on_progress=reporter,
            group_budget=GroupBudget.for_settings(kafka.cluster().admin, kafka.consumer_group, settings),
        )
        loop.subscribe()
        stats = loop.run()
        reporter.report(stats)
    finally:
        watch.close()  # if the run ended before the group settled
        producer.close(timeout=10)
        consumer.close()
    remember_commits(kafka, warehouse, kafka.consumer_group, group_topics(kafka))
    context.log.info(f"consumer {consumer_index}: {stats.as_metadata()}")
    return stats.as_metadata()


def record_progress(context: dg.OpExecutionContext, kafka: KafkaResource, progress: ConsumerProgress) -> None:
    """A consumer's counters as an observation of the request topic (plotted by the UI over the run);
    the first consumer adds the group's lag, so the lag has one line too."""
    metadata = progress.metadata()
    if progress.consumer == 0:
        try:
            metadata["lag_total"] = kafka.lag(kafka.request_topic).total
        except (KafkaError, KafkaTopicError) as exc:  # a report without the lag; the downloads go on
            context.log.warning(f"progress without the lag: {type(exc).__name__}: {exc}")
    context.log_event(dg.AssetObservation(asset_key=REQUESTS_ASSET, metadata=metadata))


@dg.op
def summarize_downloads(context: dg.OpExecutionContext, results: list[dict], kafka: KafkaResource) -> dict:
    totals = {
        key: sum(result[key] for result in results)
        for key in ("consumed", "landed", "rows", "continued", "dead_lettered", "api_calls")
    }
    lag = kafka.lag(kafka.request_topic)
    context.log.info(f"downloads done: {totals}; remaining lag {lag.total}")
    context.add_output_metadata({**totals, "remaining_lag": lag.total})
    return {**totals, "remaining_lag": lag.total}


@dg.job(
    name=DOWNLOAD_JOB,
    executor_def=dg.multiprocess_executor,
    tags={ROLE_TAG: DOWNLOAD_ROLE},
    description="Consume the request topic with N consumers in one group until drained.",
)
def download_requests():
    summarize_downloads(plan_consumers().map(consume_requests).collect())


class RedriveConfig(dg.Config):
    max_messages: int = Field(default=100_000, description="Stop after re-driving this many dead letters.")
    timeout_s: float = Field(
        default=300.0, description="Give up if the dead-letter topic's end is not reached by then."
    )


@dg.op
def redrive_dead_letter_requests(
    context: dg.OpExecutionContext, config: RedriveConfig, kafka: KafkaResource, warehouse: WarehouseResource
) -> dict:
    """Send dead-lettered requests back to the request topic (once the fault is fixed).

    Each (date, account) whose requests went back is recorded as a new materialization of its
    report_requests partition, with the topic's end offsets: the download sensor waits for it again,
    reloads it once landed, and the export sensor re-exports its date.
    """
    letters = [kafka.dead_letter_topic]
    check_memory(kafka, warehouse, kafka.redrive_group, letters)  # or every letter would go back again
    result = redrive(kafka.cluster(), max_messages=config.max_messages, timeout_s=config.timeout_s)
    remember_commits(kafka, warehouse, kafka.redrive_group, letters)
    partitions = result["partitions"]
    if partitions:
        watermark = kafka.end_offsets(kafka.request_topic)
        end_offsets = dg.MetadataValue.json({str(p): o for p, o in sorted(watermark.items())})
        for date, account in partitions:
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=REQUESTS_ASSET,
                    partition=key_str(date, account),
                    description="dead-lettered requests re-driven onto the request topic",
                    metadata={"redriven": True, "topic": kafka.request_topic, "end_offsets": end_offsets},
                )
            )
    counts = {name: result[name] for name in ("read", "redriven", "not_redrivable")}
    context.log.info(f"re-drive: {counts}; {len(partitions)} partitions wait for their downloads again")
    context.add_output_metadata({**counts, "partitions": len(partitions)})
    return result


@dg.job(name=REDRIVE_JOB, description="Re-drive the dead-letter topic's requests onto the request topic.")
def redrive_dead_letters():
    redrive_dead_letter_requests()
