"""The PostgreSQL dialect (psycopg 3 + psycopg_pool): several workers, one database.

Owns PostgreSQL's connection pool, transactions, opening and migrating a database, its
statements of the commit, and the writers' lease as an advisory lock.  It must not hold any
of the store's logic: what to write and when is decided in ``_commit``, ``_versions`` and
``_retention``, on the :class:`~._dialect.Dialect` interface this implements.  Imported only
when a PostgreSQL store is opened (psycopg is an optional dependency).

- A synchronous :class:`psycopg_pool.ConnectionPool`, used from worker threads; the store's
  limiter has as many tokens as the pool has connections.
- Transactions at READ COMMITTED.  Get-or-create is ``INSERT ... ON CONFLICT DO NOTHING``
  (waiting for a concurrent inserter of the same key to commit or roll back) followed by a
  SELECT of what another worker created.  Every statement writes its rows in a fixed order —
  sha256 for artifacts, (type, natural key) for units — so two workers committing
  overlapping batches lock rows in the same order and cannot deadlock each other.
- Serialization failures and deadlocks (told apart by exception class, never by message)
  retry the whole transaction, a bounded number of times.
- Slices go in as arrays: ``INSERT ... SELECT * FROM unnest(%s::text[], ...)``, one round
  trip per statement whatever the slice size.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from .._urls import redact_in, redact_url
from ..errors import NotAStore, StoreError, StoreNotFound
from ._dialect import Dialect, LeaseHandle
from ._schema import POSTGRES_MIGRATIONS, check_readable, migrate

T = TypeVar("T")
_log = logging.getLogger("triofetch.store")

__all__ = ["AdvisoryLease", "PostgresBackend"]

#: pg_advisory_xact_lock key taken while migrating ("triofetch" in ASCII, truncated)
_MIGRATION_LOCK = 0x7472696F6665
_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
#: the session advisory lock that is the writers' lease: shared by writers, exclusive for gc
_LEASE_LOCK = 0x74666C65617365  # "tflease"


#: the lines, after the first, of psycopg's message for several failed attempts (one per
#: address of the host names: ``- host: 'h', port: 'p', hostaddr: 'a': REASON``)
_ATTEMPTS = re.compile(r"^- host: .*?, port: .*?, hostaddr: .*?: ", re.MULTILINE)


def _why_not_connected(exc: psycopg.Error, timeout: int) -> str | None:
    """What happened, in words a user can act on, when libpq could not connect (every
    attempt failed the same way), or None when it is none of the usual causes.

    Told apart by psycopg's exception class (a timeout) and by libpq's own words, which do
    not depend on the locale (Python leaves ``LC_MESSAGES`` at C): libpq gives no code for
    them.  Only the label is taken from here; libpq's reason is shown beside it."""
    text = str(exc)
    marker = "Multiple connection attempts failed. All failures were:"
    attempts = _ATTEMPTS.split(text.partition(marker)[2])[1:] if marker in text else [text]
    timed_out = getattr(psycopg.errors, "ConnectionTimeout", ())  # (psycopg >= 3.2)
    labels = set()
    for attempt in attempts:
        if "timeout expired" in attempt or (len(attempts) == 1 and isinstance(exc, timed_out)):
            labels.add(f"timed out: the server did not answer within {timeout} s")
        elif "Connection refused" in attempt:
            labels.add("the connection was refused at once: no server is listening on that port")
        elif "on socket" in attempt and "No such file or directory" in attempt:
            labels.add("no server is listening on that Unix socket: its file is not there")
        elif "failed to resolve host" in attempt or "could not translate host name" in attempt:
            labels.add("the host name does not resolve")
        elif "no password supplied" in attempt or (
            exc.pgconn is not None and exc.pgconn.needs_password and not exc.pgconn.used_password
        ):
            labels.add("authentication failed: the server asks for a password and none was given")
        elif "authentication failed" in attempt:
            labels.add("authentication failed: the server refused the user name or password")
        elif "no pg_hba.conf entry" in attempt:
            labels.add("the server does not let this user connect from here (pg_hba.conf)")
        else:
            return None
    return labels.pop() if len(labels) == 1 else None


def _connect_failure(exc: psycopg.Error, conninfo: str, timeout: int, purpose: str = "") -> str:
    """The one line saying why libpq could not connect to *conninfo*: what happened, then
    libpq's own reason, the password redacted from both."""
    reason = redact_in(" ".join(str(exc).split()), conninfo)  # (libpq quotes it)
    why = _why_not_connected(exc, timeout)
    said = f"{why} ({reason})" if why else reason
    return f"cannot connect to PostgreSQL at {redact_url(conninfo)}{purpose}: {said}"


class _ConnectionLost(psycopg.OperationalError):
    """A transaction's connection turned out dead before it could have committed (it is
    run again: see ``PostgresBackend._transaction``)."""


