"""Seeded crash trials: consumer processes SIGKILLed at seeded moments, restarted until the topic drains.

Each trial checks (see `trials.py`): the landed rows of both partners equal the sandbox's truth (none
lost, none doubled), the exports of the real `downloaded_reports` + `exported_reports` assets are byte-identical
to a clean run's, and every call made twice (answered with data twice, on the sandbox's timeline) is
of a page in flight, measured from outside, at a kill or rebalance between its two calls. `make soak` runs the same trials for 100 seeds on a bigger
workload.
"""

from __future__ import annotations

import dataclasses

import pytest

from reporting_assets_tests.reliability import trials
from reporting_assets_tests.reliability.conftest import record

SEEDS = range(10)  # `make soak` runs 100 seeds of a bigger workload
# The small workload's sites and two GA4 properties on one topic, downloaded by one consumer group.
BOTH = dataclasses.replace(trials.SMALL, name="both-partners", properties=(("123456", 120), ("234567", 30)))


def test_the_clean_run_is_exactly_the_partner_truth(clean_run: trials.TrialResult):
    assert clean_run.rows_lost == 0 and clean_run.rows_doubled == 0
    assert clean_run.kills == [] and clean_run.restarts == 0
    assert clean_run.unexplained == [], trials.describe(clean_run)  # only start-up rebalances may repeat a call
    assert clean_run.throttled > 0, "the workload is meant to meet a few 429s"
    # Pages observed, not only computed from the configuration: the files landed and the calls answered.
    landed = [p for p in (clean_run.data_dir / "landing").rglob("*.parquet") if not p.name.startswith(".")]
    stats = clean_run.sandbox_stats
    answered = stats["status_counts"].get("200", 0) - stats["repeat_successes"]
    assert len(landed) == answered == clean_run.pages == 26
    assert {"search_analytics/2026-11-01.csv", "search_analytics/2026-11-02.json"} <= {
        name.removeprefix("exports/") for name in clean_run.export_digests
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_crash_trial(seed: int, trials_env: trials.TrialEnv, clean_run: trials.TrialResult):
    """Search Console's and GA4's requests on one topic at once, consumers SIGKILLed at seeded moments."""
    plan = trials.Plan.seeded(seed, BOTH, BOTH.pages())
    result = trials.run_trial(trials_env, BOTH, seed, plan)
    record("crash trials (make test, small workload and two GA4 properties)", result)
    found = trials.problems(result, clean_run)
    assert found == [], trials.describe(result)
    # GA4's rows are counted too: more rows than Search Console's alone, none lost or doubled.
    assert result.rows_lost == result.rows_doubled == 0 and result.rows_expected > clean_run.rows_expected
    assert len(result.kills) == len(plan.steps), "every planned kill happened before the topic drained"
    assert result.export_digests == clean_run.export_digests  # Search Console's exports, as without GA4
    trials.cleanup(result)


def test_a_consumer_killed_after_landing_a_page_but_before_committing_it_repeats_no_call(
    trials_env: trials.TrialEnv, clean_run: trials.TrialResult
):
    """The worst moment, hit exactly: the page and its continuation are written, the offset is not committed.

    The consumer SIGKILLs itself right after its 3rd page landed (one call at a time, so nothing else
    is in flight). Its successor is handed that page's message again: it must see the page is landed
    by the same chain and skip it, and the continuation page, now sent twice, must run once.
    Before the fix each re-run page sent its continuation again and every later page of the chain
    was downloaded twice.
    """
    workload = dataclasses.replace(trials.SMALL, name="worst-moment", consumers=1, concurrency=1)
    result = trials.run_trial(trials_env, workload, seed=None, plan=trials.Plan(), first={"die_after_landing": 3})
    record("worst-moment kill", result)
    assert trials.problems(result, clean_run) == [], trials.describe(result)
    assert result.restarts >= 1, "the first consumer did not die"
    assert result.sandbox_stats["repeat_successes"] == 0, trials.describe(result)
    assert sum(stats["duplicates"] for stats in result.consumer_stats) >= 1
    assert result.export_digests == clean_run.export_digests
    trials.cleanup(result)
