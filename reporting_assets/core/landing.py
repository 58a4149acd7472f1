"""The landing zone: one Parquet file per completed request, named by its request id.

Files are written under a unique temporary name, fsynced and renamed (`durable`), so a request
landed twice overwrites itself, a killed consumer never leaves half a file, and a page is on disk
before its offset is committed. Several consumer processes write here at once,
which a single DuckDB file could not take; DuckDB reads the zone afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reporting_assets.core.durable import write_durably
from reporting_assets.core.messages import DeadLetter, ReportRequest

KEY_DIMENSIONS = ("query", "page", "country", "device")
MAX_SAFE_ID_LENGTH = 120
REQUEST_METADATA_KEY = b"reporting_assets.request"

LANDED_SCHEMA = pa.schema(
    [
        ("report", pa.string()),
        ("account", pa.string()),
        ("date", pa.date32()),
        ("search_type", pa.string()),
        ("request_id", pa.string()),
        ("row_number", pa.int64()),
        *[(name, pa.string()) for name in KEY_DIMENSIONS],
        ("clicks", pa.int64()),
        ("impressions", pa.int64()),
        ("ctr", pa.float64()),
        ("position", pa.float64()),
    ]
)


def safe_id(account: str) -> str:
    """A file-name-safe, collision-free form of an account id (`../x`, URLs, non-ASCII, very long)."""
    quoted = urllib.parse.quote(account, safe="")
    if len(quoted) <= MAX_SAFE_ID_LENGTH and quoted not in {".", ".."}:
        return quoted
    digest = hashlib.sha256(account.encode()).hexdigest()[:20]
    return f"{quoted[:80]}~{digest}"


@dataclass(frozen=True)
class LandedPage:
    request: ReportRequest
    rows: int
    path: Path

    @property
    def full(self) -> bool:
        return self.rows >= self.request.row_limit


@dataclass(frozen=True)
class Completeness:
    """Whether every page of one (report, date, account) is landed."""

    pages: tuple[LandedPage, ...]
    missing_start_rows: tuple[int, ...]
    dead_letters: tuple[DeadLetter, ...]

    @property
    def complete(self) -> bool:
        return bool(self.pages) and not self.missing_start_rows and not self.dead_letters

    @property
    def rows(self) -> int:
        return sum(page.rows for page in self.pages)


class LandingZone:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def account_dir(self, report: str, date: str, account: str) -> Path:
        return self.root / safe_id(report) / f"date={date}" / f"account={safe_id(account)}"

    def page_path(self, request: ReportRequest) -> Path:
        return self.account_dir(request.report, request.date, request.account) / f"{request.request_id}.parquet"

    def dead_letter_path(self, request: ReportRequest) -> Path:
        return self.account_dir(request.report, request.date, request.account) / f"{request.request_id}.dead.json"

    def land_page(self, request: ReportRequest, rows: Sequence[dict[str, Any]]) -> Path:
        """Write one page atomically; clears a dead-letter marker of the same request (re-drive)."""
        path = self.page_path(request)
        table = page_table(request, rows)
        write_durably(path, lambda file: pq.write_table(table, file, compression="zstd"))
        self.dead_letter_path(request).unlink(missing_ok=True)
        return path

    def landed_in_chain(self, request: ReportRequest) -> bool:
        """Whether this page is landed already by another copy of the same message (same chain, attempt).

        A page landed by an older chain (an earlier enqueue of the same call) or an earlier attempt
        (before a re-drive) does not count: that is a fresh download, which must happen.
        """
        if not request.chain:
            return False
        path = self.page_path(request)
        if not path.exists():
            return False  # nearly always: a stat, cheaper than pyarrow's failed open
        try:
            landed = read_page(path).request
        except (FileNotFoundError, KeyError, ValueError, OSError, pa.ArrowException):
            return False
        return (landed.chain, landed.attempt) == (request.chain, request.attempt)

    def mark_dead_letter(self, request: ReportRequest, dead_letter: DeadLetter) -> Path:
        """Remember, next to the pages, that this request of the partition is in the dead-letter topic."""
        return write_durably(self.dead_letter_path(request), lambda file: file.write(dead_letter.encode()))

    def pages(self, report: str, date: str, account: str) -> list[LandedPage]:
        folder = self.account_dir(report, date, account)
        if not folder.is_dir():
            return []
        return [read_page(path) for path in sorted(folder.glob("*.parquet")) if not path.name.startswith(".")]

    def dead_letters(self, report: str, date: str, account: str) -> list[DeadLetter]:
        folder = self.account_dir(report, date, account)
        if not folder.is_dir():
            return []
        return [
            DeadLetter.decode(p.read_bytes()) for p in sorted(folder.glob("*.dead.json")) if not p.name.startswith(".")
        ]

    def completeness(self, report: str, date: str, account: str) -> Completeness:
        pages = self.pages(report, date, account)
        chain, missing = page_chain(pages)
        return Completeness(tuple(chain), tuple(missing), tuple(self.dead_letters(report, date, account)))

    def iter_dates(self, report: str) -> Iterator[str]:
        folder = self.root / safe_id(report)
        if folder.is_dir():
            for child in sorted(folder.iterdir()):
                if child.name.startswith("date="):
                    yield child.name.removeprefix("date=")


def page_chain(pages: Sequence[LandedPage]) -> tuple[list[LandedPage], list[int]]:
    """The pages of the newest request chain in order, and start rows that are still missing.

    A full page means the next page was enqueued; the chain ends at the first short page.
    Pages landed under another row limit (an older configuration) are ignored.
    """
    if not pages:
        return [], [0]
    newest = max(pages, key=lambda page: page.path.stat().st_mtime_ns).request
    same_shape = {
        page.request.start_row: page
        for page in pages
        if (page.request.row_limit, page.request.dimensions, page.request.search_type, page.request.data_state)
        == (newest.row_limit, newest.dimensions, newest.search_type, newest.data_state)
    }
    chain: list[LandedPage] = []
    start_row = 0
    while True:
        page = same_shape.get(start_row)
        if page is None:
            return chain, [start_row]
        chain.append(page)
        if not page.full:
            return chain, []
        start_row += newest.row_limit


def page_table(request: ReportRequest, rows: Sequence[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in LANDED_SCHEMA.names}
    positions = {dimension: index for index, dimension in enumerate(request.dimensions)}
    date = _date(request.date)
    for offset, row in enumerate(rows):
        keys = row["keys"]
        columns["report"].append(request.report)
        columns["account"].append(request.account)
        columns["date"].append(date if "date" not in positions else _date(keys[positions["date"]]))
        columns["search_type"].append(request.search_type)
        columns["request_id"].append(request.request_id)
        columns["row_number"].append(request.start_row + offset)
        for dimension in KEY_DIMENSIONS:
            columns[dimension].append(keys[positions[dimension]] if dimension in positions else None)
        columns["clicks"].append(int(row["clicks"]))
        columns["impressions"].append(int(row["impressions"]))
        columns["ctr"].append(float(row["ctr"]))
        columns["position"].append(float(row["position"]))
    metadata = {REQUEST_METADATA_KEY: request.encode(), b"rows": str(len(rows)).encode()}
    return pa.table(columns, schema=LANDED_SCHEMA.with_metadata(metadata))


def read_page(path: Path) -> LandedPage:
    schema = pq.read_schema(path)
    metadata = schema.metadata or {}
    request = ReportRequest.decode(metadata[REQUEST_METADATA_KEY])
    return LandedPage(request=request, rows=int(metadata[b"rows"]), path=path)


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def describe(completeness: Completeness) -> str:
    parts = [f"{len(completeness.pages)} pages, {completeness.rows} rows"]
    if completeness.missing_start_rows:
        parts.append(f"waiting for page at startRow {completeness.missing_start_rows[0]}")
    if completeness.dead_letters:
        reasons = sorted({letter.reason for letter in completeness.dead_letters})
        parts.append(f"{len(completeness.dead_letters)} dead-lettered ({', '.join(reasons)})")
    return "; ".join(parts)
