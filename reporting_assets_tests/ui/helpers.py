"""`dagster dev` as a subprocess, its GraphQL API, headless Chromium, and process-tree kills."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from reporting_assets_tests import helpers

T = TypeVar("T")

# The UI is polled through GraphQL: twice a second is plenty.
wait_for = functools.partial(helpers.wait_for, every_s=0.5)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
LOCATION = "reporting_assets"
REPOSITORY = "__repository__"


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def process_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of `pid` from /proc/<pid>/stat; None if gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def is_dead(pid: int, started: int) -> bool:
    """Whether the process `pid` that started at `started` has ended: its /proc entry is gone, is a zombie
    (dead, waiting for its parent to reap it), or belongs to a newer process that reused the pid."""
    stat = process_stat(pid)
    return stat is None or stat[1] != started or stat[0] in ("Z", "X")


def kill_tree(pid: int, timeout_s: float = 30) -> list[int]:
    """SIGKILL `pid` and everything below it at once, like a machine losing the run; returns the pids
    confirmed dead, once every one of them is (fails naming those still alive after `timeout_s`)."""
    targets: dict[int, int] = {}
    for target in [pid, *descendants(pid)]:
        stat = process_stat(target)
        if stat is not None and stat[0] not in ("Z", "X"):
            targets[target] = stat[1]
    for target in targets:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(
        lambda: all(is_dead(p, started) for p, started in targets.items()),
        timeout_s,
        lambda: f"killed processes to die; still alive: {[p for p, s in targets.items() if not is_dead(p, s)]}",
    )
    return sorted(p for p, started in targets.items() if is_dead(p, started))


class DagsterDev:
    """`dagster dev -w workspace.yaml` (webserver, daemon, code server) with its own DAGSTER_HOME."""

    def __init__(self, home: Path, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @staticmethod
    def prepare_home(home: Path, overrides: str = "") -> None:
        """The project's dagster.yaml (plus `overrides`), and the community modal marked as seen."""
        (home / ".nux").mkdir(parents=True, exist_ok=True)
        (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text() + overrides)

    def start(self, timeout_s: float = 90) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(REPO_ROOT / ".venv" / "bin" / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the runs it spawns go down with it
        )
        log.close()
        wait_for(self._answers, timeout_s, f"dagster dev on {self.url} (log {self.log_path})")
        wait_for(self._location_loaded, timeout_s, f"code location {LOCATION} to load (log {self.log_path})")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _location_loaded(self) -> bool:
        data = self.graphql(
            """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )
        for entry in data["workspaceOrError"].get("locationEntries", []):
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                if entry["locationOrLoadError"]["__typename"] == "PythonError":
                    raise AssertionError(f"code location failed to load: {entry['locationOrLoadError']['message']}")
                return True
        return False

    def stop(self, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left of the group
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- GraphQL ------------------------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def sensor_selector(self, name: str) -> dict[str, str]:
        return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}

    def sensor_status(self, name: str) -> str:
        data = self.graphql(
            """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
                 __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
            {"s": self.sensor_selector(name)},
        )
        return data["sensorOrError"]["sensorState"]["status"]

    def ticks(self, kind: str, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ticks of a sensor or schedule (`kind`), newest first: timestamp, status, run ids."""
        field, selector_type, state = (
            ("sensorOrError", "SensorSelector", "sensorState")
            if kind == "sensor"
            else ("scheduleOrError", "ScheduleSelector", "scheduleState")
        )
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, f"{kind}Name": name}
        data = self.graphql(
            f"""query($s: {selector_type}!) {{ {field}({kind}Selector: $s) {{
                 __typename ... on {kind.capitalize()} {{ {state} {{ ticks(limit: {limit}) {{
                   timestamp status runIds skipReason }} }} }} ... on PythonError {{ message }} }} }}""",
            {"s": selector},
        )[field]
        assert data["__typename"] == kind.capitalize(), data
        return data[state]["ticks"]

    def stop_sensor(self, name: str) -> None:
        data = self.graphql(
            """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
                 ... on Sensor { jobOriginId sensorState { selectorId } } } }""",
            {"s": self.sensor_selector(name)},
        )["sensorOrError"]
        result = self.graphql(
            """mutation($origin: String!, $selector: String!) {
                 stopSensor(jobOriginId: $origin, jobSelectorId: $selector) {
                   __typename ... on StopSensorMutationResult { instigationState { status } }
                   ... on PythonError { message } } }""",
            {"origin": data["jobOriginId"], "selector": data["sensorState"]["selectorId"]},
        )["stopSensor"]
        assert result["__typename"] == "StopSensorMutationResult", result
        assert result["instigationState"]["status"] == "STOPPED", result

    def start_sensor(self, name: str) -> None:
        result = self.graphql(
            """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
                 __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
            {"s": self.sensor_selector(name)},
        )["startSensor"]
        assert result["__typename"] == "Sensor" and result["sensorState"]["status"] == "RUNNING", result

    def stop_schedule(self, name: str) -> None:
        """The UI's toggle of a schedule, to off."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": name}
        schedule = self.graphql(
            """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
                 __typename ... on Schedule { id } ... on PythonError { message } } }""",
            {"s": selector},
        )["scheduleOrError"]
        assert schedule["__typename"] == "Schedule", schedule
        result = self.graphql(
            """mutation($id: String!) { stopRunningSchedule(id: $id) {
                 __typename ... on ScheduleStateResult { scheduleState { status } }
                 ... on PythonError { message } } }""",
            {"id": schedule["id"]},
        )["stopRunningSchedule"]
        assert result["__typename"] == "ScheduleStateResult", result
        assert result["scheduleState"]["status"] == "STOPPED", result

    def launch_assets(self, asset_keys: list[str], tags: Mapping[str, str] | None = None) -> str:
        """Materialize assets (the UI's Materialize button, or its launchpad with `tags`); returns the run id."""
        return self.launch_job("__ASSET_JOB", tags, asset_selection=[{"path": [key]} for key in asset_keys])

    def launch_job(
        self, job_name: str, tags: Mapping[str, str] | None = None, asset_selection: list[dict] | None = None
    ) -> str:
        """Launch a job (the launchpad's "Launch run" with its default config); returns the run id."""
        selector: dict[str, Any] = {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": job_name,
        }
        if asset_selection is not None:
            selector["assetSelection"] = asset_selection
        result = self.graphql(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                 __typename ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }""",
            {
                "p": {
                    "selector": selector,
                    "mode": "default",
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
                }
            },
        )["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def launch_backfill(self, asset_key: str, partition_names: list[str]) -> str:
        """`launchPartitionBackfill` (the UI's "Launch backfill"), mutation text from dagster_graphql."""
        from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

        result = self.graphql(
            LAUNCH_PARTITION_BACKFILL_MUTATION,
            {"backfillParams": {"assetSelection": [{"path": [asset_key]}], "partitionNames": partition_names}},
        )["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def backfill_status(self, backfill_id: str) -> str:
        data = self.graphql(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                 ... on PartitionBackfill { status } } }""",
            {"id": backfill_id},
        )
        return data["partitionBackfillOrError"]["status"]


class Chromium:
    """Debian's chromium, headless, with a fresh profile per page."""

    def __init__(self, profile_root: Path, window: str = "1400,900", budget_ms: int = 10_000) -> None:
        self.profile_root = profile_root
        self.window = window
        self.budget_ms = budget_ms
        self._count = 0

    @staticmethod
    def require() -> str:
        if not Path(CHROMIUM).exists():
            raise AssertionError(
                f"{CHROMIUM} is missing: run `make ui-setup` (apt-get install -y chromium), which `make test` does"
            )
        return CHROMIUM

    def _args(self, window: str | None = None) -> list[str]:
        self._count += 1
        profile = self.profile_root / f"profile-{self._count}"
        return [
            self.require(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={window or self.window}",
            f"--virtual-time-budget={self.budget_ms}",
        ]

    def page(self, url: str, screenshot: Path, window: str | None = None, timeout_s: float = 90) -> str:
        """Render `url` once: its DOM (returned) and a screenshot (written to `screenshot`)."""
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)
        done = subprocess.run(
            [*self._args(window), "--dump-dom", f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0 or not screenshot.exists():
            raise AssertionError(f"chromium {url} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode(errors="replace")

    def page_text(
        self,
        url: str,
        screenshot: Path,
        ready: Callable[[str], bool],
        window: str | None = None,
        deadline_s: float = 180,
    ) -> str:
        """The page's visible text once `ready(text)` holds, rendering again until then.

        A render stops at the virtual-time budget; on a loaded machine the UI's queries may
        not have answered by then ("Loading...", "- partitions"), so one render is not enough.
        """
        deadline = time.monotonic() + deadline_s
        while True:
            text = visible_text(self.page(url, screenshot, window))
            if ready(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} never showed what was expected within {deadline_s:.0f} s: {text[:3000]}")

    def dump_dom(self, url: str, timeout_s: float = 90) -> str:
        done = subprocess.run([*self._args(), "--dump-dom", url], capture_output=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise AssertionError(f"chromium --dump-dom {url} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode(errors="replace")

    def screenshot(self, url: str, path: Path, timeout_s: float = 90) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [*self._args(), f"--screenshot={path}", url], capture_output=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0 or not path.exists():
            raise AssertionError(
                f"chromium --screenshot {url} exited {done.returncode}: {done.stderr.decode()[-2000:]}"
            )
        return path


def visible_text(dom: str) -> str:
    """The page's text without tags, scripts and styles, whitespace collapsed."""
    dom = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", dom)
    text = re.sub(r"(?s)<[^>]+>", " ", dom)
    return re.sub(r"\s+", " ", text.replace("&nbsp;", " "))
