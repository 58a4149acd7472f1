"""The landing zone: one folder per download of a (report, date, account), a Parquet file per page.

`<report>/date=<date>/account=<account>/download=<id>/<request id>.parquet`, and `<request id>.dead.json`
beside it for a request of that download sent to the dead-letter topic, `<request id>.split.json` for a
page that reached Google's row cap (the slices it was split into, see `split.py`). Each enqueue of a partition
is a new download with an id that sorts by time. Where an older download exists, the enqueue makes
the new one's (empty) folder before sending its requests, so the newest folder is the latest enqueue,
and a load takes that download whole or waits: never pages of two downloads, never an older download
while a newer one is on its way. Once a download is
loaded, the older ones are removed (`remove_older_downloads`); the loaded one stays, for audit and
to load again.

Files are written under a unique temporary name, fsynced and renamed (`durable`), so a page landed
twice overwrites itself, a killed consumer never leaves half a file, and a page is on disk before
its offset is committed. Several consumer processes write here at once, which a single DuckDB file
could not take; DuckDB reads the zone afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from reporting_assets.core.connectors import connector_for
from reporting_assets.core.durable import make_folder_durably, write_durably
from reporting_assets.core.messages import DeadLetter, ReportRequest
from reporting_assets.core.split import Split

if TYPE_CHECKING:
    from reporting_assets.core.partner import Answer

# Dimension (as the API names it) -> its column of the landed table; `date` has a column of its own.
KEY_COLUMNS = {
    "query": "query",
    "page": "page",
    "country": "country",
    "device": "device",
    "searchAppearance": "search_appearance",
    "hour": "hour",
}
MAX_SAFE_ID_LENGTH = 120
REQUEST_METADATA_KEY = b"reporting_assets.request"
DOWNLOAD_PREFIX = "download="

LANDED_SCHEMA = pa.schema(
    [
        ("report", pa.string()),
        ("account", pa.string()),
        ("date", pa.date32()),
        ("search_type", pa.string()),
        ("request_id", pa.string()),
        ("download", pa.string()),
        ("row_number", pa.int64()),
        *[(name, pa.string()) for name in KEY_COLUMNS.values()],
        ("clicks", pa.int64()),
        ("impressions", pa.int64()),
        ("ctr", pa.float64()),
        ("position", pa.float64()),
        # Google still collects this day's data (dataState all, its metadata's first incomplete date):
        # pulled again until final.
        ("provisional", pa.bool_()),
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

    provisional: bool = False
    more: bool | None = None  # rows follow this page, where the partner said (GA4's rowCount)

    @property
    def full(self) -> bool:
        """Whether the page has a continuation: the partner's word, else a page of `row_limit` rows."""
        return self.more if self.more is not None else self.rows >= self.request.row_limit


@dataclass(frozen=True)
class Completeness:
    """Whether every page of one (report, date, account) is landed.

    `pages` are what a load takes: the chain's pages, or where it reached the row cap and was split,
    its slices' pages (their union), never a split chain's own pages (the slices hold their rows).
    """

    pages: tuple[LandedPage, ...]
    missing_start_rows: tuple[int, ...]
    dead_letters: tuple[DeadLetter, ...]
    download: str | None = None  # the newest download, whose pages these are (None: never enqueued)
    # (filters, start row) of each missing page: a slice's pages start at row 0 too.
    missing: tuple[tuple[str, int], ...] = ()
    slices: int = 0  # chains the download was split into past the row cap (0: not split)
    truncated: tuple[LandedPage, ...] = ()  # pages at the cap that no filter could split further

    @property
    def complete(self) -> bool:
        return bool(self.pages) and not self.missing_start_rows and not self.dead_letters

    @property
    def rows(self) -> int:
        return sum(page.rows for page in self.pages)

    @property
    def provisional(self) -> bool:
        """Some page says Google still collects the day: a later download will change it."""
        return any(page.provisional for page in self.pages)


