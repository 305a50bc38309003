"""A throw-away PostgreSQL server for tests: :class:`PostgresServer`.

``initdb`` into a temp dir, ``pg_ctl`` on a free port.  The server listens on 127.0.0.1
only, its unix socket lives in the temp dir, and when this runs as root it runs as the
unprivileged ``postgres`` user (or ``nobody``), in a temp dir that user can reach.  Missing
or unrunnable binaries raise :class:`PostgresUnavailable`; nothing here skips a test.

Only the standard library is imported here; psycopg is imported when a statement is run
(:meth:`PostgresServer.execute`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FunctionType

__all__ = [
    "POSTGRES_FAST_SETTINGS",
    "PostgresServer",
    "PostgresUnavailable",
    "find_postgres_bin_dir",
    "running_postgres",
]


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or the server would not start."""


_BINARIES = ("initdb", "pg_ctl", "postgres")


def _missing_binaries(bin_dir: Path) -> list[str]:
    """The server binaries that *bin_dir* lacks (or holds but not as executable files)."""
    missing = []
    for name in _BINARIES:
        path = bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            missing.append(name)
    return missing


def find_postgres_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``$TRIOFETCH_PG_BIN`` when set, else the newest ``/usr/lib/postgresql/<N>/bin``, else
    where ``pg_ctl`` is on ``$PATH``.  Raises :class:`PostgresUnavailable` when none is, or
    when ``$TRIOFETCH_PG_BIN`` lacks one of the three (or holds it, but not executable).
    """
    env = os.environ.get("TRIOFETCH_PG_BIN")
    if env:
        bin_dir = Path(env)
        missing = _missing_binaries(bin_dir)
        if missing:
            raise PostgresUnavailable(
                f"TRIOFETCH_PG_BIN={env}: no executable {', '.join(missing)} in {bin_dir} "
                f"(it must name the directory of PostgreSQL's server binaries: "
                f"{', '.join(_BINARIES)})"
            )
        return bin_dir
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
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the PostgreSQL server "
        "(the project's scripts/ensure-postgres.sh does) or set TRIOFETCH_PG_BIN"
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


_FALLBACK_TEMP_DIRS = ("/tmp", "/var/tmp")
"""Where the server's temp dir goes when ``$TMPDIR`` is out of the server user's reach."""


def _unreachable_by(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory from ``/`` down to *path* (included) that *user* may not search
    (by its owner, group and mode bits), or that does not exist; None when there is none."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    path = Path(os.path.realpath(path))
    for directory in (*reversed(path.parents), path):
        try:
            st = os.stat(directory)
        except OSError:
            return directory
        if user.pw_uid == 0:
            continue
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not (stat.S_ISDIR(st.st_mode) and st.st_mode & bit):
            return directory
    return None


def _make_base_dir(user: pwd.struct_passwd | None) -> Path:
    """A new temp dir for the server: in ``$TMPDIR`` (:func:`tempfile.gettempdir`), or when
    the server runs as *user* and *user* cannot reach it, in the first of ``/tmp`` and
    ``/var/tmp`` that it can; owned by *user*."""
    prefix = "triofetch-pg-"
    if user is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    tried = []
    for parent in dict.fromkeys((tempfile.gettempdir(), *_FALLBACK_TEMP_DIRS)):
        blocked = _unreachable_by(Path(parent), user)
        if blocked is not None:
            tried.append(f"{parent} ({blocked} is not searchable by {user.pw_name})")
            continue
        base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        try:
            os.chown(base, user.pw_uid, user.pw_gid)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return base
    raise PostgresUnavailable(
        f"running as root, PostgreSQL runs as user {user.pw_name}, which can reach no temp "
        f"dir: {'; '.join(tried)}; set TMPDIR to a directory it can reach"
    )


class PostgresServer:
    """A PostgreSQL server in a temp dir, for tests: :meth:`start`, then :meth:`stop`
    (which deletes everything), or use :func:`running_postgres`.

    Nothing runs until :meth:`start`; making the object only finds the binaries (raising
    :class:`PostgresUnavailable` when there are none) and makes the temp dir (in
    ``$TMPDIR``; when the server runs as another user who cannot reach it, in ``/tmp`` or
    ``/var/tmp``, or :class:`PostgresUnavailable` when that user can reach none).  Authentication is
    ``trust`` for the superuser ``postgres`` on 127.0.0.1: for throw-away test data only.

    Args:
        settings: server settings (``-c name=value``), e.g. :data:`POSTGRES_FAST_SETTINGS`.
    """

    def __init__(self, *, settings: Mapping[str, str] | None = None) -> None:
        self.bin_dir = find_postgres_bin_dir()
        self.user = _server_user()
        self.settings = dict(settings or {})
        self.base = _make_base_dir(self.user)
        self.data_dir = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log_file = self.base / "server.log"
        self.port = 0
        self.superuser = "postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        try:
            return subprocess.run(cmd, check=check, capture_output=True, text=True, cwd=self.base)
        except OSError as exc:
            raise PostgresUnavailable(f"could not run {cmd[0]}: {exc}") from exc

    def start(self) -> None:
        """``initdb`` and start the server on a free port of 127.0.0.1 (waits until it
        accepts connections); raises :class:`PostgresUnavailable` when it cannot."""
        self.socket_dir.mkdir()
        if self.user is not None:
            os.chown(self.socket_dir, self.user.pw_uid, self.user.pw_gid)
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
        """The URL of database *dbname* on this server, as :func:`triofetch.open_store`
        takes it."""
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str) -> None:
        """Run one statement as the superuser (autocommit: CREATE/DROP DATABASE work)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str) -> str:
        """Create an empty database *name*; returns its URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database *name* (closing its connections), if it exists."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown, else immediate) and delete its temp dir.
        Idempotent."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    result = self._run(
                        "pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop",
                        check=False,
                    )  # fmt: skip
                    if result.returncode == 0:
                        break
        except PostgresUnavailable:
            pass
        finally:
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


POSTGRES_FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
"""Settings for tests: durability off (the server is thrown away)."""


# The public home of every class and function above, for reprs, pickling and the docs.
for _name in __all__:
    if isinstance(globals()[_name], type | FunctionType):
        globals()[_name].__module__ = "triofetch.testing"
del _name
