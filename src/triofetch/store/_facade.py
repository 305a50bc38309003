"""The async face of the store: :class:`Store`, every call in a worker thread.

Owns how the store meets Trio: the checks of what callers pass, the worker threads bounded
by a :class:`trio.CapacityLimiter` sized to the connection pool, the shielding of writes
(a write waits for a thread cancellably, and once its thread has started it is shielded
from cancellation, so it commits or rolls back, never half-applies), closing, and the
writers' lease held around a writer's run.  The database work itself is delegated, one
call each, to ``_commit``, ``_versions`` and ``_retention``, on the store's dialect.

It must not hold SQL, nor any logic of a commit, a placement or a lookup.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import trio

from .._model import ArtifactRecord, UnitKey, check_bool, check_int, coerce_key, listed
from ..errors import InvalidInput, InvalidUnit, StoreError
from ..storage import ArtifactStorage
from . import _commit, _versions
from ._dialect import Dialect
from ._retention import (
    GCReport,
    PruneReport,
    acquire_lease,
    check_wait,
    delete_garbage,
    prune,
    release_lease,
    remove_empty_directories,
    remove_files,
    sweep_unrecorded,
)
from ._types import (
    DEFAULT_REPOSITORY_KEYS,
    CommitReport,
    MissingArtifact,
    NewUnit,
    Placement,
    RepositoryKey,
    UnitInfo,
    VersionHandle,
)
from ._versions import VersionInfo

__all__ = ["Store"]

T = TypeVar("T")

_MAX_NAME_BYTES = 255


def _check_repository_name(name: object) -> str:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidInput(f"a repository name must be a non-empty str, got {name!r}")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # (a lone surrogate: os.fsdecode of a name not in UTF-8)
        raise InvalidInput(f"a repository name must be valid Unicode text, got {name!r}") from None
    if len(encoded) > _MAX_NAME_BYTES:
        raise InvalidInput(f"repository name longer than {_MAX_NAME_BYTES} bytes: {name!r}")
    return name


def _check_version(version: object, what: str = "version") -> VersionHandle:
    if not isinstance(version, VersionHandle):
        raise InvalidInput(
            f"{what} must be a VersionHandle (from new_version, get_version...), got {version!r}"
        )
    return version


def _check_ids(values: object, what: str) -> list[int]:
    ids = listed(values, what)
    for i in ids:
        check_int(i, f"an element of {what}")
    return sorted(set(ids))


class Store:
    """A database of units, artifacts and repository versions (SQLite or PostgreSQL).

    Open one with :func:`open_store`.  Every method is async and runs its database work in a
    worker thread under :attr:`limiter`; methods that write are shielded from cancellation
    once their transaction has started (a cancel while waiting for a connection writes
    nothing).

    Attributes:
        dialect: ``"sqlite"`` or ``"postgresql"``.
        storage: the :class:`ArtifactStorage` of the ``root`` given to :func:`open_store`,
            or None.
        limiter: bounds the worker threads, sized to the connection pool.
        readonly: opened with ``open_store(readonly=True)``: every method that writes
            raises :class:`StoreError`.
    """

    def __init__(
        self,
        backend: Dialect,
        *,
        storage: ArtifactStorage | None = None,
        limiter: trio.CapacityLimiter | None = None,
        repository_keys: Mapping[str, RepositoryKey] = DEFAULT_REPOSITORY_KEYS,
    ) -> None:
        self._backend = backend
        #: the repository key of each unit type that declares one
        self._repository_keys = dict(repository_keys)
        self.dialect = backend.dialect
        self.readonly = backend.readonly
        self.storage = storage
        self.limiter = limiter if limiter is not None else trio.CapacityLimiter(backend.pool_size)
        # The limiter above is acquired (cancellably) before a write starts; the thread itself
        # then runs under this one, which never makes it wait.
        self._threads = trio.CapacityLimiter(max(1, int(self.limiter.total_tokens)))
        self._closed = False

    def __repr__(self) -> str:
        return f"<Store {self.dialect}{' closed' if self._closed else ''}>"

    @property
    def repository_keys(self) -> Mapping[str, RepositoryKey]:
        """The repository key of each unit type that declares one (read-only), as given to
        :func:`open_store` (``repository_keys``); by default, ``file`` units keyed by their
        ``relative_path``."""
        return MappingProxyType(self._repository_keys)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (waits for running operations; idempotent)."""
        if self._closed:
            return
        self._closed = True  # new operations are refused from now on
        with trio.CancelScope(shield=True):
            # every token: running operations finish first
            tokens = [object() for _ in range(int(self.limiter.total_tokens))]
            for token in tokens:
                await self.limiter.acquire_on_behalf_of(token)
            try:
                await trio.to_thread.run_sync(self._backend.close, limiter=self._threads)
            finally:
                for token in tokens:
                    self.limiter.release_on_behalf_of(token)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StoreError("the store was opened read-only")

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=self.limiter)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_writable()
        async with self.limiter:  # waiting here is cancellable: nothing has started
            with trio.CancelScope(shield=True):
                result = await trio.to_thread.run_sync(
                    functools.partial(fn, *args), limiter=self._threads
                )
        return result

    # -- writers and the collector ----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        """Hold a writer's lease: while it is held, ``gc`` removes nothing (it waits).

        Every writer holds one from the moment it refers to existing units, artifacts or
        stored files until it has committed what refers to them: a creator run (and an
        export that fetches, through it) for its whole run, including its incomplete
        version; a repair for each page of files it fetches and puts back.  Leases are
        shared: any number of writers hold one at once.  Entering waits
        (cancellably, polling) while :meth:`collect_garbage` runs.  The lease of a process
        that dies is released by the operating system (SQLite: ``flock`` on ``<db>.lease``)
        or the server (PostgreSQL: an advisory lock on a connection of its own).

        The writes made inside the block (by this task and the tasks it starts) are fenced
        by the lease: when the server ended the lease's session meanwhile (PostgreSQL),
        gc may have run, and each of them raises :class:`StoreError` having written
        nothing.
        """
        self._check_writable()  # a reader takes no lease (it would make a lease file)
        handle = await acquire_lease(self._backend, exclusive=False, wait=None)
        # this task's writes (and those of the tasks it starts) are fenced by this lease
        token = self._backend.held_lease.set(handle)
        try:
            yield
        finally:
            self._backend.held_lease.reset(token)
            await release_lease(handle)

    async def collect_garbage(self, *, wait: float = 600.0) -> GCReport:
        """Remove what no version holds, once no writer is running; report what went.

        Takes the writers' lease exclusively (waiting up to *wait* seconds for running
        writers to finish, then raising :class:`StoreBusy` having removed nothing).  With no
        writer alive every incomplete version was abandoned by a writer that died, and every
        stored file without a record is garbage.  Then, in one write transaction: the
        incomplete versions, the units no version holds (with their artifact links and
        remote artifacts), the artifacts no unit refers to; after that transaction committed,
        the files of those artifacts; then the files of the storage that have no artifact
        row, the directories of the storage left empty, and the temp files of processes
        that are gone.  Without a storage (a store
        opened without ``root``) only the database is cleaned.
        """
        seconds = check_wait(wait)
        self._check_writable()
        handle = await acquire_lease(self._backend, exclusive=True, wait=seconds)
        try:
            versions, units, gone = await self._write(delete_garbage, self._backend)
            report = GCReport(versions, units, len(gone))
            storage = self.storage
            if storage is None:
                return report
            files, freed = await trio.to_thread.run_sync(
                remove_files, storage, [sha for sha, _ in gone], limiter=storage.limiter
            )
            more, more_freed = await self._read(
                sweep_unrecorded, self._backend, storage, trio.from_thread.check_cancelled
            )
            await trio.to_thread.run_sync(
                remove_empty_directories,
                storage,
                trio.from_thread.check_cancelled,
                limiter=storage.limiter,
            )
            temp = await storage.cleanup_temp()
            return GCReport(versions, units, len(gone), files + more, freed + more_freed, len(temp))
        finally:
            await release_lease(handle)

    # -- units and artifacts ------------------------------------------------------------------

    async def find_units(
        self, keys: Iterable[UnitKey | tuple[str, Sequence[str]]]
    ) -> dict[UnitKey, UnitInfo]:
        """The units among *keys* that exist, by key (one query).

        Each :class:`UnitInfo` tells the unit's id, fields, and artifacts by relative path —
        ``None`` for a file not downloaded yet (``info.missing`` lists those paths).
        """
        wanted = [coerce_key(k) for k in listed(keys, "keys")]
        return await self._read(_versions.find_units, self._backend, wanted)

    async def find_artifacts(self, sha256s: Iterable[str]) -> dict[str, ArtifactRecord]:
        """The artifacts among *sha256s* that exist, by sha256 (one query)."""
        shas = [ArtifactRecord(s, 0).sha256 for s in listed(sha256s, "sha256s")]
        return await self._read(_versions.find_artifacts, self._backend, shas)

    async def commit_units(
        self, units: Iterable[NewUnit], *, version: VersionHandle | None = None
    ) -> CommitReport:
        """Commit a batch of complete units; each one all or nothing.

        In one transaction: the artifacts (get-or-create by sha256), the units (get-or-create
        by type + natural key), their artifact links and remote artifacts, and, with
        *version*, their membership of that (incomplete) repository version.  A unit whose
        key exists already is ``existing``: it is reused (added to *version*, and given any
        downloaded artifact it lacked) but not changed.  A unit that cannot be written
        (invalid, or refused by the database) is ``failed`` and the others still commit.

        The files of the artifacts must be in the artifact storage before this is called.
        Once the transaction has started it is shielded from cancellation.
        """
        batch = listed(units, "units")
        for unit in batch:
            if not isinstance(unit, NewUnit):
                raise InvalidUnit(f"commit_units takes NewUnit objects, got {unit!r}")
        if version is not None:
            _check_version(version)
        return await self._write(
            _commit.commit_units, self._backend, self._repository_keys, batch, version
        )

    async def fill_artifacts(self, fills: Mapping[int, Mapping[str, ArtifactRecord]]) -> int:
        """Attach downloaded artifacts to existing units: ``{unit_id: {relative_path: record}}``.

        Only links without an artifact (on-demand) are set; returns how many were set.
        """
        rows: list[tuple[int, str, ArtifactRecord]] = []
        if not isinstance(fills, Mapping):
            raise InvalidInput(f"fills must be a mapping of unit id to files, got {fills!r}")
        for uid, paths in fills.items():
            check_int(uid, "unit id")
            if not isinstance(paths, Mapping):
                raise InvalidInput(
                    f"the files of unit {uid} must be a mapping of relative path to "
                    f"ArtifactRecord, got {paths!r}"
                )
            for path, record in paths.items():
                if not isinstance(record, ArtifactRecord):
                    raise InvalidInput(f"expected an ArtifactRecord, got {record!r}")
                rows.append((uid, path, record))
        return await self._write(_commit.fill_artifacts, self._backend, rows)

    async def missing_artifacts(
        self,
        repository: str | None = None,
        version_number: int | None = None,
        *,
        after_id: int = 0,
        limit: int = 500,
    ) -> list[MissingArtifact]:
        """Files of on-demand units not downloaded yet, with where to fetch them (one query).

        All units with missing files whose id is greater than *after_id*, at most *limit*
        units, ordered by unit id (page with the last unit id seen); with *repository*, only
        the units of that version (default: the latest).
        """
        check_int(after_id, "after_id")
        check_int(limit, "limit", least=1)
        name = None if repository is None else _check_repository_name(repository)
        return await self._read(
            _versions.missing_artifacts, self._backend, name, version_number, after_id, limit
        )

    # -- repositories and versions ----------------------------------------------------------

    async def create_repository(self, name: str) -> None:
        """Create repository *name* unless it exists."""
        await self._write(_versions.create_repository, self._backend, _check_repository_name(name))

    async def repositories(self) -> list[str]:
        """The names of all repositories, sorted."""
        return await self._read(_versions.repositories, self._backend)

    async def new_version(
        self,
        repository: str,
        *,
        base: int | Literal["latest"] | None = "latest",
        create_repository: bool = True,
    ) -> VersionHandle:
        """Start a new (incomplete) version of *repository*.

        It starts with the units of *base*: ``"latest"`` (the latest complete version, or
        nothing for a new repository), a version number, or ``None`` (empty: a mirror that
        adds only what it sees).  Membership is copied by one statement.  Its number is the
        one after the largest the repository handed out: the number of a version abandoned
        and collected by ``gc`` is not handed out again; one :meth:`discard_version` gives
        back when it was the last handed out (failed and no-op runs leave no gap).
        """
        name = _check_repository_name(repository)
        if base is not None and base != "latest":
            check_int(base, "base ('latest', a version number or None)")
        return await self._write(
            _versions.new_version, self._backend, name, base, create_repository
        )

    async def add_to_version(self, version: VersionHandle, unit_ids: Iterable[int]) -> int:
        """Add units to an incomplete version; returns how many were not in it yet.

        A unit replaces the unit the version carried over from its base at the same
        repository key (see :class:`RepositoryKey`).  When one of them cannot go in (its
        key is taken by a unit added to this version), :class:`RepositoryKeyConflict` is
        raised and nothing changes; :meth:`place_units` reports such units instead.
        """
        _check_version(version)
        ids = _check_ids(unit_ids, "unit_ids")
        placement = await self._write(_commit.place_units, self._backend, version, ids, True)
        return placement.added

    async def place_units(self, version: VersionHandle, unit_ids: Iterable[int]) -> Placement:
        """Add units to an incomplete version; report what they replaced and what was refused.

        As :meth:`add_to_version`, but a unit that cannot go in is listed in the returned
        :class:`Placement` (``refused``, by unit id) and the others go in.
        """
        _check_version(version)
        ids = _check_ids(unit_ids, "unit_ids")
        return await self._write(_commit.place_units, self._backend, version, ids, False)

    async def remove_from_version(self, version: VersionHandle, unit_ids: Iterable[int]) -> int:
        """Remove units from an incomplete version; returns how many were removed."""
        _check_version(version)
        ids = _check_ids(unit_ids, "unit_ids")
        return await self._write(_commit.remove_from_version, self._backend, version, ids)

    async def version_changes(
        self, version: VersionHandle, other: VersionHandle
    ) -> tuple[int, int]:
        """How *version* differs from *other*: (units only in *version*, units only in
        *other*), counted by two queries."""
        _check_version(version)
        _check_version(other, "other")
        return await self._read(_versions.version_changes, self._backend, version.id, other.id)

    async def complete_version(self, version: VersionHandle) -> VersionHandle:
        """Mark *version* complete: it becomes the latest version and immutable."""
        _check_version(version)
        return await self._write(_versions.complete_version, self._backend, version)

    async def complete_if_changed(
        self, version: VersionHandle, previous: VersionHandle | None, *, additive: bool = False
    ) -> VersionHandle:
        """Complete *version* if it changes something; return the version holding its units.

        *previous* is the latest version when *version* was started (None for a new
        repository).  When *version* holds the same units as a complete version next to it
        in the repository's history — the latest now, or the nearest complete version
        numbered below or above it (without other writers, that is *previous*: nothing
        changed) — *version* is discarded, as by :meth:`discard_version`, and that version
        is returned; else *version* is completed and returned (``complete``).  A version
        the same as one further back (the content of two versions ago) is a change, and is
        made: the latest version holds the content of the writer numbered last, or of one
        that finished after it.

        With *additive* (*version* was started from *previous*'s units and its writer only
        adds to them, as a run without ``mirror`` does), a version holding the same units as
        *previous* — its writer changed nothing — is not made either when the latest
        version holds every unit its writer added (its input, not the units carried over
        from *previous*), though other writers completed versions in between: completing
        it would only take their changes out of the latest.  It is discarded and the
        latest returned.  (A *previous* pruned meanwhile cannot be compared.)  Without
        *additive*, *previous* is checked but not needed to decide.

        It is decided in the transaction that completes or discards, under the lock
        :meth:`new_version` takes on the repository: writers finishing the same content at
        once make one version, as one after the other would, however many writers of
        other content finish in between.  A new repository's first version is completed
        even when empty.
        """
        _check_version(version)
        if previous is not None:
            _check_version(previous, "previous")
        additive = check_bool(additive, "additive")
        return await self._write(
            _versions.complete_if_changed, self._backend, version, previous, additive
        )

    async def discard_version(self, version: VersionHandle) -> None:
        """Delete an incomplete version (its units stay in the database).  Its number is
        given back when it is the last one handed out (see :meth:`new_version`)."""
        _check_version(version)
        await self._write(_versions.discard_version, self._backend, version)

    async def latest_version(self, repository: str) -> VersionHandle | None:
        """The latest complete version of *repository*, or None if it has none yet."""
        return await self._read(
            _versions.latest_version, self._backend, _check_repository_name(repository)
        )

    async def get_version(self, repository: str, number: int) -> VersionHandle:
        """Version *number* of *repository* (complete or not)."""
        name = _check_repository_name(repository)
        check_int(number, "a version number")
        return await self._read(_versions.get_version, self._backend, name, number)

    async def list_units(
        self, repository: str, version_number: int | None = None
    ) -> list[UnitInfo]:
        """The units of a version (default: the latest complete one), by id."""
        name = _check_repository_name(repository)
        if version_number is not None:
            check_int(version_number, "a version number")
        return await self._read(_versions.list_units, self._backend, name, version_number)

    async def count_units(self, repository: str, version_number: int | None = None) -> int:
        """How many units a version (default: the latest complete one) holds."""
        name = _check_repository_name(repository)
        if version_number is not None:
            check_int(version_number, "a version number")
        return await self._read(_versions.count_units, self._backend, name, version_number)

    async def versions(self, repository: str) -> list[VersionInfo]:
        """Every version of *repository*, complete or not, by ascending number (one query).

        Raises :class:`RepositoryNotFound` for an unknown repository.
        """
        name = _check_repository_name(repository)
        return await self._read(_versions.versions, self._backend, name)

    async def prune(self, repository: str, keep: int) -> PruneReport:
        """Delete the complete versions of *repository* older than its *keep* latest ones.

        Incomplete versions (a sync in progress) are never deleted, nor the latest complete
        version (*keep* is at least 1).  One transaction.  The units and files the deleted
        versions held stay in the store until :meth:`collect_garbage` finds nothing holds
        them.  Raises :class:`RepositoryNotFound` for an unknown repository.
        """
        name = _check_repository_name(repository)
        check_int(keep, "keep", least=1)
        return await self._write(prune, self._backend, name, keep)

    # -- repair -----------------------------------------------------------------------------

    async def stored_artifacts(
        self, repository: str | None = None, *, after: int = 0, limit: int = 500
    ) -> tuple[list[tuple[int, str, int]], int | None]:
        """A page of the recorded artifacts: ``(id, sha256, size)`` rows, and the cursor of
        the next page (None once there is no more).

        Start with ``after=0`` and pass back the cursor returned.  The whole store is read
        by artifact id, at most *limit* artifacts a page.  With *repository*, the artifacts
        of the units of any of its versions are read by unit id, *limit* units a page: a
        page may then be empty (units with no stored file) though more follow, and a file
        shared by units of two pages comes in both (:class:`RepositoryNotFound` when there
        is no such repository).  Memory and each query's work are bounded by *limit*.
        """
        check_int(limit, "limit", least=1)
        check_int(after, "after")
        name = None if repository is None else _check_repository_name(repository)
        return await self._read(_versions.stored_artifacts, self._backend, name, after, limit)

    async def artifact_urls(self, artifact_ids: Iterable[int]) -> dict[int, list[str]]:
        """Where the files of these artifacts came from: the URLs recorded for every unit's
        file that is the artifact, each once, in the order recorded (one query).

        Keyed by artifact id; an artifact no unit refers to is absent, one with no URL
        recorded maps to an empty list.
        """
        return await self._read(
            _versions.artifact_urls, self._backend, _check_ids(artifact_ids, "artifact_ids")
        )
