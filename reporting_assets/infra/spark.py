"""A standalone Spark cluster on loopback: one master and one worker, from pyspark's own distribution.

No separate Spark download: the pyspark wheel ships `bin/spark-class` and Spark's jars, so the master
is `spark-class org.apache.spark.deploy.master.Master` and the worker `...deploy.worker.Worker`, run
with the machine's Java 17. Everything the cluster owns lives in one data dir:

    <data dir>/cluster.json        the ports it was started with (stop and status read them)
    <data dir>/master.pid, .log    the master JVM's pid and its output (log4j2 writes to the console)
    <data dir>/worker.pid, .log    the worker JVM's likewise
    <data dir>/work/               the worker's work dir: one folder per application and executor
                                   (the jars the executor fetched, its stdout and stderr)

The worker offers 1 core and 1g by default (the machine has 2 cores); an application's executor takes
them whole, so one application runs at a time.

    python -m reporting_assets.infra.spark start|stop|status [--data-dir data/spark-cluster]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reporting_assets.infra.ports import port_in_use

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXIT_NOT_RUNNING = 3
_MEMORY = re.compile(r"^\d+[mMgG]$")
_POLL_S = 0.2
_LOG_TAIL_LINES = 30


class SparkClusterError(RuntimeError):
    """The local Spark cluster could not be started, stopped or inspected."""


@dataclass(frozen=True)
class SparkClusterSettings:
    host: str = "127.0.0.1"
    port: int = 7077  # the master: spark://host:port
    webui_port: int = 8480  # the master's web UI and its JSON (/json/)
    worker_port: int = 7078
    worker_webui_port: int = 8481
    worker_cores: int = 1
    worker_memory: str = "1g"  # what executors may take (an executor asks 1g by default)
    daemon_memory: str = "512m"  # heap of the master and worker JVMs themselves
    data_dir: Path = Path("data/spark-cluster")

    def __post_init__(self) -> None:
        ports = {name: getattr(self, name) for name in ("port", "webui_port", "worker_port", "worker_webui_port")}
        for name, value in ports.items():
            if not 0 < value < 65536:
                raise ValueError(f"SparkClusterSettings.{name} must be a TCP port (1-65535), got {value}")
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"SparkClusterSettings ports must all differ, got {ports}")
        if self.worker_cores < 1:
            raise ValueError(f"SparkClusterSettings.worker_cores must be >= 1, got {self.worker_cores}")
        for name in ("worker_memory", "daemon_memory"):
            if not _MEMORY.match(getattr(self, name)):
                raise ValueError(f"SparkClusterSettings.{name} must look like 512m or 1g, got {getattr(self, name)!r}")
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())

    @property
    def master_url(self) -> str:
        """What SPARK_MASTER should say."""
        return f"spark://{self.host}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    @property
    def worker_webui_url(self) -> str:
        return f"http://{self.host}:{self.worker_webui_port}"


def spark_home() -> Path:
    """pyspark's package folder: a Spark distribution (bin/spark-class, jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def fetch_json(url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback http only
        return json.loads(response.read())


