"""The report catalog: the shipped one, a user's, and one error line per bad entry."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from reporting_assets import cli
from reporting_assets.core.messages import SEARCH_TYPES, ReportRequest, compute_request_id
from reporting_assets.core.reports import (
    SHIPPED_CATALOG,
    CatalogError,
    UnknownReportError,
    get_report,
    load_catalog,
    parse_catalog,
)

BAD = textwrap.dedent(
    """
    reports:
      - name: search_analytics
        dimensions: [date, query, page, country, device]
      - name: browsers
        dimensions: [date, browser]
      - name: discover_queries
        dimensions: [date, query]
        search_types: [web, discover]
      - name: pages_by_property
        dimensions: [date, page]
        aggregation_type: byProperty
      - name: hours_final
        dimensions: [hour]
        data_state: final
      - name: fine
        dimensions: [date, country]
      - name: bad_regex
        dimensions: [date, query]
        dimension_filter_groups: [{filters: [{dimension: query, operator: includingRegex, expression: "("}]}]
    """
)


def test_the_shipped_catalog_has_the_standard_set_and_every_search_type():
    catalog = load_catalog(SHIPPED_CATALOG)
    assert get_report("search_analytics").dimensions == ("date", "query", "page", "country", "device")
    for name in ("by_country", "by_device", "by_page", "by_query", "by_page_query", "by_search_appearance"):
        assert name in catalog.reports
    assert {f"by_date_{t.lower()}" for t in SEARCH_TYPES} <= set(catalog.reports)
    assert {catalog.reports[f"by_date_{t.lower()}"].search_type for t in SEARCH_TYPES} == set(SEARCH_TYPES)
    hourly = catalog.reports["hourly"]
    assert "hour" in hourly.dimensions and hourly.data_state == "hourly_all"
    assert hourly.first_request("sc-domain:example.com", "2026-11-02", 25_000).api_body()["dataState"] == "hourly_all"


def test_every_bad_entry_is_one_line_naming_it(tmp_path: Path):
    with pytest.raises(CatalogError) as info:
        parse_catalog(BAD, tmp_path / "reports.yaml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("report catalog ")
    problems = lines[1:]
    assert [line.split(":")[0] for line in problems] == [
        "report browsers",
        "report discover_queries",
        "report pages_by_property",
        "report hours_final",
        "report bad_regex",
    ]
    assert "browser" in problems[0] and "allowed" in problems[0]
    assert "discover" in problems[1] and "query" in problems[1]
    assert "byProperty" in problems[2]
    assert "hourly_all" in problems[3]
    assert "regular expression" in problems[4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reports: [", "not YAML"),
        ("colour: red", "non-empty `reports:` list"),
        ("reports:\n  - {name: by_country, dimensions: [date, country]}", "default report 'search_analytics'"),
        (
            "reports:\n  - {name: search_analytics, dimensions: [date]}\n  - {name: search_analytics, dimensions: [date]}",
            "taken by an earlier entry",
        ),
        ("reports:\n  - {name: Search-Analytics, dimensions: [date]}", "lower-case"),
        ("reports:\n  - {name: search_analytics, dimensions: [date], colour: red}", "colour"),
    ],
)
def test_a_catalog_that_cannot_work_says_why(tmp_path: Path, text: str, message: str):
    with pytest.raises(CatalogError, match="report catalog") as info:
        parse_catalog(text, tmp_path / "reports.yaml")
    assert message in str(info.value)


def test_a_users_catalog_is_read_from_the_setting_and_again_when_edited(tmp_path: Path, monkeypatch):
    catalog = tmp_path / "reports.yaml"
    catalog.write_text("reports:\n  - {name: search_analytics, dimensions: [date, query]}\n")
    monkeypatch.setenv("REPORTING_REPORTS_FILE", str(catalog))
    assert get_report("search_analytics").dimensions == ("date", "query")
    with pytest.raises(UnknownReportError, match="by_device"):
        get_report("by_device")
    catalog.write_text(
        "reports:\n  - {name: search_analytics, dimensions: [date, query]}\n"
        "  - {name: by_device, dimensions: [date, device], search_types: [image]}\n"
    )
    assert get_report("by_device").search_type == "image"


def test_a_plain_report_keeps_its_request_ids_and_a_filtered_one_carries_its_query(tmp_path: Path):
    plain = get_report("search_analytics").first_request("https://shop.example.com/", "2026-11-02", 1000)
    assert "aggregation_type" not in plain.to_json() and "filters" not in plain.to_json()
    # Fresh, then final: the catalog's default.
    assert plain.data_state == "all"
    # A final request keeps the id of before the catalog (no aggregation_type or filters in its identity).
    final = replace(plain, data_state="final", request_id="")
    assert final.request_id == compute_request_id(final) == "7194ef2236476643245ef3f7a51a4f64"
    catalog = parse_catalog(
        textwrap.dedent(
            """
            reports:
              - name: search_analytics
                dimensions: [date, query, page, country, device]
              - name: mobile
                dimensions: [date, query]
                aggregation_type: byProperty
                dimension_filter_groups: [{filters: [{dimension: device, expression: MOBILE}]}]
            """
        ),
        tmp_path / "reports.yaml",
    )
    request = catalog.get("mobile").first_request("https://shop.example.com/", "2026-11-02", 1000)
    body = request.api_body()
    assert body["aggregationType"] == "byProperty"
    assert body["dimensionFilterGroups"] == [{"filters": [{"dimension": "device", "expression": "MOBILE"}]}]
    assert ReportRequest.decode(request.encode()) == request
    assert json.loads(request.encode())["filters"] == request.filters


def test_the_reports_command_lists_the_catalog_one_line_per_report(capsys):
    assert cli.main(["reports"]) == 0
    lines = capsys.readouterr().out.splitlines()
    catalog = load_catalog()
    assert len(lines) == len(catalog.reports)
    for line, spec in zip(lines, catalog.reports.values(), strict=True):
        name, dimensions, search_type, data_state = line.split()[:4]
        assert (name, dimensions, search_type, data_state) == (
            spec.name,
            ",".join(spec.dimensions),
            spec.search_type,
            spec.data_state,
        )


def test_a_bad_catalog_stops_the_commands_before_anything_is_written(tmp_path: Path, monkeypatch, capsys):
    catalog = tmp_path / "reports.yaml"
    catalog.write_text(BAD)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("REPORTING_REPORTS_FILE", str(catalog))
    monkeypatch.setenv("REPORTING_DATA_DIR", str(data_dir))
    assert cli.main(["reports"]) == cli.EXIT_BAD_SETTING
    listed = capsys.readouterr().err.splitlines()
    assert len(listed) == 6 and listed[0].startswith("reporting_assets: error: report catalog")
    code = cli.main(["run", "--start-date", "2026-11-01", "--end-date", "2026-11-01"])
    assert code == cli.EXIT_BAD_SETTING
    assert capsys.readouterr().err.splitlines() == listed
    assert not data_dir.exists()
