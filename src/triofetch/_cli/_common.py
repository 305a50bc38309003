"""What the commands share: exit codes, the error type, output helpers, opening the store.

Owns the exit statuses, :class:`CLIError`, the root's default and how an existing store is
opened and its errors told; it must not import the downloader (the commands that only read
the store load none of it) nor a private module of ``triofetch``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from ..errors import (
    InvalidInput,
    NotAStore,
    StorageWriteError,
    StoreError,
    StoreNotFound,
    redact_url,
)
from ..store import DEFAULT_DATABASE_NAME, Store, open_store
from . import _startup

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "CLIError",
    "Interrupted",
    "absolute_path",
    "check_new_root",
    "damaged_database",
    "damaged_store",
    "emit_json",
    "error_json",
    "existing_store",
    "human_bytes",
    "log",
    "note",
    "output",
    "resolve_root",
    "say",
    "stderr_log_handler",
    "store_error",
    "version_numbers",
    "warn",
    "write_stop_hint",
    "write_stop_kind",
]

EXIT_OK = 0
#: some units (or files, or artifacts) failed; the rest is done
EXIT_FAILED = 1
#: bad usage, an unreachable or malformed manifest, a store that cannot be opened
EXIT_USAGE = 2
#: interrupted (Ctrl-C / SIGINT); 143 for SIGTERM
EXIT_INTERRUPTED = 130
#: terminated (SIGTERM)
EXIT_TERMINATED = 143
#: stdout closed by its reader (``| head``): 128 + SIGPIPE
EXIT_PIPE = _startup.EXIT_PIPE
#: an unexpected exception, a bug (EX_SOFTWARE)
EXIT_INTERNAL = _startup.EXIT_INTERNAL

#: the environment variable giving the default ``--root``
ROOT_ENV = "TRIOFETCH_ROOT"
DEFAULT_ROOT = "triofetch-data"

log = logging.getLogger("triofetch.cli")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time: while progress bars are drawn
    (on stderr), rich's stand-in, which prints each line above the bars."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr


def stderr_log_handler(level: int = logging.NOTSET) -> logging.Handler:
    """A handler writing log records of *level* and above to stderr, as ``-v`` shows them
    (``2026-12-07 01:47:45,272 triofetch.serve WARNING: ...``)."""
    handler = _StderrHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    return handler


class CLIError(Exception):
    """An expected error: one message on stderr, then exit with ``code``.

    *kind* is the error's short stable name in the JSON error object of ``--json``
    (``usage``, ``store_not_found``...: the list is in docs/cli.rst, "JSON output").
    """

    def __init__(self, message: str, code: int = EXIT_USAGE, *, kind: str = "usage") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind


class SettingError(CLIError):
    """A usage error in the value of a setting (*key*: its config key, ``ca-cert``), named
    by its flag (``--ca-cert: REASON``) until :meth:`came_from` names the environment
    variable or the config file it was taken from, when it was."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"--{key}: {reason}")
        self.key = key
        self.reason = reason

    def came_from(self, source: str, where: str) -> None:
        """Name where the value came from: ``env`` (*where*: ``$VARIABLE``) or ``file``
        (*where*: the config file); a flag keeps its name."""
        if source == "env":
            self.message = f"{where}: {self.reason}"
        elif source == "file":
            self.message = f"config file {where}: {self.key}: {self.reason}"
        else:
            return
        self.kind = "config"
        self.args = (self.message,)


