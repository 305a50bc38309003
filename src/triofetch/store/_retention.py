"""A store's old age: listing and pruning versions, the writers' lease, garbage collection.

- :func:`versions` and :func:`prune` read and delete repository versions (one query, one
  transaction).  Pruning removes versions only: the units and files they held stay until
  garbage collection finds that nothing holds them.
- The *lease* keeps the collector away from writers.  A writer (a creator run, a repair, an
  export that fetches) may find a unit or a file in the store, then commit something that
  refers to it a minute later; if the collector removed it in between, the commit would
  refer to nothing.  So every writer holds a *shared* lease for its whole run, and the
  collector takes the lease *exclusively*: it runs only when no writer is alive, and a writer
  that starts meanwhile waits for it to end.  With no writer alive, every incomplete version
  is abandoned (its writer was killed) and every file without a record is garbage.

  SQLite: ``flock`` on ``<db>.lease`` beside the database, through a file descriptor opened
  for each holder (``flock`` locks belong to an open file, so holders in one process exclude
  each other as processes do).  PostgreSQL: a session advisory lock (shared for writers) on a
  connection of its own, outside the pool.  Either way the operating system or the server
  releases the lease of a process that dies, even by ``kill -9``.  Leases are taken by
  polling the non-blocking form (``LOCK_NB``, ``pg_try_advisory_lock``) from worker
  threads, so that waiting for one is cancellable and never blocks the Trio loop.
- :func:`delete_garbage` deletes, in one write transaction, the incomplete versions, the
  units no version holds (their artifact links and remote artifacts cascade), and the
  artifacts no unit refers to; :func:`sweep_unrecorded` then removes the stored files that
  have no artifact row.  :meth:`Store.collect_garbage` runs them under the exclusive lease.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..errors import InvalidInput, StoreBusy, StoreError
from ._types import RepositoryNotFound

if TYPE_CHECKING:
    from ..storage import ArtifactStorage
    from ._base import Backend

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lease (documented)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FileLease",
    "GCReport",
    "LeaseHandle",
    "PruneReport",
    "StoreBusy",
    "VersionInfo",
    "acquire_lease",
    "check_wait",
    "delete_garbage",
    "prune",
    "release_lease",
    "remove_files",
    "sweep_unrecorded",
    "versions",
]

#: how often a lease is tried again while it is taken (seconds, doubling up to the maximum)
_FIRST_POLL = 0.005
_MAX_POLL = 0.1
#: stored files looked up per query while sweeping the storage
_SWEEP_BATCH = 500
_SHA256_NAME = re.compile(r"[0-9a-f]{64}\Z")


# -- value types ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One version of a repository, as :meth:`Store.versions` lists it.

    ``created`` is when the version was started (UTC), None for versions made by a
    triofetch older than schema version 4; ``units`` is how many units it holds;
    ``complete`` is False while its writer works on it (or after that writer died: ``gc``
    removes it then).
    """

    number: int
    created: datetime.datetime | None
    units: int
    complete: bool


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What :meth:`Store.prune` did: the complete versions kept and deleted, ascending."""

    repository: str
    kept: tuple[int, ...]
    deleted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GCReport:
    """What :meth:`Store.collect_garbage` removed.

    ``versions``: incomplete versions (their writers were gone); ``units``: units no version
    held; ``artifacts``: artifact rows no unit referred to; ``files`` and ``bytes``: files
    removed from the artifact storage (those of the artifacts removed, and files that had no
    artifact row); ``temp_files``: temp files of processes that are gone.
    """

    versions: int = 0
    units: int = 0
    artifacts: int = 0
    files: int = 0
    bytes: int = 0
    temp_files: int = 0


class LeaseHandle(ABC):
    """One holder's handle on the lease (a file descriptor, a database connection).

    Made by :meth:`Backend.lease_handle` in a worker thread; every method blocks briefly
    and runs in a worker thread too.
    """

    @abstractmethod
    def try_acquire(self, exclusive: bool) -> bool:
        """Take the lease (shared, or *exclusive*) if that is possible now; never waits."""

    @abstractmethod
    def close(self) -> None:
        """Release the lease if it is held, and free the handle (idempotent)."""


class FileLease(LeaseHandle):
    """The lease of an SQLite store: ``flock`` on a file beside the database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # a descriptor per holder: flock() locks belong to the open file; not inherited
            # by child processes (os.open makes it non-inheritable)
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the lease file {path}: {exc.strerror}") from exc

    def try_acquire(self, exclusive: bool) -> bool:
        if self._fd is None:
            raise StoreError("the lease handle is closed")
        if fcntl is None:  # pragma: no cover - not POSIX
            return True
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the lock


