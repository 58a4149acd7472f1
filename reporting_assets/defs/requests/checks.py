"""Asset checks on the request topic (`report_requests`): lag within limits, no dead letters waiting.

The `observe_request_lag` sensor reports both every tick, with an observation of the lag; they can
also be executed from the UI, one step measuring once for both.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from reporting_assets.core.kafka import KafkaTopicError
from reporting_assets.core.keys import DEAD_LETTER_CHECK, LAG_CHECK, REQUESTS_ASSET
from reporting_assets.core.lag import LagLimits, LagSnapshot, dead_letter_check, lag_check, measure
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.settings import Settings, load_settings


def lag_limits(settings: Settings) -> LagLimits:
    return LagLimits(max_messages=settings.lag_max_messages, max_age_s=settings.lag_max_age_s)


def observation(snapshot: LagSnapshot) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=REQUESTS_ASSET,
        description=f"lag {snapshot.total} on {snapshot.request_topic}",
        metadata=snapshot.metadata(),
    )


def check_evaluations(snapshot: LagSnapshot, limits: LagLimits) -> list[dg.AssetCheckEvaluation]:
    return [
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(REQUESTS_ASSET),
            check_name=name,
            passed=outcome.passed,
            description=outcome.description,
            metadata=outcome.metadata,
            severity=dg.AssetCheckSeverity.ERROR,
        )
        for name, outcome in (
            (LAG_CHECK, lag_check(snapshot, limits)),
            (DEAD_LETTER_CHECK, dead_letter_check(snapshot)),
        )
    ]


def build_request_topic_checks(settings: Settings) -> dg.AssetChecksDefinition:
    """Both checks in one step (one measurement); limits from the settings."""
    limits = lag_limits(settings)
    specs = [
        dg.AssetCheckSpec(
            LAG_CHECK,
            asset=REQUESTS_ASSET,
            description=(
                f"The consumer group's lag on the request topic is at most {limits.max_messages} requests and the "
                f"oldest waiting request is at most {limits.max_age_s:g}s old "
                "(REPORTING_LAG_MAX_MESSAGES, REPORTING_LAG_MAX_AGE_S). Reported by the observe_request_lag sensor."
            ),
        ),
        dg.AssetCheckSpec(
            DEAD_LETTER_CHECK,
            asset=REQUESTS_ASSET,
            description=(
                "No dead-lettered request waits to be re-driven: fix the cause, then run redrive_dead_letters. "
                "Reported by the observe_request_lag sensor."
            ),
        ),
    ]

    @dg.multi_asset_check(specs=specs, name="request_topic_checks")
    def request_topic_checks(kafka: KafkaResource) -> Iterator[dg.AssetCheckResult]:
        """Measure the request topic once and evaluate both checks."""
        try:
            snapshot = measure(kafka.cluster())
        except KafkaTopicError as error:
            for spec in specs:
                yield dg.AssetCheckResult(
                    asset_key=REQUESTS_ASSET,
                    check_name=spec.name,
                    passed=True,
                    description=f"nothing enqueued yet: {error}",
                )
            return
        for evaluation in check_evaluations(snapshot, limits):
            yield dg.AssetCheckResult(
                asset_key=REQUESTS_ASSET,
                check_name=evaluation.check_name,
                passed=evaluation.passed,
                description=evaluation.description,
                metadata=evaluation.metadata,
                severity=evaluation.severity,
            )

    return request_topic_checks


@dg.definitions
def checks() -> dg.Definitions:
    return dg.Definitions(asset_checks=[build_request_topic_checks(load_settings())])
