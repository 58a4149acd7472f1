import os

import pyarrow.parquet as pq

from reporting_assets.core.landing import LandingZone, safe_id
from reporting_assets.core.messages import DeadLetter
from reporting_assets.core.reports import get_report

ROW = {
    "keys": ["2026-11-02", "q", "https://x/p", "usa", "MOBILE"],
    "clicks": 3,
    "impressions": 10,
    "ctr": 0.3,
    "position": 1.5,
}


OLD, NEW = "20261102T120000000000Z-aa", "20261103T120000000000Z-bb"  # two enqueues, in time order


def request(account="https://www.example.com/", row_limit=2, start_row=0, download=OLD):
    first = get_report("search_analytics").first_request(account, "2026-11-02", row_limit).in_download(download)
    while first.start_row < start_row:
        first = first.next_page()
    return first


def test_hostile_account_ids_stay_inside_and_are_distinct(tmp_path):
    zone = LandingZone(tmp_path / "landing")
    hostile = [
        "../../etc",
        "..",
        ".",
        "https://a.com/x?y=1&z=/../",
        "a" * 2000,
        "sc-domain:exämple.com",
        "a/b",
        "a%2Fb",
    ]
    paths = [zone.land_page(request(account=a), [ROW]) for a in hostile]
    assert len({p.parent for p in paths}) == len(hostile)
    for account, path in zip(hostile, paths, strict=True):
        assert path.resolve().is_relative_to((tmp_path / "landing").resolve())
        assert len(path.parent.name) < 255
        assert pq.read_table(path).column("account").to_pylist() == [account]
    assert safe_id("plain-site") == "plain-site"


def test_landing_is_atomic_and_idempotent(tmp_path):
    zone = LandingZone(tmp_path)
    first = request()
    path = zone.land_page(first, [ROW, ROW])
    again = zone.land_page(first, [ROW, ROW])
    assert path == again
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind
    assert pq.read_table(path).num_rows == 2


def test_completeness_follows_the_page_chain(tmp_path):
    zone = LandingZone(tmp_path)
    first = request()
    zone.land_page(first, [ROW, ROW])  # full page: the next one must come
    state = zone.completeness(first.report, first.date, first.account)
    assert not state.complete and state.missing_start_rows == (2,)
    zone.land_page(first.next_page(), [ROW])  # short page ends the chain
    state = zone.completeness(first.report, first.date, first.account)
    assert state.complete and state.rows == 3 and len(state.pages) == 2


def test_dead_letter_marker_blocks_completeness_until_redriven(tmp_path):
    zone = LandingZone(tmp_path)
    first = request()
    letter = letter_for(first, "server_error", status=500, attempts=6)
    zone.mark_dead_letter(first, letter)
    state = zone.completeness(first.report, first.date, first.account)
    assert not state.complete and state.dead_letters == (letter,)
    zone.land_page(first, [ROW])
    state = zone.completeness(first.report, first.date, first.account)
    assert state.complete and not state.dead_letters
    folder = zone.download_dir(first.report, first.date, first.account, first.download)
    assert os.listdir(folder) and not any(name.endswith(".dead.json") for name in os.listdir(folder))


def test_threads_landing_the_same_page_at_once_never_collide(tmp_path):
    # Two copies of one request in flight (a redelivery, two threads) write the same page: each has
    # its own temporary file. With the pid as the only unique part they shared one and tore it.
    from concurrent.futures import ThreadPoolExecutor

    zone = LandingZone(tmp_path)
    page = request(row_limit=5000)
    rows = [ROW] * 3000
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: zone.land_page(page, rows), range(64)))
    assert set(paths) == {paths[0]}
    assert pq.read_table(paths[0]).num_rows == 3000
    assert [p.name for p in paths[0].parent.iterdir()] == [paths[0].name]


def test_a_page_and_its_folders_are_on_disk_before_land_page_returns(tmp_path, monkeypatch):
    # The offset is committed right after: a page only in the page cache would be lost by a power cut,
    # with nothing left to say it was never downloaded. So the file, and each folder that got a new
    # entry (the rename, the new folders), is fsynced first.
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    zone = LandingZone(tmp_path / "landing")
    path = zone.land_page(request(), [ROW])
    assert any(name.startswith(str(path.parent / f".{path.name}.")) for name in synced)  # the file's data
    assert synced[-1] == str(path.parent)  # the rename
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert str(folder.parent) in synced  # each new folder's entry in its parent


