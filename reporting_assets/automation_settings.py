"""Settings of the sensors, schedules and lag checks, from environment variables (defaults for production).

Read once when the code location loads (like the partitions' start date): a changed value needs a
reload of the code location (`dagster dev` restart or "Reload" in the UI).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from reporting_assets.settings import SettingError
from reporting_assets.settings import env_number as _number

_TRUE = {"1", "true", "yes", "on", "running"}
_FALSE = {"0", "false", "no", "off", "stopped"}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise SettingError(f"{name}={raw!r} is not one of {sorted(_TRUE | _FALSE)}")


def _cron(env: Mapping[str, str], name: str, default: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    value = (env.get(name) or default).strip()
    if not is_valid_cron_string(value):
        raise SettingError(f"{name}={value!r} is not a cron expression (e.g. '0 6 * * *')")
    return value


@dataclass(frozen=True)
class AutomationSettings:
    # sensors
    sensors_running: bool = True  # default status of the four sensors (the UI can still stop/start each)
    sensor_interval_s: int = 30  # minimum_interval_seconds of every sensor
    lag_max_messages: int = 100_000  # lag check fails above this many uncommitted requests
    lag_max_age_s: int = 6 * 3600  # ... or when the oldest uncommitted request is older than this
    download_max_partitions_per_run: int = 10_000  # (date, account) partitions per downloaded_reports run
    landing_check_budget_s: float = 2.0  # time per tick for landing-zone checks while the topic is busy
    run_max_retries: int = 2  # dagster/max_retries of sensor-launched downloaded/exported runs
    # consumers launched by the lag sensor
    consumers: int = 2
    consumer_idle_timeout_s: float = 10.0
    consumer_qps_per_account: float = 10.0
    consumer_max_runtime_s: float = 3000.0
    # schedules
    schedules_running: bool = True
    lateness_days: int = 3  # Search Console data is complete after 2-3 days
    enqueue_cron: str = "0 6 * * *"
    accounts_cron: str = "0 5 * * *"
    schedule_timezone: str = "UTC"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AutomationSettings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            sensors_running=_flag(env, "REPORTING_SENSORS_RUNNING", d.sensors_running),
            sensor_interval_s=int(_number(env, "REPORTING_SENSOR_INTERVAL_S", d.sensor_interval_s, 1)),
            lag_max_messages=int(_number(env, "REPORTING_LAG_MAX_MESSAGES", d.lag_max_messages, 0)),
            lag_max_age_s=int(_number(env, "REPORTING_LAG_MAX_AGE_S", d.lag_max_age_s, 0)),
            download_max_partitions_per_run=int(
                _number(env, "REPORTING_DOWNLOAD_MAX_PARTITIONS_PER_RUN", d.download_max_partitions_per_run, 1)
            ),
            landing_check_budget_s=_number(env, "REPORTING_LANDING_CHECK_BUDGET_S", d.landing_check_budget_s, 0, float),
            run_max_retries=int(_number(env, "REPORTING_RUN_MAX_RETRIES", d.run_max_retries, 0)),
            consumers=int(_number(env, "REPORTING_CONSUMERS", d.consumers, 1)),
            consumer_idle_timeout_s=_number(
                env, "REPORTING_CONSUMER_IDLE_TIMEOUT_S", d.consumer_idle_timeout_s, 0, float
            ),
            consumer_qps_per_account=_number(
                env, "REPORTING_CONSUMER_QPS_PER_ACCOUNT", d.consumer_qps_per_account, 0.001, float
            ),
            consumer_max_runtime_s=_number(env, "REPORTING_CONSUMER_MAX_RUNTIME_S", d.consumer_max_runtime_s, 1, float),
            schedules_running=_flag(env, "REPORTING_SCHEDULES_RUNNING", d.schedules_running),
            lateness_days=int(_number(env, "REPORTING_LATENESS_DAYS", d.lateness_days, 0)),
            enqueue_cron=_cron(env, "REPORTING_ENQUEUE_CRON", d.enqueue_cron),
            accounts_cron=_cron(env, "REPORTING_ACCOUNTS_CRON", d.accounts_cron),
            schedule_timezone=(env.get("REPORTING_SCHEDULE_TIMEZONE") or d.schedule_timezone).strip(),
        )

    def consumer_run_config(self) -> dict:
        """Run config of a `download_requests` run launched by the lag sensor."""
        return {
            "ops": {
                "plan_consumers": {"config": {"consumers": self.consumers}},
                "consume_requests": {
                    "config": {
                        "idle_timeout_s": self.consumer_idle_timeout_s,
                        "qps_per_account": self.consumer_qps_per_account,
                        "max_runtime_s": self.consumer_max_runtime_s,
                    }
                },
            }
        }
