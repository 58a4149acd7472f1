"""Watching a download run from outside it: the consumers' progress observations in the Dagster
instance and the topics' lag, as `DownloadProgress` every second for the console."""

from __future__ import annotations

import threading
from collections.abc import Callable

import dagster as dg
from kafka.errors import KafkaError

from reporting_assets.core.kafka import KafkaTopicError, TopicLag
from reporting_assets.core.keys import PROGRESS_TAG
from reporting_assets.core.lag import delayed_requests
from reporting_assets.core.progress import ConsumerProgress, DownloadProgress, DownloadWatch
from reporting_assets.resources.kafka import KafkaResource

WATCH_EVERY_S = 1.0


class RunWatcher:
    """A thread that tells `on_progress` how the download run tagged `token` goes, until `stop()`.

    The run is found by its tag; its observations are read with a cursor, so each is read once.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        token: str,
        kafka: KafkaResource,
        quota_qps: float,
        on_progress: Callable[[DownloadProgress], None],
    ) -> None:
        self._instance = instance
        self._token = token
        self._kafka = kafka
        self._on_progress = on_progress
        self._watch = DownloadWatch(self._lags, quota_qps)
        self._run_id: str | None = None
        self._cursor: str | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-watch", daemon=True)

    def _lags(self) -> tuple[TopicLag, int]:
        cluster = self._kafka.cluster()
        return cluster.lag(cluster.request_topic), delayed_requests(cluster)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, after one last reading (the final counts)."""
        self._stopped.set()
        self._thread.join()
        self._tick()

    def _run(self) -> None:
        while not self._stopped.wait(WATCH_EVERY_S):
            self._tick()

    def _tick(self) -> None:
        try:
            self._watch.note(self._new_reports())
            progress = self._watch.progress()
        except (KafkaError, KafkaTopicError):
            return  # the broker answers next time; the run itself reports what fails
        self._on_progress(progress)

    def _new_reports(self) -> list[ConsumerProgress]:
        if self._run_id is None:
            runs = self._instance.get_run_records(dg.RunsFilter(tags={PROGRESS_TAG: self._token}), limit=1)
            if not runs:
                return []
            self._run_id = runs[0].dagster_run.run_id
        connection = self._instance.get_records_for_run(
            self._run_id, cursor=self._cursor, of_type=dg.DagsterEventType.ASSET_OBSERVATION
        )
        self._cursor = connection.cursor
        reports = []
        for record in connection.records:
            event = record.event_log_entry.dagster_event
            if event is None or event.asset_observation_data is None:
                continue
            metadata = event.asset_observation_data.asset_observation.metadata
            report = ConsumerProgress.from_metadata({key: value.value for key, value in metadata.items()})
            if report is not None:
                reports.append(report)
        return reports
