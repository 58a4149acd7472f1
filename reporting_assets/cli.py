"""`python -m reporting_assets run`: the pipeline headless for a date range, after checking every setting.

All checks run before anything is written: a bad setting ends with one line naming it and exit 2.
`python -m reporting_assets reports` lists the report catalog; `plan` says what a `run` of the same flags
would enqueue, call and take, and `status` where a range stands; both write nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from reporting_assets.core.consumer.tuning import ConsumerTuning
from reporting_assets.core.messages import MAX_ROW_LIMIT, InvalidRequestError, parse_date
from reporting_assets.core.reports import CatalogError, UnknownReportError, get_report, load_catalog
from reporting_assets.settings import Settings, consumer_variables

EXIT_BAD_SETTING = 2


class SettingProblem(Exception):
    """A setting that cannot work; str() is the one line shown to the user."""


@dataclass(frozen=True)
class RunPlan:
    dates: list[str]
    reports: list[str]
    accounts: list[str] | None
    tuning: ConsumerTuning
    row_limit: int
    refresh: bool = False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reporting_assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reports", help="list the report catalog (REPORTING_REPORTS_FILE, else the shipped reports.yaml)")
    run = sub.add_parser("run", help="enqueue, download, load and export a date range")
    plan_ = sub.add_parser(
        "plan", help="what a run of the same flags would enqueue, call and take, before it spends quota; writes nothing"
    )
    status = sub.add_parser(
        "status",
        help="per report, date and account: on the topics, downloaded, dead-lettered, exported; writes nothing",
    )
    for command in (run, plan_, status):
        range_arguments(command)
    for command in (run, plan_):
        download_arguments(command)
    status.set_defaults(row_limit=None, refresh=False, **dict.fromkeys(TUNING_FLAGS))
    run.add_argument(
        "--allow-incomplete",
        action="store_true",
        help=(
            "export a date even though some of its requests are dead-lettered (their rows missing); without it "
            "such a date is not exported and the command says which and why"
        ),
    )
    run.add_argument("--log-level", default="WARNING", help="Dagster's log level of the runs")
    run.add_argument(
        "--verbose",
        action="store_true",
        help="the libraries' output (Dagster, Spark, Kafka) on the console; without it, in data/logs/ (named at the end)",
    )
    return parser.parse_args(argv)


def range_arguments(parser: argparse.ArgumentParser) -> None:
    """Which partitions: the flags `run`, `plan` and `status` share."""
    parser.add_argument("--start-date", required=True, help="first date, YYYY-MM-DD")
    parser.add_argument("--end-date", required=True, help="last date, YYYY-MM-DD (inclusive)")
    parser.add_argument(
        "--reports",
        default="search_analytics",
        help="comma-separated report names, or `all` (every report of the catalog: `python -m reporting_assets reports`)",
    )
    parser.add_argument("--accounts", default="", help="comma-separated accounts (default: all readable)")


def download_arguments(parser: argparse.ArgumentParser) -> None:
    """How to download them: the flags `run` and `plan` share."""
    parser.add_argument(
        "--row-limit",
        type=int,
        default=None,
        help=f"rows per page (default: REPORTING_ROW_LIMIT, else {MAX_ROW_LIMIT})",
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help=(
            "download again what is already downloaded; without it a rerun continues (after a crash, only "
            "what is left is called)"
        ),
    )
    for field, flag in TUNING_FLAGS.items():  # every ConsumerTuning field, described where it is declared
        declared = ConsumerTuning.model_fields[field]
        default = declared.default_factory() if declared.default_factory else declared.default
        parser.add_argument(
            flag,
            dest=field,
            default=None,  # text: ConsumerTuning checks and converts it, as it does the environment's
            metavar=field.upper(),
            help=f"{declared.description} (default: {consumer_variables()[field]}, else {default})",
        )


def plan(args: argparse.Namespace, settings: Settings) -> RunPlan:
    """The run the flags ask for, on top of the environment's settings; SettingProblem names a bad flag."""
    first_partition_date = settings.start_date.isoformat()
    try:
        start = parse_date(args.start_date, "--start-date")
        end = parse_date(args.end_date, "--end-date")
    except InvalidRequestError as exc:
        raise SettingProblem(str(exc)) from None
    if start > end:
        raise SettingProblem(f"--start-date {start} is after --end-date {end}")
    if start < dt.date.fromisoformat(first_partition_date):
        raise SettingProblem(
            f"--start-date {start} is before the first daily partition {first_partition_date} (REPORTING_START_DATE)"
        )
    if end >= dt.date.today():
        raise SettingProblem(f"--end-date {end} is not a complete day yet (today is {dt.date.today()})")
    reports = [name.strip() for name in args.reports.split(",") if name.strip()]
    try:
        if reports == ["all"]:
            reports = list(load_catalog().reports)
        for name in reports:
            get_report(name)
    except UnknownReportError as exc:
        raise SettingProblem(f"--reports: {exc}") from None
    except CatalogError as exc:
        raise SettingProblem(str(exc)) from None
    if not reports:
        raise SettingProblem("--reports is empty")
    tuning = consumer_tuning(args, settings.consumer)
    days = (end - start).days + 1
    dates = [(start + dt.timedelta(days=offset)).isoformat() for offset in range(days)]
    accounts = [a.strip() for a in args.accounts.split(",") if a.strip()] or None
    row_limit = settings.row_limit if args.row_limit is None else args.row_limit
    if not 1 <= row_limit <= MAX_ROW_LIMIT:
        raise SettingProblem(
            f"--row-limit must be within 1..{MAX_ROW_LIMIT} (Search Console's maximum), got {row_limit}"
        )
    return RunPlan(dates, reports, accounts, tuning, row_limit, refresh=args.refresh)


