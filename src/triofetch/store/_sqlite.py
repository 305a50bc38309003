"""The SQLite dialect: the embedded default (stdlib ``sqlite3``, no server).

Owns SQLite's connections, transactions, locks, checkpoints, opening and migrating a file,
its statements of the commit, and the writers' lease as a ``flock``.  It must not hold any
of the store's logic: what to write and when is decided in ``_commit``, ``_versions`` and
``_retention``, on the :class:`~._dialect.Dialect` interface this implements.

- WAL journal: readers never block the writer nor each other.
- One writer at a time, without "database is locked" reaching the caller: writes take an
  in-process lock (threads of this process, every store open on the same file) and then an
  exclusive ``flock`` on ``<db>.lock`` (other processes) before ``BEGIN IMMEDIATE``; a
  ``busy_timeout`` and a bounded retry on SQLITE_BUSY cover what is left (checkpoints,
  readers racing with the WAL's recovery).
- A new database is made under a temp name, schema and all, and renamed into place: a
  process killed while making it leaves no database or a complete one.
- Checkpoints (copying the WAL back into the database, with their fsyncs) run in a
  checkpointer thread after commits, not inside them.
- ``synchronous=NORMAL``: a committed transaction survives the process crashing; a power
  loss may forget the last transactions, never corrupt the file.  Artifact files are fsynced
  before their rows are written, so rows never point at files that are not there.
- Because writers are serialized, a write transaction picks the ids of the rows it inserts
  itself (``max(id) + 1 ...``), and get-or-create is a lookup then an insert of the missing
  rows, in the same write transaction: artifacts are found by ``sha256_prefix``, units by
  ``key_hash`` (integer indexes: see ``_schema``), always comparing the whole digest or key.
  Each sha256 and each unit key is so recorded once without a unique index on the text.
- Rows go in with multi-row ``VALUES`` (statements of 2**k rows, so that the statement
  cache reuses a few texts), as ``INSERT OR FAIL``: a refused row stops the statement with
  an error, like ``ABORT``, but SQLite then needs no statement journal — a copy of every page
  the statement touches, which for the random-order indexes (sha256, natural keys) costs
  more than the statement itself.  The statement's partial effects never survive: any
  error rolls back the whole transaction (or the unit's savepoint, when units are retried
  one by one).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import json
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._durable import fsync_directory
from ..errors import NotAStore, StorageWriteError, StoreError, StoreNotFound
from ._dialect import Dialect, LeaseHandle
from ._schema import SQLITE_MIGRATIONS, check_readable, migrate, sha256_prefix, unit_key_hash

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: WAL + busy_timeout only, and no lease
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEFAULT_CACHE_MIB", "FileLease", "SQLiteBackend"]

_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_BUSY_TIMEOUT_MS = 60_000
#: default page cache per connection (MiB).  Memory stays bounded by this times the pool
#: size whatever the store's size; a bigger cache (``open_store(cache_mib=...)``) speeds up
#: bulk commits into a large store.  Half SQLite's own default: the memory of a process
#: streaming on-demand units then stays nearly flat as the store grows, and commits are no
#: slower for it.
DEFAULT_CACHE_MIB = 1
#: page size of new databases (SQLite's default, set explicitly).  Larger pages make bulk
#: commits a little faster (fewer WAL writes), but the page caches of a large store then
#: grow peak memory more: memory that stays flat as the store grows matters more here.
_PAGE_SIZE = 4096
#: the writers checkpoint the WAL themselves only past this many pages, a safety
#: valve: normally the checkpointer thread does it, so that commits do not wait for its
#: writes and fsyncs (most of a commit's time otherwise)
_CHECKPOINT_PAGES = 20_000
#: the checkpointer thread checkpoints after this many commits
_COMMITS_PER_CHECKPOINT = 8
#: truncate the WAL file back to this size after a checkpoint
_JOURNAL_LIMIT = 64 * 1024 * 1024

#: a new database is made under its name plus this suffix, then renamed into place
_CREATING_SUFFIX = ".creating"

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def _process_lock(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


#: rows per multi-row INSERT statement (fewer if the SQLite build binds fewer variables)
_MAX_ROWS = 256


@functools.lru_cache(maxsize=128)
def _values_sql(head: str, width: int, count: int, tail: str) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([row] * count)}{tail}"


def _with_ids(start: int, rows: Sequence[Sequence[Any]]) -> list[Any]:
    """*rows*, each preceded by an id counting from *start*, as one flat list."""
    if not rows:
        return []
    columns = zip(*rows, strict=True)
    return list(itertools.chain.from_iterable(zip(itertools.count(start), *columns)))


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_log = logging.getLogger("triofetch.store")


def _descriptors_short(needed: int = 4) -> OSError | None:
    """The EMFILE (or ENFILE) of trying to open *needed* descriptors at once, if they
    cannot be (SQLite opens the database, its WAL and its shared memory); else None."""
    fds: list[int] = []
    try:
        for _ in range(needed):
            fds.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        if StorageWriteError.out_of_descriptors(exc):
            return exc
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return None


def _too_few_descriptors(path: Path, error: OSError) -> StoreError:
    """The error of a store that cannot be opened for want of file descriptors."""
    reason = os.strerror(error.errno or errno.EMFILE)
    return StoreError(
        f"cannot open {path}: {reason[:1].lower()}{reason[1:]} (SQLite needs a few file "
        "descriptors: raise the open-file limit, ulimit -n)"
    )


class _Checkpointer:
    """A thread that checkpoints the WAL after commits (PASSIVE: it blocks no one).

    It lives exactly as long as its backend: started by ``open()``, joined by ``close()``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stopping = False
        self.checkpoints = 0
        self._commits = 0
        self._thread = threading.Thread(
            target=self._run, name=f"triofetch-checkpoint {path.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            # (e.g. no file descriptor left: the writers' own autocheckpoint remains; the
            # thread ends quietly instead of printing a traceback no one can act on)
            _log.debug("no WAL checkpoints for %s: %s", self.path, exc)
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:  # pragma: no cover - the writers' autocheckpoint remains
                    pass
        finally:
            conn.close()

    def poke(self) -> None:
        # Not after every commit: the same hot index pages would be copied over and over.
        self._commits += 1
        if self._commits >= _COMMITS_PER_CHECKPOINT:
            self._commits = 0
            self._wake.set()  # pokes made while a checkpoint runs coalesce into one more

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()


class FileLease(LeaseHandle):
    """The writers' lease of an SQLite store: ``flock`` on a file beside the database.

    A descriptor per holder: ``flock`` locks belong to an open file, so holders in one
    process exclude each other as processes do, and the operating system releases the lock
    of a process that dies.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # not inherited by child processes (os.open makes it non-inheritable)
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            advice = (
                " (raise the open-file limit, ulimit -n)"
                if StorageWriteError.out_of_descriptors(exc)
                else ""
            )
            raise StoreError(f"cannot open the lease file {path}: {exc.strerror}{advice}") from exc

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


class SQLiteBackend(Dialect):
    """The SQLite dialect, on the database file *path*."""

    dialect = "sqlite"

    def __init__(self, path: Path, pool_size: int = 4, cache_mib: int = DEFAULT_CACHE_MIB) -> None:
        super().__init__(pool_size)
        self.path = path
        self._cache_kib = cache_mib * 1024
        self._key = os.path.realpath(path)
        self._lock = _process_lock(self._key)
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._all_guard = threading.Lock()
        self._lockfile: int | None = None
        self._max_variables = 999
        self._checkpointer: _Checkpointer | None = None
        #: read-only: the ``file:`` URI (mode=ro) every connection opens, set by open()
        self._readonly_uri: str | None = None

    # -- connections ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        uri = self._readonly_uri
        conn = sqlite3.connect(
            uri or self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            uri=uri is not None,
        )
        if uri is not None:
            conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = {-self._cache_kib}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_LIMIT}")
        conn.execute("PRAGMA foreign_keys = ON")
        self._max_variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        with self._all_guard:
            self._all.append(conn)
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            if conn.in_transaction:  # pragma: no cover - defensive
                conn.rollback()
            self._idle.put(conn)

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        with self._lock:
            if fcntl is not None and self._lockfile is not None:
                fcntl.flock(self._lockfile, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(self._lockfile, fcntl.LOCK_UN)
            else:
                yield

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        with self._writer_lock(), self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if self._checkpointer is not None:
            self._checkpointer.poke()

    @contextmanager
    def savepoint(self, conn: Any) -> Iterator[None]:
        conn.execute("SAVEPOINT unit")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
            raise
        conn.execute("RELEASE unit")

    def is_retryable(self, exc: BaseException) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        return (
            isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in _BUSY
        )

    def is_db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def wrap(self, exc: Exception) -> StoreError:
        """SQLite says only "unable to open database file" (SQLITE_CANTOPEN) when a new
        connection, or a file a query opens, gets no descriptor: that is looked at here, in
        the thread that failed, by trying to get a few.  When none can be had, the error
        says so (as opening the store does), and the ``EMFILE``/``ENFILE`` of the try is
        the driver error's cause (:func:`~triofetch.errors.error_chain` finds it): a want
        of the process, not a store that cannot be read."""
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_CANTOPEN:
            try:
                short = _descriptors_short()
            except OSError:  # (no /dev/null to try with: not known)
                short = None
            if short is not None:
                exc.__cause__ = short
                return _too_few_descriptors(self.path, short)
        return super().wrap(exc)

    def sql(self, text: str) -> str:
        return text

    def lease_handle(self) -> FileLease:
        return FileLease(Path(f"{self.path}.lease"))

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        try:
            if self.readonly:
                self._open_readonly()
            else:
                self._open_writable()
        except sqlite3.Error as exc:
            # (SQLite says only "unable to open" when no descriptor is left: looked at
            # before closing what this open holds)
            code = getattr(exc, "sqlite_errorcode", None)
            short = _descriptors_short() if code == sqlite3.SQLITE_CANTOPEN else None
            self.close()
            if code == sqlite3.SQLITE_NOTADB:
                raise NotAStore(str(self.path), "not an SQLite database") from exc
            if short is not None:
                raise _too_few_descriptors(self.path, short) from exc
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        except OSError as exc:  # the lock file, the directory: e.g. a read-only filesystem
            self.close()
            if StorageWriteError.out_of_descriptors(exc):
                raise _too_few_descriptors(self.path, exc) from exc
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _open_writable(self) -> None:
        lockfile = f"{self.path}.lock"
        if not self.path.exists():
            if not self.create:
                raise StoreNotFound(str(self.path))
        elif not os.path.exists(lockfile):
            # No lock file: no store is being made here (its maker creates the lock file
            # before the database), so a file that is not a store is refused before anything
            # is made beside it.
            conn = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True)
            try:
                self._schema_version(conn)
            finally:
                conn.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        # Under the writers' lock: a new database appears under its name only complete
        # (made under a temp name, then renamed: see _create_database), so a file found here
        # that is not a store (empty, foreign) is refused, never made into one.
        with self._writer_lock():
            if not self.path.exists():
                if not self.create:
                    raise StoreNotFound(str(self.path))
                self._create_database()
            with self._connection() as conn:
                self._schema_version(conn)
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":  # pragma: no cover - e.g. a filesystem without shared memory
                    raise StoreError(f"SQLite refused WAL mode for {self.path} (got {mode})")
                self._migrate(conn)
        self._checkpointer = _Checkpointer(self.path)

    def _create_database(self) -> None:
        """Make a new database, schema and all, under a temp name, and rename it into place.

        Under the writers' lock.  The database's own name so never shows a file without
        triofetch's tables: a maker killed at any moment leaves no database or a complete one
        (its journal mode is set to WAL by the open that follows, every open does), never a
        table-less file that every later open would refuse as foreign.  The temp file a
        killed maker leaves behind (``<db>.creating``) is removed by the next maker.
        """
        # beside the file the name leads to (a symlink to a database yet to be made)
        target = Path(os.path.realpath(self.path))
        temp = target.with_name(target.name + _CREATING_SUFFIX)
        temp.unlink(missing_ok=True)  # what a killed maker left (never a journal: see below)
        try:
            conn = sqlite3.connect(temp, isolation_level=None)
            try:
                # before the first table: a new database's page size
                conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
                # no journal file beside the temp; the commit fsyncs the file
                conn.execute("PRAGMA journal_mode = MEMORY")
                conn.execute("PRAGMA synchronous = FULL")
                self._migrate(conn)
            finally:
                conn.close()
            os.rename(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        # (a file system that cannot fsync a directory loses, at worst, a store just made)
        with contextlib.suppress(OSError):
            fsync_directory(target.parent)

    def _open_readonly(self) -> None:
        # No lock file, no checkpointer, no migration: nothing is written.
        if not self.path.exists():
            raise StoreNotFound(str(self.path))
        self._readonly_uri = uri = self._make_readonly_uri()
        try:
            with self._connection() as conn:
                version = self._schema_version(conn)
        except sqlite3.OperationalError as exc:
            if "immutable=1" in uri or exc.sqlite_errorcode != sqlite3.SQLITE_CANTOPEN:
                raise
            # SQLite says only "unable to open": no descriptor left (a low ulimit -n), or a
            # directory that may not be written with a WAL to read
            short = _descriptors_short()
            if short is not None:
                raise _too_few_descriptors(self.path, short) from exc
            if os.access(self.path.parent, os.W_OK):
                raise
            raise StoreError(
                f"cannot read {self.path} read-only: its directory may not be written and "
                f"its write-ahead log ({self.path}-wal) holds commits SQLite can read only "
                "with its -shm file; open the store once with write access to fold them in"
            ) from exc
        check_readable(version, str(self.path))

    def _make_readonly_uri(self) -> str:
        """``mode=ro``; with ``immutable=1`` too when the directory may not be written.

        SQLite reads a WAL database through its ``-shm`` file, which a read-only connection
        creates when it is missing (after a clean close it is): in a directory that may not
        be written (a read-only mount) it cannot, and the database opens only as immutable.
        A non-empty ``-wal`` there was left by a writer that did not close: immutable would
        ignore its commits, so the plain read-only open (which reads it when its ``-shm``
        is there too) is tried instead.
        """
        base = self.path.absolute().as_uri() + "?mode=ro"
        if os.access(self.path.parent, os.W_OK):
            return base
        try:
            pending = os.stat(f"{self.path}-wal").st_size > 0
        except FileNotFoundError:
            pending = False
        return base if pending else base + "&immutable=1"

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        """The schema version of an existing database; NotAStore when it is no store."""
        if not self.path.is_file():
            raise NotAStore(str(self.path), "not a file")
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'triofetch_schema'"
        ).fetchone()[0]
        if not found:
            empty = self.path.stat().st_size == 0
            raise NotAStore(
                str(self.path),
                "an empty file" if empty else "an SQLite database without triofetch's tables",
            )
        row = conn.execute("SELECT version FROM triofetch_schema").fetchone()
        return 0 if row is None else int(row[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Foreign keys off while migrating (a no-op inside a transaction, hence here): a
        # migration may rebuild a table others refer to.  The keys are checked before the
        # commit, and enforcement comes back on whatever happens.
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                migrate(conn, SQLITE_MIGRATIONS, "?", str(self.path))
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:  # pragma: no cover - would be a bug in a migration
                    raise StoreError(f"migrating {self.path} broke foreign keys: {broken[:5]!r}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._all_guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        if self._lockfile is not None:
            os.close(self._lockfile)
            self._lockfile = None

    # -- primitives ---------------------------------------------------------------------------

    def q_find_units(self, conn: Any, keys: list[tuple[str, str]]) -> Iterable[Sequence[Any]]:
        # rows by key hash, then only those of the keys asked for (a hash may collide)
        wanted = set(keys)
        rows = conn.execute(
            "SELECT u.id, u.type, u.natural_key, u.fields, ua.relative_path, a.sha256, a.size, "
            "a.digests FROM units u "
            "LEFT JOIN unit_artifacts ua ON ua.unit_id = u.id "
            "LEFT JOIN artifacts a ON a.id = ua.artifact_id "
            "WHERE u.key_hash IN (SELECT value FROM json_each(?))",
            (_dumps([unit_key_hash(t, nk) for t, nk in keys]),),
        ).fetchall()
        return [row for row in rows if (row[1], row[2]) in wanted]

    def q_find_artifacts(self, conn: Any, shas: list[str]) -> Iterable[Sequence[Any]]:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT sha256, size, digests FROM artifacts "
            "WHERE sha256_prefix IN (SELECT value FROM json_each(?)) "
            "AND sha256 IN (SELECT value FROM json_each(?))",
            (_dumps([sha256_prefix(s) for s in shas]), _dumps(shas)),
        ).fetchall()

    def _insert_flat(
        self, conn: Any, head: str, width: int, flat: list[Any], tail: str = ""
    ) -> int:
        """INSERT rows of *width* values given one after another in *flat*.

        Statements of 2**k rows (at most ``_MAX_ROWS``), so that few distinct texts are
        compiled and the statement cache reuses them.
        """
        most = _MAX_ROWS
        while most > 1 and most * width > self._max_variables:
            most //= 2
        changed, pos, total = 0, 0, len(flat) // width
        while pos < total:
            count = min(most, 1 << ((total - pos).bit_length() - 1))
            cur = conn.execute(
                _values_sql(head, width, count, tail), flat[pos * width : (pos + count) * width]
            )
            changed += cur.rowcount
            pos += count
        return changed

    @staticmethod
    def _next_id(conn: Any, table: str) -> int:
        return int(conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0])

    def q_artifact_ids(
        self, conn: Any, rows: list[tuple[str, int, str]]
    ) -> dict[str, tuple[int, int]]:
        # Get-or-create, kept unique by the transaction (see the module's docstring): one
        # SELECT by prefix finds those recorded, the others go in with ids picked here
        # (writers are serialized, so max(id) + 1 ... are free).
        prefixes = [sha256_prefix(r[0]) for r in rows]
        wanted = {r[0] for r in rows}
        ids: dict[str, tuple[int, int]] = {
            sha: (aid, size)
            for aid, sha, size in conn.execute(
                "SELECT id, sha256, size FROM artifacts "
                "WHERE sha256_prefix IN (SELECT value FROM json_each(?))",
                (_dumps(prefixes),),
            )
            if sha in wanted
        }
        new: list[Any] = []  # the rows to insert, flat
        if len(ids) < len(wanted):
            next_id = self._next_id(conn, "artifacts")
            add = new.extend
            for (sha, size, digests), prefix in zip(rows, prefixes, strict=True):
                if sha not in ids:
                    ids[sha] = (next_id, size)
                    add((next_id, sha, prefix, size, digests))
                    next_id += 1
        if new:
            self._insert_flat(
                conn, "INSERT INTO artifacts (id, sha256, sha256_prefix, size, digests)", 5, new
            )
        return ids

    def q_insert_units(
        self, conn: Any, rows: list[tuple[str, str, str, int, str | None]]
    ) -> list[tuple[int, bool]]:
        # As for artifacts (the rows come with distinct keys): one SELECT by key hash finds
        # those recorded, the others go in with ids picked here.
        found: dict[tuple[str, str], int] = {
            (t, nk): uid
            for uid, t, nk in conn.execute(
                "SELECT id, type, natural_key FROM units "
                "WHERE key_hash IN (SELECT value FROM json_each(?))",
                (_dumps([r[3] for r in rows]),),
            )
        }
        result: list[tuple[int, bool]] = []
        new: list[Any] = []
        next_id = self._next_id(conn, "units")
        for t, nk, fields, h, rk in rows:
            uid = found.get((t, nk))
            if uid is None:
                result.append((next_id, True))
                new.extend((next_id, t, nk, h, fields, rk))
                next_id += 1
            else:
                result.append((uid, False))
        if new:
            self._insert_flat(
                conn,
                "INSERT OR FAIL INTO units (id, type, natural_key, key_hash, fields, repo_key)",
                6,
                new,
            )
        return result

    def q_insert_unit_artifacts(
        self, conn: Any, rows: list[tuple[int, str, int | None]]
    ) -> list[int]:
        start = self._next_id(conn, "unit_artifacts")
        self._insert_flat(
            conn,
            "INSERT INTO unit_artifacts (id, unit_id, relative_path, artifact_id)",
            4,
            _with_ids(start, rows),
        )
        return list(range(start, start + len(rows)))

    def q_insert_remotes(self, conn: Any, rows: list[tuple[int, str, int | None, str]]) -> None:
        self._insert_flat(
            conn,
            "INSERT INTO remote_artifacts (unit_artifact_id, url, size, digests)",
            4,
            list(itertools.chain.from_iterable(rows)),
        )

    def q_fill(self, conn: Any, rows: list[tuple[int, str, int]]) -> int:
        cur = conn.executemany(
            "UPDATE unit_artifacts SET artifact_id = ? "
            "WHERE unit_id = ? AND relative_path = ? AND artifact_id IS NULL",
            [(a, u, p) for u, p, a in rows],
        )
        return int(cur.rowcount)

    def q_add_version_units(self, conn: Any, version_id: int, unit_ids: list[int]) -> int:
        if not unit_ids:
            return 0
        return self._insert_flat(
            conn,
            "INSERT INTO version_units (version_id, unit_id, added)",
            3,
            list(
                itertools.chain.from_iterable(
                    zip(itertools.repeat(version_id), unit_ids, itertools.repeat(1))
                )
            ),
            " ON CONFLICT DO NOTHING",
        )

    def q_remove_version_units(self, conn: Any, version_id: int, unit_ids: list[int]) -> int:
        cur = conn.execute(
            "DELETE FROM version_units WHERE version_id = ? "
            "AND unit_id IN (SELECT value FROM json_each(?))",
            (version_id, _dumps(unit_ids)),
        )
        return int(cur.rowcount)

    def in_list(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def unreferenced(self, column: str, table: str, ref: str) -> str:
        # one lookup in an index SQLite builds once for the subquery; a correlated NOT EXISTS
        # would scan *table* once per row (no index leads with the referring column)
        return f"{column} NOT IN (SELECT {ref} FROM {table} WHERE {ref} IS NOT NULL)"

    def list_param(self, values: Sequence[Any]) -> Any:
        return _dumps(list(values))

    def q_members_under(
        self, conn: Any, version_id: int, paths: list[str]
    ) -> Iterable[Sequence[Any]]:
        # a range on the index for each path: p itself, and its children, which sort
        # between 'p/' and 'p0'.
        # CROSS JOIN fixes the order (paths, then the index, then membership): left to
        # itself the planner scans the whole version once per path.
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT u.id, u.type, u.natural_key, u.repo_key, vu.added "
            "FROM json_each(?) AS p CROSS JOIN units u "
            "ON u.repo_key >= p.value AND u.repo_key < p.value || '0' "
            "CROSS JOIN version_units vu ON vu.version_id = ? AND vu.unit_id = u.id",
            (_dumps(paths), version_id),
        ).fetchall()

    def q_members_at(self, conn: Any, version_id: int, keys: list[str]) -> Iterable[Sequence[Any]]:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT u.id, u.type, u.natural_key, u.repo_key, vu.added "
            "FROM json_each(?) AS k CROSS JOIN units u ON u.repo_key = k.value "
            "CROSS JOIN version_units vu ON vu.version_id = ? AND vu.unit_id = u.id",
            (_dumps(keys), version_id),
        ).fetchall()