class _Daemon:
    """One JVM of the cluster (master or worker): its pid file, log and command line."""

    def __init__(self, name: str, main_class: str, data_dir: Path) -> None:
        self.name, self.main_class, self.data_dir = name, main_class, data_dir
        self.pid_file = data_dir / f"{name}.pid"
        self.log_file = data_dir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of this data dir's JVM if it is alive, else None (pids get reused after a crash)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not self._alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        ours = self.main_class.encode() in cmdline and _marker(self.data_dir).encode() in cmdline
        return pid if ours else None

    def launch(self, arguments: Sequence[str], env: dict[str, str]) -> int:
        command = [str(spark_home() / "bin" / "spark-class"), self.main_class, *arguments]
        with open(self.log_file, "ab") as log:
            log.write(f"\n---- {datetime.now(UTC).isoformat()} starting spark {self.name} ----\n".encode())
            log.flush()
            self.log_offset = log.tell()
            # spark-class execs the JVM: the child's pid is the JVM's. A session of its own, so the
            # JVM ignores the terminal's Ctrl-C, and its executors (the worker's children) share its
            # process group, which stop() signals whole.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        return self._process.pid

    def exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM to the JVM's process group (its executors too), SIGKILL after `timeout_s`."""
        pid = self.pid
        if pid is None and self._process is not None and self._process.poll() is None:
            pid = self._process.pid  # launched, pid check not passed yet (still in spark-class)
        if pid is not None:
            for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
                if self._wait_group_gone(pid, wait_s):
                    break
            else:
                raise SparkClusterError(f"spark {self.name} (pid {pid}) or its executors survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        return pid

    def log_tail(self) -> str:
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(getattr(self, "log_offset", 0))
                lines = handle.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None  # reaps our own child: no zombie
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _state(pid) not in ("Z", "")

    def _wait_group_gone(self, pgid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is not None and self._process.pid == pgid:
                self._process.poll()
            if not _group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)


class LocalSparkCluster:
    """Start, stop and inspect the standalone master and worker that own ``settings.data_dir``."""

    def __init__(self, settings: SparkClusterSettings | None = None) -> None:
        self.settings = settings or SparkClusterSettings()
        self.master = _Daemon("master", MASTER_CLASS, self.data_dir)
        self.worker = _Daemon("worker", WORKER_CLASS, self.data_dir)

    @classmethod
    def of_data_dir(cls, data_dir: Path) -> LocalSparkCluster:
        """The cluster as it was started in `data_dir` (its cluster.json), else with default ports."""
        data_dir = Path(data_dir).expanduser().resolve()
        try:
            saved = json.loads((data_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return cls(SparkClusterSettings(data_dir=data_dir))
        return cls(SparkClusterSettings(**{**saved, "data_dir": data_dir}))

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def master_url(self) -> str:
        return self.settings.master_url

    def start(self, timeout_s: float = 90) -> str:
        """Start the master and the worker (or find them running), wait until the master shows the
        worker ALIVE; return the master URL. A failed start stops whatever it started."""
        if self.master.pid is not None and self.worker.pid is not None:
            self.wait_until_ready(timeout_s)
            return self.master_url
        self.stop()  # half a cluster (one JVM died): start both afresh
        settings = self.settings
        taken = [p for p in self._ports() if port_in_use(settings.host, p)]
        if taken:
            raise SparkClusterError(f"ports {taken} on {settings.host} are taken: choose others (--port ...)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf_dir = self.data_dir / "conf"  # empty: no spark-defaults.conf or spark-env.sh from elsewhere
        conf_dir.mkdir(exist_ok=True)
        saved = {k: v for k, v in asdict(settings).items() if k != "data_dir"}
        (self.data_dir / "cluster.json").write_text(json.dumps(saved, indent=2) + "\n")
        env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(conf_dir),
            "SPARK_LOCAL_IP": settings.host,
            "SPARK_DAEMON_MEMORY": settings.daemon_memory,
            # Marks the JVMs as this data dir's (pid files outlive crashes; pids get reused).
            "SPARK_DAEMON_JAVA_OPTS": _marker(self.data_dir),
        }
        try:
            self.master.launch(
                ["--host", settings.host, "--port", str(settings.port), "--webui-port", str(settings.webui_port)], env
            )
            self.worker.launch(
                [
                    "--host",
                    settings.host,
                    "--port",
                    str(settings.worker_port),
                    "--webui-port",
                    str(settings.worker_webui_port),
                    "--cores",
                    str(settings.worker_cores),
                    "--memory",
                    settings.worker_memory,
                    "--work-dir",
                    str(self.work_dir),
                    self.master_url,
                ],
                env,
            )
            self.wait_until_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.master_url

    def stop(self, timeout_s: float = 30) -> list[int]:
        """Stop the worker (and its executors), then the master; returns the pids that were stopped."""
        stopped = [self.worker.stop(timeout_s), self.master.stop(timeout_s)]
        return [pid for pid in stopped if pid is not None]

    def state(self) -> dict[str, Any]:
        """The master's JSON (`workers`, `activeapps`, `completedapps`, ...)."""
        return fetch_json(f"{self.settings.webui_url}/json/")

    def worker_state(self) -> dict[str, Any]:
        """The worker's JSON (`executors`, `finishedexecutors`, each with its `appid`)."""
        return fetch_json(f"{self.settings.worker_webui_url}/json/")

    def our_worker(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Our worker's entry in the master's JSON, if it is registered and ALIVE."""
        for worker in state.get("workers", []):
            if worker.get("port") == self.settings.worker_port and worker.get("state") == "ALIVE":
                return worker
        return None

    def wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        seen = "no answer"
        while True:
            for daemon in (self.master, self.worker):
                if daemon.exited():
                    raise SparkClusterError(
                        f"spark {daemon.name} exited during start-up (log {daemon.log_file})\n{daemon.log_tail()}"
                    )
            try:
                state = self.state()
                if self.our_worker(state) is not None:
                    return
                seen = f"workers {[(w.get('port'), w.get('state')) for w in state.get('workers', [])]}"
            except (OSError, ValueError):  # the master's UI is not up yet
                pass
            if time.monotonic() >= deadline:
                raise SparkClusterError(
                    f"the spark master at {self.settings.webui_url} shows no ALIVE worker on port "
                    f"{self.settings.worker_port} after {timeout_s:.0f}s ({seen}; logs {self.master.log_file}, "
                    f"{self.worker.log_file})"
                )
            time.sleep(_POLL_S)

    def status(self) -> dict[str, Any]:
        master, worker = self.master.pid, self.worker.pid
        registered = False
        if master is not None:
            with contextlib.suppress(OSError, ValueError):
                registered = self.our_worker(self.state()) is not None
        return {
            "master_url": self.master_url,
            "webui_url": self.settings.webui_url,
            "master_pid": master,
            "worker_pid": worker,
            "worker_alive": registered,
            "data_dir": str(self.data_dir),
        }

    def _ports(self) -> list[int]:
        s = self.settings
        return [s.port, s.webui_port, s.worker_port, s.worker_webui_port]

    def __enter__(self) -> LocalSparkCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _marker(data_dir: Path) -> str:
    return f"-Dreporting.spark.cluster={data_dir}"


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state first), [] if unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _state(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(entry.name))
    return members


# ---- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = SparkClusterSettings()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=Path("data/spark-cluster"), help="(default: %(default)s)")
    parser = argparse.ArgumentParser(
        prog="python -m reporting_assets.infra.spark",
        description="Run a standalone Spark master and worker on loopback, from pyspark's distribution.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", parents=[common], help="start master and worker (no-op if they run)")
    for flag in ("port", "webui_port", "worker_port", "worker_webui_port", "worker_cores"):
        start.add_argument(f"--{flag.replace('_', '-')}", type=int, default=getattr(defaults, flag))
    start.add_argument("--worker-memory", default=defaults.worker_memory)
    start.add_argument("--timeout", type=float, default=90, help="seconds to wait (default: %(default)s)")
    commands.add_parser("stop", parents=[common], help="stop the worker (and its executors) and the master")
    commands.add_parser("status", parents=[common], help="show whether master and worker run")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "start":
        settings = SparkClusterSettings(
            port=args.port,
            webui_port=args.webui_port,
            worker_port=args.worker_port,
            worker_webui_port=args.worker_webui_port,
            worker_cores=args.worker_cores,
            worker_memory=args.worker_memory,
            data_dir=args.data_dir,
        )
        cluster = LocalSparkCluster(settings)
        running = LocalSparkCluster.of_data_dir(args.data_dir)
        if running.master.pid is not None or running.worker.pid is not None:
            cluster = running  # started before, perhaps on other ports: those are the ones that run
        url = cluster.start(timeout_s=args.timeout)
        print(f"spark cluster running: SPARK_MASTER={url} (master UI {cluster.settings.webui_url})")
        return 0
    cluster = LocalSparkCluster.of_data_dir(args.data_dir)
    if args.command == "stop":
        pids = cluster.stop()
        print(f"spark cluster stopped (pids {pids})" if pids else f"spark cluster not running ({cluster.data_dir})")
        return 0
    status = cluster.status()
    if status["master_pid"] is None and status["worker_pid"] is None:
        print(f"spark cluster not running ({cluster.data_dir})")
        return EXIT_NOT_RUNNING
    worker = "worker ALIVE" if status["worker_alive"] else "worker NOT registered"
    print(
        f"spark cluster at {status['master_url']} (master pid {status['master_pid']}, worker pid "
        f"{status['worker_pid']}, {worker}; UI {status['webui_url']})"
    )
    return 0 if status["worker_alive"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print("error: java not found (set JAVA_HOME or put Java 17+ on PATH)", file=sys.stderr)
        return 1
    try:
        return _run(args)
    except (SparkClusterError, ValueError, OSError, urllib.error.URLError) as error:
        print(f"error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
