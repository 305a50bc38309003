"""Writing units: the commit algorithm, and the placement of units in a version.

Owns how a batch of :class:`~._types.NewUnit` becomes rows (artifacts, units, their links
and remote artifacts, each unit all or nothing), how existing units receive downloaded
files (``fill_artifacts``), and how units take their place in an incomplete version, one
unit per repository key (``place_units``, ``remove_from_version``, and the same placement
inside a commit).  Written once, for both databases, on the :class:`~._dialect.Dialect`
primitives; every function runs in a worker thread.

It must not touch what the dialect owns (connections, per-database SQL) nor the life of
versions and repositories (``_versions``), and it imports neither the facade nor
``_versions`` nor ``_retention``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._model import ArtifactRecord, UnitKey, key_json
from ..errors import (
    ArtifactConflict,
    InvalidInput,
    RepositoryKeyConflict,
    StoreError,
    VersionNotFound,
    VersionNotWritable,
)
from ._dialect import Dialect
from ._schema import unit_key_hash
from ._types import (
    CommitOutcome,
    CommitReport,
    NewUnit,
    NewUnitArtifact,
    Placement,
    RemoteArtifact,
    ReplacedUnit,
    RepositoryKey,
    VersionHandle,
    check_unit_body,
    load_json,
)

__all__ = [
    "commit_units",
    "fill_artifacts",
    "place_units",
    "remove_from_version",
]


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


def _step(db: Dialect, name: str, keys: Sequence[UnitKey]) -> None:
    if db.fault is not None:
        db.fault(name, keys)


def commit_units(
    db: Dialect,
    repository_keys: Mapping[str, RepositoryKey],
    units: Sequence[object],
    version: VersionHandle | None,
) -> CommitReport:
    """Commit *units* (each all or nothing) and, with *version*, place them in it.

    *repository_keys* declares the repository key of each unit type.  See
    :meth:`Store.commit_units` for what the report says.
    """
    outcomes: list[CommitOutcome | None] = [None] * len(units)
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
                outcomes[index] = CommitOutcome(unit, "failed", None, exc)
                continue
        arts = unit.artifacts
        if len(arts) > 1:
            arts = tuple(sorted(arts, key=lambda a: a.relative_path))
        nk = unit.key_json or key_json(unit.natural_key)
        key = (unit.type, nk)
        first = primary.get(key)
        if first is None:
            declared = repository_keys.get(unit.type)
            repo_key = None
            if declared is not None:
                try:
                    repo_key = declared.of(unit.type, unit.fields)
                except InvalidInput as exc:
                    outcomes[index] = CommitOutcome(unit, "failed", None, exc)
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

    def batch(conn: Any) -> dict[int, CommitOutcome]:
        _check_version(db, conn, version_id)
        replaced.clear()
        try:
            return _commit_items(db, conn, items, version_id, replaced)
        except Exception as exc:
            if db.is_db_error(exc) and not db.is_retryable(exc):
                raise _Fallback from exc
            raise

    def one_by_one(conn: Any) -> dict[int, CommitOutcome]:
        _check_version(db, conn, version_id)
        replaced.clear()
        done: dict[int, CommitOutcome] = {}
        for item in items:
            mine: list[ReplacedUnit] = []
            try:
                with db.savepoint(conn):
                    done.update(_commit_items(db, conn, [item], version_id, mine))
            except Exception as exc:
                if not db.is_db_error(exc) or db.is_retryable(exc):
                    raise
                error = db.wrap(exc)
                error.__cause__ = exc
                done[item.index] = CommitOutcome(item.unit, "failed", None, error)
                continue
            replaced.extend(mine)
        return done

    if items:
        try:
            results = db.run_write(batch)
        except _Fallback:
            results = db.run_write(one_by_one)
        for index, outcome in results.items():
            outcomes[index] = outcome
    for index, unit, first in duplicates:
        done = outcomes[first.index]
        assert done is not None
        if done.status == "failed":
            outcomes[index] = CommitOutcome(unit, "failed", None, done.error)
        else:
            outcomes[index] = CommitOutcome(unit, "existing", done.unit_id)
    assert all(o is not None for o in outcomes)
    return CommitReport(tuple(o for o in outcomes if o is not None), tuple(replaced))


def _check_version(db: Dialect, conn: Any, version_id: int | None) -> None:
    """Refuse a version that is gone or complete (locking its row against completion)."""
    if version_id is None:
        return
    row = conn.execute(
        db.sql(
            "SELECT complete FROM repository_versions WHERE id = ?"
            + db.lock_rows.replace("UPDATE", "SHARE")
        ),
        (version_id,),
    ).fetchone()
    if row is None:
        raise VersionNotFound(f"repository version id {version_id} does not exist")
    if row[0]:
        raise VersionNotWritable(f"repository version id {version_id} is complete")


def _commit_items(
    db: Dialect,
    conn: Any,
    items: list[_Prepared],
    version_id: int | None,
    replaced: list[ReplacedUnit],
) -> dict[int, CommitOutcome]:
    """Write *items* (sorted by key) in the current transaction."""
    keys = [i.unit.key for i in items] if db.fault is not None else []
    done: dict[int, CommitOutcome] = {}
    # 1. artifacts, get-or-create, in sha256 order
    _step(db, "artifacts", keys)
    art_rows: dict[str, tuple[str, int, str]] = {}
    for item in items:
        for a in item.arts:
            rec = a.artifact
            if rec is not None and rec.sha256 not in art_rows:
                art_rows[rec.sha256] = (rec.sha256, rec.size, rec.digests_json())
    art_ids: dict[str, tuple[int, int]] = {}
    live = items
    if art_rows:
        art_ids = db.q_artifact_ids(conn, [art_rows[sha] for sha in sorted(art_rows)])
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
                        done[item.index] = CommitOutcome(item.unit, "failed", None, conflict)
                        break
                else:
                    live.append(item)
            if not live:
                return done
    # 2. units, get-or-create, in natural key order
    _step(db, "units", keys)
    unit_ids = db.q_insert_units(
        conn, [(i.type, i.nk, i.fields, i.key_hash, i.repo_key) for i in live]
    )
    # 3. their place in the version: what they replace there, what cannot go in
    placement = None
    if version_id is not None:
        _step(db, "version", keys)
        placement = _place(
            db,
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
                    db.sql("DELETE FROM units WHERE " + db.in_list("id")),
                    (db.list_param(gone),),
                )
            for item in live:
                error = placement.refused.get(item.index)
                if error is not None:
                    done[item.index] = CommitOutcome(item.unit, "failed", None, error)
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
            done[item.index] = CommitOutcome(item.unit, "committed", uid)
            for a in item.arts:  # sorted by relative path
                rec = a.artifact
                add_ua((uid, a.relative_path, None if rec is None else art_ids[rec.sha256][0]))
                add_remote(a.remote)
        else:
            done[item.index] = CommitOutcome(item.unit, "existing", uid)
            fills.extend(
                (uid, a.relative_path, art_ids[a.artifact.sha256][0])
                for a in item.arts
                if a.artifact is not None
            )
    # 4. the new units' artifacts and remote artifacts
    _step(db, "unit_artifacts", keys)
    ua_ids = db.q_insert_unit_artifacts(conn, ua_rows) if ua_rows else []
    _step(db, "remote_artifacts", keys)
    remote_rows: list[tuple[int, str, int | None, str]] = []
    for ua_id, remote in zip(ua_ids, ua_remotes, strict=True):
        if remote is not None:
            urls = remote.urls
            if len(urls) == 1:
                remote_rows.append((ua_id, urls[0], remote.size, remote.digests_json()))
            else:
                digests = remote.digests_json()
                remote_rows.extend((ua_id, url, remote.size, digests) for url in urls)
    streamed = [
        ua_id
        for ua_id, remote in zip(ua_ids, ua_remotes, strict=True)
        if remote is not None and remote.streamed
    ]
    if streamed:
        conn.execute(
            db.sql("UPDATE unit_artifacts SET streamed = TRUE WHERE " + db.in_list("id")),
            (db.list_param(streamed),),
        )
    if remote_rows:
        db.q_insert_remotes(conn, remote_rows)
    # 5. existing units: attach downloaded artifacts they lack (on-demand units)
    if fills:
        _step(db, "fill", keys)
        db.q_fill(conn, sorted(fills))
    _step(db, "commit", keys)
    return done


def _place(db: Dialect, conn: Any, version_id: int, candidates: list[_Candidate]) -> Placement:
    """Put units in an incomplete version, keeping one unit per repository key.

    A unit already in the version stays (and counts as added by this writer).  A unit
    whose repository key (or, for paths, a parent or child path) is held by a unit the
    version carried over from its base replaces it; one held by a unit this writer added
    is refused, as is the later of two candidates that conflict with each other.
    """
    result = Placement()
    ids = sorted({c.unit_id for c in candidates if not c.new})
    sql = db.sql
    members: set[int] = set()
    if ids:
        members = {
            int(r[0])
            for r in conn.execute(
                sql("SELECT unit_id FROM version_units WHERE version_id = ? AND ")
                + sql(db.in_list("unit_id")),
                (version_id, db.list_param(ids)),
            )
        }
    if members:
        # re-added: this writer's now, so that new content at their keys is refused
        conn.execute(
            sql("UPDATE version_units SET added = ? WHERE version_id = ? AND NOT added AND ")
            + sql(db.in_list("unit_id")),
            (True, version_id, db.list_param(sorted(members))),
        )
    fresh: dict[int, _Candidate] = {}
    for c in sorted(candidates, key=_by_index):
        if c.unit_id not in members:
            fresh.setdefault(c.unit_id, c)
    keyed = [c for c in fresh.values() if c.repo_key is not None]
    removed: set[int] = set()
    if keyed:
        _resolve_keys(db, conn, version_id, keyed, result, removed)
    if removed:
        db.q_remove_version_units(conn, version_id, sorted(removed))
    accepted = sorted(uid for uid, c in fresh.items() if c.index not in result.refused)
    if accepted:
        result.added = db.q_add_version_units(conn, version_id, accepted)
    return result


def _resolve_keys(
    db: Dialect,
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
    rows = list(db.q_members_at(conn, version_id, list(exact))) if exact else []
    if paths:
        rows.extend(db.q_members_under(conn, version_id, paths))
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
            found.extend((row, "has the same repository key as") for row in at.get(rk, {}).values())
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
    db: Dialect, version: VersionHandle, unit_ids: list[int], strict: bool = False
) -> Placement:
    """Add units (by id) to an incomplete version, one unit per repository key.

    With *strict*, a refused unit raises its :class:`RepositoryKeyConflict` and nothing
    is changed.
    """

    def work(conn: Any) -> Placement:
        _check_version(db, conn, version.id)
        if not unit_ids:
            return Placement()
        rows = conn.execute(
            db.sql("SELECT id, type, natural_key, repo_key FROM units WHERE ")
            + db.sql(db.in_list("id")),
            (db.list_param(unit_ids),),
        ).fetchall()
        if len(rows) != len(unit_ids):
            unknown = sorted(set(unit_ids) - {int(r[0]) for r in rows})
            raise StoreError(f"no units with ids {unknown[:10]!r}")
        order = {uid: i for i, uid in enumerate(unit_ids)}
        placement = _place(
            db,
            conn,
            version.id,
            [
                _Candidate(order[int(r[0])], int(r[0]), UnitKey(r[1], tuple(load_json(r[2]))), r[3])
                for r in rows
            ],
        )
        if strict and placement.refused:
            raise placement.refused[min(placement.refused)]
        # refused by unit id (the candidates' indexes are positions in unit_ids)
        placement.refused = {unit_ids[i]: e for i, e in placement.refused.items()}
        return placement

    return db.run_write(work)


def fill_artifacts(db: Dialect, fills: list[tuple[int, str, ArtifactRecord]]) -> int:
    """Attach artifacts to the on-demand files of existing units: (unit_id, relative_path,
    record) rows; how many links were set."""
    rows = {r.sha256: (r.sha256, r.size, r.digests_json()) for _, _, r in fills}

    def work(conn: Any) -> int:
        ids = db.q_artifact_ids(conn, sorted(rows.values()))
        for _, _, r in fills:
            if ids[r.sha256][1] != r.size:
                raise ArtifactConflict(r.sha256, ids[r.sha256][1], r.size)
        return db.q_fill(conn, sorted((u, p, ids[r.sha256][0]) for u, p, r in fills))

    return db.run_write(work) if fills else 0


def remove_from_version(db: Dialect, version: VersionHandle, unit_ids: list[int]) -> int:
    """Take units (by id) out of an incomplete version; how many were in it."""

    def work(conn: Any) -> int:
        _check_version(db, conn, version.id)
        return db.q_remove_version_units(conn, version.id, unit_ids)

    return db.run_write(work)
