"""When a consumer may start calling: its whole group is in, so no partition changes hands under a call.

The consumers of a run start a second or so apart. The first to join gets every partition; calling
at once, it learns of the next member only at its next heartbeat, seconds later, and the calls it
has under way then for the partitions handed over are made again by their new owner, which finds
them neither landed nor committed (bench 7 measured 1-2 such repeats in every clean run). So a
consumer starts calling once the broker describes its group as Stable with all of the run's members
and gives it the partitions it holds, or once `join_grace_s` has passed (a member that never comes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Set
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka import errors as kafka_errors

log = logging.getLogger(__name__)


def group_settled(
    description: Mapping[str, Any], member_id: str, assignment: Set[TopicPartition], expected_members: int
) -> bool:
    """Whether a DescribeGroups answer shows the group settled with this member holding `assignment`."""
    if description.get("group_state") != "Stable":
        return False  # a rebalance is under way: a member joined or left
    members = description.get("members") or []
    if len(members) < expected_members:
        return False  # the run's other consumers are not in yet
    mine = next((member for member in members if member.get("member_id") == member_id), None)
    if mine is None:
        return False
    described = {
        TopicPartition(entry["topic"], partition)
        for entry in (mine.get("member_assignment") or {}).get("assigned_partitions", [])
        for partition in entry["partitions"]
    }
    return described == set(assignment)


class GroupWatch:
    """Asks the broker how the consumer's group stands, with one admin client (closed by `close`)."""

    def __init__(self, admin: Callable[[], KafkaAdminClient], group_id: str, expected_members: int) -> None:
        self._connect = admin
        self._admin: KafkaAdminClient | None = None
        self.group_id = group_id
        self.expected_members = expected_members

    def settled(self, consumer: KafkaConsumer) -> bool:
        assignment = consumer.assignment()
        if not assignment:
            return False
        member_id = consumer.group_metadata().member_id
        try:
            if self._admin is None:
                self._admin = self._connect()
            description = self._admin.describe_groups([self.group_id])[self.group_id]
        except kafka_errors.KafkaError as exc:
            log.info("cannot tell whether group %s has settled: %s", self.group_id, exc)
            return False
        return group_settled(description, member_id, assignment, self.expected_members)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
