"""`python -m reporting_assets.sandbox` as a real subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reporting_assets_tests.sandbox.helpers import make_client, raw_request, wait_for

START_TIMEOUT_S = 30.0  # generous: a cold interpreter on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reporting_assets.sandbox", *args], capture_output=True, text=True, timeout=60
    )


def _healthy(url: str, proc: subprocess.Popen[str]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(
            f"sandbox exited early with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
        )
    try:
        return raw_request(url, "GET", "/_sandbox/health").status == 200
    except OSError:
        return False


@pytest.fixture
def cli_sandbox(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    config = {"seed": 3, "sites": [{"url": "https://cli.example.com/", "rows_per_day": 1500}]}
    config_path = tmp_path / "sandbox.json"
    config_path.write_text(json.dumps(config))
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reporting_assets.sandbox",
            "--port",
            str(port),
            "--config",
            str(config_path),
            "--seed",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: _healthy(url, proc), timeout_s=START_TIMEOUT_S)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def test_cli_serves_until_sigterm(cli_sandbox: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = cli_sandbox
    client = make_client(url)
    assert client.sites().list().execute() == {
        "siteEntry": [{"siteUrl": "https://cli.example.com/", "permissionLevel": "siteOwner"}]
    }
    answer = (
        client.searchanalytics()
        .query(
            siteUrl="https://cli.example.com/",
            body={"startDate": "2024-01-01", "endDate": "2024-01-01", "dimensions": ["query"]},
        )
        .execute()
    )
    assert len(answer["rows"]) == 1000
    assert raw_request(url, "GET", "/_sandbox/config").json()["seed"] == 4  # --seed overrides the file
    proc.terminate()
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == f"Search Console sandbox listening on {url}"


def _assert_one_clear_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_rejects_a_missing_config_file(tmp_path: Path) -> None:
    _assert_one_clear_error(_run("--port", "0", "--config", str(tmp_path / "nope.json")), "--config", "cannot read")


def test_cli_rejects_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"seed": 1,')
    _assert_one_clear_error(_run("--port", "0", "--config", str(path)), "--config", "invalid JSON")


def test_cli_rejects_invalid_values(tmp_path: Path) -> None:
    path = tmp_path / "neg.json"
    path.write_text(json.dumps({"sites": [{"url": "https://a/", "rows_per_day": 5}], "per_site_qps": -1}))
    _assert_one_clear_error(_run("--port", "0", "--config", str(path)), "--config", "per_site_qps")


def test_cli_rejects_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _assert_one_clear_error(_run("--port", str(port)), f"--port {port}", "in use")


def test_cli_rejects_bad_arguments() -> None:
    _assert_one_clear_error(_run("--port", "99999"), "--port")
    _assert_one_clear_error(_run("--port", "eighty"), "--port")
