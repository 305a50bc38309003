"""What each database provides the store: connections, transactions, and its bulk statements.

Owns the interface a database implements (:class:`Dialect`; SQLite in ``_sqlite``, PostgreSQL
in ``_postgres``) and the one thing built on it that every caller needs: running a function
in a transaction, retried after a serialization failure, deadlock or busy database, with the
driver's errors turned into :class:`~triofetch.StoreError`.  The statements each database
writes its own way (``json_each`` in SQLite, ``unnest`` of arrays in PostgreSQL) are the
``q_*`` methods; everything else is shared SQL written with ``?`` placeholders by the modules
above (``_commit``, ``_versions``, ``_retention``).

It must not know what a unit, a version or a repository key *means*: the commit algorithm,
the placement of units and the lookups live above it.  It imports no other module of the
store (only :mod:`triofetch.errors` and the unit key type).
"""

from __future__ import annotations

import collections
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, TypeVar

from .._model import UnitKey
from ..errors import StoreError

__all__ = ["Dialect", "FaultHook", "LeaseHandle"]

T = TypeVar("T")

#: A test hook: called with the name of each step of a commit and the keys it concerns.
FaultHook = Callable[[str, Sequence[UnitKey]], None]


class LeaseHandle(ABC):
    """One holder's handle on the writers' lease (a file descriptor, a database connection).

    Made by :meth:`Dialect.lease_handle` in a worker thread; every method blocks briefly
    and runs in a worker thread too.  What the lease is for, and how it is waited for, is
    ``_retention``'s business.
    """

    @abstractmethod
    def try_acquire(self, exclusive: bool) -> bool:
        """Take the lease (shared, or *exclusive*) if that is possible now; never waits."""

    @abstractmethod
    def close(self) -> None:
        """Release the lease if it is held, and free the handle (idempotent)."""

    def fence(self, conn: Any) -> None:
        """Called first in each write transaction of the lease's holder, on that transaction's
        connection *conn*: raise :class:`StoreError` when the lease was lost since it was
        taken (the collector may have run since), and keep the collector away until the
        transaction ends.  A lease that lasts as long as its process (a ``flock``) needs
        nothing here."""
        return None


