"""Files that are whole or absent, and on disk before the offset that vouches for them is committed.

A page is written under a unique temporary name in its own folder (threads of one consumer, and
hosts sharing a volume, never write the same temporary file), fsynced, renamed into place, and the
folder fsynced so the rename itself survives a power cut. Only then may its offset be committed:
after a commit, the committed offsets are the only memory that the page was ever downloaded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_durably(target: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write `target` through `write(file)`, whole or not at all, and durably."""
    make_folder_durably(target.parent)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(target.parent)
    return target


def temporary_path(target: Path) -> Path:
    """A unique temporary name beside `target`, for writers that want a path (DuckDB's COPY)."""
    make_folder_durably(target.parent)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


def replace_durably(tmp: Path, target: Path) -> Path:
    """fsync a finished temporary file, rename it to `target`, fsync the folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    sync_folder(target.parent)
    return target


def make_folder_durably(folder: Path) -> None:
    """mkdir -p, fsyncing the parent of each folder made (a new folder is an entry of its parent)."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # made meanwhile by another writer
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