def letter_for(request_, reason="permission_denied", status=403, attempts=1):
    return DeadLetter(
        reason=reason,
        error=f"HTTP {status}",
        attempts=attempts,
        source_topic="t",
        source_partition=0,
        source_offset=0,
        request=request_.to_json(),
        raw_value=None,
        failed_at="now",
        status=status,
    )


def test_a_new_download_is_never_mixed_with_an_older_complete_one(tmp_path):
    # Before, pages of every download of a partition shared one folder: a load right after a new
    # enqueue took the older, complete pages (stale), and one mid-download mixed pages of both.
    zone = LandingZone(tmp_path)
    old = request(download=OLD)
    zone.land_page(old, [ROW, ROW])
    zone.land_page(old.next_page(), [ROW])
    assert zone.completeness(old.report, old.date, old.account).complete
    assert zone.begin_downloads([(old.report, old.date, old.account)], NEW) == 1
    state = zone.completeness(old.report, old.date, old.account)
    assert state.download == NEW and not state.complete and state.missing_start_rows == (0,)
    new = request(download=NEW)
    zone.land_page(new, [ROW, ROW])  # the new first page, same request id as the old one
    state = zone.completeness(old.report, old.date, old.account)
    assert state.download == NEW and [p.request.download for p in state.pages] == [NEW]
    assert state.missing_start_rows == (2,)
    zone.land_page(new.next_page(), [ROW, ROW])
    zone.land_page(new.next_page().next_page(), [])
    state = zone.completeness(old.report, old.date, old.account)
    assert state.complete and state.rows == 4 and {p.request.download for p in state.pages} == {NEW}
    assert zone.downloads(old.report, old.date, old.account) == [OLD, NEW]
    assert zone.remove_older_downloads(old.report, old.date, old.account, than=NEW) == 1
    assert zone.downloads(old.report, old.date, old.account) == [NEW]
    assert zone.completeness(old.report, old.date, old.account).rows == 4


def test_a_first_download_needs_no_folder_made_ahead(tmp_path):
    zone = LandingZone(tmp_path)
    fresh = request(account="https://fresh.example.com/")
    landed = request(account="https://landed.example.com/")
    zone.land_page(landed, [ROW])
    partitions = [(r.report, r.date, r.account) for r in (fresh, landed)]
    assert zone.begin_downloads(partitions, NEW) == 1  # only where an older download could be taken by mistake
    assert zone.downloads(fresh.report, fresh.date, fresh.account) == []
    assert zone.downloads(landed.report, landed.date, landed.account) == [OLD, NEW]
    assert zone.reports_of(landed.date, landed.account) == ["search_analytics"]
    assert zone.reports_of(fresh.date, fresh.account) == []
    assert zone.reports_of_date(landed.date) == ["search_analytics"]


def test_a_dead_letter_of_an_older_download_does_not_block_a_newer_one(tmp_path):
    # Before, markers lay beside every download's pages: an old one never cleared (the new request had
    # another shape or id) and kept the partition incomplete for good.
    zone = LandingZone(tmp_path)
    old = request(row_limit=2, download=OLD)
    zone.mark_dead_letter(old, letter_for(old))
    assert zone.completeness(old.report, old.date, old.account).dead_letters
    new = request(row_limit=5, download=NEW)  # a refresh with another row limit
    zone.land_page(new, [ROW])
    state = zone.completeness(new.report, new.date, new.account)
    assert state.complete and state.dead_letters == () and state.download == NEW


def test_a_copy_of_a_landed_page_is_a_duplicate_only_within_its_download(tmp_path):
    zone = LandingZone(tmp_path)
    old = request(download=OLD)
    zone.land_page(old, [ROW])
    assert zone.landed_in_download(old)
    assert not zone.landed_in_download(old.in_download(NEW))  # a fresh download of the same call
    assert not zone.landed_in_download(old.with_attempt(1))  # a re-drive
