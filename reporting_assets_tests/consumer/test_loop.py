"""The download loop on the real broker, the real google-api-python-client and the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata

from reporting_assets.core.consumer.loop import DownloadLoop
from reporting_assets.core.consumer.redrive import redrive
from reporting_assets.core.consumer.tuning import ConsumerSettings
from reporting_assets.core.consumer.work import PartnerAuthError
from reporting_assets.core.downloads import partition_settled
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import DeadLetter, DelayedRequest
from reporting_assets.core.partner import next_quota_day_ms
from reporting_assets.core.reports import get_report
from reporting_assets.core.split import plan_split
from reporting_assets.resources.kafka import KafkaResource
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.sandbox import FaultSpec, SandboxConfig, SandboxServer, SiteSpec, expected_rows
from reporting_assets_tests.helpers import KEY_ID, service_account_file

REPORT = get_report("search_analytics")
DATE = "2026-11-02"
SITES = [
    SiteSpec("https://small.example.com/", 30),
    SiteSpec(
        "https://paging.example.com/",
        250,
    ),
]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(seed=3, sites=SITES, per_site_qps=None, global_qps=None, faults=[], rows_jitter=0.0)
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def kafka(kafka_resource: KafkaResource) -> KafkaResource:
    kafka_resource.ensure_topics(
        {kafka_resource.request_topic: 2, kafka_resource.dead_letter_topic: 1, delay_topic(kafka_resource): 1}
    )
    return kafka_resource


def delay_topic(kafka: KafkaResource) -> str:
    return kafka.delay_topic


def enqueue(kafka: KafkaResource, requests=(), raw: list[bytes] = ()) -> None:
    producer = kafka.producer()
    for request in requests:
        producer.send(kafka.request_topic, key=request.key(), value=request.encode())
    for value in raw:
        producer.send(kafka.request_topic, key=b"poison", value=value)
    producer.flush()
    producer.close()


def run_loop(
    kafka: KafkaResource,
    sandbox: SandboxServer,
    landing: LandingZone,
    partner_timeout_s: float = 5,
    credentials_file: str | None = None,
    api_endpoint: str | None = None,
    on_loop=None,  # called with the loop before it runs (a test's watcher thread reads its counters)
    **overrides,
) -> DownloadLoop:
    settings = ConsumerSettings(
        request_topic=kafka.request_topic,
        dead_letter_topic=kafka.dead_letter_topic,
        delay_topic=delay_topic(kafka),
        **{
            "idle_timeout_s": 1.5,
            "qps_per_account": 500.0,
            "retry_backoff_s": 0.01,
            "transient_waits_s": [],  # dead-letter transient failures at once, unless a test says otherwise
            **overrides,
        },
    )
    partner = PartnerResource(
        api_endpoint=api_endpoint or sandbox.url,
        timeout_s=partner_timeout_s,
        credentials_file=credentials_file,
    )
    consumer = kafka.consumer([])
    producer = kafka.producer()
    loop = DownloadLoop(consumer, producer, partner.clients, landing, settings)
    if on_loop is not None:
        on_loop(loop)
    try:
        loop.subscribe()
        loop.run()
    finally:
        producer.close()
        consumer.close()
    return loop


def topic_values(kafka: KafkaResource, topic: str) -> list[bytes]:
    """Every value on `topic`, from the beginning (no group)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def dead_letters(kafka: KafkaResource) -> list[DeadLetter]:
    return [DeadLetter.decode(value) for value in topic_values(kafka, kafka.dead_letter_topic)]


def delayed_requests(kafka: KafkaResource) -> list[DelayedRequest]:
    return [DelayedRequest.decode(value) for value in topic_values(kafka, delay_topic(kafka))]


def landed_rows(landing: LandingZone, site: str) -> int:
    state = landing.completeness(REPORT.name, DATE, site)
    assert state.complete, state
    return state.rows


def truth(sandbox: SandboxServer, site: str) -> int:
    return len(expected_rows(sandbox.config, site, DATE, DATE, list(REPORT.dimensions)))