# ConsumerTuning field -> the CLI flag that sets it: its name, `--qps` for the pace.
TUNING_FLAGS = {
    field: "--qps" if field == "qps_per_account" else f"--{field.replace('_', '-')}"
    for field in ConsumerTuning.model_fields
}


def consumer_tuning(args: argparse.Namespace, base: ConsumerTuning) -> ConsumerTuning:
    """The environment's consumer tuning (REPORTING_CONSUMER_*) with the flags given on top, checked by
    ConsumerTuning; the error names the flag."""
    values = {field: getattr(args, field) for field in TUNING_FLAGS if getattr(args, field, None) is not None}
    try:
        return ConsumerTuning(**{**base.model_dump(), **values})
    except ValidationError as error:
        problem = error.errors()[0]
        flag = TUNING_FLAGS[str(problem["loc"][0])]
        limits = problem.get("ctx") or {}
        if "gt" in limits or "ge" in limits:
            bound = f"> {limits['gt']}" if "gt" in limits else f">= {limits['ge']}"
            raise SettingProblem(f"{flag} must be {bound}, got {problem.get('input')}") from None
        raise SettingProblem(f"{flag}: {problem['msg']}, got {problem.get('input')!r}") from None


def preflight(resources: dict, plan_: RunPlan) -> list[str]:
    """Reach the broker and the partner, read the credentials; returns the readable accounts."""
    import google.auth.exceptions
    from googleapiclient.errors import HttpError

    from reporting_assets.core.partner import PartnerConfigError, credentials_refused
    from reporting_assets.resources.kafka import KafkaUnavailableError

    try:
        resources["kafka"].check_reachable(timeout_s=10)
    except KafkaUnavailableError as exc:
        raise SettingProblem(str(exc).splitlines()[0]) from None
    partner = resources["partner"]
    where = partner.api_endpoint or "Google's API"
    try:
        sites = partner.client().list_sites()
    except PartnerConfigError as exc:
        raise SettingProblem(str(exc)) from None
    except (google.auth.exceptions.RefreshError, google.auth.exceptions.InvalidOperation) as exc:
        raise SettingProblem(credentials_refused(f"{type(exc).__name__}: {exc}")) from None
    except HttpError as exc:
        if exc.status_code == 401:
            raise SettingProblem(credentials_refused(f"HTTP 401 from {where}")) from None
        raise SettingProblem(
            f"partner at {where} (PARTNER_API_ENDPOINT) refused sites.list: HTTP {exc.status_code}"
        ) from None
    except (OSError, ValueError) as exc:
        raise SettingProblem(
            f"partner not reachable at {where} (PARTNER_API_ENDPOINT): {type(exc).__name__}: {exc}"
        ) from None
    readable = [site.url for site in sites if site.readable]
    if plan_.accounts:
        unknown = [a for a in plan_.accounts if a not in readable]
        if unknown:
            raise SettingProblem(f"--accounts: unknown or unreadable {unknown} (readable: {readable})")
    return readable


