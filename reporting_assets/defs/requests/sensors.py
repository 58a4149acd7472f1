"""`observe_request_lag`: each tick, an observation of `report_requests` with the lag, and its two checks."""

from __future__ import annotations

import dagster as dg

from reporting_assets.core.kafka import KafkaTopicError
from reporting_assets.core.keys import LAG_SENSOR
from reporting_assets.core.lag import measure
from reporting_assets.defs.requests.checks import check_evaluations, lag_limits, observation
from reporting_assets.defs.runs import sensor_status
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.settings import Settings, load_settings


def build_lag_sensor(settings: Settings) -> dg.SensorDefinition:
    interval = settings.sensor_interval_s
    status = sensor_status(settings.sensors_running)
    limits = lag_limits(settings)

    @dg.sensor(
        name=LAG_SENSOR,
        minimum_interval_seconds=interval,
        default_status=status,
        description=(
            "Record the request topic's lag as an observation of report_requests and report its two checks "
            "(lag within limits, dead-letter topic empty)."
        ),
    )
    def observe_request_lag(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        try:
            snapshot = measure(kafka.cluster())
        except KafkaTopicError as error:
            return dg.SkipReason(f"nothing enqueued yet: {error}")
        return dg.SensorResult(asset_events=[observation(snapshot), *check_evaluations(snapshot, limits)])

    return observe_request_lag


@dg.definitions
def sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[build_lag_sensor(load_settings())])