class LandingZone:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def account_dir(self, report: str, date: str, account: str) -> Path:
        return self.root / safe_id(report) / f"date={date}" / f"account={safe_id(account)}"

    def download_dir(self, report: str, date: str, account: str, download: str) -> Path:
        return self.account_dir(report, date, account) / f"{DOWNLOAD_PREFIX}{download}"

    def _folder(self, request: ReportRequest) -> Path:
        return self.download_dir(request.report, request.date, request.account, request.download)

    def page_path(self, request: ReportRequest) -> Path:
        return self._folder(request) / f"{request.request_id}.parquet"

    def dead_letter_path(self, request: ReportRequest) -> Path:
        return self._folder(request) / f"{request.request_id}.dead.json"

    def split_path(self, request: ReportRequest) -> Path:
        return self._folder(request) / f"{request.request_id}.split.json"

    def mark_split(self, request: ReportRequest, split: Split) -> Path:
        """Remember, before the slices are sent, what the page at the cap was split into."""
        return write_durably(self.split_path(request), lambda file: file.write(split.encode()))

    def split_of(self, request: ReportRequest) -> Split | None:
        """The split made of this page already (a copy of it came before): the same slices again."""
        try:
            return Split.decode(self.split_path(request).read_bytes())
        except FileNotFoundError:
            return None

    def splits(self, report: str, date: str, account: str, download: str) -> dict[str, Split]:
        """Request id of each page of the download that reached the cap -> its split."""
        folder = self.download_dir(report, date, account, download)
        return {
            path.name.removesuffix(".split.json"): Split.decode(path.read_bytes())
            for path in sorted(folder.glob("*.split.json"))
            if not path.name.startswith(".")
        }

    def begin_downloads(self, partitions: Iterable[tuple[str, str, str]], download: str) -> int:
        """Before a new download's requests are sent: make its folder where an older download exists.

        From then on a load of the partition waits for the new download instead of taking the older
        one. A partition never downloaded needs no folder (there is nothing older to take by mistake),
        so an enqueue of a million new partitions lists a folder per date instead of making a million.
        Not fsynced: a folder lost in a power cut is made again by its first page, long before the
        sensors see the download done. Returns how many folders were made.
        """
        by_date: dict[tuple[str, str], list[str]] = defaultdict(list)
        for report, date, account in partitions:
            by_date[(report, date)].append(account)
        names: dict[str, str] = {}
        made = 0
        for (report, date), accounts in by_date.items():
            folder = self.root / safe_id(report) / f"date={date}"
            try:
                existing = set(os.listdir(folder))
            except FileNotFoundError:
                continue
            for account in accounts:
                name = names.get(account) or names.setdefault(account, f"account={safe_id(account)}")
                if name in existing:
                    (folder / name / f"{DOWNLOAD_PREFIX}{download}").mkdir(exist_ok=True)
                    made += 1
        return made

    def await_page(self, request: ReportRequest) -> None:
        """Say that a page of this download is awaited (parked on the delay topic): its folder, durably."""
        make_folder_durably(self._folder(request))

    def downloads(self, report: str, date: str, account: str) -> list[str]:
        """Download ids of the partition, oldest first."""
        return download_ids(self.account_dir(report, date, account))

    def latest_download(self, report: str, date: str, account: str) -> str | None:
        downloads = self.downloads(report, date, account)
        return downloads[-1] if downloads else None

    def remove_older_downloads(self, report: str, date: str, account: str, than: str) -> int:
        """Delete the downloads older than `than` (a loaded one): returns how many."""
        removed = 0
        for download in self.downloads(report, date, account):
            if download < than:
                shutil.rmtree(self.download_dir(report, date, account, download), ignore_errors=True)
                removed += 1
        return removed

    def reports_of(self, date: str, account: str) -> list[str]:
        """The reports with a download of this (date, account): what was enqueued for it."""
        if not self.root.is_dir():
            return []
        return sorted(
            urllib.parse.unquote(child.name)
            for child in self.root.iterdir()
            if child.is_dir() and self.account_dir(urllib.parse.unquote(child.name), date, account).is_dir()
        )

    def dates_of(self, report: str, account: str) -> list[str]:
        """The dates with a download of this (report, account), oldest first."""
        folder = self.root / safe_id(report)
        if not folder.is_dir():
            return []
        return sorted(
            child.name.removeprefix("date=")
            for child in folder.iterdir()
            if child.name.startswith("date=") and (child / f"account={safe_id(account)}").is_dir()
        )

    def reports_of_date(self, date: str) -> list[str]:
        """The reports with a download of any account on this date."""
        if not self.root.is_dir():
            return []
        return sorted(
            urllib.parse.unquote(child.name)
            for child in self.root.iterdir()
            if child.is_dir() and (child / f"date={date}").is_dir()
        )

    def land_page(
        self,
        request: ReportRequest,
        rows: Sequence[dict[str, Any]],
        provisional: bool = False,
        answer: Answer | None = None,
    ) -> Path:
        """Write one page atomically, in its partner's schema; clears a dead-letter marker of the same request (re-drive)."""
        path = self.page_path(request)
        table = connector_for(request.partner).page_table(request, rows, provisional, answer)
        if answer is not None and answer.more is not None:
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), b"more": b"true" if answer.more else b"false"}
            )
        write_durably(path, lambda file: pq.write_table(table, file, compression="zstd"))
        self.dead_letter_path(request).unlink(missing_ok=True)
        return path

    def landed_in_download(self, request: ReportRequest) -> bool:
        """Whether this page is landed already by another copy of the same message (same download, attempt).

        A page of an older download (an earlier enqueue of the same call) lives in another folder, and
        one of an earlier attempt (before a re-drive) does not count: those are fresh downloads.
        """
        path = self.page_path(request)
        if not path.exists():
            return False  # nearly always: a stat, cheaper than pyarrow's failed open
        try:
            landed = read_page(path).request
        except (FileNotFoundError, KeyError, ValueError, OSError, pa.ArrowException):
            return False
        return landed.attempt == request.attempt

    def mark_dead_letter(self, request: ReportRequest, dead_letter: DeadLetter) -> Path:
        """Remember, next to the download's pages, that this request is in the dead-letter topic."""
        return write_durably(self.dead_letter_path(request), lambda file: file.write(dead_letter.encode()))

    def pages(self, report: str, date: str, account: str, download: str | None = None) -> list[LandedPage]:
        """Pages of one download (default: the newest)."""
        download = download if download is not None else self.latest_download(report, date, account)
        if download is None:
            return []
        folder = self.download_dir(report, date, account, download)
        if not folder.is_dir():
            return []
        return [read_page(path) for path in sorted(folder.glob("*.parquet")) if not path.name.startswith(".")]

    def dead_letters(self, report: str, date: str, account: str, download: str | None = None) -> list[DeadLetter]:
        """Dead-lettered requests of one download (default: the newest)."""
        download = download if download is not None else self.latest_download(report, date, account)
        if download is None:
            return []
        folder = self.download_dir(report, date, account, download)
        if not folder.is_dir():
            return []
        return [
            DeadLetter.decode(p.read_bytes()) for p in sorted(folder.glob("*.dead.json")) if not p.name.startswith(".")
        ]

    def completeness(self, report: str, date: str, account: str) -> Completeness:
        """Of the newest download: the one a load must take, or wait for."""
        download = self.latest_download(report, date, account)
        if download is None:
            return Completeness((), (0,), (), missing=(("", 0),))
        dead = self.dead_letters(report, date, account, download)
        walk = page_chain(
            self.pages(report, date, account, download), self.splits(report, date, account, download), dead
        )
        return Completeness(
            tuple(walk.pages),
            tuple(start_row for _filters, start_row in walk.missing),
            tuple(dead),
            download,
            missing=tuple(walk.missing),
            slices=walk.slices,
            truncated=tuple(walk.truncated),
        )

    def dead_lettered(self, date: str, reports: Iterable[str]) -> dict[str, list[str]]:
        """Report -> accounts of this date whose newest download has dead-lettered requests."""
        found: dict[str, list[str]] = {}
        for report in reports:
            folder = self.root / safe_id(report) / f"date={date}"
            if not folder.is_dir():
                continue
            accounts = []
            for account_dir in sorted(folder.iterdir()):
                downloads = download_ids(account_dir)
                if not downloads:
                    continue
                letters = sorted((account_dir / f"{DOWNLOAD_PREFIX}{downloads[-1]}").glob("*.dead.json"))
                if letters:
                    request = DeadLetter.decode(letters[0].read_bytes()).request or {}
                    accounts.append(str(request.get("account", account_dir.name)))
            if accounts:
                found[report] = accounts
        return found

    def iter_dates(self, report: str) -> Iterator[str]:
        folder = self.root / safe_id(report)
        if folder.is_dir():
            for child in sorted(folder.iterdir()):
                if child.name.startswith("date="):
                    yield child.name.removeprefix("date=")


