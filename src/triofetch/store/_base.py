"""The store: an async (Trio) face over a synchronous backend that runs in worker threads.

The backend (:class:`Backend`) holds the logic both databases share — the commit of a batch
of units, versions, listing — written against a handful of primitives that each backend
implements with its own fast bulk statements (``json_each`` in SQLite, ``unnest`` of arrays
in PostgreSQL).  :class:`Store` runs every backend call in ``trio.to_thread.run_sync`` under
a :class:`trio.CapacityLimiter` sized to the connection pool; writes are shielded from
cancellation once their thread has started, so they commit or roll back, never half-apply.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import trio

from .._model import ArtifactRecord, UnitKey, coerce_key, key_json
from ..errors import (
    ArtifactConflict,
    InvalidInput,
    InvalidUnit,
    RepositoryKeyConflict,
    RepositoryNotFound,
    StoreError,
    VersionNotFound,
    VersionNotWritable,
)
from ..storage import ArtifactStorage
from ._retention import (
    GCReport,
    LeaseHandle,
    PruneReport,
    VersionInfo,
    acquire_lease,
    check_wait,
    delete_garbage,
    release_lease,
    remove_files,
    sweep_unrecorded,
)
from ._retention import prune as _prune
from ._retention import versions as _versions
from ._schema import unit_key_hash
from ._types import (
    DEFAULT_REPOSITORY_KEYS,
    CommitReport,
    MissingArtifact,
    NewUnit,
    NewUnitArtifact,
    RemoteArtifact,
    ReplacedUnit,
    RepositoryKey,
    UnitInfo,
    UnitOutcome,
    VersionHandle,
    check_unit_body,
    listed,
    load_json,
)

__all__ = ["Backend", "Placement", "Store"]

T = TypeVar("T")

#: A test hook: called with the name of each step of a commit and the keys it concerns.
FaultHook = Callable[[str, Sequence[UnitKey]], None]

_MAX_NAME_BYTES = 255


def _load(value: Any) -> Any:
    return load_json(value) if isinstance(value, str) else value


def _now() -> str:
    """The current time as stored in the database: ISO 8601, UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _check_repository_name(name: object) -> str:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidInput(f"a repository name must be a non-empty str, got {name!r}")
    if len(name.encode("utf-8", "replace")) > _MAX_NAME_BYTES:
        raise InvalidInput(f"repository name longer than {_MAX_NAME_BYTES} bytes: {name!r}")
    return name


def _check_ids(unit_ids: object) -> list[int]:
    ids = listed(unit_ids, "unit_ids")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise InvalidInput(f"unit ids must be ints, got {i!r}")
    return sorted(set(ids))


@dataclass(slots=True)
class _Prepared:
    """A valid unit ready for the database."""

    index: int
    unit: NewUnit
    type: str
    nk: str
    fields: str
    #: (type, natural key JSON): what the batch is sorted by
    sort_key: tuple[str, str]
    #: ``_schema.unit_key_hash`` of the key
    key_hash: int
    #: the repository key (``RepositoryKey.of``), None for a type that declares none
    repo_key: str | None
    #: the artifacts to write: the unit's, plus downloads a duplicate in the batch brought
    arts: tuple[NewUnitArtifact, ...]

    def merge(self, other: NewUnit) -> None:
        """Take from a duplicate of this unit the downloaded artifacts this one lacks."""
        theirs = {a.relative_path: a.artifact for a in other.artifacts if a.artifact is not None}
        merged = []
        for a in self.arts:
            got = theirs.get(a.relative_path)
            if a.artifact is None and got is not None:
                with contextlib.suppress(InvalidInput):  # unexpected: keep it on demand
                    a = NewUnitArtifact(a.relative_path, got, a.remote)
            merged.append(a)
        self.arts = tuple(merged)


@dataclass(slots=True)
class _Candidate:
    """A unit to place in a version: its position in the call, id, key, repository key."""

    index: int
    unit_id: int
    key: UnitKey
    repo_key: str | None
    #: made by this transaction: it cannot be in the version yet
    new: bool = False


@dataclass(slots=True)
class Placement:
    """What placing units in a version did (see :meth:`Backend.place_units`)."""

    #: units that were not in the version and now are
    added: int = 0
    replaced: list[ReplacedUnit] = field(default_factory=list)
    #: the units refused, by unit id (:meth:`Store.place_units`)
    refused: dict[int, RepositoryKeyConflict] = field(default_factory=dict)


def _by_index(c: _Candidate) -> int:
    return c.index


def _parents(path: str) -> Iterator[str]:
    """The directories of a relative path, innermost last: a/b/c -> a, a/b."""
    cut = path.find("/")
    while cut > 0:
        yield path[:cut]
        cut = path.find("/", cut + 1)


class _Fallback(Exception):
    """The batch hit a database error: redo it one unit per savepoint."""


