"""A single-node Kafka broker (KRaft, broker + controller in one JVM) on loopback.

The jars come from Maven Central (see ``reporting_assets.infra.maven``); Java 17+ runs
them. Everything the broker owns lives in one data dir:

    <data dir>/server.properties   written from BrokerSettings on every start
    <data dir>/logs/               Kafka's log dir (topics, __cluster_metadata, meta.properties)
    <data dir>/cluster.id          the cluster id this data dir was formatted with
    <data dir>/broker.pid          pid of the running JVM
    <data dir>/broker.log          the JVM's stdout/stderr (log4j2 writes to stdout)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reporting_assets.infra.maven import ensure_jars
from reporting_assets.infra.ports import port_in_use

NODE_ID = 1
LOG4J_CONFIG = Path(__file__).resolve().with_name("log4j2.xml")
_DATA_DIR_TROUBLE = re.compile(r"meta\.properties|log ?dir|checkpoint|corrupt|cluster ?id", re.IGNORECASE)
_HEAP = re.compile(r"^\d+[kKmMgG]?$")
_POLL_S = 0.2
_LOCK_RELEASE_S = 5.0
_PF_EXITING = 0x4  # task flag in /proc/<pid>/stat: the process is shutting down
_LOG_TAIL_LINES = 40

log = logging.getLogger(__name__)


class KafkaBrokerError(RuntimeError):
    """The local broker could not be started, stopped or inspected."""


class PortInUseError(KafkaBrokerError):
    """A port the broker needs is taken by another process."""


class DataDirError(KafkaBrokerError):
    """The data dir cannot be used as it is (wipe it with reset=True / --reset)."""


class BrokerStartError(KafkaBrokerError):
    """The broker JVM exited or did not answer in time."""


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    data_dir: Path = Path("data/kafka")
    heap: str = "512m"

    def __post_init__(self) -> None:
        for name in ("port", "controller_port"):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise ValueError(f"BrokerSettings.{name} must be a TCP port (1-65535), got {value}")
        if self.port == self.controller_port:
            raise ValueError(f"BrokerSettings.port and controller_port must differ (both {self.port})")
        if not self.host:
            raise ValueError("BrokerSettings.host must not be empty")
        if not _HEAP.match(self.heap):
            raise ValueError(f"BrokerSettings.heap must look like 512m or 1g, got {self.heap!r}")
        # Absolute, so server.properties and the pid check do not depend on the cwd.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def controller_endpoint(self) -> str:
        return f"{self.host}:{self.controller_port}"


OFFSETS_KEPT_MINUTES = 2**31 - 1  # the broker's largest value: about 4 000 years


def server_properties(
    settings: BrokerSettings,
    log_dir: Path,
    *,
    node_id: int = NODE_ID,
    voters: Mapping[int, str] | None = None,
    replicas: int = 1,
) -> dict[str, str]:
    """The broker's configuration: one KRaft node that is its own controller quorum.

    A node of a cluster (`cluster.py`) gives its ``node_id``, the controllers of the quorum
    (``voters``: node id -> controller ``host:port``, a static quorum) and the ``replicas`` every
    internal topic gets (min ISR one less, at least 1).
    """
    quorum = (
        {"controller.quorum.voters": ",".join(f"{node}@{endpoint}" for node, endpoint in sorted(voters.items()))}
        if voters
        else {"controller.quorum.bootstrap.servers": settings.controller_endpoint}
    )
    min_isr = str(max(replicas - 1, 1))
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        **quorum,
        "listeners": f"PLAINTEXT://{settings.bootstrap},CONTROLLER://{settings.controller_endpoint}",
        "advertised.listeners": f"PLAINTEXT://{settings.bootstrap},CONTROLLER://{settings.controller_endpoint}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # One node: every internal topic must live with a single replica (a cluster: `replicas`).
        "default.replication.factor": str(replicas),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        "share.coordinator.state.topic.num.partitions": "5",
        # Groups form at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
        # Allow short consumer sessions (the default floor is 6 s): a killed consumer's partitions
        # then go to the others within a second or two. Clients still choose their own timeout.
        "group.min.session.timeout.ms": "1000",
        # The group's committed offsets are the pipeline's only memory of what is downloaded: keep
        # them as long as the topics (the default drops an empty group's offsets after 7 days, and
        # the next run would replay every request from the start).
        "offsets.retention.minutes": str(OFFSETS_KEPT_MINUTES),
        # Topics are created explicitly by KafkaResource.ensure_topics.
        "auto.create.topics.enable": "false",
        # After a SIGKILL the controller keeps the old broker registration until its
        # session expires; a short session makes the restart take seconds, not ~10 s.
        "broker.session.timeout.ms": "5000",
        "broker.heartbeat.interval.ms": "1000",
    }


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a Kafka broker at ``bootstrap`` answers a metadata request."""
    host, _, port = bootstrap.rpartition(":")
    try:
        # A plain connect first: cheap, and keeps kafka-python from logging
        # connection errors while the broker is still booting.
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    from kafka import KafkaAdminClient  # local import: the CLI's stop/status rarely need it

    timeout_ms = max(int(timeout_s * 1000), 100)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="reporting-assets-broker-probe",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except Exception:  # any failure to bootstrap means "not answering (yet)"
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