def download_ids(account_dir: Path) -> list[str]:
    """The download ids in one partition's folder, oldest first (none: no folder)."""
    if not account_dir.is_dir():
        return []
    return sorted(
        child.name.removeprefix(DOWNLOAD_PREFIX)
        for child in account_dir.iterdir()
        if child.name.startswith(DOWNLOAD_PREFIX) and child.is_dir()
    )


@dataclass
class ChainWalk:
    pages: list[LandedPage] = field(default_factory=list)
    missing: list[tuple[str, int]] = field(default_factory=list)
    slices: int = 0
    truncated: list[LandedPage] = field(default_factory=list)


def page_chain(
    pages: Sequence[LandedPage], splits: dict[str, Split] | None = None, dead: Sequence[DeadLetter] = ()
) -> ChainWalk:
    """The pages of one download a load takes, in order, and the pages still missing.

    A full page means the next page was enqueued; a chain ends at its first short page, or at a page
    that reached the row cap, whose split's slices are chains of their own (`splits`, by that page's
    request id). Every page of a download descends from its first page, so they share its row limit;
    a chain is told by its filters (the download's own, or a slice's; a dead-lettered request's
    chain is one too, landed page or not).
    """
    splits = splits or {}
    chains: dict[str, dict[int, LandedPage]] = defaultdict(dict)
    for page in pages:
        chains[page.request.filters][page.request.start_row] = page
    children = {filters for split in splits.values() for filters in split.slices}
    walk = ChainWalk()
    known = set(chains) | {str(letter.request.get("filters", "")) for letter in dead if letter.request}
    roots = sorted(known - children) or [""]

    def follow(filters: str) -> None:
        by_start = chains.get(filters, {})
        chain: list[LandedPage] = []
        start_row = 0
        while True:
            page = by_start.get(start_row)
            if page is None:
                walk.pages.extend(chain)
                walk.missing.append((filters, start_row))
                return
            chain.append(page)
            split = splits.get(page.request.request_id) if page.full else None
            if split is not None and split.slices:
                walk.slices += len(split.slices)
                for child in split.slices:
                    follow(child)
                return
            if split is not None or not page.full:
                walk.pages.extend(chain)
                if split is not None:
                    walk.truncated.append(page)
                return
            start_row += page.request.row_limit

    for root in roots:
        follow(root)
    return walk