def catalog_lines() -> list[str]:
    """One line per report: name, dimensions, search type, data state, then what else shapes its query."""
    specs = list(load_catalog().reports.values())
    width = max(len(spec.name) for spec in specs)
    lines = []
    for spec in specs:
        extras = [f"aggregation {spec.aggregation_type}"] if spec.aggregation_type != "auto" else []
        extras += ["filtered"] if spec.filters else []
        line = f"{spec.name:<{width}}  {','.join(spec.dimensions):<40}  {spec.search_type:<10}  {spec.data_state:<10}"
        lines.append(" ".join([line, *extras, spec.description]).rstrip())
    return lines


def cost_lines(resources: dict, run_plan: RunPlan, accounts: Sequence[str]) -> list[str]:
    """`plan`: what the run would enqueue and call, read from the topics and the landing zone only."""
    from reporting_assets.core.cost import run_cost, selection
    from reporting_assets.core.rerun import on_the_way, plan_enqueue, unavailable_reason

    kafka = resources["kafka"]
    left = () if run_plan.refresh else kafka.cluster().uncommitted_values([kafka.request_topic, kafka.delay_topic])
    zone = resources["warehouse"].landing_zone()
    pairs = selection(run_plan.dates, accounts)
    enqueue = plan_enqueue(pairs, run_plan.reports, on_the_way(left, kafka.delay_topic), zone, run_plan.refresh)
    tuning = run_plan.tuning
    cost = run_cost(enqueue, zone, run_plan.row_limit, tuning.qps_per_account, tuning.global_qps)
    dates = f"{run_plan.dates[0]}..{run_plan.dates[-1]}"
    head = (
        f"plan for {dates} ({len(run_plan.dates)} days) x {len(accounts)} accounts x {len(run_plan.reports)} "
        f"reports ({', '.join(run_plan.reports)}): {len(pairs) * len(run_plan.reports)} partitions"
    )
    unavailable = (
        [f"  not available from Google: {unavailable_reason(enqueue.unavailable)}"] if enqueue.unavailable else []
    )
    return [head, *(f"  {line}" for line in cost.lines()), *unavailable, "nothing written"]


def status_lines(resources: dict, run_plan: RunPlan, accounts: Sequence[str]) -> list[str]:
    """`status`: one line per (report, date, account), from the topics and the landing zone; the consumer
    group's members say whether the requests left are being downloaded."""
    from reporting_assets.core.rerun import requests_on_the_way
    from reporting_assets.core.status import partition_status, tally

    kafka, warehouse = resources["kafka"], resources["warehouse"]
    left = requests_on_the_way(
        kafka.cluster().uncommitted_values([kafka.request_topic, kafka.delay_topic]), kafka.delay_topic
    )
    zone = warehouse.landing_zone()
    downloading = kafka.cluster().group_members() > 0
    statuses = [
        partition_status(zone, warehouse.exports_dir, left, (report, date, account), downloading)
        for report in run_plan.reports
        for date in run_plan.dates
        for account in accounts
    ]
    width = max((len(account) for account in accounts), default=0)
    return [*(status.line(width) for status in statuses), tally(statuses)]