class AdvisoryLease(LeaseHandle):
    """The lease of a PostgreSQL store: an advisory lock held by a connection of its own.

    Not a pooled connection: the lock lives as long as its session, and the server drops it
    when the connection closes — also when the holder's process is killed.
    """

    def __init__(self, conninfo: str, timeout: float) -> None:
        libpq_timeout = max(2, round(timeout))  # (libpq's least: 2 s)
        try:
            self._conn: psycopg.Connection[tuple[Any, ...]] | None = psycopg.connect(
                conninfo, autocommit=True, connect_timeout=libpq_timeout
            )
        except psycopg.Error as exc:
            raise StoreError(
                _connect_failure(exc, conninfo, libpq_timeout, " for the writers' lease")
            ) from exc

    def try_acquire(self, exclusive: bool) -> bool:
        if self._conn is None:
            raise StoreError("the lease handle is closed")
        fn = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
        try:
            row = self._conn.execute(f"SELECT {fn}(%s)", (_LEASE_LOCK,)).fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"cannot take the writers' lease: {exc}") from exc
        return bool(row and row[0])

    def fence(self, conn: Any) -> None:
        # The lease's session may end while its holder lives on (pg_terminate_backend, an
        # idle_session_timeout, a restart, a network cut): gc can run then, and remove what
        # the holder found or stored.  A session that still answers has held the lock since
        # it was taken (it is never given back before close); and the shared lock of this
        # transaction, taken first, keeps gc out from that answer until the commit.
        row = conn.execute("SELECT pg_try_advisory_xact_lock_shared(%s)", (_LEASE_LOCK,)).fetchone()
        if row and row[0] and self._answers():
            return
        raise StoreError(
            "the writers' lease was lost: its session of PostgreSQL ended while this writer "
            "ran (the server was restarted, or ended the session), so gc may have removed "
            "what this writer was about to record; nothing more was written: run it again"
        )

    def _answers(self) -> bool:
        """Whether the lease's session is still there (a round trip; it also keeps the
        session from looking idle while its holder writes)."""
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                # unlocked before the close returns: the server ends a closed session a
                # moment later, and a gc started right after must find the lease free
                conn.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                pass  # a broken session: the server ends it, and its locks with it
            finally:
                conn.close()


def _read_only_session(conn: psycopg.Connection[Any]) -> None:
    """The pool's configure hook for a store opened read-only: every transaction reads."""
    conn.execute("SET default_transaction_read_only = on")


