"""Re-drive: move dead-lettered requests back onto the request topic, once their cause is fixed.

The dead-letter topic is read by its own consumer group, so each letter is re-driven once; the
letters stay on the topic (Kafka retains them) as the record of what failed.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from reporting_assets.core.kafka import KafkaCluster
from reporting_assets.core.messages import DeadLetter, InvalidRequestError


def redrive(kafka: KafkaCluster, max_messages: int = 100_000, timeout_s: float = 300.0) -> dict[str, Any]:
    """Re-drive every dead letter not re-driven yet: read to the end offsets the topic had at the start.

    Returns the counts (`read`, `redriven`, `not_redrivable`) and `partitions`: the (date, account)
    pairs whose requests went back, oldest date first, for the sensors to wait on them again.

    The partitions are assigned, not subscribed (one re-drive at a time, no group join to wait for);
    the re-drive group's committed offsets remember which letters went back already.
    """
    kafka.ensure_topics()
    consumer = kafka.consumer([], group_id=kafka.redrive_group)
    producer = kafka.producer()
    outcome: Counter[str] = Counter()
    went_back: set[tuple[str, str]] = set()  # (date, account)
    try:
        partitions = [
            TopicPartition(kafka.dead_letter_topic, p)
            for p in consumer.partitions_for_topic(kafka.dead_letter_topic) or ()
        ]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while outcome["read"] < max_messages and any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"re-drive did not reach the end of {kafka.dead_letter_topic} in {timeout_s:g}s")
            batch = consumer.poll(timeout_ms=500, max_records=min(500, max_messages - outcome["read"]))
            for records in batch.values():
                for record in records:
                    if record.offset >= ends[TopicPartition(record.topic, record.partition)]:
                        continue  # a letter written after the start: the next re-drive takes it
                    outcome["read"] += 1
                    try:
                        request = DeadLetter.decode(record.value).original_request()
                    except (ValueError, TypeError, InvalidRequestError):
                        request = None
                    if request is None:
                        outcome["not_redrivable"] += 1
                        continue
                    retry = request.with_attempt(request.attempt + 1)
                    producer.send(kafka.request_topic, key=retry.key(), value=retry.encode())
                    outcome["redriven"] += 1
                    went_back.add((retry.date, retry.account))
            if batch:
                producer.flush(timeout=30)  # on the request topic before the letters are marked done
                consumer.commit(
                    {tp: OffsetAndMetadata(min(consumer.position(tp), ends[tp]), "", -1) for tp in partitions}
                )
    finally:
        producer.close(timeout=10)
        consumer.close()
    return {
        "read": outcome["read"],
        "redriven": outcome["redriven"],
        "not_redrivable": outcome["not_redrivable"],
        "partitions": sorted(went_back),
    }