class Interrupted(Exception):
    """A command stopped by a signal, saying what it had done (``after 12 files ...``);
    the status is the signal's (130, 143)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Output:
    """What the command line prints besides errors and results: ``-q`` turns it off."""

    #: -q/--quiet: errors and the results asked for only (no notes, summaries, bars)
    quiet: bool = False


output = _Output()


def warn(message: str, file: TextIO | None = None) -> None:
    """One line on stderr, ``triofetch: MESSAGE``: an error, printed even with ``-q``."""
    print(f"triofetch: {message}", file=file or sys.stderr, flush=True)


def note(message: str) -> None:
    """One line on stderr that is not an error (``repaired: ...``, ``orphan: ...``): not
    with ``-q``."""
    if not output.quiet:
        warn(message)


def say(*values: object, file: TextIO | None = None, flush: bool = False) -> None:
    """Print a line of a summary (on stdout unless *file*): not with ``-q``."""
    if not output.quiet:
        print(*values, file=file or sys.stdout, flush=flush)


def emit_json(value: Any, *, one_line: bool = False) -> None:
    """*value* as JSON on stdout (indented, unless *one_line*: for a line read as it comes)."""
    sys.stdout.write(json.dumps(value, indent=None if one_line else 2) + "\n")
    sys.stdout.flush()


def error_json(kind: str, message: str) -> None:
    """The one JSON object of a fatal error with ``--json``, on stdout."""
    emit_json({"error": {"kind": kind, "message": message}})


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def absolute_path(text: str) -> Path:
    return Path(text).expanduser().absolute()


def resolve_root(root: str | None) -> Path:
    """``--root``, else ``$TRIOFETCH_ROOT``, else ``./triofetch-data`` (absolute)."""
    return absolute_path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def describe_db(db: str | None, root: Path) -> str:
    return redact_url(db) if db else str(root / DEFAULT_DATABASE_NAME)


#: what a root may hold before its database exists: the lock files of a store being made,
#: and its database under the temp name it is made under (or left by a maker killed then)
_LOCK_FILES = frozenset(
    f"{DEFAULT_DATABASE_NAME}{suffix}" for suffix in (".lock", ".lease", ".creating")
)


def check_new_root(root: Path, db: str | None) -> None:
    """``sync`` makes a new SQLite store only in an empty or absent root.

    A root that holds files but no database is someone else's directory, or a store whose
    database was lost: a database is not silently made beside them (exit status 2).  The
    database is made before the storage's directories, so a sync running at the same time
    that is making this root's store leaves only its lock files (and the database under its
    temp name) here until the database exists.
    """
    if db is not None or os.path.lexists(root / DEFAULT_DATABASE_NAME):
        return
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return  # made by the sync (or refused when it cannot be)
    if DEFAULT_DATABASE_NAME in names:
        return  # made meanwhile, by a sync at the same time (the storage's dirs come after)
    if any(name not in _LOCK_FILES for name in names):
        raise CLIError(f"no triofetch store at {root}", kind="store_not_found")


def store_error(exc: StoreNotFound | NotAStore, root: Path, db: str | None) -> CLIError:
    """The one line (exit status 2) for a store that is not there or is not a store."""
    if isinstance(exc, StoreNotFound):
        kind = "store_not_found"
        if db is None:
            return CLIError(f"no triofetch store at {root}", kind=kind)
        if db.startswith(("postgresql:", "postgres:")):
            return CLIError(f"no triofetch store in database {redact_url(db)}", kind=kind)
        return CLIError(f"no triofetch store at {exc.location}", kind=kind)
    return CLIError(f"{exc.location} is not a triofetch database", kind="not_a_store")


def damaged_database(exc: BaseException) -> bool:
    """Whether *exc* (a StoreError) comes from SQLite finding its file damaged: the SQLite
    error is its cause, or found among the causes, contexts and groups behind it (a store
    error raised again out of a nursery)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc.__cause__, exc.__context__]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        code = getattr(current, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return True
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo += [current.__cause__, current.__context__]
    return False


def damaged_store(where: str, exc: StoreError) -> CLIError:
    """The one line (exit status 2) for a store SQLite finds damaged, *exc* the error it
    gave (see :func:`damaged_database`), whether found opening the store or later."""
    return CLIError(f"the store {where} is damaged: {exc}", kind="store_damaged")


def write_stop_kind(exc: StorageWriteError) -> str:
    """The JSON error kind of a command *exc* stopped: ``open_files`` for a process (or a
    system) out of file descriptors, ``disk`` for a full, read-only or failing disk."""
    return "open_files" if exc.too_many_open_files else "disk"


def version_numbers(numbers: Sequence[int]) -> str:
    """``1, 2, 5-9, 12``: a run of three or more numbers in a row as its ends (a prune of
    thousands of versions is one short line, not one number each)."""
    if not numbers:
        return "none"
    parts: list[str] = []
    ordered = sorted(numbers)
    start = prev = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == prev + 1:
            prev = number
            continue
        if prev - start >= 2:
            parts.append(f"{start}-{prev}")
        else:
            parts.extend(map(str, range(start, prev + 1)))
        if number is not None:
            start = prev = number
    return ", ".join(parts)


def write_stop_hint(exc: StorageWriteError, again: str, *, connections: bool = False) -> str:
    """What to do about a command *exc* stopped, ending in "run *again* again" (``the
    command``, ``the export``); *connections*: the command has ``--connections``."""
    fewer = " or use fewer --connections" if connections else ""
    if exc.errno == errno.EMFILE:  # the process's own limit
        return f"raise the open-file limit (ulimit -n){fewer}, then run {again} again"
    if exc.errno == errno.ENFILE:  # the whole system's table: ulimit -n does not help
        return f"raise the system's open-file limit (fs.file-max){fewer}, then run {again} again"
    if exc.inodes_exhausted:  # (df -h shows room: the files are too many, not too big)
        return f"free some inodes (remove files) and run {again} again"
    if exc.full:
        return f"free some space and run {again} again"
    if exc.errno == errno.EROFS:
        return f"make it writable and run {again} again"
    return f"check the disk, then run {again} again"


@asynccontextmanager
async def existing_store(
    root: Path,
    db: str | None,
    *,
    storage: bool = True,
    readonly: bool = True,
    connect_timeout: float | None = None,
) -> AsyncIterator[Store]:
    """Open a store that must exist already: every command but ``sync`` (never creating one).

    Read-only by default (list, versions, verify, export): the database is opened
    read-only and the artifact storage too, so that they work on a read-only root; the
    commands that change the store (prune, gc, repair) pass ``readonly=False``.  A missing,
    empty or foreign database, or one SQLite finds damaged, is a :class:`CLIError` of exit
    status 2.  *storage*: open the artifact storage of *root* too (with ``--db``, the root
    is not needed otherwise).  *connect_timeout*: ``--db-connect-timeout``.
    """
    where = describe_db(db, root)
    try:
        opened = await open_store(
            db,
            root=root if storage or db is None else None,
            create=False,
            readonly=readonly,
            connect_timeout=connect_timeout,
        )
    except (StoreNotFound, NotAStore) as exc:
        raise store_error(exc, root, db) from None
    except InvalidInput as exc:
        raise CLIError(str(exc), kind="invalid_input") from None
    except StoreError as exc:
        if damaged_database(exc):
            raise damaged_store(where, exc) from None
        raise CLIError(f"cannot open the store {where}: {exc}", kind="store") from None
    try:
        async with opened as store:
            yield store
    except StoreError as exc:
        if not damaged_database(exc):
            raise
        raise damaged_store(where, exc) from None