class PostgresBackend(Dialect):
    """The PostgreSQL dialect, on the database of the libpq URL *conninfo*."""

    dialect = "postgresql"
    lock_rows = " FOR UPDATE"

    def __init__(
        self,
        conninfo: str,
        pool_size: int = 4,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(pool_size)
        self.conninfo = conninfo
        #: the wait for a free connection of the pool
        self.timeout = timeout
        #: the wait for the server when opening (each connection, and the pool's first)
        self.connect_timeout = connect_timeout
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] | None = None

    def _probe(self, libpq_timeout: int) -> None:
        """Connect once, directly: a server that cannot be reached fails here, at once when
        it refuses and within the timeout otherwise, saying which of them happened, with
        libpq's reason (the pool would retry until its timeout and only say that it timed
        out)."""
        try:
            psycopg.connect(self.conninfo, connect_timeout=libpq_timeout).close()
        except psycopg.Error as exc:
            raise StoreError(_connect_failure(exc, self.conninfo, libpq_timeout)) from exc

    def open(self) -> None:
        # libpq counts whole seconds (and at least 2); the pool's own wait is the option
        libpq_timeout = max(2, math.ceil(self.connect_timeout))
        self._probe(libpq_timeout)
        pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True, "connect_timeout": libpq_timeout},
            open=False,
            timeout=self.timeout,
            name="triofetch",
            configure=_read_only_session if self.readonly else None,
        )
        try:
            pool.open(wait=True, timeout=self.connect_timeout)
            self._pool = pool
            with pool.connection() as conn, conn.transaction():
                if self.readonly:
                    version = self._schema_version(conn)
                    if version is None:
                        raise self._not_found()
                    check_readable(version, "the database")
                else:
                    self._migrate(conn)
        except psycopg.Error as exc:  # includes PoolTimeout
            pool.close()
            self._pool = None
            raise StoreError(
                f"cannot open PostgreSQL database {redact_url(self.conninfo)}: "
                f"{redact_in(str(exc), self.conninfo)}"
            ) from exc
        except BaseException:
            pool.close()
            self._pool = None
            raise

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        if self._schema_version(conn) is None:
            # A new store is made in an empty database (an empty schema), never beside
            # another application's tables.
            if not self.create:
                raise self._not_found()
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "ORDER BY tablename LIMIT 4"
                )
            ]
            if tables:
                shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
                raise NotAStore(
                    redact_url(self.conninfo), f"it holds other tables ({shown}), none of ours"
                )
        migrate(conn, POSTGRES_MIGRATIONS, "%s", "the database")

    @staticmethod
    def _schema_version(conn: psycopg.Connection[Any]) -> int | None:
        """The store's schema version; None when the database holds no triofetch schema."""
        row = conn.execute("SELECT to_regclass('triofetch_schema') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        row = conn.execute("SELECT version FROM triofetch_schema").fetchone()
        return 0 if row is None else int(row[0])

    def _not_found(self) -> StoreNotFound:
        where = redact_url(self.conninfo)
        return StoreNotFound(where, f"no triofetch store in database {where}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        if self._pool is None:
            raise StoreError("the store is closed")
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._transaction(retry_commit=True) as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._transaction(retry_commit=False) as conn:
            yield conn

    @contextmanager
    def _transaction(self, retry_commit: bool) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A transaction on a pooled connection.  A connection found dead (the server
        restarted, or ended idle sessions) raises :class:`_ConnectionLost`, for the
        transaction to be run again on another one: safe before the commit was sent (the
        server rolls back what a dead session began), and for a read at any time; a write
        whose connection died while committing may have committed, and fails."""
        with self._conn() as conn:
            committing = False
            try:
                with conn.transaction():
                    yield conn
                    committing = True
            except psycopg.OperationalError as exc:
                if conn.broken and (retry_commit or not committing):
                    raise _ConnectionLost(str(exc)) from exc
                raise

    def run_read(self, fn: Callable[[Any], T]) -> T:
        return self._again_if_lost(super().run_read, fn)

    def run_write(self, fn: Callable[[Any], T], *, fenced: bool = True) -> T:
        def write(fn: Callable[[Any], T]) -> T:
            return Dialect.run_write(self, fn, fenced=fenced)

        return self._again_if_lost(write, fn)

    def _again_if_lost(self, run: Callable[[Callable[[Any], T]], T], fn: Callable[[Any], T]) -> T:
        """*run* (*fn*), again on another connection while the one it had turned out dead
        (every pooled connection may be), at most once per connection of the pool."""
        for _ in range(self.pool_size):
            try:
                return run(fn)
            except StoreError as exc:
                if not isinstance(exc.__cause__, _ConnectionLost):
                    raise
                _log.info("a pooled PostgreSQL connection was lost; running the transaction again")
        return run(fn)

    @contextmanager
    def savepoint(self, conn: Any) -> Iterator[None]:
        with conn.transaction():
            yield

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, _RETRYABLE)

    def is_db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def lease_handle(self) -> AdvisoryLease:
        return AdvisoryLease(self.conninfo, self.timeout)

    # -- primitives ---------------------------------------------------------------------------

    def q_find_units(self, conn: Any, keys: list[tuple[str, str]]) -> Iterable[Sequence[Any]]:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT u.id, u.type, u.natural_key, u.fields, ua.relative_path, a.sha256, a.size, "
            "a.digests FROM unnest(%s::text[], %s::text[]) AS k(t, nk) "
            "JOIN units u ON u.type = k.t AND u.natural_key = k.nk "
            "LEFT JOIN unit_artifacts ua ON ua.unit_id = u.id "
            "LEFT JOIN artifacts a ON a.id = ua.artifact_id",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()

    def q_find_artifacts(self, conn: Any, shas: list[str]) -> Iterable[Sequence[Any]]:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT sha256, size, digests FROM artifacts WHERE sha256 = ANY(%s::text[])", (shas,)
        ).fetchall()

    def q_artifact_ids(
        self, conn: Any, rows: list[tuple[str, int, str]]
    ) -> dict[str, tuple[int, int]]:
        shas = [r[0] for r in rows]
        conn.execute(
            "INSERT INTO artifacts (sha256, size, digests) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::jsonb[]) "
            "ON CONFLICT (sha256) DO NOTHING",
            (shas, [r[1] for r in rows], [r[2] for r in rows]),
        )
        cur = conn.execute(
            "SELECT sha256, id, size FROM artifacts WHERE sha256 = ANY(%s::text[])", (shas,)
        )
        return {sha: (aid, size) for sha, aid, size in cur}

    def q_insert_units(
        self, conn: Any, rows: list[tuple[str, str, str, int, str | None]]
    ) -> list[tuple[int, bool]]:
        types = [r[0] for r in rows]
        nks = [r[1] for r in rows]
        cur = conn.execute(
            "INSERT INTO units (type, natural_key, fields, repo_key) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::text[]) "
            "ON CONFLICT (type, natural_key) DO NOTHING RETURNING id, type, natural_key",
            (types, nks, [r[2] for r in rows], [r[4] for r in rows]),
        )
        found = {(t, nk): (uid, True) for uid, t, nk in cur}
        if len(found) < len(rows):
            rest = [r for r in rows if (r[0], r[1]) not in found]
            cur = conn.execute(
                "SELECT u.id, u.type, u.natural_key FROM unnest(%s::text[], %s::text[]) "
                "AS k(t, nk) JOIN units u ON u.type = k.t AND u.natural_key = k.nk",
                ([r[0] for r in rest], [r[1] for r in rest]),
            )
            found.update({(t, nk): (uid, False) for uid, t, nk in cur})
        return [found[(r[0], r[1])] for r in rows]

    def q_insert_unit_artifacts(
        self, conn: Any, rows: list[tuple[int, str, int | None]]
    ) -> list[int]:
        cur = conn.execute(
            "INSERT INTO unit_artifacts (unit_id, relative_path, artifact_id) "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) "
            "RETURNING id, unit_id, relative_path",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )
        ids = {(uid, path): ua_id for ua_id, uid, path in cur}
        return [ids[(r[0], r[1])] for r in rows]

    def q_insert_remotes(self, conn: Any, rows: list[tuple[int, str, int | None, str]]) -> None:
        conn.execute(
            "INSERT INTO remote_artifacts (unit_artifact_id, url, size, digests) "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::jsonb[])",
            tuple([r[i] for r in rows] for i in range(4)),
        )

    def q_fill(self, conn: Any, rows: list[tuple[int, str, int]]) -> int:
        cur = conn.execute(
            "UPDATE unit_artifacts ua SET artifact_id = v.a "
            "FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS v(u, p, a) "
            "WHERE ua.unit_id = v.u AND ua.relative_path = v.p AND ua.artifact_id IS NULL",
            tuple([r[i] for r in rows] for i in range(3)),
        )
        return int(cur.rowcount)

    def q_add_version_units(self, conn: Any, version_id: int, unit_ids: list[int]) -> int:
        cur = conn.execute(
            "INSERT INTO version_units (version_id, unit_id, added) "
            "SELECT %s, u, TRUE FROM unnest(%s::bigint[]) AS t(u) ON CONFLICT DO NOTHING",
            (version_id, unit_ids),
        )
        return int(cur.rowcount)

    def q_remove_version_units(self, conn: Any, version_id: int, unit_ids: list[int]) -> int:
        cur = conn.execute(
            "DELETE FROM version_units WHERE version_id = %s AND unit_id = ANY(%s::bigint[])",
            (version_id, unit_ids),
        )
        return int(cur.rowcount)

    def in_list(self, column: str) -> str:
        return f"{column} = ANY(?)"

    def unreferenced(self, column: str, table: str, ref: str) -> str:
        # an anti-join; NOT IN would scan the subquery once per row once it outgrows work_mem
        return f"NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{ref} = {column})"

    def list_param(self, values: Sequence[Any]) -> Any:
        return list(values)

    def q_members_under(
        self, conn: Any, version_id: int, paths: list[str]
    ) -> Iterable[Sequence[Any]]:
        # byte order (COLLATE "C", as the index): p, then its children between p/ and p0.
        # LATERAL subqueries kept apart (OFFSET 0) make every step a probe, of the index and
        # then of the membership key: joined freely, the planner hashes the whole version on
        # every call, and a commit's cost then grows with the size of the version.
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT u.id, u.type, u.natural_key, u.repo_key, vu.added "
            "FROM unnest(%s::text[]) AS p(x) CROSS JOIN LATERAL ("
            "SELECT id, type, natural_key, repo_key FROM units "
            'WHERE (repo_key COLLATE "C") >= (p.x COLLATE "C") '
            'AND (repo_key COLLATE "C") < ((p.x || \'0\') COLLATE "C") OFFSET 0) AS u '
            "CROSS JOIN LATERAL (SELECT added FROM version_units "
            "WHERE version_id = %s AND unit_id = u.id OFFSET 0) AS vu",
            (paths, version_id),
        ).fetchall()

    def q_members_at(self, conn: Any, version_id: int, keys: list[str]) -> Iterable[Sequence[Any]]:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT u.id, u.type, u.natural_key, u.repo_key, vu.added "
            "FROM unnest(%s::text[]) AS k(x) CROSS JOIN LATERAL ("
            "SELECT id, type, natural_key, repo_key FROM units "
            'WHERE (repo_key COLLATE "C") = (k.x COLLATE "C") OFFSET 0) AS u '
            "CROSS JOIN LATERAL (SELECT added FROM version_units "
            "WHERE version_id = %s AND unit_id = u.id OFFSET 0) AS vu",
            (keys, version_id),
        ).fetchall()
