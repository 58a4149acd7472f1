"""Fixtures of the crash, broker-restart and rebalance suite (see `trials.py` for what a trial proves)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reporting_assets_tests.reliability import trials

# Trials of this session, by group, for the summary printed at the end of the run.
RESULTS: dict[str, list[trials.TrialResult]] = {}
REFERENCE: dict[str, trials.TrialResult] = {}


@pytest.fixture(scope="session")
def trials_env(kafka_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[trials.TrialEnv]:
    """Trials on the session broker, with a Dagster instance for the export assets."""
    with trials.trial_env(kafka_broker, tmp_path_factory.mktemp("trials")) as env:
        yield env


@pytest.fixture(scope="session")
def clean_run(trials_env: trials.TrialEnv) -> trials.TrialResult:
    """The small workload once without any attack: the exports every trial must reproduce byte for byte."""
    result = trials.run_trial(trials_env, trials.SMALL, seed=None)
    assert trials.problems(result, None) == [], trials.describe(result)
    assert result.rows_lost == result.rows_doubled == 0 and result.rows_expected > 0
    assert result.export_digests, "the clean run exported nothing"
    REFERENCE["clean"] = result
    return result


def record(group: str, result: trials.TrialResult) -> None:
    RESULTS.setdefault(group, []).append(result)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not RESULTS:
        return
    terminalreporter.section("reliability trials")
    for group, results in RESULTS.items():
        terminalreporter.write_line(trials.summary_markdown(group, results, REFERENCE.get("clean")))
