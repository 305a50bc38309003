"""The database of units, artifacts and repository versions: SQLite or PostgreSQL.

``open_store(url)`` is the only door::

    store = await open_store("sqlite:///var/lib/triofetch/db.sqlite3")
    ...
    await store.aclose()

    async with open_store("postgresql://user@host/db", root="/srv/triofetch") as store:
        ...

This module owns opening a store (choosing the database from the URL, checking the options)
and the store's public names; it must not hold any of the store's work.  The modules below
it, each importing only those under it::

    _facade      Store: the async face, worker threads, limiters, shielded writes
    _commit      the commit algorithm, and placing units in a version
    _retention   pruning, the writers' lease, garbage collection   (reads through _versions)
    _versions    repositories, versions, lookups
    _sqlite, _postgres   the dialects: each database's connections and statements
    _dialect     the interface of a dialect, and its transaction runner
    _types       the values the store takes and returns
    _schema      the tables, and their migrations
"""

from __future__ import annotations

import functools
import os
from collections.abc import Generator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from .._context import check_trio
from .._model import ArtifactRecord, UnitKey, check_bool, check_int, check_number
from .._public import publish
from .._urls import redact_url
from ..errors import (
    ArtifactConflict,
    InvalidInput,
    RepositoryKeyConflict,
    RepositoryNotFound,
    StoreBusy,
    StoreError,
    VersionNotFound,
    VersionNotWritable,
    WrongContext,
)
from ..storage import ArtifactStorage
from ._dialect import Dialect
from ._facade import Store
from ._retention import GCReport, PruneReport
from ._schema import SCHEMA_VERSION
from ._sqlite import DEFAULT_CACHE_MIB, SQLiteBackend
from ._types import (
    DEFAULT_REPOSITORY_KEYS,
    CommitOutcome,
    CommitReport,
    MissingArtifact,
    NewUnit,
    NewUnitArtifact,
    Placement,
    RemoteArtifact,
    ReplacedUnit,
    RepositoryKey,
    UnitInfo,
    VersionHandle,
    check_repository_keys,
)
from ._versions import VersionInfo

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DATABASE_NAME",
    "DEFAULT_REPOSITORY_KEYS",
    "SCHEMA_VERSION",
    "ArtifactConflict",
    "ArtifactRecord",
    "CommitOutcome",
    "CommitReport",
    "GCReport",
    "MissingArtifact",
    "NewUnit",
    "NewUnitArtifact",
    "OpeningStore",
    "Placement",
    "PruneReport",
    "RemoteArtifact",
    "ReplacedUnit",
    "RepositoryKey",
    "RepositoryKeyConflict",
    "RepositoryNotFound",
    "Store",
    "StoreBusy",
    "UnitInfo",
    "UnitKey",
    "VersionHandle",
    "VersionInfo",
    "VersionNotFound",
    "VersionNotWritable",
    "open_store",
]

#: The SQLite file used when open_store() is given a root and no URL.
DEFAULT_DATABASE_NAME = "triofetch.sqlite3"
#: seconds :func:`~triofetch.open_store` waits for a PostgreSQL server by default
DEFAULT_CONNECT_TIMEOUT = 10.0


def _backend_for(
    url: str | None,
    root: Path | None,
    pool_size: int | None,
    cache_mib: int | None = None,
    *,
    create: bool = True,
    readonly: bool = False,
    connect_timeout: float = 10.0,
) -> Dialect:
    backend = _new_backend(url, root, pool_size, cache_mib, connect_timeout)
    backend.readonly = readonly
    backend.create = create and not readonly
    return backend


def _new_backend(
    url: str | None,
    root: Path | None,
    pool_size: int | None,
    cache_mib: int | None,
    connect_timeout: float = 10.0,
) -> Dialect:
    if url is None:
        if root is None:
            raise InvalidInput("open_store() needs a database URL or a root")
        url = f"sqlite:///{root / DEFAULT_DATABASE_NAME}"
    if not isinstance(url, str):
        raise InvalidInput(f"a database URL must be a str, got {url!r}")
    if pool_size is not None:
        check_int(pool_size, "pool_size", least=1)
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :].split("?", 1)[0]
        if rest in ("", "/", ":memory:", "/:memory:"):
            raise InvalidInput(
                "an SQLite store needs a file (sqlite:///path/to/db): several connections "
                "must share it"
            )
        # sqlite:////abs/path (SQLAlchemy's spelling) is /abs/path too, not //abs/path
        path = Path("/" + rest.lstrip("/") if rest.startswith("/") else rest)
        if not path.is_absolute():
            path = (root or Path.cwd()) / path
        return SQLiteBackend(path, pool_size or 4, cache_mib or DEFAULT_CACHE_MIB)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from ._postgres import PostgresBackend
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL needs psycopg 3 and psycopg-pool: pip install 'triofetch[postgres]' "
                f"({exc})"
            ) from exc
        return PostgresBackend(url, pool_size or 4, connect_timeout=connect_timeout)
    raise InvalidInput(
        f"unsupported database URL {redact_url(url)!r}: use sqlite:///path or postgresql://..."
    )


