"""`python -m reporting_assets run`: bad settings give one clear line and exit 2 before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reporting_assets import cli
from reporting_assets.infra.ports import free_port
from reporting_assets.sandbox import SandboxConfig, SandboxServer, SiteSpec
from reporting_assets_tests.helpers import KEY_ID, service_account_file

SITES = [SiteSpec("https://www.example.com/", 40), SiteSpec("https://shop.example.com/", 30)]


@pytest.fixture
def sandbox():
    with SandboxServer(SandboxConfig(seed=5, sites=SITES, per_site_qps=None, global_qps=None, faults=[])) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, kafka_broker: str, sandbox: SandboxServer, unique_name) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    topic = unique_name("requests")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "PARTNER_API_ENDPOINT": sandbox.url,
        "REPORTING_DATA_DIR": str(tmp_path / "data"),
        "REPORTING_REQUEST_TOPIC": topic,
        "REPORTING_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "REPORTING_DELAY_TOPIC": f"{topic}.delayed",
        "REPORTING_CONSUMER_GROUP": unique_name("group"),
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "reporting_assets",
        "run",
        "--start-date",
        "2026-11-01",
        "--end-date",
        "2026-11-01",
        *args,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("env_changes", "args", "message"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:{closed}"}, [], "KAFKA_BOOTSTRAP_SERVERS"),
        ({"PARTNER_API_ENDPOINT": "http://127.0.0.1:{closed}/"}, [], "PARTNER_API_ENDPOINT"),
        (
            {"PARTNER_CREDENTIALS_FILE": "/nonexistent/key.json"},
            [],
            "credentials_file: cannot read /nonexistent/key.json",
        ),
        ({"PARTNER_CREDENTIALS_FILE": "{tmp}"}, [], "credentials_file: cannot read"),
        ({"REPORTING_TOPIC_PARTITIONS": "many"}, [], "REPORTING_TOPIC_PARTITIONS='many' is not an integer"),
        (
            {},
            ["--start-date", "2026-11-03", "--end-date", "2026-11-01"],
            "--start-date 2026-11-03 is after --end-date 2026-11-01",
        ),
        ({}, ["--start-date", "2026-13-01"], "--start-date '2026-13-01' is not a YYYY-MM-DD date"),
        ({}, ["--start-date", "2020-01-01"], "before the first daily partition"),
        ({}, ["--reports", "search_analytics,nope"], "--reports: unknown report 'nope'"),
        ({}, ["--qps", "-1"], "--qps must be > 0"),
        ({}, ["--row-limit", "0"], "--row-limit must be within 1..25000"),
        ({"REPORTING_ROW_LIMIT": "30000"}, [], "REPORTING_ROW_LIMIT=30000 must be <= 25000"),
        ({}, ["--accounts", "https://unknown.example.com/"], "--accounts: unknown or unreadable"),
    ],
)
def test_bad_settings_fail_with_one_line_and_write_nothing(
    env, tmp_path, env_changes, args, message, monkeypatch, capsys
):
    closed = str(free_port())
    changed = {k: v.format(closed=closed, tmp=tmp_path) for k, v in env_changes.items()}
    for name, value in {**env, **changed}.items():
        monkeypatch.setenv(name, value)
    argv = ["run", "--start-date", "2026-11-01", "--end-date", "2026-11-01", *args]
    assert cli.main(argv) == cli.EXIT_BAD_SETTING
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reporting_assets: error: "), lines
    assert message in lines[0]
    assert not (tmp_path / "data").exists()


def test_credentials_the_partner_refuses_are_one_line_naming_the_setting(env, sandbox, tmp_path, monkeypatch, capsys):
    # Before: the token refresh's RefreshError ended the command with a traceback.
    sandbox.update_config(refuse_tokens=True)
    key, fragment = service_account_file(tmp_path, f"{sandbox.url}token")
    for name, value in {**env, "PARTNER_CREDENTIALS_FILE": str(key)}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run", "--start-date", "2026-11-01", "--end-date", "2026-11-01"]) == cli.EXIT_BAD_SETTING
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "refused the credentials" in lines[0] and "PARTNER_CREDENTIALS_FILE" in lines[0], lines
    assert fragment not in lines[0] and KEY_ID not in lines[0]


def test_a_run_for_one_account_and_day_exports_it(env, tmp_path):
    result = run(env, "--accounts", "https://shop.example.com/", "--consumers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dead letters" in result.stdout and "0 dead letters" in result.stdout
    csv = tmp_path / "data" / "exports" / "search_analytics" / "2026-11-01.csv"
    lines = csv.read_text().splitlines()
    assert len(lines) == 1 + 30 and all("shop.example.com" in line for line in lines[1:])
