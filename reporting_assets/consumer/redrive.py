"""Re-drive: move dead-lettered requests back onto the request topic, once their cause is fixed.

The dead-letter topic is read by its own consumer group, so each letter is re-driven once; the
letters stay on the topic (Kafka retains them) as the record of what failed.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from reporting_assets.messages import DeadLetter, InvalidRequestError

if TYPE_CHECKING:
    from reporting_assets.resources.kafka import KafkaResource


def redrive_group(kafka: KafkaResource) -> str:
    return f"{kafka.consumer_group}.redrive"


def redrive(kafka: KafkaResource, max_messages: int = 100_000, idle_timeout_s: float = 3.0) -> dict[str, int]:
    consumer = kafka.consumer([kafka.dead_letter_topic], group_id=redrive_group(kafka))
    producer = kafka.producer()
    outcome: Counter[str] = Counter()
    try:
        last_record = time.monotonic()
        while outcome["read"] < max_messages and time.monotonic() - last_record < idle_timeout_s:
            batch = consumer.poll(timeout_ms=500, max_records=min(500, max_messages - outcome["read"]))
            for records in batch.values():
                for record in records:
                    last_record = time.monotonic()
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
            if batch:
                producer.flush(timeout=30)  # on the request topic before the letters are marked done
                consumer.commit()
    finally:
        producer.close(timeout=10)
        consumer.close()
    return {"read": outcome["read"], "redriven": outcome["redriven"], "not_redrivable": outcome["not_redrivable"]}
