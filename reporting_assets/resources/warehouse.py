"""`WarehouseResource`: the data folder and DuckDB database as a Dagster resource, over `core.warehouse`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from reporting_assets.core.consumer.memory import GroupMemory
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """Local data folder: `landing/`, `exports/` and the DuckDB database analysts query."""

    data_dir: str = Field(
        default=Warehouse.data_dir, description="Root folder of landing zone, exports and the database."
    )
    database_file: str = Field(default=Warehouse.database_file, description="DuckDB file inside data_dir.")
    lock_timeout_s: float = Field(
        default=Warehouse.lock_timeout_s, description="How long to wait for another process's DuckDB write lock."
    )

    def warehouse(self) -> Warehouse:
        return Warehouse(data_dir=self.data_dir, database_file=self.database_file, lock_timeout_s=self.lock_timeout_s)

    @property
    def root(self) -> Path:
        return self.warehouse().root

    @property
    def database_path(self) -> Path:
        return self.warehouse().database_path

    @property
    def exports_dir(self) -> Path:
        return self.warehouse().exports_dir

    def landing_zone(self) -> LandingZone:
        return self.warehouse().landing_zone()

    def group_memory(self, group: str) -> GroupMemory:
        return self.warehouse().group_memory(group)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.warehouse().connect(read_only) as connection:
            yield connection
