"""The group's committed offsets are the pipeline's only memory: notice when they vanish.

Kafka drops a group's committed offsets once the group has been empty for `offsets.retention.minutes`
(7 days by default), and anyone can delete them. The group would then start again at the earliest
offset and download every request on the topic once more, without a word. So each run leaves a mark
per Kafka partition the group has committed, beside the landing zone, and a run refuses to start
when a marked partition has no committed offset any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from reporting_assets.core.durable import make_folder_durably, sync_folder
from reporting_assets.core.landing import safe_id


class OffsetsLostError(RuntimeError):
    """The group had committed offsets on these partitions, and the broker no longer has them."""


class GroupMemory:
    """Marks `<folder>/<group>/<topic>/<partition>`: the partitions a group is known to have committed."""

    def __init__(self, folder: Path | str, group: str) -> None:
        self.group = group
        self.folder = Path(folder) / safe_id(group)

    def marked(self) -> dict[str, set[int]]:
        if not self.folder.is_dir():
            return {}
        return {
            topic_dir.name: {int(mark.name) for mark in topic_dir.iterdir() if mark.name.isdigit()}
            for topic_dir in self.folder.iterdir()
            if topic_dir.is_dir()
        }

    def mark(self, committed: Mapping[str, Iterable[int]]) -> None:
        """Remember the partitions with a committed offset (topic names are file-name safe in Kafka)."""
        for topic, partitions in committed.items():
            folder = self.folder / topic
            new = [p for p in partitions if not (folder / str(p)).exists()]
            if not new:
                continue
            make_folder_durably(folder)
            for partition in new:
                (folder / str(partition)).touch()
            sync_folder(folder)

    def check(self, committed: Mapping[str, set[int]]) -> None:
        """Raise OffsetsLostError if a marked partition of these topics has no committed offset now."""
        marked = self.marked()
        lost = {
            topic: sorted(marked.get(topic, set()) - committed.get(topic, set()))
            for topic in committed
            if marked.get(topic, set()) - committed.get(topic, set())
        }
        if lost:
            where = ", ".join(f"{topic} partitions {parts}" for topic, parts in sorted(lost.items()))
            raise OffsetsLostError(
                f"consumer group {self.group!r} had committed offsets on {where}, and the broker has none now: "
                "they expired (the broker's offsets.retention.minutes, 7 days of an empty group by default) or "
                "were deleted. Starting would download every request on the topic again from its earliest "
                f"offset. Restore the offsets (kafka-consumer-groups --reset-offsets), or to replay on purpose "
                f"delete {self.folder}."
            )