async def acquire_lease(backend: Backend, *, exclusive: bool, wait: float | None) -> LeaseHandle:
    """Take the lease, polling until it is free; give up after *wait* seconds (None: never).

    Raises :class:`StoreBusy` when *wait* passes.  Cancellable while waiting: the handle is
    then closed before the cancellation goes on.
    """
    deadline = math.inf if wait is None else trio.current_time() + wait
    handle = await trio.to_thread.run_sync(backend.lease_handle)
    try:
        delay = _FIRST_POLL
        while not await trio.to_thread.run_sync(handle.try_acquire, exclusive):
            left = deadline - trio.current_time()
            if left <= 0:
                raise StoreBusy(0.0 if wait is None else wait)
            await trio.sleep(min(delay, left))
            delay = min(delay * 2, _MAX_POLL)
    except BaseException:
        await release_lease(handle)
        raise
    return handle


async def release_lease(handle: LeaseHandle) -> None:
    """Release a lease taken by :func:`acquire_lease` (shielded: it always happens)."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(handle.close)


# -- versions and pruning ---------------------------------------------------------------------


def _created(value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    when = datetime.datetime.fromisoformat(str(value))
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def versions(backend: Backend, name: str) -> list[VersionInfo]:
    """Every version of repository *name*, ascending (one query)."""
    sql = backend.sql(
        "SELECT v.number, v.created, v.complete, "
        "(SELECT count(*) FROM version_units vu WHERE vu.version_id = v.id) "
        "FROM repositories r LEFT JOIN repository_versions v ON v.repository_id = r.id "
        "WHERE r.name = ? ORDER BY v.number"
    )
    rows = backend.run_read(lambda conn: conn.execute(sql, (name,)).fetchall())
    if not rows:
        raise RepositoryNotFound(name)
    return [
        VersionInfo(int(number), _created(created), int(units), bool(complete))
        for number, created, complete, units in rows
        if number is not None  # the one row of a repository without versions
    ]


def _ids(backend: Backend, column: str) -> str:
    return backend.sql(backend.in_list(column))


def prune(backend: Backend, name: str, keep: int) -> PruneReport:
    """Delete the complete versions of *name* older than its *keep* latest complete ones."""

    def work(conn: Any) -> PruneReport:
        row = conn.execute(
            backend.sql("SELECT id FROM repositories WHERE name = ?" + backend.lock_rows), (name,)
        ).fetchone()
        if row is None:
            raise RepositoryNotFound(name)
        # the repository's row is locked (PostgreSQL): no version is made meanwhile
        rows = conn.execute(
            backend.sql(
                "SELECT id, number FROM repository_versions WHERE repository_id = ? AND complete "
                "ORDER BY number DESC"
            ),
            (row[0],),
        ).fetchall()
        kept, gone = rows[:keep], rows[keep:]
        if gone:
            ids = backend.list_param(sorted(int(r[0]) for r in gone))
            conn.execute(
                backend.sql("DELETE FROM version_units WHERE ") + _ids(backend, "version_id"),
                (ids,),
            )
            conn.execute(
                backend.sql("DELETE FROM repository_versions WHERE ") + _ids(backend, "id"),
                (ids,),
            )
        return PruneReport(
            name,
            tuple(sorted(int(r[1]) for r in kept)),
            tuple(sorted(int(r[1]) for r in gone)),
        )

    return backend.run_write(work)


# -- garbage ------------------------------------------------------------------------------------


def _unreferenced(backend: Backend, column: str, table: str, ref: str) -> str:
    """SQL true when no row of *table* has *column*'s value in its column *ref*.

    SQLite runs ``NOT IN (SELECT ...)`` as one lookup in an index it builds once, and a
    correlated ``NOT EXISTS`` as a scan per row (no index on the referring column);
    PostgreSQL turns ``NOT EXISTS`` into an anti-join, and ``NOT IN`` into a scan per row
    once the subquery outgrows ``work_mem``.
    """
    if backend.dialect == "sqlite":
        return f"{column} NOT IN (SELECT {ref} FROM {table} WHERE {ref} IS NOT NULL)"
    return f"NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{ref} = {column})"


#: Indexes on the referring columns of the foreign keys the deletes check, made inside the
#: collector's transaction and dropped before it commits.  Deleting a unit makes the
#: database look for rows of ``version_units`` that refer to it, and deleting an artifact
#: for rows of ``unit_artifacts``; neither column leads an index of the schema (commits do
#: not need one), so without these each check scans the whole table and collecting grows
#: with the square of the store (measured in ``docs/store.rst``).  Made here, only the
#: collector pays for them, once per run; commits never do.
_GC_INDEXES = (
    ("triofetch_gc_version_units_unit", "version_units", "unit_id"),
    ("triofetch_gc_unit_artifacts_artifact", "unit_artifacts", "artifact_id"),
)


def delete_garbage(backend: Backend) -> tuple[int, int, list[tuple[str, int]]]:
    """Delete, in one write transaction: the incomplete versions, the units no version
    holds, the artifacts no unit refers to.  Returns (versions, units, [(sha256, size)] of
    the artifacts deleted).  Only correct while no writer is alive (under the exclusive
    lease)."""

    def work(conn: Any) -> tuple[int, int, list[tuple[str, int]]]:
        for name, table, column in _GC_INDEXES:
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")
        result = delete(conn)
        # (an error rolls the whole transaction back instead, the indexes with it)
        for name, _, _ in _GC_INDEXES:
            conn.execute(f"DROP INDEX {name}")
        return result

    def delete(conn: Any) -> tuple[int, int, list[tuple[str, int]]]:
        sql = backend.sql
        vids = [
            int(r[0]) for r in conn.execute("SELECT id FROM repository_versions WHERE NOT complete")
        ]
        if vids:
            ids = backend.list_param(vids)
            conn.execute(
                sql("DELETE FROM version_units WHERE ") + _ids(backend, "version_id"), (ids,)
            )
            conn.execute(
                sql("DELETE FROM repository_versions WHERE ") + _ids(backend, "id"), (ids,)
            )
        # unit_artifacts and remote_artifacts go with their units (ON DELETE CASCADE)
        units = conn.execute(
            "DELETE FROM units WHERE "
            + _unreferenced(backend, "units.id", "version_units", "unit_id")
        ).rowcount
        gone = conn.execute(
            "DELETE FROM artifacts WHERE "
            + _unreferenced(backend, "artifacts.id", "unit_artifacts", "artifact_id")
            + " RETURNING sha256, size"
        ).fetchall()
        return len(vids), int(units), [(str(sha), int(size)) for sha, size in gone]

    return backend.run_write(work)


def _unlink(path: str) -> int | None:
    """Remove a file; its size, or None when it was not there."""
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return None
    return size


def remove_files(storage: ArtifactStorage, shas: Iterable[str]) -> tuple[int, int]:
    """Unlink the stored files of *shas*: (files removed, bytes freed)."""
    files = freed = 0
    for sha in shas:
        size = _unlink(str(storage.path_for(sha)))
        if size is not None:
            files += 1
            freed += size
    return files, freed


def sweep_unrecorded(
    backend: Backend, storage: ArtifactStorage, check: Callable[[], None] = lambda: None
) -> tuple[int, int]:
    """Remove the files of the storage that have no artifact row: (files, bytes).

    Only files named and placed as the storage places them (``ab/cd/<sha256>``) are
    considered: anything else under ``artifacts/`` was not put there by triofetch and is
    left alone.  The names are looked up in batches (memory stays flat however large the
    storage); *check* is called between batches (a cancellation point).
    """
    files = freed = 0
    batch: dict[str, str] = {}

    def flush() -> None:
        nonlocal files, freed
        check()
        known = backend.find_artifacts(sorted(batch))
        for sha, path in batch.items():
            if sha not in known:
                size = _unlink(path)
                if size is not None:
                    files += 1
                    freed += size
        batch.clear()

    top = str(storage.artifacts_dir)
    for dirpath, dirs, names in os.walk(top):
        dirs.sort()
        rel = dirpath[len(top) :].strip(os.sep)
        for name in names:
            if _SHA256_NAME.match(name) and rel == f"{name[:2]}{os.sep}{name[2:4]}":
                batch[name] = os.path.join(dirpath, name)
                if len(batch) >= _SWEEP_BATCH:
                    flush()
    if batch:
        flush()
    return files, freed


def check_wait(wait: object) -> float:
    """A number of seconds to wait: finite and not negative."""
    if (
        isinstance(wait, bool)
        or not isinstance(wait, int | float)
        or not math.isfinite(wait)
        or wait < 0
    ):
        raise InvalidInput(f"wait must be a number of seconds >= 0, got {wait!r}")
    return float(wait)
