"""GA4's requests enqueued by Spark's native Kafka sink (real Spark, real broker), then downloaded."""

from __future__ import annotations

from reporting_assets.core.connectors.ga4 import STANDARD_REPORTS
from reporting_assets.core.enqueue import ga4_request_frame, write_requests
from reporting_assets.core.landing import LandingZone
from reporting_assets.core.messages import ReportRequest, new_download_id
from reporting_assets.resources.spark import spark_resource
from reporting_assets_tests.consumer.test_loop import dead_letters, run_loop, topic_values
from reporting_assets_tests.ga4.test_ga4_downloads import BLOG, DATE, SHOP, kafka, ordered, sandbox, truth

__all__ = ["kafka", "sandbox"]  # the fixtures, shared with the downloads tests


def test_spark_enqueues_the_ga4_requests_python_would_and_the_consumer_downloads_them(kafka, sandbox, tmp_path):
    download = new_download_id()
    pairs = [(prop, date) for prop in (SHOP, BLOG) for date in (DATE, "2026-11-03")]
    frame = ga4_request_frame(spark_resource().spark_session, pairs, STANDARD_REPORTS, download, row_limit=40)
    write_requests(frame, kafka.spark_options(), kafka.request_topic)

    # Decoding checks each request id against its parameters: Spark hashed what Python hashes.
    enqueued = sorted(map(ReportRequest.decode, topic_values(kafka, kafka.request_topic)), key=ReportRequest.encode)
    expected = sorted(
        (
            report.first_request(prop, date, row_limit=40).in_download(download)
            for prop, date in pairs
            for report in STANDARD_REPORTS
        ),
        key=ReportRequest.encode,
    )
    assert enqueued == expected and [r.download for r in enqueued] == [download] * len(expected)

    landing = LandingZone(tmp_path)
    run_loop(kafka, sandbox, landing)
    assert dead_letters(kafka) == []
    for report in STANDARD_REPORTS:
        for prop in (SHOP, BLOG):
            assert ordered(landing, report, prop) == truth(sandbox, report, prop), (report.name, prop)
