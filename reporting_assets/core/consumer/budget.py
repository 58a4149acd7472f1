"""A consumer's share of the group's calls/s budget (`global_qps`): the share of the work left on its partitions.

Split evenly, a consumer whose partitions hold most of the accounts is held to half the budget
while the other finishes early and leaves its half unused (bench 10 measured 1.51 × the time at
the limit with 14 of 20 sites on one consumer of two). So every consumer reads, every few seconds,
the group's committed and end offsets of the request topic, and takes the budget in proportion to
the lag on the partitions it holds: from one reading, the shares add up to the budget, and the
consumers finish together. Requests are about one call each, so lag is work.

The reading runs on a thread of its own with its own admin client: the polling thread never waits
for it, and while the broker does not answer the last share stands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping

from kafka import KafkaAdminClient, TopicPartition
from kafka import errors as kafka_errors
from kafka.admin import OffsetSpec

from reporting_assets.core.consumer.tuning import ConsumerSettings

log = logging.getLogger(__name__)

READ_EVERY_S = 2.0  # how often the group's lag is read
MIN_SHARE = 0.1  # of an even share: a consumer with no lag left still calls for what comes in


def budget_share(lag: Mapping[int, int], assigned: Collection[int], budget: float, consumers: int) -> float:
    """The calls/s of a consumer holding partitions `assigned`, with `lag` left per partition of the topic."""
    even = budget / consumers
    total = sum(lag.values())
    if total <= 0:
        return even
    mine = sum(lag.get(partition, 0) for partition in assigned)
    return max(budget * mine / total, MIN_SHARE * even)


class GroupBudget:
    """Reads the group's lag on `topic` in the background; `rate(assigned)` is this consumer's share."""

    def __init__(
        self,
        admin: Callable[[], KafkaAdminClient],
        group_id: str,
        topic: str,
        budget: float,
        consumers: int,
        every_s: float = READ_EVERY_S,
    ) -> None:
        if not budget > 0 or consumers < 1:
            raise ValueError(f"a group budget needs calls/s > 0 and consumers >= 1, got {budget} and {consumers}")
        self._connect = admin
        self.group_id = group_id
        self.topic = topic
        self.budget = budget
        self.consumers = consumers
        self._every_s = every_s
        self._lag: dict[int, int] = {}  # replaced whole by the reader thread: readers see one reading
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_forever, name="group-budget", daemon=True)

    @classmethod
    def for_settings(
        cls, admin: Callable[[], KafkaAdminClient], group_id: str, settings: ConsumerSettings
    ) -> GroupBudget | None:
        """The budget of a consumer with these settings; None with no budget or nobody to share it with."""
        if settings.global_qps is None or settings.consumers < 2:
            return None
        return cls(admin, group_id, settings.request_topic, settings.global_qps, settings.consumers)

    def start(self) -> GroupBudget:
        self._thread.start()
        return self

    def rate(self, assigned: Collection[TopicPartition]) -> float:
        partitions = [tp.partition for tp in assigned if tp.topic == self.topic]
        return budget_share(self._lag, partitions, self.budget, self.consumers)

    def read_lag(self, admin: KafkaAdminClient) -> dict[int, int]:
        """Partition -> messages the group has not committed (committed offsets read first)."""
        committed = admin.list_group_offsets({self.group_id: None}).get(self.group_id, {})
        partitions = [
            TopicPartition(self.topic, p["partition_index"])
            for p in admin.describe_topics([self.topic])[0]["partitions"]
        ]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
        return {
            tp.partition: max(ends[tp].offset - max(committed[tp].offset if tp in committed else 0, 0), 0)
            for tp in partitions
        }

    def _read_forever(self) -> None:
        admin: KafkaAdminClient | None = None
        try:
            while not self._stop.is_set():
                try:
                    admin = admin or self._connect()
                    self._lag = self.read_lag(admin)
                except Exception as exc:  # noqa: BLE001 - a reading that fails keeps the last share
                    log.info("group budget: cannot read the lag of %s (%s); keeping the last share", self.topic, exc)
                    if not isinstance(exc, kafka_errors.KafkaError) and admin is not None:
                        admin.close()  # not the broker's answer: start again with a new client
                        admin = None
                self._stop.wait(self._every_s)
        finally:
            if admin is not None:
                admin.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
