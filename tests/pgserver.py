"""Start a throw-away PostgreSQL server: ``initdb`` into a temp dir, ``pg_ctl`` on a free port.

Used by the test fixtures (``tests/_fixtures_pg.py``) and by ``benchmarks/bench_store.py``.
The server listens on 127.0.0.1 only, its unix socket lives in the temp dir, and when this
runs as root it runs as the unprivileged ``postgres`` user (or ``nobody``).  Missing
binaries are an error, never a skip: ``scripts/ensure-postgres.sh`` installs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bin_dir", "running_postgres"]


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or the server would not start."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest installed version)."""
    env = os.environ.get("TRIOFETCH_PG_BIN")
    if env:
        return Path(env)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/ensure-postgres.sh "
        "or set TRIOFETCH_PG_BIN"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: None means 'as ourselves' (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and no unprivileged user to run PostgreSQL as")


class PostgresServer:
    """A PostgreSQL server in a temp dir.  ``start()`` / ``stop()``, or use
    :func:`running_postgres`."""

    def __init__(self, *, settings: Mapping[str, str] | None = None) -> None:
        self.bin_dir = find_bin_dir()
        self.user = _server_user()
        self.settings = dict(settings or {})
        self.base = Path(tempfile.mkdtemp(prefix="triofetch-pg-"))
        self.data_dir = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log_file = self.base / "server.log"
        self.port = 0
        self.superuser = "postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, cwd=self.base)

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.user is not None:
            for path in (self.base, self.socket_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        except subprocess.CalledProcessError as exc:
            raise PostgresUnavailable(f"initdb failed:\n{exc.stdout}\n{exc.stderr}") from exc
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "100",
            **self.settings,
        }
        last = ""
        for _ in range(5):  # the free port may be taken between choosing and binding it
            self.port = _free_port()
            opts = " ".join(f"-c {k}={v}" for k, v in {**options, "port": str(self.port)}.items())
            result = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
                "-o", opts, "start", check=False,
            )  # fmt: skip
            if result.returncode == 0:
                return
            last = result.stdout + result.stderr
            with contextlib.suppress(OSError):
                last += self.log_file.read_text()
        raise PostgresUnavailable(f"PostgreSQL would not start:\n{last}")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str) -> None:
        """Run one statement as the superuser (autocommit: CREATE/DROP DATABASE work)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[call-overload]

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.data_dir.exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(*, settings: Mapping[str, str] | None = None) -> Iterator[PostgresServer]:
    """A started PostgreSQL server, stopped and deleted on exit."""
    server = PostgresServer(settings=settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()


#: Settings for tests: durability off (the server is thrown away), quick checkpoints.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
