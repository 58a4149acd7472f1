"""A local PostgreSQL server from Debian's binaries: the storage of a Postgres-backed Dagster instance.

`LocalPostgres(PostgresSettings(base_dir, port))` runs `initdb` and `pg_ctl` (as the `postgres` OS user
when we are root: the server refuses to run as root) on a cluster in `base_dir/pgdata`, listening on
127.0.0.1 only, then creates a database and a password user for Dagster. `stop()` always stops it
(`pg_ctl stop`, else the postmaster is killed); as a context manager it stops on the way out.
`make cluster-setup` installs Debian's `postgresql` when no `initdb` is found.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian: /usr/lib/postgresql/<major>/bin
OS_USER = "postgres"
SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The local PostgreSQL server could not be found, started or stopped; the message says why."""


def find_bin_dir(root: Path = POSTGRES_ROOT) -> Path:
    """The `bin` folder of the newest PostgreSQL under `root` that has `initdb` and `pg_ctl`."""
    versions = sorted(
        (int(entry.name), entry / "bin")
        for entry in (root.iterdir() if root.is_dir() else [])
        if entry.name.isdigit() and (entry / "bin" / "initdb").is_file() and (entry / "bin" / "pg_ctl").is_file()
    )
    if not versions:
        raise PostgresError(
            f"no PostgreSQL server binaries under {root}/<version>/bin (initdb, pg_ctl): "
            "run `make cluster-setup` (apt-get install postgresql)"
        )
    return versions[-1][1]


def as_owner(command: list[str], euid: int | None = None) -> list[str]:
    """`command` run as the `postgres` OS user when we are root, else as ourselves."""
    return ["runuser", "-u", OS_USER, "--", *command] if (os.geteuid() if euid is None else euid) == 0 else command


@dataclass(frozen=True)
class PostgresSettings:
    """Where the server keeps its files, where it listens, and the database and user made for Dagster."""

    base_dir: Path  # pgdata/ (the cluster) and postgres.log go here; owned by the postgres user
    port: int
    host: str = "127.0.0.1"
    database: str = "dagster"
    username: str = "dagster"
    password: str = field(default_factory=lambda: secrets.token_hex(12), repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    def dagster_env(self) -> dict[str, str]:
        """The variables `deploy/dagster.yaml` reads its `postgres_db` from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.database,
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def server_options(self) -> str:
        """`pg_ctl -o`: TCP on `host:port` only, the Unix socket inside the data dir (no /var/run needed)."""
        return f"-c listen_addresses={self.host} -c port={self.port} -c unix_socket_directories={self.data_dir}"


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class LocalPostgres:
    """One PostgreSQL server on loopback for as long as it is needed."""

    def __init__(self, settings: PostgresSettings, bin_dir: Path | None = None) -> None:
        for name in (settings.database, settings.username):
            if not _IDENTIFIER.match(name):
                raise PostgresError(f"{name!r} is not a plain lowercase SQL identifier")
        self.settings = settings
        self.bin_dir = bin_dir or find_bin_dir()
        self._superuser_password = secrets.token_hex(12)

    def __enter__(self) -> PostgresSettings:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout_s: int = 60) -> PostgresSettings:
        """initdb (a fresh cluster), start, create the user and database; stopped again if any step fails."""
        s = self.settings
        s.base_dir.mkdir(parents=True, exist_ok=True)
        if s.data_dir.exists():
            raise PostgresError(f"{s.data_dir} exists: a LocalPostgres starts a fresh cluster")
        if os.geteuid() == 0:
            os.chown(s.base_dir, *_owner_ids())
            if subprocess.run(as_owner(["test", "-w", str(s.base_dir)]), check=False).returncode != 0:
                raise PostgresError(f"the {OS_USER} OS user cannot write {s.base_dir}: give it a folder it can reach")
        password_file = s.base_dir / "superuser-password"
        password_file.write_text(self._superuser_password + "\n")
        if os.geteuid() == 0:
            os.chown(password_file, *_owner_ids())
        try:
            self._run(
                self._bin("initdb"),
                "-D",
                str(s.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            )
            password_file.unlink()
            self._run(
                self._bin("pg_ctl"),
                "start",
                "-D",
                str(s.data_dir),
                "-l",
                str(s.log_path),
                "-o",
                s.server_options(),
                "-w",
                "-t",
                str(timeout_s),
            )
            self._create_user_and_database()
        except BaseException:
            self.stop()
            raise
        return s

    def stop(self, timeout_s: int = 30) -> None:
        """Stop the server (fast shutdown); kill the postmaster if that fails. Safe to call twice."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            self._run(
                self._bin("pg_ctl"), "stop", "-D", str(self.settings.data_dir), "-m", "fast", "-w", "-t", str(timeout_s)
            )
        except PostgresError:
            _kill_and_wait(pid, timeout_s)
        if _alive(pid):
            _kill_and_wait(pid, timeout_s)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (from postmaster.pid), or None."""
        try:
            pid = int((self.settings.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def connect(self, superuser: bool = False):
        """A psycopg2 connection (dagster-postgres brings psycopg2) as Dagster's user or the superuser."""
        import psycopg2

        s = self.settings
        user, password = (SUPERUSER, self._superuser_password) if superuser else (s.username, s.password)
        database = "postgres" if superuser else s.database
        return psycopg2.connect(host=s.host, port=s.port, user=user, password=password, dbname=database)

    def _create_user_and_database(self) -> None:
        from psycopg2 import sql

        s = self.settings
        connection = self.connect(superuser=True)
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(s.username)), [s.password]
                )
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(s.database), sql.Identifier(s.username)
                    )
                )
        finally:
            connection.close()

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run(self, *command: str) -> None:
        done = subprocess.run(as_owner(list(command)), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.settings.log_path.read_text(errors="replace")[-2000:] if self.settings.log_path.exists() else ""
            raise PostgresError(
                f"{Path(command[0]).name} {command[1]} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}{chr(10) + log if log else ''}"
            )


def _owner_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(OS_USER)
    return entry.pw_uid, entry.pw_gid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _kill_and_wait(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise PostgresError(f"the postmaster (pid {pid}) is still alive {timeout_s:g}s after SIGKILL")
        time.sleep(0.05)