def test_pages_land_completely_and_offsets_are_committed(kafka, sandbox, tmp_path: Path):
    landing = LandingZone(tmp_path)
    enqueue(kafka, [REPORT.first_request(site.url, DATE, row_limit=100) for site in SITES])
    loop = run_loop(kafka, sandbox, landing)

    for site in SITES:
        assert landed_rows(landing, site.url) == truth(sandbox, site.url)
    assert loop.stats.continued == 2  # 250 rows at 100 a page: pages at 0, 100, 200
    assert loop.stats.api_calls == sandbox.stats()["calls_total"] == 4
    assert sandbox.stats()["repeat_calls"] == 0
    assert kafka.lag(kafka.request_topic).total == 0
    assert dead_letters(kafka) == []


def test_a_page_at_the_cap_copied_again_sends_the_split_written_first_never_a_second_set(kafka, sandbox, tmp_path):
    # A consumer wrote the split of paging's page at the cap and died before landing it; Google's rows
    # have changed since (here the earlier split saw two devices, so it has a remainder slice; the
    # rows now have all three). The successor sends the slices written down, not new ones that
    # would overlap them: every row once.
    sandbox.update_config(row_cap=100)
    landing = LandingZone(tmp_path)
    first = REPORT.first_request("https://paging.example.com/", DATE, row_limit=50).in_download("d1")
    at_cap = first.next_page()
    seen = [{"keys": [DATE, "q", "p", "usa", device]} for device in ("DESKTOP", "MOBILE")]
    earlier = plan_split(at_cap, seen)
    landing.mark_split(at_cap, earlier)
    enqueue(kafka, [first])
    loop = run_loop(kafka, sandbox, landing, row_cap=100)

    state = landing.completeness(REPORT.name, DATE, "https://paging.example.com/")
    assert state.complete and state.rows == truth(sandbox, "https://paging.example.com/") == 250
    assert landing.split_of(at_cap) == earlier and len(earlier.slices) == 3
    # Every slice landed is one written down, or a slice of one (a slice at the cap splits again).
    device_filters = {json.dumps(json.loads(f)[0]["filters"][0]) for f in earlier.slices}
    assert {json.dumps(json.loads(page.request.filters)[0]["filters"][0]) for page in state.pages} <= device_filters
    assert sandbox.stats()["repeat_calls"] == 0 and loop.stats.dead_lettered == 0


def test_a_day_past_the_cap_lands_whole_in_slices_with_no_call_past_the_cap(kafka, sandbox, tmp_path):
    sandbox.update_config(row_cap=100)
    landing = LandingZone(tmp_path)
    enqueue(kafka, [REPORT.first_request("https://paging.example.com/", DATE, row_limit=50)])
    loop = run_loop(kafka, sandbox, landing, row_cap=100)

    state = landing.completeness(REPORT.name, DATE, "https://paging.example.com/")
    assert state.complete and not state.truncated and state.slices >= 3
    assert state.rows == truth(sandbox, "https://paging.example.com/")
    calls = [call for call in sandbox.calls()["answered"] if call["method"] == "searchanalytics.query"]
    assert calls and all(call["start_row"] + call["row_limit"] <= 100 for call in calls)  # none past the cap
    assert loop.stats.api_calls == len(calls) and sandbox.stats()["repeat_calls"] == 0


def test_poison_messages_are_dead_lettered_with_a_reason_and_the_rest_lands(kafka, sandbox, tmp_path: Path):
    landing = LandingZone(tmp_path)
    good = REPORT.first_request(SITES[0].url, DATE, row_limit=100)
    unknown_site = REPORT.first_request("https://unknown.example.com/", DATE, row_limit=100)
    poison = [
        b"not json",
        b'{"v": 7}',
        b'{"v": 1, "report": "x"}',
        json.dumps({**good.to_json(), "date": "1970-13-45", "request_id": ""}).encode(),
    ]
    enqueue(kafka, [good, unknown_site], raw=poison)
    loop = run_loop(kafka, sandbox, landing)

    assert landed_rows(landing, good.account) == truth(sandbox, good.account)
    letters = dead_letters(kafka)
    reasons = sorted(letter.reason for letter in letters)
    assert reasons == ["invalid_message"] * 4 + ["unknown_site"]
    unknown = next(letter for letter in letters if letter.reason == "unknown_site")
    assert unknown.status == 404 and unknown.original_request() == unknown_site
    assert {letter.raw_value for letter in letters if letter.reason == "invalid_message"} >= {"not json", '{"v": 7}'}
    assert kafka.lag(kafka.request_topic).total == 0
    assert loop.stats.dead_lettered == 5