def run_pipeline(args: argparse.Namespace, resources: dict, run_plan: RunPlan) -> tuple[int, dict, Any]:
    """Enqueue, download, load and export: (requests enqueued, the download's summary, what was loaded).
    A line as each step ends, the download's progress while it runs."""
    import dagster as dg

    from reporting_assets import runner
    from reporting_assets.core.reports import get_report, google_today
    from reporting_assets.core.rerun import unavailable_reason

    instance = dg.DagsterInstance.get()
    request = {"reports": run_plan.reports, "row_limit": run_plan.row_limit, "refresh": run_plan.refresh}
    request_config = {"ops": {"report_requests": {"config": request}}}
    accounts = runner.discover_accounts(instance, resources, args.log_level)
    chosen = run_plan.accounts or accounts
    unavailable = [
        (name, date, "")
        for name in run_plan.reports
        for date in run_plan.dates
        if not get_report(name).available_on(date, google_today())
    ]
    if unavailable:
        say(f"not available from Google, not asked for: {unavailable_reason(unavailable)}")
    enqueued = runner.enqueue(instance, resources, run_plan.dates, chosen, request_config, args.log_level)
    say(
        f"enqueue: {enqueued} requests ({len(run_plan.dates)} days x {len(chosen)} accounts x "
        f"{len(run_plan.reports)} reports)"
    )
    download = runner.download_watched(instance, resources["kafka"], run_plan.tuning, len(chosen), args.log_level)
    say(
        f"load and export: {len(run_plan.dates) * len(chosen) * len(run_plan.reports)} partitions, "
        f"{len(run_plan.dates)} dates"
    )
    loaded = runner.load_and_export(
        instance,
        resources,
        run_plan.dates,
        chosen,
        args.log_level,
        reports=run_plan.reports,
        allow_incomplete=args.allow_incomplete,
    )
    return enqueued, download, loaded


def say(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "reports":
        try:
            print("\n".join(catalog_lines()))
        except CatalogError as exc:
            print(f"reporting_assets: error: {exc}", file=sys.stderr)
            return EXIT_BAD_SETTING
        return 0
    from reporting_assets.core.partner import PartnerConfigError
    from reporting_assets.settings import SettingError, build_resources

    try:
        try:
            settings = Settings.from_env()
            resources = build_resources()
        except (SettingError, PartnerConfigError, ValueError) as exc:
            raise SettingProblem(str(exc).splitlines()[0]) from None
        run_plan = plan(args, settings)
        readable = preflight(resources, run_plan)
    except CatalogError as problem:  # one line per bad entry
        print(f"reporting_assets: error: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTING
    except SettingProblem as problem:
        print(f"reporting_assets: error: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTING

    if args.command == "plan":
        print("\n".join(cost_lines(resources, run_plan, run_plan.accounts or readable)))
        return 0
    if args.command == "status":
        print("\n".join(status_lines(resources, run_plan, run_plan.accounts or readable)))
        return 0

    from reporting_assets.console import failed, libraries_to, log_path

    log = log_path(settings.data_dir, "run")
    try:
        with libraries_to(log, verbose=args.verbose) as quiet:
            enqueued, download, loaded = run_pipeline(args, resources, run_plan)
    except Exception:
        if args.verbose:
            raise
        return failed(log, "reporting_assets")
    print(
        f"enqueued {enqueued} requests, {download['api_calls']} API calls, {loaded.rows} rows, "
        f"{loaded.dead_lettered} dead letters"
    )
    for name, path in sorted(loaded.exports.items()):
        print(f"  {name}: {path}")
    for date, why in sorted(loaded.held.items()):
        print(f"  not exported {date}: {why}")
    if quiet:
        print(f"  log (Dagster, Spark, Kafka): {quiet}")
    return 0 if loaded.dead_lettered == 0 and not loaded.held else 1
