"""The consumer's tuning, declared once: the Dagster config of `download_requests`, the lag sensor's
run config, the environment settings (`REPORTING_CONSUMER_*`), the CLI and the runner all build it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from reporting_assets.core.split import ROW_CAP


def _waits(value: object) -> object:
    """Waits from the environment: "30,300,1800", or "none" for no transient retries at all."""
    if isinstance(value, str):
        text = value.strip().lower()
        return [] if text in ("none", "[]") else [part.strip() for part in text.split(",") if part.strip()]
    return value


Waits = Annotated[list[Annotated[float, Field(ge=0)]], BeforeValidator(_waits)]


class ConsumerTuning(BaseModel):
    """How many consumers a download run starts, and how each one paces, batches and gives up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    consumers: int = Field(default=2, ge=1, description="Consumers in the group, each in its own process.")
    idle_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="Stop after the group's topics stay drained this long (every partition, not only this consumer's).",
    )
    session_timeout_s: float = Field(default=10.0, gt=0, description="Group session timeout (6..1800 s on the broker).")
    max_runtime_s: float = Field(default=3000.0, gt=0, description="Stop after this long; the next run continues.")
    qps_per_account: float = Field(
        default=10.0, gt=0, description="Starting calls/s per account (adapts down on 429s)."
    )
    global_qps: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Project-wide calls/s budget, shared among the run's consumers by the work left on their "
            "partitions (the group's lag, read every few seconds)."
        ),
    )
    concurrency: int = Field(default=4, ge=1, description="Calls in flight per consumer.")
    max_in_flight_per_account: int = Field(default=2, ge=1, description="Calls in flight per account and consumer.")
    window: int = Field(default=64, ge=1, description="Offsets a Kafka partition may run ahead of its commit point.")
    max_buffered: int = Field(default=2_000, ge=1, description="Records fetched and not yet started, per consumer.")
    quota_wait_s: float = Field(default=900.0, ge=0, description="Wait after a load-quota refusal (403 quotaExceeded).")
    max_attempts: int = Field(
        default=3,
        ge=1,
        description=(
            "Calls of a request, asked again from memory after a backoff, while they fail transiently (5xx, "
            "timeouts, unreachable host) or answer malformed; then a malformed answer is dead-lettered and a "
            "transient failure waits on the delay topic (transient_waits_s)."
        ),
    )
    transient_waits_s: Waits = Field(
        default=[30.0, 120.0, 600.0, 1800.0],
        description=(
            "Waits on the delay topic before each new round of tries of a request whose calls kept failing "
            "transiently; once they are used up, the request is dead-lettered. A partner outage of a few "
            "minutes dead-letters nothing."
        ),
    )
    max_throttled: int = Field(
        default=20, ge=1, description="Throttled answers (429, 403 rate limit) a request may get before a dead letter."
    )
    retry_backoff_s: float = Field(
        default=0.5,
        ge=0,
        description=(
            "First wait before a request is asked again (no Retry-After given): doubled each time, with jitter."
        ),
    )
    max_retry_wait_s: float = Field(
        default=60.0, ge=0, description="Longest wait before a request is asked again, a Retry-After included."
    )
    commit_every: int = Field(
        default=1,
        ge=1,
        description=(
            "Commit offsets once this many requests finished (1: as soon as the previous commit's answer is"
            " read, which a busy consumer does every commit_interval_s; commits never wait on the download)."
        ),
    )
    commit_interval_s: float = Field(default=0.2, ge=0, description="Commit at least this often while requests finish.")
    row_cap: int = Field(
        default=ROW_CAP,
        ge=1,
        description=(
            "Rows the partner returns for one query of a day and search type (Google's cap); a chain that "
            "reaches it is split into filtered slices instead of asking for a page past it."
        ),
    )
    poll_timeout_ms: int = Field(
        default=200, gt=0, description="Longest poll of the broker while nothing is in flight."
    )

    def overrides(self) -> dict[str, object]:
        """The fields that differ from the defaults (what a run config needs to say)."""
        return self.model_dump(exclude_defaults=True)


class ConsumerSettings(ConsumerTuning):
    """One consumer's settings: the tuning, plus the topics it reads and writes."""

    request_topic: str
    dead_letter_topic: str
    delay_topic: str | None = None
    join_grace_s: float = Field(
        default=15.0, ge=0, description="How long to wait for partitions (a killed predecessor's session must expire)."
    )

    @classmethod
    def for_topics(
        cls,
        tuning: ConsumerTuning,
        request_topic: str,
        dead_letter_topic: str,
        delay_topic: str | None,
        consumers: int = 1,
    ) -> ConsumerSettings:
        """Settings of one of `consumers` consumers (the group's global budget is shared among them)."""
        values = tuning.model_dump()
        values["consumers"] = consumers
        return cls(
            **values,
            join_grace_s=tuning.session_timeout_s + 5.0,
            request_topic=request_topic,
            dead_letter_topic=dead_letter_topic,
            delay_topic=delay_topic,
        )
