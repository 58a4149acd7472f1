"""Every setting declared once: the environment model, `.env.example`, resources through dg.EnvVar,
and the consumer tuning shared by the Dagster config, the sensors' run config and the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from reporting_assets.core.consumer.tuning import ConsumerSettings, ConsumerTuning
from reporting_assets.defs.downloads.jobs import ConsumerConfig, ConsumerPlanConfig, consumer_run_config
from reporting_assets.defs.resources import resources_from
from reporting_assets.settings import SettingError, Settings, env_example, variables

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_variable_at_its_default():
    assert (REPO_ROOT / ".env.example").read_text() == env_example()
    text = env_example()
    for variable, (default, _) in variables().items():
        assert f"# {variable}={default}\n" in text
    # the variables the README documents are among them
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "REPORTING_START_DATE",
        "REPORTING_CONSUMERS",
        "REPORTING_CONSUMER_QPS_PER_ACCOUNT",
    ):
        assert name in variables()


def test_defaults_and_values_from_the_environment():
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env(
        {
            "REPORTING_TOPIC_PARTITIONS": "8",
            "REPORTING_START_DATE": "2026-01-02",
            "REPORTING_SENSORS_RUNNING": "stopped",
            "REPORTING_LANDING_CHECK_BUDGET_S": "0.5",
            "REPORTING_CONSUMERS": "3",
            "REPORTING_CONSUMER_CONCURRENCY": "8",
            "REPORTING_CONSUMER_QPS_PER_ACCOUNT": "2.5",
            "REPORTING_LAG_MAX_MESSAGES": " ",  # blank: the default
            "REPORTING_ROW_LIMIT": "5000",
        }
    )
    assert settings.topic_partitions == 8 and settings.start_date == dt.date(2026, 1, 2)
    assert settings.sensors_running is False and settings.landing_check_budget_s == 0.5
    assert settings.consumer == ConsumerTuning(consumers=3, concurrency=8, qps_per_account=2.5)
    assert settings.lag_max_messages == Settings().lag_max_messages
    assert settings.row_limit == 5000 and Settings().row_limit == 25_000
    assert Settings(lateness_days=5).lateness_days == 5  # by field name too (tests, callers)


def test_an_empty_partner_endpoint_means_google_itself():
    def endpoint(env: dict[str, str]) -> str | None:
        return resources_from(Settings.from_env(env), env_vars=False)["partner"].partner().api_endpoint

    assert endpoint({}) == "http://127.0.0.1:8085/"
    assert endpoint({"PARTNER_API_ENDPOINT": ""}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REPORTING_TOPIC_PARTITIONS": "many"}, "REPORTING_TOPIC_PARTITIONS='many' is not an integer"),
        ({"REPORTING_TOPIC_PARTITIONS": "0"}, "REPORTING_TOPIC_PARTITIONS=0 must be >= 1"),
        ({"PARTNER_NUM_RETRIES": "-1"}, "PARTNER_NUM_RETRIES=-1 must be >= 0"),
        ({"REPORTING_LANDING_CHECK_BUDGET_S": "soon"}, "REPORTING_LANDING_CHECK_BUDGET_S='soon' is not a number"),
        ({"REPORTING_SENSORS_RUNNING": "maybe"}, "REPORTING_SENSORS_RUNNING='maybe' is not one of"),
        ({"REPORTING_ENQUEUE_CRON": "daily"}, "REPORTING_ENQUEUE_CRON='daily' is not a cron expression"),
        ({"REPORTING_START_DATE": "2026-13-01"}, "REPORTING_START_DATE='2026-13-01' is not a YYYY-MM-DD date"),
        ({"REPORTING_ROW_LIMIT": "25001"}, "REPORTING_ROW_LIMIT=25001 must be <= 25000"),
        ({"REPORTING_CONSUMERS": "0"}, "REPORTING_CONSUMERS=0 must be >= 1"),
        ({"REPORTING_CONSUMER_QPS_PER_ACCOUNT": "0"}, "REPORTING_CONSUMER_QPS_PER_ACCOUNT=0 must be > 0"),
        ({"REPORTING_CONSUMER_WINDOW": "wide"}, "REPORTING_CONSUMER_WINDOW='wide' is not an integer"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable(env, message):
    with pytest.raises(SettingError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_code_location_passes_set_variables_as_env_vars(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092")
    monkeypatch.setenv("PARTNER_CREDENTIALS_FILE", "/secrets/key.json")
    monkeypatch.setenv("REPORTING_TOPIC_PARTITIONS", "6")
    monkeypatch.delenv("REPORTING_DATA_DIR", raising=False)
    resources = resources_from(Settings.from_env(), env_vars=True)
    kafka, partner, warehouse = resources["kafka"], resources["partner"], resources["warehouse"]
    # Unresolved until launch: the UI shows the variable's name, never its value.
    assert (
        isinstance(kafka.bootstrap_servers, dg.EnvVar)
        and kafka.bootstrap_servers.env_var_name == "KAFKA_BOOTSTRAP_SERVERS"
    )
    assert isinstance(partner.credentials_file, dg.EnvVar)
    assert "/secrets/key.json" not in repr(partner.credentials_file.env_var_name)
    assert warehouse.data_dir == Settings().data_dir  # not set: the declared default

    # Resolved at launch, in a run:
    @dg.asset
    def probe(kafka: dg.ConfigurableResource) -> dg.MaterializeResult:  # type: ignore[valid-type]
        return dg.MaterializeResult(metadata={"servers": kafka.bootstrap_servers, "partitions": kafka.topic_partitions})

    result = dg.materialize([probe], resources={"kafka": kafka})
    metadata = result.asset_materializations_for_node("probe")[0].metadata
    assert metadata["servers"].value == "broker-1:9092" and metadata["partitions"].value == 6


def test_the_consumer_tuning_has_one_home():
    tuning = ConsumerTuning(consumers=3, concurrency=6, qps_per_account=2.0, global_qps=12.0)
    run_config = consumer_run_config(tuning)
    plan = run_config["ops"]["plan_consumers"]["config"]
    consume = run_config["ops"]["consume_requests"]["config"]
    assert ConsumerTuning(**plan, **consume) == tuning
    # The Dagster configs carry the same fields, defaults and descriptions.
    dagster_fields = {**ConsumerPlanConfig.model_fields, **ConsumerConfig.model_fields}
    assert set(dagster_fields) == set(ConsumerTuning.model_fields)
    for name, field in ConsumerTuning.model_fields.items():
        assert dagster_fields[name].default == field.default and dagster_fields[name].description == field.description
    # A consumer knows the group's whole budget and how many share it (its share follows the lag).
    settings = ConsumerSettings.for_topics(tuning, "requests", "requests.dead", "requests.delay", consumers=3)
    assert settings.global_qps == 12.0 and settings.consumers == 3
    assert settings.concurrency == 6 and settings.join_grace_s == 15.0
    with pytest.raises(ValueError, match="concurrency"):
        ConsumerTuning(concurrency=0)


def test_run_config_bounds_are_declared_on_the_config():
    from pydantic import ValidationError

    from reporting_assets.defs.requests.assets import RequestConfig

    assert RequestConfig().row_limit == 25_000  # Google's maximum by default: the fewest calls
    assert RequestConfig(row_limit=1_000).row_limit == 1_000
    for bad in (0, 25_001):
        with pytest.raises(ValidationError, match="row_limit"):
            RequestConfig(row_limit=bad)


def test_the_cli_takes_the_environments_tuning_and_its_flags_win():
    from reporting_assets import cli

    settings = Settings.from_env(
        {"REPORTING_CONSUMERS": "3", "REPORTING_CONSUMER_QUOTA_WAIT_S": "60", "REPORTING_ROW_LIMIT": "5000"}
    )
    dates = ["run", "--start-date", "2026-11-01", "--end-date", "2026-11-02"]
    from_env = cli.plan(cli.parse_args(dates), settings)
    assert from_env.tuning == ConsumerTuning(consumers=3, quota_wait_s=60.0) and from_env.row_limit == 5000
    flagged = cli.plan(cli.parse_args([*dates, "--consumers", "1", "--qps", "2.5", "--row-limit", "100"]), settings)
    assert flagged.tuning == ConsumerTuning(consumers=1, qps_per_account=2.5, quota_wait_s=60.0)
    assert flagged.row_limit == 100 and flagged.dates == ["2026-11-01", "2026-11-02"]


def test_the_demo_takes_the_environments_tuning_over_its_own_defaults():
    from reporting_assets.demo import DEMO_TUNING, demo_tuning

    assert demo_tuning({}) == ConsumerTuning(**DEMO_TUNING)
    env = {"REPORTING_CONSUMERS": "3", "REPORTING_CONSUMER_QPS_PER_ACCOUNT": "2", "REPORTING_CONSUMER_WINDOW": "8"}
    tuned = demo_tuning(env)
    assert (tuned.consumers, tuned.qps_per_account, tuned.window) == (3, 2.0, 8)
    assert tuned.idle_timeout_s == DEMO_TUNING["idle_timeout_s"]  # unset: the demo's own
    assert demo_tuning(env, consumers=1).consumers == 1  # --consumers wins


def test_reporting_reports_all_asks_the_schedule_and_backfills_for_every_report_of_the_catalog(tmp_path):
    # REPORTING_REPORTS is the default of report_requests' `reports`: what the daily schedule and a
    # backfill from the UI enqueue. `all` is the catalog in force, a user's own entries included.
    from reporting_assets.core.reports import SHIPPED_CATALOG, load_catalog

    catalog = tmp_path / "reports.yaml"
    catalog.write_text(
        SHIPPED_CATALOG.read_text() + "  - name: mobile_pages\n    dimensions: [date, page]\n"
        "    dimension_filter_groups: [{filters: [{dimension: device, operator: equals, expression: MOBILE}]}]\n"
    )
    names = Settings.from_env({"REPORTING_REPORTS": "all", "REPORTING_REPORTS_FILE": str(catalog)}).report_names()
    assert names == list(load_catalog(catalog).reports) and names[-1] == "mobile_pages"
    assert set(load_catalog(SHIPPED_CATALOG).reports) < set(names)
