import datetime as dt
import json

import pytest

from reporting_assets.core.messages import (
    DOWNLOAD_ID,
    DeadLetter,
    InvalidRequestError,
    ReportRequest,
    download_id_of_message,
    new_download_id,
)
from reporting_assets.core.reports import UnknownReportError, get_report, load_catalog


def make(**overrides) -> ReportRequest:
    fields = {
        "report": "search_analytics",
        "account": "https://www.example.com/",
        "date": "2026-11-02",
        "dimensions": ("date", "query"),
    }
    fields.update(overrides)
    return ReportRequest(**fields)


def test_request_id_is_stable_and_ignores_attempt():
    first = make()
    assert first.request_id == make().request_id
    assert first.with_attempt(3).request_id == first.request_id
    assert make(start_row=1000).request_id != first.request_id
    assert make(account="https://shop.example.com/").request_id != first.request_id


def test_round_trip_and_next_page():
    request = make(row_limit=500, account="sc-domain:exämple.com/ü?q=1")
    decoded = ReportRequest.decode(request.encode())
    assert decoded == request
    follow_up = request.next_page()
    assert (follow_up.start_row, follow_up.page, follow_up.attempt) == (500, 1, 0)
    assert follow_up.request_id != request.request_id
    assert request.key() == "sc-domain:exämple.com/ü?q=1".encode()


def test_message_carries_no_extra_fields():
    payload = json.loads(make().encode())
    assert set(payload) == {
        "v",
        "report",
        "account",
        "date",
        "dimensions",
        "search_type",
        "data_state",
        "row_limit",
        "start_row",
        "attempt",
        "request_id",
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"v": 99}', "unsupported request version"),
        (b'{"v": 1, "report": "search_analytics"}', "missing fields: account, date, dimensions"),
        (b'{"v": 1, "report": "r", "account": "a", "date": "2026-02-30", "dimensions": ["date"]}', "not a YYYY-MM-DD"),
        (b'{"v": 1, "report": "r", "account": "a", "date": "9999-01-01", "dimensions": ["date"]}', "outside"),
        (
            b'{"v": 1, "report": "r", "account": "a", "date": "2026-01-01", "dimensions": ["color"]}',
            "unknown dimensions",
        ),
        (b'{"v": 1, "report": "r", "account": "", "date": "2026-01-01", "dimensions": ["date"]}', "account"),
        (
            b'{"v": 1, "report": "r", "account": "a", "date": "2026-01-01", "dimensions": ["date"], "row_limit": 0}',
            "row_limit",
        ),
        (
            b'{"v": 1, "report": "r", "account": "a", "date": "2026-01-01", "dimensions": ["date"], "start_row": 7}',
            "start_row",
        ),
        (
            b'{"v": 1, "report": "r", "account": "a", "date": "2026-01-01", "dimensions": ["date"], "request_id": "x"}',
            "does not match",
        ),
        (None, "empty"),
    ],
)
def test_poison_messages_say_what_is_wrong(raw, expected):
    with pytest.raises(InvalidRequestError, match=expected):
        ReportRequest.decode(raw)


def test_dead_letter_round_trip_keeps_request():
    request = make()
    letter = DeadLetter(
        reason="server_error",
        error="HTTP 500",
        attempts=6,
        source_topic="t",
        source_partition=1,
        source_offset=7,
        request=request.to_json(),
        raw_value=None,
        failed_at="2026-11-24T00:00:00+00:00",
        status=500,
    )
    again = DeadLetter.decode(letter.encode())
    assert again == letter
    assert again.original_request() == request


def test_report_catalog():
    assert get_report("search_analytics").dimensions[0] == "date"
    assert all(spec.first_request("a", "2026-01-01", 10).start_row == 0 for spec in load_catalog().reports.values())
    with pytest.raises(UnknownReportError, match="unknown report 'nope'"):
        get_report("nope")


def test_a_retried_copy_keeps_its_id_and_a_new_page_or_a_redrive_starts_afresh():
    request = get_report("search_analytics").first_request("https://a.example.com/", "2026-11-01", 100)
    waited = request.retried().retried()
    assert waited.retries == 2 and waited.request_id == request.request_id
    assert ReportRequest.decode(waited.encode()).retries == 2
    assert "retries" not in request.to_json()  # first pages as enqueued (by Spark too) carry none
    assert waited.next_page().retries == 0 and waited.with_attempt(1).retries == 0
    with pytest.raises(InvalidRequestError, match="retries"):
        ReportRequest.decode(json.dumps({**request.to_json(), "retries": -1}).encode())


def test_a_download_id_is_carried_by_every_page_and_redrive_but_is_not_part_of_the_call():
    request = make().in_download(new_download_id())
    assert ReportRequest.decode(request.encode()).download == request.download
    assert request.request_id == make().request_id  # a fresh download of the same call: same page file name
    assert request.next_page().download == request.download
    assert request.with_attempt(1).download == request.download
    assert request.retried().download == request.download
    for bad in ("../x", "a/b", "x" * 101, "a b"):
        with pytest.raises(InvalidRequestError, match="download"):
            ReportRequest.decode(json.dumps({**request.to_json(), "download": bad}).encode())
        with pytest.raises(InvalidRequestError, match="download"):
            make().in_download(bad)  # the consumer names downloads without re-checking the rest
    named = make().in_download("20261203T120000000000Z-p1o2")
    assert named == make() and named.download == "20261203T120000000000Z-p1o2" and make().download == ""


def test_download_ids_sort_by_time_whoever_named_them():
    early = dt.datetime(2026, 11, 2, 9, 59, 59, 999_999, tzinfo=dt.UTC)
    late = dt.datetime(2026, 11, 2, 10, 0, 0, 1, tzinfo=dt.UTC)
    by_enqueue = [new_download_id(early), new_download_id(late)]
    by_consumer = download_id_of_message(3, 17, int(late.timestamp() * 1000) + 1)
    assert sorted([by_consumer, by_enqueue[1], by_enqueue[0]]) == [*by_enqueue, by_consumer]
    assert all(DOWNLOAD_ID.fullmatch(i) for i in [*by_enqueue, by_consumer])
