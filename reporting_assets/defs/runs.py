"""What the sensors and schedules ask the instance about runs."""

from __future__ import annotations

import dagster as dg

# A run in one of these is in progress: a second one for the same work would only compete with it.
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def latest_event_id(instance: dg.DagsterInstance) -> int:
    """The event log's newest storage id: what a tick folds up to."""
    return instance.event_log_storage.get_maximum_record_id() or 0


def new_partition_events(
    instance: dg.DagsterInstance, asset_key: str | dg.AssetKey, after: int, upto: int
) -> dict[str, int]:
    """Partition -> latest materialization storage id in (after, upto]; one indexed query, no decoding.

    A partition whose latest event is newer than `upto` is left for the next tick (its newest
    event supersedes the older one anyway).
    """
    latest = instance.get_latest_storage_id_by_partition(
        dg.AssetKey.from_coercible(asset_key), dg.DagsterEventType.ASSET_MATERIALIZATION, after_cursor=after
    )
    return {key: sid for key, sid in latest.items() if sid <= upto}


def sensor_status(running: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED


def schedule_status(running: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