class Dialect(ABC):
    """One database, as the store uses it.  Every method runs in a worker thread."""

    #: ``"sqlite"`` or ``"postgresql"``
    dialect: str
    #: bounded retries of a whole transaction after a serialization failure / deadlock / busy
    max_attempts = 8
    #: set by open_store() before open(): open without writing anything (no migration),
    #: and refuse every write
    readonly = False
    #: set by open_store() before open(): create the store when there is none
    create = True
    #: appended to a SELECT that must lock the rows it reads (PostgreSQL: FOR UPDATE)
    lock_rows = ""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        #: called by the commit between its statements (tests inject failures with it)
        self.fault: FaultHook | None = None
        #: transactions retried, by exception class name (for tests and monitoring)
        self.retried: collections.Counter[str] = collections.Counter()
        #: the writers' lease the calling task holds on this database (set by
        #: ``Store.lease()``; worker threads see their task's): its write transactions
        #: are fenced by it (:meth:`LeaseHandle.fence`)
        self.held_lease: ContextVar[LeaseHandle | None] = ContextVar(
            f"triofetch_lease_{id(self):x}", default=None
        )

    # -- connections and transactions ------------------------------------------------------

    @abstractmethod
    def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def reading(self) -> AbstractContextManager[Any]:
        """A connection inside a read-only transaction."""

    @abstractmethod
    def writing(self) -> AbstractContextManager[Any]:
        """A connection inside a write transaction: committed on exit, rolled back on error."""

    @abstractmethod
    def savepoint(self, conn: Any) -> AbstractContextManager[None]: ...

    @abstractmethod
    def is_retryable(self, exc: BaseException) -> bool: ...

    @abstractmethod
    def is_db_error(self, exc: BaseException) -> bool: ...

    @abstractmethod
    def sql(self, text: str) -> str:
        """Translate shared SQL written with ``?`` placeholders."""

    @abstractmethod
    def lease_handle(self) -> LeaseHandle:
        """A new holder's handle on the writers' lease; blocks briefly."""

    def wrap(self, exc: Exception) -> StoreError:
        """A driver's error as the store reports it."""
        return StoreError(f"{self.dialect}: {type(exc).__name__}: {exc}".rstrip())

    def run_read(self, fn: Callable[[Any], T]) -> T:
        """*fn* on a connection in a read-only transaction."""
        return self._run(self.reading, fn)

    def run_write(self, fn: Callable[[Any], T], *, fenced: bool = True) -> T:
        """*fn* on a connection in a write transaction, committed when it returns.

        Under a writers' lease (:attr:`held_lease`) the transaction is *fenced* first: it
        fails when the lease was lost.  Pass ``fenced=False`` for a write that only removes
        what the writer made itself (discarding its version), which needs no lease.
        """
        return self._run(self.writing, fn, self.held_lease.get() if fenced else None)

    def _run(
        self,
        connect: Callable[[], AbstractContextManager[Any]],
        fn: Callable[[Any], T],
        lease: LeaseHandle | None = None,
    ) -> T:
        """*fn* on a connection from *connect* (fenced by *lease*), retried on serialization
        failures/deadlocks."""
        for attempt in range(self.max_attempts):
            try:
                with connect() as conn:
                    if lease is not None:
                        lease.fence(conn)
                    return fn(conn)
            except Exception as exc:
                if self.is_retryable(exc) and attempt + 1 < self.max_attempts:
                    self.retried[type(exc).__name__] += 1
                    self._backoff(attempt)
                    continue
                if self.is_db_error(exc):
                    raise self.wrap(exc) from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _backoff(attempt: int) -> None:
        time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))

    # -- the statements each database writes its own way -------------------------------------

    @abstractmethod
    def q_find_units(self, conn: Any, keys: list[tuple[str, str]]) -> Iterable[Sequence[Any]]:
        """Rows (id, type, natural_key, fields, relative_path, sha256, size, digests)."""

    @abstractmethod
    def q_find_artifacts(self, conn: Any, shas: list[str]) -> Iterable[Sequence[Any]]:
        """Rows (sha256, size, digests)."""

    @abstractmethod
    def q_artifact_ids(
        self, conn: Any, rows: list[tuple[str, int, str]]
    ) -> dict[str, tuple[int, int]]:
        """Get-or-create artifacts (sha256, size, digests JSON) → {sha256: (id, size)}."""

    @abstractmethod
    def q_insert_units(
        self, conn: Any, rows: list[tuple[str, str, str, int, str | None]]
    ) -> list[tuple[int, bool]]:
        """Get-or-create units (type, natural_key, fields, key_hash, repo_key) → (id, created)
        of each row (the key hash is ``_schema.unit_key_hash`` of the key, for databases that
        use it)."""

    @abstractmethod
    def q_insert_unit_artifacts(
        self, conn: Any, rows: list[tuple[int, str, int | None]]
    ) -> list[int]:
        """Insert (unit_id, relative_path, artifact_id) → the id of each row."""

    @abstractmethod
    def q_insert_remotes(self, conn: Any, rows: list[tuple[int, str, int | None, str]]) -> None:
        """Insert (unit_artifact_id, url, size, digests JSON)."""

    @abstractmethod
    def q_fill(self, conn: Any, rows: list[tuple[int, str, int]]) -> int:
        """Set artifact_id of (unit_id, relative_path) where it is NULL; how many were set."""

    @abstractmethod
    def q_add_version_units(self, conn: Any, version_id: int, unit_ids: list[int]) -> int: ...

    @abstractmethod
    def q_remove_version_units(self, conn: Any, version_id: int, unit_ids: list[int]) -> int: ...

    @abstractmethod
    def in_list(self, column: str) -> str:
        """SQL true when *column* is in the list given as one parameter (``list_param``)."""

    @abstractmethod
    def list_param(self, values: Sequence[Any]) -> Any:
        """A list of values as the one parameter of ``in_list``."""

    @abstractmethod
    def q_members_at(self, conn: Any, version_id: int, keys: list[str]) -> Iterable[Sequence[Any]]:
        """Members of the version whose repository key is one of *keys*: rows (unit_id, type,
        natural_key, repo_key, added)."""

    @abstractmethod
    def q_members_under(
        self, conn: Any, version_id: int, paths: list[str]
    ) -> Iterable[Sequence[Any]]:
        """Members of the version whose repository key is one of *paths* or lies below it
        (``p/...``) — and those sorting between the two (``p.txt``): the callers filter.
        Rows (unit_id, type, natural_key, repo_key, added)."""

    @abstractmethod
    def unreferenced(self, column: str, table: str, ref: str) -> str:
        """SQL true when no row of *table* has *column*'s value in its column *ref*."""
