"""When a consumer may stop as drained: nothing is left for its whole group, not only for itself."""

from __future__ import annotations

import logging
from collections.abc import Container

from kafka import KafkaConsumer, TopicPartition
from kafka import errors as kafka_errors

log = logging.getLogger(__name__)

CAUGHT_UP_TIMEOUT_MS = 5_000


def group_caught_up(consumer: KafkaConsumer, delayed: Container[TopicPartition]) -> bool:
    """Nothing is left for the group: this consumer's partitions (but the `delayed` ones, paused on
    requests not yet due) are read to their end offsets, and every other partition of its topics is
    committed to its end.

    Checking only its own partitions, a consumer could stop while partitions were held by a
    member that no longer runs (a killed run's consumer, until its session expires) or were
    between owners, and the run would end with lag left (seen in CI: a resumed download stopped
    "drained" with one request never downloaded).
    """
    mine = consumer.assignment()
    own = [tp for tp in mine if tp not in delayed]
    try:
        others = [
            TopicPartition(topic, partition)
            for topic in sorted(consumer.subscription() or ())
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
            if TopicPartition(topic, partition) not in mine
        ]
        if not own and not others:
            return True
        ends = consumer.end_offsets(own + others, timeout_ms=CAUGHT_UP_TIMEOUT_MS)
        if any(consumer.position(tp, timeout_ms=CAUGHT_UP_TIMEOUT_MS) < ends[tp] for tp in own):
            return False
        left = [tp for tp in others if ends[tp] > _group_position(consumer, tp)]
    except kafka_errors.KafkaError as exc:
        # The broker does not answer (restarting?): not drained as far as we know; keep waiting.
        log.info("cannot tell whether the topic is drained: %s", exc)
        return False
    if left:
        log.info("own partitions done; waiting for %s, not yet committed to their end", _names(left))
    return not left


def _group_position(consumer: KafkaConsumer, tp: TopicPartition) -> int:
    """Where the group would start reading a partition it does not own here."""
    committed = consumer.committed(tp, timeout_ms=CAUGHT_UP_TIMEOUT_MS)
    if committed is not None:
        return committed
    return consumer.beginning_offsets([tp], timeout_ms=CAUGHT_UP_TIMEOUT_MS)[tp]


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