def test_a_request_that_always_fails_is_dead_lettered_and_its_partition_is_not_complete(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    sandbox.update_config(faults=[FaultSpec("http_500", site_url=SITES[1].url, start_row=100)])
    enqueue(kafka, [REPORT.first_request(site.url, DATE, row_limit=100) for site in SITES])
    run_loop(kafka, sandbox, landing)

    letters = dead_letters(kafka)
    assert [(letter.reason, letter.status, letter.attempts) for letter in letters] == [("server_error", 500, 3)]
    assert letters[0].original_request().start_row == 100
    state = landing.completeness(REPORT.name, DATE, SITES[1].url)
    assert not state.complete and len(state.dead_letters) == 1 and state.rows == 100
    assert landed_rows(landing, SITES[0].url) == truth(sandbox, SITES[0].url)


def test_a_partner_fault_storm_ends_with_good_data_complete_and_the_rest_redriven(kafka, tmp_path):
    """429s, passing 503s and broken bodies, and faults that never pass (wrong schema, slower than the
    timeout, 403 on one account), all in one run: nothing crashes, good data is complete, the rest is in
    the dead-letter topic with its error; once the faults are gone, a re-drive completes all but the 403."""
    fine, paging, broken, slow = (
        SiteSpec(f"https://{name}.example.com/", rows)
        for name, rows in (("fine", 60), ("paging", 250), ("broken", 40), ("slow", 40))
    )
    forbidden = SiteSpec("https://forbidden.example.com/", 40, forbidden=True)
    faults = [
        # Passing faults, asked again after a backoff by the scheduler.
        FaultSpec("http_503", site_url=paging.url, start_row=200, times=1),
        FaultSpec("truncated", site_url=paging.url, start_row=100, times=1),
        FaultSpec("malformed", site_url=fine.url, times=1),
        FaultSpec("wrong_schema", site_url=broken.url),  # never passes
        FaultSpec("slow", site_url=slow.url, slow_s=6.0),  # never within the 2 s timeout (ample on a busy machine)
    ]
    config = SandboxConfig(
        seed=5,
        sites=[fine, paging, broken, slow, forbidden],
        per_site_qps=4.0,
        burst=1.0,
        global_qps=None,
        faults=faults,
        rows_jitter=0.0,
    )
    days = [f"2026-10-{day:02d}" for day in (1, 2, 3)]
    sites = [fine, paging, broken, slow, forbidden]
    landing = LandingZone(tmp_path)
    with SandboxServer(config) as sandbox:
        enqueue(kafka, [REPORT.first_request(site.url, day, row_limit=100) for site in sites for day in days])
        loop = run_loop(kafka, sandbox, landing, partner_timeout_s=2.0, qps_per_account=40.0)

        # Every 429 reaches the scheduler (the client retries none of them by itself).
        assert sandbox.stats()["rate_limited"] > 0 and loop.stats.throttled == sandbox.stats()["rate_limited"]
        assert kafka.lag(kafka.request_topic).total == 0
        for site in (fine, paging):
            for day in days:
                state = landing.completeness(REPORT.name, day, site.url)
                assert state.complete and state.rows == len(
                    expected_rows(config, site.url, day, day, list(REPORT.dimensions))
                ), (site.url, day, state)
        letters = dead_letters(kafka)
        assert sorted((letter.original_request().account, letter.reason) for letter in letters) == sorted(
            [(broken.url, "malformed_response")] * 3
            + [(slow.url, "transport_error")] * 3
            + [(forbidden.url, "permission_denied")] * 3
        )
        assert {letter.status for letter in letters if letter.reason == "permission_denied"} == {403}
        assert all(letter.error for letter in letters)
        for site in (broken, slow, forbidden):
            assert not any(landing.completeness(REPORT.name, day, site.url).complete for day in days)

        # The faults are gone (the 403 is not): re-drive, download again.
        sandbox.update_config(faults=[])
        assert redrive(kafka)["redriven"] == 9
        run_loop(kafka, sandbox, landing, partner_timeout_s=2.0, qps_per_account=40.0)
        for site in (broken, slow):
            for day in days:
                assert landing.completeness(REPORT.name, day, site.url).complete, (site.url, day)
        again = dead_letters(kafka)[len(letters) :]
        assert [(letter.original_request().account, letter.original_request().attempt) for letter in again] == [
            (forbidden.url, 1)
        ] * 3  # the re-driven copies, refused again


def test_malformed_answers_are_retried_then_land(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    sandbox.update_config(
        faults=[
            FaultSpec("truncated", site_url=SITES[0].url, times=1),
            FaultSpec("wrong_schema", site_url=SITES[1].url, start_row=0, times=1),
        ]
    )
    enqueue(kafka, [REPORT.first_request(site.url, DATE, row_limit=100) for site in SITES])
    loop = run_loop(kafka, sandbox, landing)

    for site in SITES:
        assert landed_rows(landing, site.url) == truth(sandbox, site.url)
    assert sum(sandbox.stats()["faults_served"].values()) == 2
    assert loop.stats.retry_reasons == {"malformed": 2}  # each call asked again is counted, with why
    assert loop.stats.dead_lettered == 0 and dead_letters(kafka) == []


def test_rate_limits_are_waited_out_with_retry_after(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    sandbox.update_config(per_site_qps=4.0, burst=1.0)
    requests = [REPORT.first_request(SITES[0].url, f"2026-10-{day:02d}", row_limit=100) for day in range(1, 9)]
    enqueue(kafka, requests)
    loop = run_loop(kafka, sandbox, landing, qps_per_account=50.0)

    assert sandbox.stats()["rate_limited"] > 0
    assert loop.stats.throttled == sandbox.stats()["rate_limited"] == loop.stats.retry_reasons["throttled"]
    assert loop.pacer.rate(SITES[0].url) < 50.0  # pacing came down after the 429s
    assert loop.stats.landed == len(requests) and loop.stats.dead_lettered == 0


def test_a_request_asked_again_waits_in_the_scheduler_not_in_a_worker(kafka, sandbox, tmp_path):
    # One worker. A worker that slept the backoff before asking again (as the loop once did for a
    # malformed answer, and the client's transport for a Retry-After) would hold up the other account
    # all that time; the scheduler parks only the request to ask again, and the other account flows.
    landing = LandingZone(tmp_path)
    retried, other = SITES[0].url, SITES[1].url
    sandbox.update_config(faults=[FaultSpec("truncated", site_url=retried, times=1)])
    days = ("2026-10-01", "2026-10-02")
    enqueue(kafka, [REPORT.first_request(retried, DATE, row_limit=1000)])
    enqueue(kafka, [REPORT.first_request(other, day, row_limit=1000) for day in days])
    loop = run_loop(kafka, sandbox, landing, concurrency=1, retry_backoff_s=3.0)

    assert sandbox.stats()["faults_served"] == {"truncated": 1}
    assert loop.stats.landed == 3 and loop.stats.dead_lettered == 0
    (retried_page,) = landing.pages(REPORT.name, DATE, retried)
    for day in days:
        (page,) = landing.pages(REPORT.name, day, other)
        assert page.path.stat().st_mtime < retried_page.path.stat().st_mtime, day


def test_load_quota_refusals_wait_on_the_delay_topic_without_blocking_others(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    quota_site, other = SITES[1].url, SITES[0].url
    # The load quota counts queries grouped by query or page: the other site asks for a report by country
    # and device, which it never refuses, in 21 small pages (a chain of 7 a day) that take a while, so
    # that they are still coming when the quota site is refused. (The quota is per site: with the same
    # report both sites were refused, and the check below could not hold.)
    cheap = get_report("search_by_country")
    sandbox.update_config(load_quota=1, load_quota_window_s=2.0)
    requests = [
        request
        for day in range(1, 4)
        for request in (
            REPORT.first_request(quota_site, f"2026-10-{day:02d}", row_limit=100),
            cheap.first_request(other, f"2026-10-{day:02d}", row_limit=5),
        )
    ]
    enqueue(kafka, requests)
    loop = run_loop(kafka, sandbox, landing, quota_wait_s=2.5)

    assert sandbox.stats()["quota_refused"] >= 1
    assert loop.stats.delayed >= 1 and loop.stats.released >= 1
    assert loop.stats.dead_lettered == 0 and dead_letters(kafka) == []
    for day in range(1, 4):
        for report, site in ((REPORT, quota_site), (cheap, other)):
            state = landing.completeness(report.name, f"2026-10-{day:02d}", site)
            assert state.complete, (site, day, state)
    # The other site did not wait behind the refused one: the sandbox had answered all its pages before
    # it received the quota site's first retry (a call of a page it had refused).
    calls = sandbox.calls()
    assert calls["dropped"] == 0
    answered = calls["answered"]
    other_calls = [c for c in answered if c["site_url"] == other]
    assert [c["status"] for c in other_calls] == [200] * 21, other_calls
    first_retry = first_call_after_a_refusal(answered, quota_site)
    assert max(c["answered_at"] for c in other_calls) < first_retry, timeline(answered)
    assert kafka.lag(kafka.request_topic).total == 0 and kafka.lag(delay_topic(kafka)).total == 0


def timeline(calls: list[dict]) -> list[str]:
    """The calls as lines (site, date, startRow, status, received and answered, in seconds from the first)."""
    zero = min(c["received_at"] for c in calls)
    return [
        f"{c['site_url']} {c['start_date']} {c['start_row']} {c['status']} "
        f"{c['received_at'] - zero:.3f}-{c['answered_at'] - zero:.3f}"
        for c in calls
    ]


def first_call_after_a_refusal(calls: list[dict], site: str) -> float:
    """When the sandbox received the first call of a page of `site` that it had refused (403) before."""
    refused: set[tuple] = set()
    for call in sorted((c for c in calls if c["site_url"] == site), key=lambda c: c["received_at"]):
        page = (call["start_date"], call["start_row"], call["row_limit"])
        if page in refused:
            return call["received_at"]
        if call["status"] == 403:
            refused.add(page)
    raise AssertionError(f"no refused page of {site} was asked again")


@pytest.mark.parametrize("kind", ["rate_limit_403", "user_rate_limit_403"])
def test_throttling_answered_as_403_is_paced_and_retried_not_dead_lettered(kafka, sandbox, tmp_path, kind):
    # Google also throttles with 403 rateLimitExceeded / userRateLimitExceeded (its own client retries
    # them as throttling); before, the consumer dead-lettered them as client errors.
    landing = LandingZone(tmp_path)
    site = SITES[0].url
    refusals = 4
    sandbox.update_config(faults=[FaultSpec(kind, site_url=site, times=refusals)])
    enqueue(kafka, [REPORT.first_request(site, DATE, row_limit=100)])
    loop = run_loop(kafka, sandbox, landing)

    assert sandbox.stats()["faults_served"] == {kind: refusals}
    assert loop.stats.throttled == refusals  # the pacer heard each one
    assert loop.stats.dead_lettered == 0 and dead_letters(kafka) == []
    assert landed_rows(landing, site) == truth(sandbox, site)


def test_a_spent_daily_quota_parks_the_request_until_pacific_midnight_and_the_others_flow(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    spent, other = SITES[0].url, SITES[1].url
    sandbox.update_config(faults=[FaultSpec("daily_limit", site_url=spent)])
    requests = [REPORT.first_request(site, DATE, row_limit=100) for site in (spent, other)]
    enqueue(kafka, [*requests, REPORT.first_request(spent, "2026-11-03", row_limit=100)])
    earliest = next_quota_day_ms()
    # The parked requests keep the consumer waiting for them (work not done): it stops at max_runtime_s.
    loop = run_loop(kafka, sandbox, landing, max_runtime_s=8.0, max_in_flight_per_account=1)
    latest = next_quota_day_ms()

    assert sandbox.stats()["faults_served"] == {"daily_limit": 1}  # asked once, not hammered
    assert loop.stats.dead_lettered == 0 and dead_letters(kafka) == []
    assert landed_rows(landing, other) == truth(sandbox, other)
    parked = delayed_requests(kafka)  # the refused one, and the next one the scheduler held back unasked
    assert sorted(p.original_request().date for p in parked) == [DATE, "2026-11-03"]
    assert {(p.reason, p.original_request().account) for p in parked} == {("daily_quota_exceeded", spent)}
    assert all(earliest <= p.due_at_ms <= latest for p in parked)
    assert kafka.lag(kafka.request_topic).total == 0  # the request itself is done: it waits on the delay topic
    # ...and its download says so: a sensor past the watermark finds the report awaited, not missing.
    for day in (DATE, "2026-11-03"):
        assert landing.reports_of(day, spent) == [REPORT.name]
        assert not partition_settled(landing, day, spent)
    assert partition_settled(landing, DATE, other)


@pytest.mark.parametrize("refusal", ["token refresh", "missing credentials"])
def test_refused_credentials_stop_the_run_with_one_line_and_nothing_is_dead_lettered(kafka, tmp_path, refusal):
    # Before: the token refresh's RefreshError crashed the consumer with a traceback, and a 401 was
    # dead-lettered as a client error (a request that could succeed with the credentials fixed).
    config = SandboxConfig(
        seed=3, sites=SITES, faults=[], rows_jitter=0.0, require_auth=True, refuse_tokens=refusal == "token refresh"
    )
    with SandboxServer(config) as sandbox:
        key = None
        if refusal == "token refresh":
            key, _ = service_account_file(tmp_path, f"{sandbox.url}token")
        enqueue(kafka, [REPORT.first_request(site.url, DATE, row_limit=100) for site in SITES])
        with pytest.raises(PartnerAuthError) as raised:
            run_loop(kafka, sandbox, LandingZone(tmp_path / "landing"), credentials_file=key and str(key))
    message = str(raised.value)
    assert "PARTNER_CREDENTIALS_FILE" in message and "\n" not in message
    assert KEY_ID not in message and "PRIVATE KEY" not in message
    assert dead_letters(kafka) == []
    assert kafka.lag(kafka.request_topic).total == len(SITES)  # left for the next run, with good credentials


def test_a_partner_outage_is_waited_out_on_the_delay_topic_and_dead_letters_nothing(kafka, sandbox, tmp_path):
    # Before: a 5xx that outlasted the client's own retries was dead-lettered at once, so an outage of
    # a minute or two dead-lettered everything in flight.
    landing = LandingZone(tmp_path)
    down, fine = SITES[1].url, SITES[0].url
    outage = 6  # answers of 503: two rounds of the consumer's tries (max_attempts 3 calls each)
    sandbox.update_config(faults=[FaultSpec("http_503", site_url=down, times=outage)])
    enqueue(kafka, [REPORT.first_request(site, DATE, row_limit=100) for site in (down, fine)])
    loop = run_loop(kafka, sandbox, landing, transient_waits_s=[0.2, 0.4, 0.8])

    assert sandbox.stats()["faults_served"] == {"http_503": outage}
    assert loop.stats.dead_lettered == 0 and dead_letters(kafka) == []
    assert loop.stats.delayed == 2 and loop.stats.released == 2  # waited twice, landed on the third try
    for site in (down, fine):
        assert landed_rows(landing, site) == truth(sandbox, site)
    assert kafka.lag(kafka.request_topic).total == 0 and kafka.lag(delay_topic(kafka)).total == 0


@pytest.mark.parametrize("kind", ["http_503", "connection_reset"])
def test_an_outage_of_a_few_seconds_is_ridden_out_and_the_other_sites_flow(kafka, sandbox, tmp_path, kind):
    # The two-minute outage, scaled down with the waits: 2 s of 503s or of connections closed
    # with no answer (a host gone away), waits of 1, 2 and 4 s.
    landing = LandingZone(tmp_path)
    down, fine = SITES[1].url, SITES[0].url
    sandbox.update_config(faults=[FaultSpec(kind, site_url=down, for_s=2.0)])
    enqueue(kafka, [REPORT.first_request(site, DATE, row_limit=100) for site in (down, fine)])
    loop = run_loop(kafka, sandbox, landing, transient_waits_s=[1.0, 2.0, 4.0])

    assert sandbox.stats()["faults_served"][kind] >= 1
    assert loop.stats.dead_lettered == 0 and dead_letters(kafka) == []
    assert loop.stats.delayed >= 1
    for site in (down, fine):
        assert landed_rows(landing, site) == truth(sandbox, site)
    assert kafka.lag(kafka.request_topic).total == 0 and kafka.lag(delay_topic(kafka)).total == 0


def test_an_account_that_fails_transiently_waits_whole_and_its_other_requests_cost_no_call(kafka, sandbox, tmp_path):
    # Before: each of the account's requests made its own tries against the failing partner before
    # it was parked, so an outage cost a few calls per request; the others' sites flowed either way.
    landing = LandingZone(tmp_path)
    down, fine = SITES[0].url, SITES[1].url
    sandbox.update_config(faults=[FaultSpec("http_503", site_url=down)])
    days = ("2026-10-01", "2026-10-02", "2026-10-03")
    enqueue(kafka, [REPORT.first_request(down, day, row_limit=1000) for day in days])
    enqueue(kafka, [REPORT.first_request(fine, DATE, row_limit=1000)])
    # Parked requests keep the consumer waiting for them: it stops at max_runtime_s.
    loop = run_loop(
        kafka,
        sandbox,
        landing,
        max_attempts=2,
        transient_waits_s=[60.0],
        max_in_flight_per_account=1,
        max_runtime_s=6.0,
    )

    assert sandbox.stats()["faults_served"] == {"http_503": 2}  # the first request's two tries, no more
    parked = delayed_requests(kafka)
    assert sorted(p.original_request().date for p in parked) == list(days)
    assert {p.reason for p in parked} == {"transient server_error"}
    assert loop.stats.dead_lettered == 0 and landed_rows(landing, fine) == truth(sandbox, fine)


def test_a_partner_host_that_does_not_resolve_is_waited_on_then_dead_lettered_and_nothing_crashes(
    kafka, sandbox, tmp_path
):
    # DNS failing is transient like a 5xx (httplib2.ServerNotFoundError once crashed the consumer, again and
    # again under the lag sensor): asked again from memory, then from the delay topic, then dead-lettered.
    landing = LandingZone(tmp_path)
    enqueue(kafka, [REPORT.first_request(site.url, DATE, row_limit=100) for site in SITES])
    loop = run_loop(
        kafka, sandbox, landing, api_endpoint="http://partner.invalid/", max_attempts=2, transient_waits_s=[0.2]
    )

    assert loop.stats.stopped_because.startswith("topic drained")
    assert loop.stats.delayed == len(SITES) and loop.stats.api_calls == len(SITES) * 2 * 2
    letters = dead_letters(kafka)
    assert sorted(letter.original_request().account for letter in letters) == sorted(site.url for site in SITES)
    assert {(letter.reason, letter.status, letter.attempts) for letter in letters} == {("transport_error", None, 2)}
    assert all("ServerNotFoundError" in letter.error for letter in letters)
    assert sandbox.stats()["calls_total"] == 0


def test_a_failure_that_outlasts_every_wait_is_dead_lettered_once_they_are_used_up(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    site = SITES[0].url
    sandbox.update_config(faults=[FaultSpec("http_500", site_url=site)])
    enqueue(kafka, [REPORT.first_request(site, DATE, row_limit=100)])
    loop = run_loop(kafka, sandbox, landing, transient_waits_s=[0.1, 0.1])

    assert loop.stats.delayed == 2 and sandbox.stats()["faults_served"] == {"http_500": 3 * 3}
    (letter,) = dead_letters(kafka)
    assert (letter.reason, letter.status) == ("server_error", 500)
    assert letter.original_request().retries == 2  # the copy that used up both waits
    assert kafka.lag(kafka.request_topic).total == 0 and kafka.lag(delay_topic(kafka)).total == 0


def test_delayed_request_round_trip():
    request = REPORT.first_request(SITES[0].url, DATE, row_limit=100)
    delayed = DelayedRequest(request=request.to_json(), due_at_ms=123, reason="quota_exceeded")
    assert DelayedRequest.decode(delayed.encode()).original_request() == request


def test_pacing_settles_below_an_unknown_lower_limit(kafka, sandbox, tmp_path):
    """The partner allows 8 calls/s, we start at 40: after the first seconds, < 5 % of calls see a 429."""
    import threading
    import time as clock

    landing = LandingZone(tmp_path)
    sandbox.update_config(per_site_qps=8.0, burst=2.0)
    site = SITES[0].url
    requests = [
        REPORT.first_request(site, f"2026-{month:02d}-{day:02d}", row_limit=100)
        for month in (7, 8, 9, 10)
        for day in range(1, 31)
    ][:100]
    enqueue(kafka, requests)
    snapshot: dict = {}
    first_call = threading.Event()

    def watch() -> None:
        while sandbox.stats()["calls_total"] == 0:
            clock.sleep(0.05)
        first_call.set()
        clock.sleep(3.0)  # settling time measured from the first call, not a synchronisation
        snapshot.update(sandbox.stats())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    loop = run_loop(kafka, sandbox, landing, qps_per_account=40.0, concurrency=4, max_in_flight_per_account=2)
    watcher.join(timeout=30)
    final = sandbox.stats()
    assert loop.stats.landed == len(requests) and loop.stats.dead_lettered == 0
    assert snapshot, "the run ended before the settling time: make the workload longer"
    later_calls = final["calls_total"] - snapshot["calls_total"]
    later_429 = final["rate_limited"] - snapshot["rate_limited"]
    assert later_calls >= 30
    assert later_429 / later_calls < 0.05, (later_429, later_calls)


class _BrokerMissesSends:
    """A real producer whose first `misses` sends to `topic` the broker "does not acknowledge in time"."""

    def __init__(self, producer, topic: str, misses: int) -> None:
        self._producer, self._topic, self.misses = producer, topic, misses

    def send(self, topic, **kwargs):
        if topic == self._topic and self.misses > 0:
            self.misses -= 1
            future = FutureRecordMetadata(FutureProduceResult(None), 0, 0, 0, 0, 0, 0)
            future.failure(KafkaTimeoutError("Timeout after waiting for 30 secs"))
            return future
        return self._producer.send(topic, **kwargs)

    def __getattr__(self, name):
        return getattr(self._producer, name)


def test_a_continuation_the_broker_does_not_take_is_sent_again_with_no_new_call(kafka, sandbox, tmp_path):
    landing = LandingZone(tmp_path)
    enqueue(kafka, [REPORT.first_request(SITES[1].url, DATE, row_limit=100)])
    settings = ConsumerSettings(
        request_topic=kafka.request_topic,
        dead_letter_topic=kafka.dead_letter_topic,
        delay_topic=delay_topic(kafka),
        idle_timeout_s=1.5,
        qps_per_account=500.0,
        transient_waits_s=[],
    )
    partner = PartnerResource(api_endpoint=sandbox.url, timeout_s=5)
    consumer, producer = kafka.consumer([]), kafka.producer()
    flaky = _BrokerMissesSends(producer, kafka.request_topic, misses=2)
    loop = DownloadLoop(consumer, flaky, partner.clients, landing, settings)
    try:
        loop.subscribe()
        loop.run()  # before: KafkaTimeoutError out of run(), the consumer stopped
    finally:
        producer.close()
        consumer.close()

    assert flaky.misses == 0
    assert landed_rows(landing, SITES[1].url) == truth(sandbox, SITES[1].url)
    # Each page's answer was kept while its continuation waited for the broker: no call twice.
    assert loop.stats.api_calls == sandbox.stats()["calls_total"] == 3
    assert sandbox.stats()["repeat_calls"] == 0
    assert kafka.lag(kafka.request_topic).total == 0
    assert dead_letters(kafka) == []
