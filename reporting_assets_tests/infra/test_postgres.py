"""The local PostgreSQL server's pure parts, and deploy/dagster.yaml against Dagster's own config schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config  # no public name

from reporting_assets.core.keys import DOWNLOAD_JOB, DOWNLOAD_ROLE, ROLE_TAG
from reporting_assets.definitions import defs
from reporting_assets.infra.postgres import LocalPostgres, PostgresError, PostgresSettings, as_owner, find_bin_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_YAML = REPO_ROOT / "deploy" / "dagster.yaml"


def fake_server(root: Path, version: str, complete: bool = True) -> Path:
    bin_dir = root / version / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("initdb", "pg_ctl") if complete else ("initdb",):
        (bin_dir / name).write_text("#!/bin/sh\n")
    return bin_dir


def test_the_newest_complete_server_is_found(tmp_path: Path):
    fake_server(tmp_path, "9")
    newest = fake_server(tmp_path, "15")
    fake_server(tmp_path, "16", complete=False)  # no pg_ctl: not a server
    (tmp_path / "common").mkdir()
    assert find_bin_dir(tmp_path) == newest


@pytest.mark.parametrize("layout", ["absent", "empty", "client only"])
def test_missing_binaries_say_how_to_install_them(tmp_path: Path, layout: str):
    root = tmp_path / "postgresql"
    if layout != "absent":
        root.mkdir()
    if layout == "client only":
        (root / "15" / "bin").mkdir(parents=True)
        (root / "15" / "bin" / "psql").write_text("")
    with pytest.raises(PostgresError, match=r"no PostgreSQL server binaries under .*make cluster-setup"):
        find_bin_dir(root)


def test_root_runs_the_server_as_the_postgres_user_and_others_as_themselves():
    assert as_owner(["initdb", "-D", "x"], euid=0) == ["runuser", "-u", "postgres", "--", "initdb", "-D", "x"]
    assert as_owner(["initdb", "-D", "x"], euid=1000) == ["initdb", "-D", "x"]


def test_settings_listen_on_loopback_with_the_socket_in_the_data_dir(tmp_path: Path):
    settings = PostgresSettings(tmp_path, 15432)
    assert settings.data_dir == tmp_path / "pgdata"
    assert settings.server_options() == (
        f"-c listen_addresses=127.0.0.1 -c port=15432 -c unix_socket_directories={tmp_path / 'pgdata'}"
    )
    assert PostgresSettings(tmp_path, 1).password != PostgresSettings(tmp_path, 1).password  # a fresh secret each
    assert settings.password not in repr(settings)


def test_names_that_are_not_plain_identifiers_are_refused(tmp_path: Path):
    with pytest.raises(PostgresError, match="not a plain lowercase SQL identifier"):
        LocalPostgres(PostgresSettings(tmp_path, 1, database='x"; DROP'), bin_dir=tmp_path)


def env_names(node: object) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_names(value) for value in node.values())) if node else set()
    return set()


def test_deploy_yaml_reads_exactly_the_variables_the_local_server_provides(tmp_path: Path):
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    assert env_names(config["storage"]) == set(PostgresSettings(tmp_path, 1).dagster_env())
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_deploy_yaml_is_valid_and_limits_download_runs_by_the_tag_the_download_job_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name, value in PostgresSettings(tmp_path, 5432).dagster_env().items():
        monkeypatch.setenv(name, value)
    shutil.copy(DEPLOY_YAML, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's schema: raises on an unknown or bad key
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    limits = coordinator["config"]["tag_concurrency_limits"]
    assert {"key": ROLE_TAG, "value": DOWNLOAD_ROLE, "limit": 1} in limits
    job = defs().resolve_job_def(DOWNLOAD_JOB)
    assert job.tags[ROLE_TAG] == DOWNLOAD_ROLE