class LocalKafkaBroker:
    """Start, stop and inspect the broker that owns ``settings.data_dir``.

    Only the data dir identifies a broker: a second ``start`` finds the JVM through
    the pid file and returns its bootstrap instead of launching another one.
    """

    node_id: int = NODE_ID  # a cluster's node (`cluster.ClusterNode`) has its own

    def __init__(self, settings: BrokerSettings | None = None, *, jars_dir: Path | None = None) -> None:
        self.settings = settings or BrokerSettings()
        self._jars_dir = jars_dir
        self._process: subprocess.Popen[bytes] | None = None  # set when this object launched the JVM

    # -- paths ---------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def cluster_id_file(self) -> Path:
        return self.data_dir / "cluster.id"

    # -- public API ------------------------------------------------------------

    def start(self, timeout_s: float = 90, *, reset: bool = False) -> str:
        """Start the broker (or find the running one) and return its bootstrap ``host:port``.

        ``reset=True`` stops a running broker of this data dir, wipes its topics and
        offsets and formats fresh storage.
        """
        self._prepare_data_dir()
        with self._start_lock():
            pid = self.pid
            if pid is not None and reset:
                self.stop()
                pid = None
            if pid is not None:
                return self._attach(pid, timeout_s)
            self._clear_stale_state()
            self._check_ports_free()
            jars = self._jars_dir or ensure_jars("broker")
            deadline = time.monotonic() + timeout_s
            if reset:
                self._wipe()
            self._write_properties()
            self._ensure_formatted(jars, deadline)
            self._launch(jars, deadline)
        return self.settings.bootstrap

    def stop(self, timeout_s: float = 30) -> int | None:
        """Stop the broker: SIGTERM, wait for its controlled shutdown, SIGKILL as a last resort.

        Returns the pid that was stopped, or None if no broker was running.
        """
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_for_exit(pid, timeout_s):
                log.warning("kafka broker pid %s ignored SIGTERM for %ss; killing it", pid, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if not self._wait_for_exit(pid, 10):
                    raise KafkaBrokerError(f"kafka broker pid {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        return pid

    def status(self) -> dict[str, Any]:
        pid = self.pid
        bootstrap = self._running_bootstrap() if pid is not None else self.settings.bootstrap
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": bootstrap,
            "answering": pid is not None and broker_answers(bootstrap),
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
        }

    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def pid(self) -> int | None:
        """The pid of this data dir's broker JVM if it is alive, else None."""
        pid = self._read_pid_file()
        if pid is None or not self._is_our_broker(pid):
            return None
        return pid

    def __enter__(self) -> LocalKafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start steps -------------------------------------------------------------

    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataDirError(f"cannot create kafka data dir {self.data_dir}: {error}") from error

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        # Two starts of one data dir at once (two shells, parallel test workers) would
        # both format and launch; the second JVM would then die on Kafka's own lock.
        with open(self.data_dir / ".start.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _attach(self, pid: int, timeout_s: float) -> str:
        running = self._running_bootstrap()
        if running != self.settings.bootstrap:
            raise KafkaBrokerError(
                f"the kafka broker of {self.data_dir} already runs at {running} (pid {pid}); "
                f"stop it first to move it to {self.settings.bootstrap}"
            )
        # It may still be booting (started a moment ago by someone else).
        self._wait_until_answering(pid, time.monotonic() + timeout_s, log_offset=None)
        return running

    def _clear_stale_state(self) -> None:
        """Forget a broker that died without cleaning up (SIGKILL, OOM, reboot)."""
        self.pid_file.unlink(missing_ok=True)
        lock = self.log_dir / ".lock"
        if not lock.exists():
            return
        # Kafka holds a POSIX lock on logs/.lock while it runs; the kernel drops it when
        # the JVM is gone. If it stays held, a broker we did not start uses this dir.
        deadline = time.monotonic() + _LOCK_RELEASE_S
        with open(lock, "a") as handle:
            while True:
                try:
                    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if time.monotonic() >= deadline:
                        raise DataDirError(
                            f"{self.log_dir} is in use by another Kafka process that has no pid file "
                            f"here; stop that process first"
                        ) from error
                    time.sleep(_POLL_S)  # a JVM that was just killed may still be exiting
            fcntl.lockf(handle, fcntl.LOCK_UN)
        lock.unlink(missing_ok=True)

    def _check_ports_free(self) -> None:
        for role, port in (("broker", self.settings.port), ("controller", self.settings.controller_port)):
            try:
                taken = port_in_use(self.settings.host, port)
            except OSError as error:
                raise KafkaBrokerError(f"cannot bind {self.settings.host}:{port} ({role} port): {error}") from error
            if taken:
                raise PortInUseError(
                    f"port {port} on {self.settings.host} ({role} port) is already in use by another process; "
                    f"stop it or choose another port (--port / --controller-port)"
                )

    def _wipe(self) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.cluster_id_file.unlink(missing_ok=True)

    def _write_properties(self) -> None:
        lines = [f"{key}={value}" for key, value in self._properties().items()]
        header = "# Written by reporting_assets.infra.kafka on every start; edits are overwritten.\n"
        _write_atomically(self.properties_file, header + "\n".join(lines) + "\n")

    def _properties(self) -> dict[str, str]:
        return server_properties(self.settings, self.log_dir)

    def _cluster_id(self, jars: Path, deadline: float) -> str:
        """The id to format a fresh log dir with: a new one (a cluster's nodes share theirs)."""
        return self._storage_tool(jars, deadline, "random-uuid").split()[-1]

    def _format_options(self) -> list[str]:
        """A single node is a quorum of its own; a cluster's nodes list their voters in server.properties."""
        return ["--standalone"]

    def _ensure_formatted(self, jars: Path, deadline: float) -> None:
        meta = self.log_dir / "meta.properties"
        if meta.exists():
            self._check_meta_properties(meta)
            return
        if self.log_dir.exists() and any(self.log_dir.iterdir()):
            raise DataDirError(
                f"kafka data dir {self.data_dir} is unusable: {self.log_dir} holds files but no "
                f"meta.properties (an interrupted format?); start with --reset / reset=True to wipe it"
            )
        cluster_id = self._cluster_id(jars, deadline)
        self._storage_tool(
            jars, deadline, "format", "-t", cluster_id, "-c", str(self.properties_file), *self._format_options()
        )
        _write_atomically(self.cluster_id_file, cluster_id + "\n")

    def _check_meta_properties(self, meta: Path) -> None:
        def unusable(reason: str) -> DataDirError:
            return DataDirError(
                f"kafka data dir {self.data_dir} is unusable: {reason}; "
                f"start with --reset / reset=True to wipe it and format fresh storage"
            )

        try:
            props = _parse_properties(meta.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise unusable(f"{meta} is unreadable or corrupt ({error})") from error
        missing = [key for key in ("version", "cluster.id", "node.id") if not props.get(key)]
        if missing:
            raise unusable(f"{meta} is corrupt (missing {', '.join(missing)})")
        if props["version"] != "1":
            raise unusable(f"{meta} has version {props['version']}, KRaft needs version 1")
        if props["node.id"] != str(self.node_id):
            raise unusable(f"{meta} belongs to node {props['node.id']}, this broker is node {self.node_id}")
        with contextlib.suppress(FileNotFoundError):
            expected = self.cluster_id_file.read_text().strip()
            if expected and props["cluster.id"] != expected:
                raise unusable(
                    f"{meta} is from cluster {props['cluster.id']}, but this data dir was formatted "
                    f"for cluster {expected}"
                )
        if not (self.log_dir / "__cluster_metadata-0").is_dir():
            raise unusable(f"the metadata log {self.log_dir / '__cluster_metadata-0'} is missing")

    def _storage_tool(self, jars: Path, deadline: float, *args: str) -> str:
        command = [
            *self._java_command(jars, heap="256m", log_level="WARN"),
            # A run of about a second: skipping the optimising JIT and G1 saves a third of it.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "kafka.tools.StorageTool",
            *args,
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                cwd=self.data_dir,
                timeout=max(deadline - time.monotonic(), 1),
            )
        except subprocess.TimeoutExpired as error:
            raise BrokerStartError(f"kafka StorageTool {args[0]} timed out") from error
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise DataDirError(
                f"kafka StorageTool {args[0]} failed (exit {result.returncode}) for {self.data_dir}: "
                f"{_failure_cause(output) or 'see below'}\n{_tail(output)}"
            )
        return result.stdout.strip()

    def _java_command(self, jars: Path, *, heap: str, log_level: str) -> list[str]:
        return [
            _java_executable(),
            f"-Xmx{heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dreporting.kafka.log.level={log_level}",
            "-cp",
            f"{jars}/*",
        ]

    def _launch(self, jars: Path, deadline: float) -> None:
        command = [
            *self._java_command(jars, heap=self.settings.heap, log_level="INFO"),
            "kafka.Kafka",
            str(self.properties_file),
        ]
        with open(self.log_file, "ab") as log_handle:
            log_handle.write(
                f"\n---- {datetime.now(UTC).isoformat()} starting kafka broker "
                f"at {self.settings.bootstrap} ----\n".encode()
            )
            log_handle.flush()
            log_offset = log_handle.tell()
            # A new session: the broker outlives the CLI and ignores the terminal's Ctrl-C.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        pid = self._process.pid
        _write_atomically(self.pid_file, f"{pid}\n")
        try:
            self._wait_until_answering(pid, deadline, log_offset)
        except BaseException:
            # Do not leave a half-started JVM behind (timeout, Ctrl-C).
            self._kill_quietly(pid)
            raise

    def _wait_until_answering(self, pid: int, deadline: float, log_offset: int | None) -> None:
        bootstrap = self.settings.bootstrap
        while True:
            if not self._is_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise self._start_failure(f"kafka broker (pid {pid}) exited during start-up", log_offset)
            remaining = deadline - time.monotonic()
            if broker_answers(bootstrap, timeout_s=min(2.0, max(remaining, 0.1))):
                return
            if time.monotonic() >= deadline:
                raise self._start_failure(f"kafka broker (pid {pid}) did not answer at {bootstrap} in time", log_offset)
            time.sleep(_POLL_S)

    def _start_failure(self, what: str, log_offset: int | None) -> KafkaBrokerError:
        """An error whose first line names the cause; the log tail follows on the next lines."""
        tail = self._log_tail(log_offset)
        cause = _failure_cause(tail)
        summary = f"{what}: {cause}" if cause else what
        if cause and _DATA_DIR_TROUBLE.search(cause):
            return DataDirError(
                f"{summary} (the data dir {self.data_dir} looks damaged: start with --reset / reset=True "
                f"to wipe it; log {self.log_file})\n{tail}"
            )
        return BrokerStartError(f"{summary} (log {self.log_file})\n{tail}")

    def _kill_quietly(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_for_exit(pid, 10)
        self.pid_file.unlink(missing_ok=True)

    # -- process inspection ------------------------------------------------------

    def _read_pid_file(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        """Alive, and really the JVM of this data dir (pids get reused after a crash)."""
        if not self._is_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # no /proc access: trust the pid file
        if cmdline == [b""]:
            # Exiting (it has dropped its memory, not yet its files and ports), or a kernel
            # thread that got the pid after a reboot.
            return _is_exiting(pid)
        return b"kafka.Kafka" in cmdline and str(self.properties_file).encode() in cmdline

    def _is_alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            # Our own child: poll() reaps it, so it does not linger as a zombie.
            return self._process.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _is_zombie(pid)

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._is_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def _running_bootstrap(self) -> str:
        """The bootstrap the running broker was started with (from its server.properties)."""
        try:
            props = _parse_properties(self.properties_file.read_text())
        except (OSError, ValueError):
            return self.settings.bootstrap
        match = re.search(r"PLAINTEXT://([^,]+)", props.get("advertised.listeners", ""))
        return match.group(1) if match else self.settings.bootstrap

    def _log_tail(self, offset: int | None) -> str:
        try:
            with open(self.log_file, "rb") as handle:
                if offset is not None:
                    handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no broker log)"
        return _tail(text) or "(broker log is empty)"


def _java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    java = shutil.which("java")
    if java is None:
        raise KafkaBrokerError("java not found (set JAVA_HOME or put Java 17+ on PATH)")
    return java


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state first), [] if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name is parenthesised and may itself hold spaces and parentheses.
    return stat.rpartition(")")[2].split()


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] == "Z"


def _is_exiting(pid: int) -> bool:
    fields = _proc_stat(pid)
    return len(fields) > 6 and bool(int(fields[6]) & _PF_EXITING)


def _parse_properties(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not a key=value line: {line!r}")
        props[key.strip()] = value.strip()
    return props


def _failure_cause(log_text: str) -> str | None:
    """The line of a broker log that best says why the JVM gave up."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for index, line in enumerate(lines[:-1]):
        # Kafka logs "ERROR Exiting Kafka due to fatal exception" and the exception below it.
        if "fatal exception" in line.lower():
            return lines[index + 1][:300]
    for index, line in enumerate(lines):
        if line.startswith("Error") or "Exception:" in line or " ERROR " in line:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            # The JVM splits its own errors over two lines ("Error occurred ... VM" / "Too small ...").
            if following and not following.startswith(("[", "at ", "---")):
                line = f"{line}: {following}"
            return line[:300]
    return None


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
