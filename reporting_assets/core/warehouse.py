"""Where results live: the landing zone (Parquet per request), the DuckDB database, and export files."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from reporting_assets.core.consumer.memory import GroupMemory
from reporting_assets.core.landing import LandingZone


@dataclass(frozen=True)
class Warehouse:
    """Local data folder: `landing/`, `exports/` and the DuckDB database analysts query."""

    data_dir: str = "data"
    database_file: str = "warehouse.duckdb"
    lock_timeout_s: float = 120.0  # how long to wait for another process's DuckDB write lock

    @property
    def root(self) -> Path:
        return Path(os.path.expanduser(self.data_dir)).resolve()

    @property
    def database_path(self) -> Path:
        return self.root / self.database_file

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def landing_zone(self) -> LandingZone:
        return LandingZone(self.root / "landing")

    def group_memory(self, group: str) -> GroupMemory:
        """Marks of the partitions the consumer group has committed (see `consumer.memory`)."""
        return GroupMemory(self.root / "groups", group)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection; waits while another run holds the file's single write lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        pause = 0.05
        while True:
            try:
                connection = duckdb.connect(str(self.database_path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        try:
            yield connection
        finally:
            connection.close()
