"""A store's old age: pruning versions, the writers' lease, garbage collection.

Owns what removes things from a store for good, and the lease that keeps that away from
writers.  Written once, for both databases, on the :class:`~._dialect.Dialect` (whose
:class:`~._dialect.LeaseHandle` each database implements: ``_sqlite``, ``_postgres``).  It
must not write units or versions (``_commit``, ``_versions`` do); it reads through
``_versions`` only to look up artifacts while sweeping the storage.

- :func:`prune` deletes repository versions (one transaction).  Pruning removes versions
  only: the units and files they held stay until garbage collection finds that nothing
  holds them.
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

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .._model import check_number
from ..errors import RepositoryNotFound, StoreBusy
from ._dialect import Dialect, LeaseHandle
from ._versions import find_artifacts

if TYPE_CHECKING:
    from ..storage import ArtifactStorage

__all__ = [
    "GCReport",
    "PruneReport",
    "acquire_lease",
    "check_wait",
    "delete_garbage",
    "prune",
    "release_lease",
    "remove_empty_directories",
    "remove_files",
    "sweep_unrecorded",
]

#: how often a lease is tried again while it is taken (seconds, doubling up to the maximum)
_FIRST_POLL = 0.005
_MAX_POLL = 0.1
#: stored files looked up per query while sweeping the storage
_SWEEP_BATCH = 500
_SHA256_NAME = re.compile(r"[0-9a-f]{64}\Z")
_HEX2_NAME = re.compile(r"[0-9a-f]{2}\Z")


# -- value types ----------------------------------------------------------------------------


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


# -- the lease -----------------------------------------------------------------------------


async def acquire_lease(db: Dialect, *, exclusive: bool, wait: float | None) -> LeaseHandle:
    """Take the lease, polling until it is free; give up after *wait* seconds (None: never).

    Raises :class:`StoreBusy` when *wait* passes.  Cancellable while waiting: the handle is
    then closed before the cancellation goes on.
    """
    deadline = math.inf if wait is None else trio.current_time() + wait
    handle = await trio.to_thread.run_sync(db.lease_handle)
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


# -- pruning ----------------------------------------------------------------------------------


def _ids(db: Dialect, column: str) -> str:
    return db.sql(db.in_list(column))


def prune(db: Dialect, name: str, keep: int) -> PruneReport:
    """Delete the complete versions of *name* older than its *keep* latest complete ones."""

    def work(conn: Any) -> PruneReport:
        row = conn.execute(
            db.sql("SELECT id FROM repositories WHERE name = ?" + db.lock_rows), (name,)
        ).fetchone()
        if row is None:
            raise RepositoryNotFound(name)
        # the repository's row is locked (PostgreSQL): no version is made meanwhile
        rows = conn.execute(
            db.sql(
                "SELECT id, number FROM repository_versions WHERE repository_id = ? AND complete "
                "ORDER BY number DESC"
            ),
            (row[0],),
        ).fetchall()
        kept, gone = rows[:keep], rows[keep:]
        if gone:
            ids = db.list_param(sorted(int(r[0]) for r in gone))
            conn.execute(
                db.sql("DELETE FROM version_units WHERE ") + _ids(db, "version_id"),
                (ids,),
            )
            conn.execute(
                db.sql("DELETE FROM repository_versions WHERE ") + _ids(db, "id"),
                (ids,),
            )
        return PruneReport(
            name,
            tuple(sorted(int(r[1]) for r in kept)),
            tuple(sorted(int(r[1]) for r in gone)),
        )

    return db.run_write(work)


# -- garbage ------------------------------------------------------------------------------------


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


def delete_garbage(db: Dialect) -> tuple[int, int, list[tuple[str, int]]]:
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
        sql = db.sql
        vids = [
            int(r[0]) for r in conn.execute("SELECT id FROM repository_versions WHERE NOT complete")
        ]
        if vids:
            ids = db.list_param(vids)
            conn.execute(sql("DELETE FROM version_units WHERE ") + _ids(db, "version_id"), (ids,))
            conn.execute(sql("DELETE FROM repository_versions WHERE ") + _ids(db, "id"), (ids,))
        # unit_artifacts and remote_artifacts go with their units (ON DELETE CASCADE)
        units = conn.execute(
            "DELETE FROM units WHERE " + db.unreferenced("units.id", "version_units", "unit_id")
        ).rowcount
        gone = conn.execute(
            "DELETE FROM artifacts WHERE "
            + db.unreferenced("artifacts.id", "unit_artifacts", "artifact_id")
            + " RETURNING sha256, size"
        ).fetchall()
        return len(vids), int(units), [(str(sha), int(size)) for sha, size in gone]

    return db.run_write(work)


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
    db: Dialect, storage: ArtifactStorage, check: Callable[[], None] = lambda: None
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
        known = find_artifacts(db, sorted(batch))
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


def remove_empty_directories(
    storage: ArtifactStorage, check: Callable[[], None] = lambda: None
) -> int:
    """Remove the storage's ``ab/cd`` and ``ab`` directories that hold nothing: how many.

    The storage makes them as files arrive and nothing else removes them, so without this a
    store whose content churns would keep a directory for every prefix it ever held (up to
    65,536 + 256 of them, each taking a block and a walk's visit) however few files it
    holds now.  Only directories named and placed as the storage names them (two hex
    digits) are removed; ``rmdir`` never removes one that is not empty, and a writer that
    finds its directory gone makes it again.  *check* is called between top-level
    directories (a cancellation point).
    """
    removed = 0
    top = str(storage.artifacts_dir)

    def rmdir(path: str) -> bool:
        try:
            os.rmdir(path)
        except OSError:  # not empty, gone, not ours to remove
            return False
        return True

    try:
        tops = sorted(os.listdir(top))
    except FileNotFoundError:
        return 0
    for first in tops:
        outer = os.path.join(top, first)
        if not _HEX2_NAME.match(first) or os.path.islink(outer) or not os.path.isdir(outer):
            continue
        check()
        try:
            inner = sorted(os.listdir(outer))
        except OSError:
            continue
        left = len(inner)
        for second in inner:
            path = os.path.join(outer, second)
            if _HEX2_NAME.match(second) and not os.path.islink(path) and rmdir(path):
                removed += 1
                left -= 1
        if left == 0 and rmdir(outer):
            removed += 1
    return removed


def check_wait(wait: object) -> float:
    """A number of seconds to wait: finite and not negative."""
    seconds = check_number(wait, "wait")
    assert seconds is not None
    return seconds
