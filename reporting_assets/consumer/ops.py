"""Dagster jobs around the consumer: `download_requests` (N consumers) and `redrive_dead_letters`."""


import dagster as dg
from pydantic import Field

from reporting_assets.consumer.loop import ConsumerSettings, DownloadLoop
from reporting_assets.consumer.redrive import redrive
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.resources.warehouse import WarehouseResource


class ConsumerPlanConfig(dg.Config):
    consumers: int = Field(default=2, description="Consumers in the group, each in its own process.")


class ConsumerConfig(dg.Config):
    idle_timeout_s: float = Field(
        default=10.0,
        description="Stop after the group's topics stay drained this long (every partition, not only this consumer's).",
    )
    session_timeout_s: float = Field(default=10.0, description="Group session timeout (6..1800 s on the broker).")
    max_runtime_s: float = Field(default=3000.0, description="Stop after this long; the next run continues.")
    qps_per_account: float = Field(default=10.0, description="Starting calls/s per account (adapts down on 429s).")
    global_qps: float | None = Field(
        default=None, description="Project-wide calls/s budget, split evenly among the run's consumers."
    )
    concurrency: int = Field(default=4, description="Calls in flight per consumer.")
    quota_wait_s: float = Field(default=900.0, description="Wait after a load-quota refusal (403 quotaExceeded).")
    max_attempts: int = Field(default=3, description="Tries of a request whose answer is malformed.")
    retry_backoff_s: float = Field(default=0.5, description="First pause between malformed-answer tries.")
    commit_every: int = Field(default=1, description=(
        "Commit offsets once this many requests finished (1: as soon as the previous commit is answered;"
        " commits never wait on the download)."
    ))


@dg.op(out=dg.DynamicOut(tuple))
def plan_consumers(context: dg.OpExecutionContext, config: ConsumerPlanConfig, kafka: KafkaResource):
    """One dynamic output per consumer of the group."""
    if config.consumers < 1:
        raise ValueError(f"ConsumerPlanConfig.consumers must be >= 1, got {config.consumers}")
    kafka.check_reachable()
    kafka.ensure_topics()
    lag = kafka.lag(kafka.request_topic)
    context.log.info(f"starting {config.consumers} consumers; lag {lag.total} on {kafka.request_topic}")
    for index in range(config.consumers):
        yield dg.DynamicOutput((index, config.consumers), mapping_key=f"consumer_{index}")


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
    settings = ConsumerSettings(
        request_topic=kafka.request_topic,
        dead_letter_topic=kafka.dead_letter_topic,
        delay_topic=kafka.delay_topic,
        idle_timeout_s=config.idle_timeout_s,
        join_grace_s=config.session_timeout_s + 5.0,
        max_runtime_s=config.max_runtime_s,
        qps_per_account=config.qps_per_account,
        global_qps=config.global_qps / consumers if config.global_qps else None,
        concurrency=config.concurrency,
        quota_wait_s=config.quota_wait_s,
        max_attempts=config.max_attempts,
        retry_backoff_s=config.retry_backoff_s,
        commit_every=config.commit_every,
        client_retries=partner.num_retries,
    )
    # A short session lets a killed run's consumers leave the group quickly, so a new run starts soon.
    consumer = kafka.consumer(
        [],
        client_id=f"{kafka.client_id}-consumer-{consumer_index}",
        session_timeout_ms=int(config.session_timeout_s * 1000),
        heartbeat_interval_ms=max(1000, int(config.session_timeout_s * 1000) // 4),
    )
    producer = kafka.producer()
    try:
        loop = DownloadLoop(consumer, producer, partner.client, warehouse.landing_zone(), settings)
        loop.subscribe()
        stats = loop.run()
    finally:
        producer.close(timeout=10)
        consumer.close()
    context.log.info(f"consumer {consumer_index}: {stats.as_metadata()}")
    return stats.as_metadata()


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
    executor_def=dg.multiprocess_executor,
    tags={"reporting_assets/role": "download"},
    description="Consume the request topic with N consumers in one group until drained.",
)
def download_requests():
    summarize_downloads(plan_consumers().map(consume_requests).collect())


class RedriveConfig(dg.Config):
    max_messages: int = Field(default=100_000, description="Stop after re-driving this many dead letters.")
    timeout_s: float = Field(default=300.0, description="Give up if the dead-letter topic's end is not reached by then.")


@dg.op
def redrive_dead_letter_requests(context: dg.OpExecutionContext, config: RedriveConfig, kafka: KafkaResource) -> dict:
    """Send dead-lettered requests back to the request topic (once the fault is fixed)."""
    result = redrive(kafka, max_messages=config.max_messages, timeout_s=config.timeout_s)
    context.log.info(f"re-drive: {result}")
    context.add_output_metadata(result)
    return result


@dg.job(description="Re-drive the dead-letter topic's requests onto the request topic.")
def redrive_dead_letters():
    redrive_dead_letter_requests()
