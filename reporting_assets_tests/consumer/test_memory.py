"""The group's memory never expires silently: marks of committed partitions, checked before a run."""

import pytest

from reporting_assets.core.consumer.memory import GroupMemory, OffsetsLostError


def test_a_marked_partition_without_a_committed_offset_stops_the_run(tmp_path):
    memory = GroupMemory(tmp_path, "reporting-consumers")
    memory.check({"requests": set()})  # a first run: nothing marked, nothing to lose
    memory.mark({"requests": [0, 2], "requests.delayed": []})
    assert memory.marked() == {"requests": {0, 2}}
    memory.check({"requests": {0, 1, 2}})  # all still there (and more)
    memory.check({"requests.delayed": set()})  # other topics: not asked about
    with pytest.raises(OffsetsLostError) as lost:
        memory.check({"requests": {0}})
    message = str(lost.value)
    assert "requests partitions [2]" in message and "offsets.retention.minutes" in message
    assert str(memory.folder) in message  # how to replay on purpose


def test_groups_are_remembered_apart(tmp_path):
    GroupMemory(tmp_path, "a/../b").mark({"requests": [1]})
    assert GroupMemory(tmp_path, "other").marked() == {}
    assert GroupMemory(tmp_path, "a/../b").marked() == {"requests": {1}}
