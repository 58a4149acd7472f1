"""The broker goes away in the middle of a download (controlled stop, then SIGKILL) and comes back.

A broker of the test's own (not the session's) is stopped while two consumer processes are
downloading, then started again on the same data dir and ports. The consumers are *not* restarted:
they ride out the outage (polls return nothing, a commit that cannot reach the broker is retried,
"drained" is only believed when the broker confirms it) and finish the work themselves. The result
must be the same as a clean run's, byte for byte, with bounded re-issued calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from reporting_assets.infra.kafka import BrokerSettings, LocalKafkaBroker
from reporting_assets.infra.maven import ensure_jars
from reporting_assets.infra.ports import free_ports
from reporting_assets_tests.reliability import trials
from reporting_assets_tests.reliability.conftest import record

# The small workload, slower per call, so that the outage falls in the middle of the download.
WORKLOAD = dataclasses.replace(trials.SMALL, name="broker-restart", latency_s=0.1)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafkaBroker]:
    port, controller_port = free_ports(2)
    settings = BrokerSettings(port=port, controller_port=controller_port, data_dir=tmp_path / "kafka")
    broker = LocalKafkaBroker(settings, jars_dir=ensure_jars("broker"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()  # SIGTERM, then SIGKILL if it hangs: no JVM outlives the test


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_consumers_ride_out_a_broker_restart_and_finish(
    how: str, own_broker: LocalKafkaBroker, tmp_path: Path, clean_run: trials.TrialResult
):
    plan = trials.Plan((trials.Step(6, f"broker_{how}"),))
    with trials.trial_env(own_broker.settings.bootstrap, tmp_path / "trials", broker=own_broker) as env:
        result = trials.run_trial(env, WORKLOAD, seed=None, plan=plan, timeout_s=240)
    record("broker restarts", result)
    assert trials.problems(result, clean_run) == [], trials.describe(result)
    (restart,) = result.broker_restarts
    assert restart.how == how and restart.at_landed < result.pages, "the outage came after the download"
    # Nobody died and nobody had to be restarted: the same two processes reconnected and finished.
    assert restart.consumers_alive_after == WORKLOAD.consumers, trials.describe(result)
    assert result.restarts == 0 and result.early_exits == 0, trials.describe(result)
    assert all(stats["stopped_because"].startswith("topic drained") for stats in result.consumer_stats)
    assert result.export_digests == clean_run.export_digests
