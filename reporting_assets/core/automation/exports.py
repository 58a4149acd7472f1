"""Which dates wait for their export: the export sensor's cursor state."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ExportState:
    folded_upto: int = 0
    # date -> newest downloaded_reports storage id of the date not exported since, and the
    # (account count, storage id) at the last completeness check that found the date incomplete
    dates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_cursor(self) -> str:
        return json.dumps({"v": 1, "upto": self.folded_upto, "dates": self.dates}, separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> ExportState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(folded_upto=int(data.get("upto", 0)), dates=dict(data.get("dates", {})))