def page_table(request: ReportRequest, rows: Sequence[dict[str, Any]], provisional: bool = False) -> pa.Table:
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
        columns["download"].append(request.download)
        columns["row_number"].append(request.start_row + offset)
        for dimension, column in KEY_COLUMNS.items():
            columns[column].append(keys[positions[dimension]] if dimension in positions else None)
        columns["clicks"].append(int(row["clicks"]))
        columns["impressions"].append(int(row["impressions"]))
        columns["ctr"].append(float(row["ctr"]))
        columns["position"].append(float(row["position"]))
        columns["provisional"].append(provisional)
    metadata = {
        REQUEST_METADATA_KEY: request.encode(),
        b"rows": str(len(rows)).encode(),
        b"provisional": b"true" if provisional else b"false",
    }
    return pa.table(columns, schema=LANDED_SCHEMA.with_metadata(metadata))


def read_page(path: Path) -> LandedPage:
    schema = pq.read_schema(path)
    metadata = schema.metadata or {}
    request = ReportRequest.decode(metadata[REQUEST_METADATA_KEY])
    provisional = metadata.get(b"provisional") == b"true"
    more = {b"true": True, b"false": False}.get(metadata.get(b"more", b""))
    return LandedPage(request=request, rows=int(metadata[b"rows"]), path=path, provisional=provisional, more=more)


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def describe(completeness: Completeness) -> str:
    if completeness.download is None:
        return "never enqueued (no download)"
    parts = [f"download {completeness.download}: {len(completeness.pages)} pages, {completeness.rows} rows"]
    if completeness.slices:
        parts.append(f"split past the row cap into {completeness.slices} slices")
    if completeness.truncated:
        parts.append(f"{len(completeness.truncated)} still at the row cap (truncated)")
    if completeness.missing_start_rows:
        parts.append(f"waiting for page at startRow {completeness.missing_start_rows[0]}")
    if completeness.dead_letters:
        reasons = sorted({letter.reason for letter in completeness.dead_letters})
        parts.append(f"{len(completeness.dead_letters)} dead-lettered ({', '.join(reasons)})")
    return "; ".join(parts)