async def _open(
    url: str | None,
    root: str | os.PathLike[str] | None,
    pool_size: int | None,
    storage: ArtifactStorage | None,
    cache_mib: int | None = None,
    repository_keys: Mapping[str, RepositoryKey] = DEFAULT_REPOSITORY_KEYS,
    create: bool = True,
    readonly: bool = False,
    connect_timeout: float = 10.0,
) -> Store:
    check_trio()
    root_path = None if root is None else Path(root)
    backend = _backend_for(
        url,
        root_path,
        pool_size,
        cache_mib,
        create=create,
        readonly=readonly,
        connect_timeout=connect_timeout,
    )
    with trio.CancelScope(shield=True):  # a half-opened pool must not leak
        await trio.to_thread.run_sync(backend.open)
        # The storage's directories are made once the database is there, never before: a
        # root holding only them would be a store whose records are gone.
        if storage is None and root_path is not None:
            try:
                storage = await trio.to_thread.run_sync(
                    functools.partial(ArtifactStorage, root_path, readonly=readonly)
                )
            except BaseException:
                await trio.to_thread.run_sync(backend.close)
                raise
    return Store(backend, storage=storage, repository_keys=repository_keys)


class OpeningStore:
    """What :func:`~triofetch.open_store` returns: await it (``store = await
    open_store(...)``), or enter it (``async with open_store(...) as store:``); the type to
    name where one is kept before either."""

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._store: Store | None = None

    def __await__(self) -> Generator[Any, None, Store]:
        return _open(*self._args).__await__()

    async def __aenter__(self) -> Store:
        if self._store is not None:
            # (a second store here would replace the first, which then never closed)
            raise WrongContext("this open_store(...) is already open: call open_store again")
        self._store = await _open(*self._args)
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()


def open_store(
    url: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    pool_size: int | None = None,
    storage: ArtifactStorage | None = None,
    cache_mib: int | None = None,
    repository_keys: Mapping[str, RepositoryKey | None] | None = None,
    create: bool = True,
    readonly: bool = False,
    connect_timeout: float | None = None,
) -> OpeningStore:
    """Open (creating and migrating if needed) the store at *url*.

    *url* is ``sqlite:///absolute/path.db`` (a relative path is taken under *root*),
    ``postgresql://...`` (any libpq connection URL), or None for the SQLite file
    ``<root>/triofetch.sqlite3``.  With *root*, ``store.storage`` is the
    :class:`ArtifactStorage` there (or pass your own *storage*).  *pool_size* is the number
    of connections, and of worker threads doing database work (default 4).  *cache_mib* is
    SQLite's page cache per connection (default 1 MiB; PostgreSQL ignores it): memory stays
    bounded by it however large the store grows.  *repository_keys* declares the
    :class:`RepositoryKey` of unit types (``{type: RepositoryKey(...)}``, None to drop a
    default): a version holds one unit per key; ``file`` units are keyed by their
    ``relative_path`` unless told otherwise (:data:`DEFAULT_REPOSITORY_KEYS`).

    *create* (default True) makes a new store when there is none: a new SQLite file, or
    triofetch's tables in a PostgreSQL database that holds no tables of its own.  With
    ``create=False`` a missing store raises :class:`~triofetch.StoreNotFound`.  An existing
    file or database that is not a store (an empty file, a file that is not SQLite, a
    database without triofetch's ``triofetch_schema`` table or, for PostgreSQL, holding other
    tables) raises :class:`~triofetch.NotAStore` whatever *create* says: it is never made
    into one.

    *readonly* opens the store for reading only, and never creates one: nothing is written
    (SQLite: a ``mode=ro`` connection, ``immutable`` when the directory may not be written,
    no lock file, no checkpoints; PostgreSQL: every session has
    ``default_transaction_read_only``), the schema is not migrated (a store of an older
    schema raises :class:`~triofetch.StoreError` saying to run a writing command once), the
    artifact storage of *root* is opened read-only (no directory is created), and every
    method that writes raises :class:`~triofetch.StoreError`.  For reading a store on a
    read-only filesystem, or one other processes write.

    *connect_timeout* bounds, in seconds, the wait for a PostgreSQL server (default
    :data:`~triofetch.store.DEFAULT_CONNECT_TIMEOUT`, 10): a server that refuses
    connections fails at once, one that does not answer within about that time (libpq
    counts whole seconds, at least 2) fails then; each raises
    :class:`~triofetch.StoreError` saying what happened (the connection was refused, the
    host name does not resolve, authentication failed, it timed out) and libpq's reason,
    the URL's password redacted.  SQLite ignores it.

    Use either ``store = await open_store(...)`` (then ``await store.aclose()``) or
    ``async with open_store(...) as store:``.

    Raises :class:`~triofetch.SchemaVersionError` for a database written by a newer
    triofetch, :class:`~triofetch.StoreNotFound` and :class:`~triofetch.NotAStore` as said
    above, :class:`~triofetch.StoreError` when the database cannot be opened, and
    :class:`~triofetch.InvalidInput`, before anything is opened, for an argument that can
    never work (a *root* that is not a path, a *storage* that is not an
    :class:`ArtifactStorage`, a URL of no supported database...).
    """
    if root is not None and not (isinstance(root, str | os.PathLike) and os.fspath(root)):
        # (an empty path would be the current directory: a store made where one stands)
        raise InvalidInput(f"root must be a path (a str or an os.PathLike), got {root!r}")
    if storage is not None and not isinstance(storage, ArtifactStorage):
        raise InvalidInput(
            f"storage must be an ArtifactStorage or None (the storage under root), got {storage!r}"
        )
    check_bool(create, "create")
    check_bool(readonly, "readonly")
    absolute = None if root is None else os.path.abspath(root)
    if cache_mib is not None:
        check_int(cache_mib, "cache_mib", least=1)
    keys = check_repository_keys(repository_keys)
    if connect_timeout is None:
        connect_timeout = DEFAULT_CONNECT_TIMEOUT
    else:
        check_number(connect_timeout, "connect_timeout (seconds)", positive=True)
    return OpeningStore(
        url,
        absolute,
        pool_size,
        storage,
        cache_mib,
        keys,
        bool(create),
        bool(readonly),
        float(connect_timeout),
    )


publish(__name__, globals())