class Backend(ABC):
    """The synchronous half of a store.  Every method runs in a worker thread."""

    dialect: str
    #: bounded retries of a whole transaction after a serialization failure / deadlock / busy
    max_attempts = 8
    #: set by open_store() before open(): open without writing anything (no migration),
    #: and refuse every write
    readonly = False
    #: set by open_store() before open(): create the store when there is none
    create = True

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self.fault: FaultHook | None = None
        #: the repository key of each unit type that declares one
        self.repository_keys: dict[str, RepositoryKey] = dict(DEFAULT_REPOSITORY_KEYS)
        #: transactions retried, by exception class name (for tests and monitoring)
        self.retried: collections.Counter[str] = collections.Counter()

    # -- what each backend provides ---------------------------------------------------------

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
        """A new holder's handle on the writers' lease (see ``_retention``); blocks briefly."""

    #: appended to a SELECT that must lock the rows it reads (PostgreSQL: FOR UPDATE)
    lock_rows = ""

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
        of each row (the key hash is ``_schema.unit_key_hash`` of the key, for backends that
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

    # -- transactions ------------------------------------------------------------------------

    def _wrap(self, exc: Exception) -> StoreError:
        return StoreError(f"{self.dialect}: {type(exc).__name__}: {exc}".rstrip())

    def run_read(self, fn: Callable[[Any], T]) -> T:
        return self._run(self.reading, fn)

    def run_write(self, fn: Callable[[Any], T]) -> T:
        return self._run(self.writing, fn)

    def _run(self, connect: Callable[[], AbstractContextManager[Any]], fn: Callable[[Any], T]) -> T:
        """*fn* on a connection from *connect*, retried on serialization failures/deadlocks."""
        for attempt in range(self.max_attempts):
            try:
                with connect() as conn:
                    return fn(conn)
            except Exception as exc:
                if self.is_retryable(exc) and attempt + 1 < self.max_attempts:
                    self.retried[type(exc).__name__] += 1
                    self._backoff(attempt)
                    continue
                if self.is_db_error(exc):
                    raise self._wrap(exc) from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _backoff(attempt: int) -> None:
        time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))

    def _step(self, name: str, keys: Sequence[UnitKey]) -> None:
        if self.fault is not None:
            self.fault(name, keys)

    # -- finding ------------------------------------------------------------------------------

    def find_units(self, keys: list[UnitKey]) -> dict[UnitKey, UnitInfo]:
        if not keys:
            return {}
        known = {(k.type, key_json(k.natural_key)): k for k in keys}
        wanted = sorted(known)
        rows = self.run_read(lambda conn: list(self.q_find_units(conn, wanted)))
        return self._units_from_rows(rows, known)

    @staticmethod
    def _units_from_rows(
        rows: Iterable[Sequence[Any]], known: Mapping[tuple[str, str], UnitKey] | None = None
    ) -> dict[UnitKey, UnitInfo]:
        found: dict[UnitKey, UnitInfo] = {}
        by_id: dict[int, UnitInfo] = {}
        for uid, type_, nk, fields, path, sha, size, digests in rows:
            info = by_id.get(uid)
            if info is None:
                key = known.get((type_, nk)) if known else None
                if key is None:
                    key = UnitKey(type_, tuple(load_json(nk)))
                info = UnitInfo(uid, key, _load(fields), {})
                by_id[uid] = info
                found[key] = info
            if path is not None:
                record = None if sha is None else ArtifactRecord._from_db(sha, size, _load(digests))
                info.artifacts[path] = record  # type: ignore[index]
        return found

    def find_artifacts(self, shas: list[str]) -> dict[str, ArtifactRecord]:
        if not shas:
            return {}
        wanted = sorted(set(shas))
        rows = self.run_read(lambda conn: list(self.q_find_artifacts(conn, wanted)))
        return {sha: ArtifactRecord._from_db(sha, size, _load(d)) for sha, size, d in rows}

    # -- committing ---------------------------------------------------------------------------

    def commit_units(self, units: Sequence[object], version: VersionHandle | None) -> CommitReport:
        outcomes: list[UnitOutcome | None] = [None] * len(units)
        primary: dict[tuple[str, str], _Prepared] = {}
        duplicates: list[tuple[int, NewUnit, _Prepared]] = []
        for index, unit in enumerate(units):
            if not isinstance(unit, NewUnit):
                raise InvalidInput(f"commit_units takes NewUnit objects, got {unit!r}")
            fields = unit.fields_json
            if not fields:  # made without __post_init__ (object.__new__, pickling...)
                try:
                    fields = check_unit_body(unit)
                except InvalidInput as exc:
                    outcomes[index] = UnitOutcome(unit, "failed", None, exc)
                    continue
            arts = unit.artifacts
            if len(arts) > 1:
                arts = tuple(sorted(arts, key=lambda a: a.relative_path))
            nk = unit.key_json or key_json(unit.natural_key)
            key = (unit.type, nk)
            first = primary.get(key)
            if first is None:
                declared = self.repository_keys.get(unit.type)
                repo_key = None
                if declared is not None:
                    try:
                        repo_key = declared.of(unit.type, unit.fields)
                    except InvalidInput as exc:
                        outcomes[index] = UnitOutcome(unit, "failed", None, exc)
                        continue
                # (a key hash of 0 may be one never made: worked out again, the same either way)
                key_hash = unit.key_hash or unit_key_hash(unit.type, nk)
                primary[key] = _Prepared(
                    index, unit, unit.type, nk, fields, key, key_hash, repo_key, arts
                )
            else:
                duplicates.append((index, unit, first))
                first.merge(unit)
        items = [primary[key] for key in sorted(primary)]
        version_id = None if version is None else version.id
        replaced: list[ReplacedUnit] = []

        def batch(conn: Any) -> dict[int, UnitOutcome]:
            self._check_version(conn, version_id)
            replaced.clear()
            try:
                return self._commit_items(conn, items, version_id, replaced)
            except Exception as exc:
                if self.is_db_error(exc) and not self.is_retryable(exc):
                    raise _Fallback from exc
                raise

        def one_by_one(conn: Any) -> dict[int, UnitOutcome]:
            self._check_version(conn, version_id)
            replaced.clear()
            done: dict[int, UnitOutcome] = {}
            for item in items:
                mine: list[ReplacedUnit] = []
                try:
                    with self.savepoint(conn):
                        done.update(self._commit_items(conn, [item], version_id, mine))
                except Exception as exc:
                    if not self.is_db_error(exc) or self.is_retryable(exc):
                        raise
                    error = self._wrap(exc)
                    error.__cause__ = exc
                    done[item.index] = UnitOutcome(item.unit, "failed", None, error)
                    continue
                replaced.extend(mine)
            return done

        if items:
            try:
                results = self.run_write(batch)
            except _Fallback:
                results = self.run_write(one_by_one)
            for index, outcome in results.items():
                outcomes[index] = outcome
        for index, unit, first in duplicates:
            done = outcomes[first.index]
            assert done is not None
            if done.status == "failed":
                outcomes[index] = UnitOutcome(unit, "failed", None, done.error)
            else:
                outcomes[index] = UnitOutcome(unit, "existing", done.unit_id)
        assert all(o is not None for o in outcomes)
        return CommitReport(tuple(o for o in outcomes if o is not None), tuple(replaced))

    def _check_version(self, conn: Any, version_id: int | None) -> None:
        if version_id is None:
            return
        row = conn.execute(
            self.sql(
                "SELECT complete FROM repository_versions WHERE id = ?"
                + self.lock_rows.replace("UPDATE", "SHARE")
            ),
            (version_id,),
        ).fetchone()
        if row is None:
            raise VersionNotFound(f"repository version id {version_id} does not exist")
        if row[0]:
            raise VersionNotWritable(f"repository version id {version_id} is complete")

    def _commit_items(
        self,
        conn: Any,
        items: list[_Prepared],
        version_id: int | None,
        replaced: list[ReplacedUnit],
    ) -> dict[int, UnitOutcome]:
        """Write *items* (sorted by key) in the current transaction."""
        keys = [i.unit.key for i in items] if self.fault is not None else []
        done: dict[int, UnitOutcome] = {}
        # 1. artifacts, get-or-create, in sha256 order
        self._step("artifacts", keys)
        art_rows: dict[str, tuple[str, int, str]] = {}
        for item in items:
            for a in item.arts:
                rec = a.artifact
                if rec is not None and rec.sha256 not in art_rows:
                    art_rows[rec.sha256] = (rec.sha256, rec.size, rec.digests_json())
        art_ids: dict[str, tuple[int, int]] = {}
        live = items
        if art_rows:
            art_ids = self.q_artifact_ids(conn, [art_rows[sha] for sha in sorted(art_rows)])
            # an artifact recorded with another size fails the units that bring it
            clashes = {sha for sha, (_, size) in art_ids.items() if size != art_rows[sha][1]}
            if clashes:
                live = []
                for item in items:
                    for a in item.arts:
                        got = a.artifact
                        if got is not None and got.sha256 in clashes:
                            recorded = art_ids[got.sha256][1]
                            conflict = ArtifactConflict(got.sha256, recorded, got.size)
                            done[item.index] = UnitOutcome(item.unit, "failed", None, conflict)
                            break
                    else:
                        live.append(item)
                if not live:
                    return done
        # 2. units, get-or-create, in natural key order
        self._step("units", keys)
        unit_ids = self.q_insert_units(
            conn, [(i.type, i.nk, i.fields, i.key_hash, i.repo_key) for i in live]
        )
        # 3. their place in the version: what they replace there, what cannot go in
        placement = None
        if version_id is not None:
            self._step("version", keys)
            placement = self._place(
                conn,
                version_id,
                [
                    _Candidate(item.index, uid, item.unit.key, item.repo_key, created)
                    for item, (uid, created) in zip(live, unit_ids, strict=True)
                ],
            )
            if placement.refused:
                # nothing of a refused unit is written: a new one is deleted again
                gone = [
                    uid
                    for item, (uid, created) in zip(live, unit_ids, strict=True)
                    if created and item.index in placement.refused
                ]
                if gone:
                    conn.execute(
                        self.sql("DELETE FROM units WHERE " + self.in_list("id")),
                        (self.list_param(gone),),
                    )
                for item in live:
                    error = placement.refused.get(item.index)
                    if error is not None:
                        done[item.index] = UnitOutcome(item.unit, "failed", None, error)
                kept = [
                    (item, ids)
                    for item, ids in zip(live, unit_ids, strict=True)
                    if item.index not in placement.refused
                ]
                live = [k[0] for k in kept]
                unit_ids = [k[1] for k in kept]
            replaced.extend(placement.replaced)
        ua_rows: list[tuple[int, str, int | None]] = []
        ua_remotes: list[RemoteArtifact | None] = []
        fills: list[tuple[int, str, int]] = []
        add_ua, add_remote = ua_rows.append, ua_remotes.append
        for item, (uid, created) in zip(live, unit_ids, strict=True):
            if created:
                done[item.index] = UnitOutcome(item.unit, "committed", uid)
                for a in item.arts:  # sorted by relative path
                    rec = a.artifact
                    add_ua((uid, a.relative_path, None if rec is None else art_ids[rec.sha256][0]))
                    add_remote(a.remote)
            else:
                done[item.index] = UnitOutcome(item.unit, "existing", uid)
                fills.extend(
                    (uid, a.relative_path, art_ids[a.artifact.sha256][0])
                    for a in item.arts
                    if a.artifact is not None
                )
        # 3. the new units' artifacts and remote artifacts
        self._step("unit_artifacts", keys)
        ua_ids = self.q_insert_unit_artifacts(conn, ua_rows) if ua_rows else []
        self._step("remote_artifacts", keys)
        remote_rows: list[tuple[int, str, int | None, str]] = []
        for ua_id, remote in zip(ua_ids, ua_remotes, strict=True):
            if remote is not None:
                urls = remote.urls
                if len(urls) == 1:
                    remote_rows.append((ua_id, urls[0], remote.size, remote.digests_json()))
                else:
                    digests = remote.digests_json()
                    remote_rows.extend((ua_id, url, remote.size, digests) for url in urls)
        if remote_rows:
            self.q_insert_remotes(conn, remote_rows)
        # 4. existing units: attach downloaded artifacts they lack (on-demand units)
        if fills:
            self._step("fill", keys)
            self.q_fill(conn, sorted(fills))
        self._step("commit", keys)
        return done

    # -- a version's content: one unit per repository key --------------------------------------

    def _place(self, conn: Any, version_id: int, candidates: list[_Candidate]) -> Placement:
        """Put units in an incomplete version, keeping one unit per repository key.

        A unit already in the version stays (and counts as added by this writer).  A unit
        whose repository key (or, for paths, a parent or child path) is held by a unit the
        version carried over from its base replaces it; one held by a unit this writer added
        is refused, as is the later of two candidates that conflict with each other.
        """
        result = Placement()
        ids = sorted({c.unit_id for c in candidates if not c.new})
        sql = self.sql
        members: set[int] = set()
        if ids:
            members = {
                int(r[0])
                for r in conn.execute(
                    sql("SELECT unit_id FROM version_units WHERE version_id = ? AND ")
                    + sql(self.in_list("unit_id")),
                    (version_id, self.list_param(ids)),
                )
            }
        if members:
            # re-added: this writer's now, so that new content at their keys is refused
            conn.execute(
                sql("UPDATE version_units SET added = ? WHERE version_id = ? AND NOT added AND ")
                + sql(self.in_list("unit_id")),
                (True, version_id, self.list_param(sorted(members))),
            )
        fresh: dict[int, _Candidate] = {}
        for c in sorted(candidates, key=_by_index):
            if c.unit_id not in members:
                fresh.setdefault(c.unit_id, c)
        keyed = [c for c in fresh.values() if c.repo_key is not None]
        removed: set[int] = set()
        if keyed:
            self._resolve_keys(conn, version_id, keyed, result, removed)
        if removed:
            self.q_remove_version_units(conn, version_id, sorted(removed))
        accepted = sorted(uid for uid, c in fresh.items() if c.index not in result.refused)
        if accepted:
            result.added = self.q_add_version_units(conn, version_id, accepted)
        return result

    def _resolve_keys(
        self,
        conn: Any,
        version_id: int,
        keyed: list[_Candidate],
        result: Placement,
        removed: set[int],
    ) -> None:
        # one index range per path finds the unit at it and those below it; keys that are
        # not paths, and the directories above the paths, are looked up exactly
        exact: set[str] = set()
        paths: list[str] = []
        parents_of: dict[str, tuple[str, ...]] = {}
        dirs: dict[str, tuple[str, ...]] = {}  # a directory -> it and the ones above it
        for c in keyed:
            rk = c.repo_key
            assert rk is not None
            if rk[0] != "/":
                paths.append(rk)
                cut = rk.rfind("/")
                if cut > 0:
                    parent = rk[:cut]
                    chain = dirs.get(parent)
                    if chain is None:
                        chain = dirs[parent] = (*_parents(parent), parent)
                        exact.update(chain)
                    parents_of[rk] = chain
            else:
                exact.add(rk)
        rows = list(self.q_members_at(conn, version_id, list(exact))) if exact else []
        if paths:
            rows.extend(self.q_members_under(conn, version_id, paths))
        # members by their key, and by each directory above them
        at: dict[str, dict[int, Sequence[Any]]] = {}
        below: dict[str, dict[int, Sequence[Any]]] = {}
        for row in rows:
            at.setdefault(row[3], {})[row[0]] = row
            if row[3][0] != "/":
                for parent in _parents(row[3]):
                    below.setdefault(parent, {})[row[0]] = row
        taken: dict[str, UnitKey] = {}  # keys of the candidates accepted so far
        taken_dirs: dict[str, UnitKey] = {}  # directories above accepted paths
        no_parents: tuple[str, ...] = ()
        for c in keyed:
            rk = c.repo_key
            assert rk is not None
            parents = parents_of.get(rk, no_parents)
            if not rows and rk not in taken and rk not in taken_dirs:
                # the common case: nothing in the way in the version; only earlier
                # candidates can be, as a file where this one needs a directory
                for parent in parents:
                    if parent in taken:
                        break
                else:
                    taken[rk] = c.key
                    for parent in parents:
                        if parent not in taken_dirs:
                            taken_dirs[parent] = c.key
                    continue
            is_path = rk[0] != "/"
            found: list[tuple[Sequence[Any], str]] = []
            if rows:  # the common case has no member in the way: skip the lookups
                found.extend(
                    (row, "has the same repository key as") for row in at.get(rk, {}).values()
                )
                for parent in parents:
                    found.extend(
                        (row, f"needs a directory {parent!r} where there is a file of")
                        for row in at.get(parent, {}).values()
                    )
                if is_path:
                    found.extend(
                        (row, "is a file where there is a directory of")
                        for row in below.get(rk, {}).values()
                    )
                found = [(row, how) for row, how in found if row[0] not in removed]
            clash: tuple[UnitKey, str] | None = None
            for row, how in found:
                if row[4]:  # added by this writer
                    clash = (UnitKey(row[1], tuple(load_json(row[2]))), how)
                    break
            if clash is None:
                if rk in taken:
                    clash = (taken[rk], "has the same repository key as")
                elif is_path and rk in taken_dirs:
                    clash = (taken_dirs[rk], "is a file where there is a directory of")
                else:
                    for parent in parents:
                        if parent in taken:
                            clash = (
                                taken[parent],
                                f"needs a directory {parent!r} where there is a file of",
                            )
                            break
            if clash is not None:
                other, how = clash
                result.refused[c.index] = RepositoryKeyConflict(c.key, rk, other, how=how)
                continue
            for row, _how in found:
                removed.add(row[0])
                result.replaced.append(
                    ReplacedUnit(UnitKey(row[1], tuple(load_json(row[2]))), row[3], c.key)
                )
            taken[rk] = c.key
            for parent in parents:
                taken_dirs.setdefault(parent, c.key)

    def place_units(
        self, version: VersionHandle, unit_ids: list[int], strict: bool = False
    ) -> Placement:
        """Add units (by id) to an incomplete version, one unit per repository key.

        With *strict*, a refused unit raises its :class:`RepositoryKeyConflict` and nothing
        is changed.
        """

        def work(conn: Any) -> Placement:
            self._writable(conn, version)
            if not unit_ids:
                return Placement()
            rows = conn.execute(
                self.sql("SELECT id, type, natural_key, repo_key FROM units WHERE ")
                + self.sql(self.in_list("id")),
                (self.list_param(unit_ids),),
            ).fetchall()
            if len(rows) != len(unit_ids):
                unknown = sorted(set(unit_ids) - {int(r[0]) for r in rows})
                raise StoreError(f"no units with ids {unknown[:10]!r}")
            order = {uid: i for i, uid in enumerate(unit_ids)}
            placement = self._place(
                conn,
                version.id,
                [
                    _Candidate(
                        order[int(r[0])], int(r[0]), UnitKey(r[1], tuple(load_json(r[2]))), r[3]
                    )
                    for r in rows
                ],
            )
            if strict and placement.refused:
                raise placement.refused[min(placement.refused)]
            # refused by unit id (the candidates' indexes are positions in unit_ids)
            placement.refused = {unit_ids[i]: e for i, e in placement.refused.items()}
            return placement

        return self.run_write(work)

    def version_changes(self, version_id: int, base_id: int) -> tuple[int, int]:
        """(units in *version_id* not in *base_id*, units in *base_id* not in *version_id*)."""
        sql = self.sql(
            "SELECT count(*) FROM version_units a WHERE a.version_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM version_units b WHERE b.version_id = ? AND b.unit_id = a.unit_id)"
        )

        def work(conn: Any) -> tuple[int, int]:
            added = conn.execute(sql, (version_id, base_id)).fetchone()[0]
            removed = conn.execute(sql, (base_id, version_id)).fetchone()[0]
            return int(added), int(removed)

        return self.run_read(work)

    def fill_artifacts(self, fills: list[tuple[int, str, ArtifactRecord]]) -> int:
        rows = {r.sha256: (r.sha256, r.size, r.digests_json()) for _, _, r in fills}

        def work(conn: Any) -> int:
            ids = self.q_artifact_ids(conn, sorted(rows.values()))
            for _, _, r in fills:
                if ids[r.sha256][1] != r.size:
                    raise ArtifactConflict(r.sha256, ids[r.sha256][1], r.size)
            return self.q_fill(conn, sorted((u, p, ids[r.sha256][0]) for u, p, r in fills))

        return self.run_write(work) if fills else 0

    def missing_artifacts(
        self, repository: str | None, number: int | None, after_id: int, limit: int
    ) -> list[MissingArtifact]:
        def work(conn: Any) -> list[tuple[Any, ...]]:
            scope, args = "", [after_id]
            if repository is not None:
                row = self._resolve(conn, repository, number)
                if row is None:
                    return []
                scope = (
                    " AND ua.unit_id IN (SELECT unit_id FROM version_units WHERE version_id = ?)"
                )
                args.append(row[0])
            ids = [
                r[0]
                for r in conn.execute(
                    self.sql(
                        "SELECT DISTINCT ua.unit_id FROM unit_artifacts ua"
                        " WHERE ua.artifact_id IS NULL AND ua.unit_id > ?"
                        + scope
                        + " ORDER BY ua.unit_id LIMIT ?"
                    ),
                    (*args, limit),
                ).fetchall()
            ]
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            rows: list[tuple[Any, ...]] = conn.execute(
                self.sql(
                    "SELECT ua.unit_id, u.type, u.natural_key, ua.relative_path, ra.url, ra.size,"
                    " ra.digests FROM unit_artifacts ua JOIN units u ON u.id = ua.unit_id"
                    " LEFT JOIN remote_artifacts ra ON ra.unit_artifact_id = ua.id"
                    f" WHERE ua.artifact_id IS NULL AND ua.unit_id IN ({marks})"
                    " ORDER BY ua.unit_id, ua.relative_path, ra.id"
                ),
                ids,
            ).fetchall()
            return rows

        rows = self.run_read(work)
        found: dict[tuple[int, str], MissingArtifact] = {}
        for uid, type_, nk, path, url, size, digests in rows:
            item = found.get((uid, path))
            if item is None:
                key = UnitKey(type_, tuple(load_json(nk)))
                item = found[(uid, path)] = MissingArtifact(uid, key, path, (), None, {})
            if url is not None:
                found[(uid, path)] = MissingArtifact(
                    uid, item.key, path, (*item.urls, url), size, dict(_load(digests) or {})
                )
        return list(found.values())

    # -- repositories and versions ----------------------------------------------------------

    def _repository_id(self, conn: Any, name: str, *, create: bool, lock: bool = True) -> int:
        if create:
            conn.execute(
                self.sql(
                    "INSERT INTO repositories (name) VALUES (?) ON CONFLICT (name) DO NOTHING"
                ),
                (name,),
            )
        # a reader locks nothing (a read-only PostgreSQL transaction may not)
        lock_rows = self.lock_rows if lock else ""
        row = conn.execute(
            self.sql("SELECT id FROM repositories WHERE name = ?" + lock_rows), (name,)
        ).fetchone()
        if row is None:
            raise RepositoryNotFound(name)
        return int(row[0])

    def _version_row(
        self, conn: Any, repository_id: int, number: int | Literal["latest"]
    ) -> tuple[int, int, bool] | None:
        if number == "latest":
            sql = (
                "SELECT id, number, complete FROM repository_versions WHERE repository_id = ? "
                "AND complete ORDER BY number DESC LIMIT 1"
            )
            row = conn.execute(self.sql(sql), (repository_id,)).fetchone()
        else:
            sql = (
                "SELECT id, number, complete FROM repository_versions "
                "WHERE repository_id = ? AND number = ?"
            )
            row = conn.execute(self.sql(sql), (repository_id, number)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), bool(row[2]))

    def create_repository(self, name: str) -> None:
        self.run_write(lambda conn: self._repository_id(conn, name, create=True))

    def repositories(self) -> list[str]:
        rows = self.run_read(
            lambda conn: conn.execute("SELECT name FROM repositories ORDER BY name").fetchall()
        )
        return [r[0] for r in rows]

    def new_version(
        self, name: str, base: int | Literal["latest"] | None, create: bool
    ) -> VersionHandle:
        def work(conn: Any) -> VersionHandle:
            rid = self._repository_id(conn, name, create=create)
            base_id = None
            if base is not None:
                row = self._version_row(conn, rid, base)
                if row is None and base != "latest":
                    raise VersionNotFound(f"repository {name!r} has no version {base}")
                if row is not None and not row[2]:
                    raise VersionNotWritable(
                        f"version {base} of {name!r} is not complete: it cannot be a base"
                    )
                base_id = None if row is None else row[0]
            number = conn.execute(
                self.sql(
                    "SELECT coalesce(max(number), 0) + 1 FROM repository_versions "
                    "WHERE repository_id = ?"
                ),
                (rid,),
            ).fetchone()[0]
            vid = conn.execute(
                self.sql(
                    "INSERT INTO repository_versions (repository_id, number, complete, created) "
                    "VALUES (?, ?, ?, ?) RETURNING id"
                ),
                (rid, number, False, _now()),
            ).fetchone()[0]
            if base_id is not None:
                conn.execute(
                    self.sql(
                        "INSERT INTO version_units (version_id, unit_id) "
                        "SELECT ?, unit_id FROM version_units WHERE version_id = ?"
                    ),
                    (vid, base_id),
                )
            return VersionHandle(int(vid), name, int(number), False)

        return self.run_write(work)

    def _writable(self, conn: Any, version: VersionHandle) -> None:
        self._check_version(conn, version.id)

    def remove_from_version(self, version: VersionHandle, unit_ids: list[int]) -> int:
        def work(conn: Any) -> int:
            self._writable(conn, version)
            return self.q_remove_version_units(conn, version.id, unit_ids)

        return self.run_write(work)

    def complete_version(self, version: VersionHandle) -> VersionHandle:
        def work(conn: Any) -> None:
            cur = conn.execute(
                self.sql("UPDATE repository_versions SET complete = ? WHERE id = ?"),
                (True, version.id),
            )
            if cur.rowcount != 1:
                raise VersionNotFound(
                    f"version {version.number} of {version.repository!r} does not exist"
                )

        self.run_write(work)
        return VersionHandle(version.id, version.repository, version.number, True)

    def discard_version(self, version: VersionHandle) -> None:
        def work(conn: Any) -> None:
            row = conn.execute(
                self.sql("SELECT complete FROM repository_versions WHERE id = ?" + self.lock_rows),
                (version.id,),
            ).fetchone()
            if row is None:
                return  # already gone: discarding is idempotent
            if row[0]:
                raise VersionNotWritable(
                    f"version {version.number} of {version.repository!r} is complete"
                )
            conn.execute(self.sql("DELETE FROM version_units WHERE version_id = ?"), (version.id,))
            conn.execute(self.sql("DELETE FROM repository_versions WHERE id = ?"), (version.id,))

        self.run_write(work)

    def _resolve(self, conn: Any, name: str, number: int | None) -> tuple[int, int, bool] | None:
        rid = self._repository_id(conn, name, create=False, lock=False)
        row = self._version_row(conn, rid, "latest" if number is None else number)
        if row is None and number is not None:
            raise VersionNotFound(f"repository {name!r} has no version {number}")
        return row

    def latest_version(self, name: str) -> VersionHandle | None:
        row = self.run_read(lambda conn: self._resolve(conn, name, None))
        return None if row is None else VersionHandle(row[0], name, row[1], row[2])

    def get_version(self, name: str, number: int) -> VersionHandle:
        row = self.run_read(lambda conn: self._resolve(conn, name, number))
        assert row is not None
        return VersionHandle(row[0], name, row[1], row[2])

    def count_units(self, name: str, number: int | None) -> int:
        def work(conn: Any) -> int:
            row = self._resolve(conn, name, number)
            if row is None:
                return 0
            sql = "SELECT count(*) FROM version_units WHERE version_id = ?"
            return int(conn.execute(self.sql(sql), (row[0],)).fetchone()[0])

        return self.run_read(work)

    def list_units(self, name: str, number: int | None) -> list[UnitInfo]:
        def work(conn: Any) -> list[Sequence[Any]]:
            row = self._resolve(conn, name, number)
            if row is None:
                return []
            sql = (
                "SELECT u.id, u.type, u.natural_key, u.fields, ua.relative_path, a.sha256, "
                "a.size, a.digests FROM version_units vu JOIN units u ON u.id = vu.unit_id "
                "LEFT JOIN unit_artifacts ua ON ua.unit_id = u.id "
                "LEFT JOIN artifacts a ON a.id = ua.artifact_id "
                "WHERE vu.version_id = ? ORDER BY u.id, ua.relative_path"
            )
            return list(conn.execute(self.sql(sql), (row[0],)).fetchall())

        return list(self._units_from_rows(self.run_read(work)).values())

    # -- repair ---------------------------------------------------------------------------------

    def stored_artifacts(
        self, repository: str | None, after: int, limit: int
    ) -> tuple[list[tuple[int, str, int]], int | None]:
        """A page of artifacts (id, sha256, size) by id, and the cursor of the next page
        (None: no more).  The whole store pages by artifact id; a repository pages by unit
        id over the units of all its versions, each version read off its primary key."""

        def whole(conn: Any) -> tuple[list[tuple[int, str, int]], int | None]:
            rows = conn.execute(
                self.sql("SELECT id, sha256, size FROM artifacts WHERE id > ? ORDER BY id LIMIT ?"),
                (after, limit),
            ).fetchall()
            more = len(rows) == limit
            return [(int(i), str(h), int(n)) for i, h, n in rows], rows[-1][0] if more else None

        def scoped(conn: Any) -> tuple[list[tuple[int, str, int]], int | None]:
            found = conn.execute(
                self.sql("SELECT id FROM repositories WHERE name = ?"), (repository,)
            ).fetchone()
            if found is None:
                raise RepositoryNotFound(str(repository))
            versions = conn.execute(
                self.sql("SELECT id FROM repository_versions WHERE repository_id = ?"),
                (found[0],),
            ).fetchall()
            # the smallest *limit* unit ids above the cursor are among each version's
            # smallest *limit*: one range of its primary key each
            ids: set[int] = set()
            more = False
            for (version_id,) in versions:
                batch = conn.execute(
                    self.sql(
                        "SELECT unit_id FROM version_units WHERE version_id = ? "
                        "AND unit_id > ? ORDER BY unit_id LIMIT ?"
                    ),
                    (version_id, after, limit),
                ).fetchall()
                more = more or len(batch) == limit
                ids.update(int(r[0]) for r in batch)
            units = sorted(ids)
            more = more or len(units) > limit
            units = units[:limit]
            if not units:
                return [], None
            rows = conn.execute(
                self.sql(
                    "SELECT DISTINCT a.id, a.sha256, a.size FROM unit_artifacts ua "
                    "JOIN artifacts a ON a.id = ua.artifact_id WHERE "
                )
                + self.sql(self.in_list("ua.unit_id"))
                + " ORDER BY a.id",
                (self.list_param(units),),
            ).fetchall()
            return [(int(i), str(h), int(n)) for i, h, n in rows], units[-1] if more else None

        return self.run_read(whole if repository is None else scoped)

    def artifact_urls(self, artifact_ids: list[int]) -> dict[int, list[str]]:
        """The URLs recorded for the units' files of each artifact, in the order they were
        recorded, each once; an artifact no unit refers to is left out."""

        def work(conn: Any) -> list[Sequence[Any]]:
            return list(
                conn.execute(
                    self.sql(
                        "SELECT ua.artifact_id, ra.url FROM unit_artifacts ua "
                        "LEFT JOIN remote_artifacts ra ON ra.unit_artifact_id = ua.id WHERE "
                    )
                    + self.sql(self.in_list("ua.artifact_id"))
                    + " ORDER BY ua.artifact_id, ua.id, ra.id",
                    (self.list_param(sorted(set(artifact_ids))),),
                ).fetchall()
            )

        urls: dict[int, list[str]] = {}
        for artifact_id, url in self.run_read(work) if artifact_ids else []:
            known = urls.setdefault(int(artifact_id), [])
            if url is not None and url not in known:
                known.append(url)
        return urls


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
        backend: Backend,
        *,
        storage: ArtifactStorage | None = None,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self._backend = backend
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
        """
        self._check_writable()  # a reader takes no lease (it would make a lease file)
        handle = await acquire_lease(self._backend, exclusive=False, wait=None)
        try:
            yield
        finally:
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
        row, and the temp files of processes that are gone.  Without a storage (a store
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
        return await self._read(self._backend.find_units, wanted)

    async def find_artifacts(self, sha256s: Iterable[str]) -> dict[str, ArtifactRecord]:
        """The artifacts among *sha256s* that exist, by sha256 (one query)."""
        shas = [ArtifactRecord(s, 0).sha256 for s in listed(sha256s, "sha256s")]
        return await self._read(self._backend.find_artifacts, shas)

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
        if version is not None and not isinstance(version, VersionHandle):
            raise InvalidInput(f"version must be a VersionHandle, got {version!r}")
        return await self._write(self._backend.commit_units, batch, version)

    async def fill_artifacts(self, fills: Mapping[int, Mapping[str, ArtifactRecord]]) -> int:
        """Attach downloaded artifacts to existing units: ``{unit_id: {relative_path: record}}``.

        Only links without an artifact (on-demand) are set; returns how many were set.
        """
        rows: list[tuple[int, str, ArtifactRecord]] = []
        for uid, paths in fills.items():
            if isinstance(uid, bool) or not isinstance(uid, int):
                raise InvalidInput(f"unit ids must be ints, got {uid!r}")
            for path, record in paths.items():
                if not isinstance(record, ArtifactRecord):
                    raise InvalidInput(f"expected an ArtifactRecord, got {record!r}")
                rows.append((uid, path, record))
        return await self._write(self._backend.fill_artifacts, rows)

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
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit must be a positive int, got {limit!r}")
        name = None if repository is None else _check_repository_name(repository)
        return await self._read(
            self._backend.missing_artifacts, name, version_number, after_id, limit
        )

    # -- repositories and versions ----------------------------------------------------------

    async def create_repository(self, name: str) -> None:
        """Create repository *name* unless it exists."""
        await self._write(self._backend.create_repository, _check_repository_name(name))

    async def repositories(self) -> list[str]:
        """The names of all repositories, sorted."""
        return await self._read(self._backend.repositories)

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
        adds only what it sees).  Membership is copied by one statement.
        """
        name = _check_repository_name(repository)
        if (
            base is not None
            and base != "latest"
            and (isinstance(base, bool) or not isinstance(base, int))
        ):
            raise InvalidInput(f"base must be 'latest', a version number or None, got {base!r}")
        return await self._write(self._backend.new_version, name, base, create_repository)

    async def add_to_version(self, version: VersionHandle, unit_ids: Iterable[int]) -> int:
        """Add units to an incomplete version; returns how many were not in it yet.

        A unit replaces the unit the version carried over from its base at the same
        repository key (see :class:`RepositoryKey`).  When one of them cannot go in (its
        key is taken by a unit added to this version), :class:`RepositoryKeyConflict` is
        raised and nothing changes; :meth:`place_units` reports such units instead.
        """
        ids = _check_ids(unit_ids)
        placement = await self._write(self._backend.place_units, version, ids, True)
        return placement.added

    async def place_units(self, version: VersionHandle, unit_ids: Iterable[int]) -> Placement:
        """Add units to an incomplete version; report what they replaced and what was refused.

        As :meth:`add_to_version`, but a unit that cannot go in is listed in the returned
        :class:`Placement` (``refused``, by unit id) and the others go in.
        """
        ids = _check_ids(unit_ids)
        return await self._write(self._backend.place_units, version, ids, False)

    async def remove_from_version(self, version: VersionHandle, unit_ids: Iterable[int]) -> int:
        """Remove units from an incomplete version; returns how many were removed."""
        ids = _check_ids(unit_ids)
        return await self._write(self._backend.remove_from_version, version, ids)

    async def version_changes(
        self, version: VersionHandle, other: VersionHandle
    ) -> tuple[int, int]:
        """How *version* differs from *other*: (units only in *version*, units only in
        *other*), counted by two queries."""
        return await self._read(self._backend.version_changes, version.id, other.id)

    async def complete_version(self, version: VersionHandle) -> VersionHandle:
        """Mark *version* complete: it becomes the latest version and immutable."""
        return await self._write(self._backend.complete_version, version)

    async def discard_version(self, version: VersionHandle) -> None:
        """Delete an incomplete version (its units stay in the database)."""
        await self._write(self._backend.discard_version, version)

    async def latest_version(self, repository: str) -> VersionHandle | None:
        """The latest complete version of *repository*, or None if it has none yet."""
        return await self._read(self._backend.latest_version, _check_repository_name(repository))

    async def get_version(self, repository: str, number: int) -> VersionHandle:
        """Version *number* of *repository* (complete or not)."""
        name = _check_repository_name(repository)
        return await self._read(self._backend.get_version, name, number)

    async def list_units(
        self, repository: str, version_number: int | None = None
    ) -> list[UnitInfo]:
        """The units of a version (default: the latest complete one), by id."""
        name = _check_repository_name(repository)
        return await self._read(self._backend.list_units, name, version_number)

    async def count_units(self, repository: str, version_number: int | None = None) -> int:
        """How many units a version (default: the latest complete one) holds."""
        name = _check_repository_name(repository)
        return await self._read(self._backend.count_units, name, version_number)

    async def versions(self, repository: str) -> list[VersionInfo]:
        """Every version of *repository*, complete or not, by ascending number (one query).

        Raises :class:`RepositoryNotFound` for an unknown repository.
        """
        name = _check_repository_name(repository)
        return await self._read(_versions, self._backend, name)

    async def prune(self, repository: str, keep: int) -> PruneReport:
        """Delete the complete versions of *repository* older than its *keep* latest ones.

        Incomplete versions (a sync in progress) are never deleted, nor the latest complete
        version (*keep* is at least 1).  One transaction.  The units and files the deleted
        versions held stay in the store until :meth:`collect_garbage` finds nothing holds
        them.  Raises :class:`RepositoryNotFound` for an unknown repository.
        """
        name = _check_repository_name(repository)
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidInput(f"keep must be an int >= 1, got {keep!r}")
        return await self._write(_prune, self._backend, name, keep)

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
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit must be a positive int, got {limit!r}")
        if isinstance(after, bool) or not isinstance(after, int):
            raise InvalidInput(f"after must be an int, got {after!r}")
        name = None if repository is None else _check_repository_name(repository)
        return await self._read(self._backend.stored_artifacts, name, after, limit)

    async def artifact_urls(self, artifact_ids: Iterable[int]) -> dict[int, list[str]]:
        """Where the files of these artifacts came from: the URLs recorded for every unit's
        file that is the artifact, each once, in the order recorded (one query).

        Keyed by artifact id; an artifact no unit refers to is absent, one with no URL
        recorded maps to an empty list.
        """
        return await self._read(self._backend.artifact_urls, _check_ids(artifact_ids))


def iter_chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
