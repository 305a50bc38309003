"""Reading the store, and the life of repositories and versions.

Owns the lookups (units and artifacts by key, the files of on-demand units still to fetch,
pages of stored artifacts for a repair, the units of a version) and the bookkeeping of
repositories and versions: creating them, starting a version from a base, completing,
discarding and listing versions.  Written once, for both databases, on the
:class:`~._dialect.Dialect`; every function runs in a worker thread.

It must not write units or change which units a version holds (``_commit`` does), nor
delete versions or anything else for good (``_retention`` does), and it imports neither.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._model import ArtifactRecord, UnitKey, key_json
from ..errors import RepositoryNotFound, VersionNotFound, VersionNotWritable
from ._dialect import Dialect
from ._types import MissingArtifact, UnitInfo, VersionHandle, load_json

__all__ = [
    "VersionInfo",
    "artifact_urls",
    "complete_if_changed",
    "complete_version",
    "count_units",
    "create_repository",
    "discard_version",
    "find_artifacts",
    "find_units",
    "get_version",
    "latest_version",
    "list_units",
    "missing_artifacts",
    "new_version",
    "only_in_sql",
    "repositories",
    "stored_artifacts",
    "version_changes",
    "versions",
]


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


def _load(value: Any) -> Any:
    return load_json(value) if isinstance(value, str) else value


def _now() -> str:
    """The current time as stored in the database: ISO 8601, UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# -- units and artifacts -------------------------------------------------------------------


def find_units(db: Dialect, keys: list[UnitKey]) -> dict[UnitKey, UnitInfo]:
    """The units of *keys* that exist, by key (one query)."""
    if not keys:
        return {}
    known = {(k.type, key_json(k.natural_key)): k for k in keys}
    wanted = sorted(known)
    rows = db.run_read(lambda conn: list(db.q_find_units(conn, wanted)))
    return _units_from_rows(rows, known)


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


def find_artifacts(db: Dialect, shas: list[str]) -> dict[str, ArtifactRecord]:
    """The artifacts of *shas* that exist, by sha256 (one query)."""
    if not shas:
        return {}
    wanted = sorted(set(shas))
    rows = db.run_read(lambda conn: list(db.q_find_artifacts(conn, wanted)))
    return {sha: ArtifactRecord._from_db(sha, size, _load(d)) for sha, size, d in rows}


def missing_artifacts(
    db: Dialect, repository: str | None, number: int | None, after_id: int, limit: int
) -> list[MissingArtifact]:
    """The files of on-demand units not downloaded yet: at most *limit* units with an id
    above *after_id*, by id; with *repository*, only those of its version *number* (None:
    the latest complete one)."""

    def work(conn: Any) -> list[tuple[Any, ...]]:
        scope, args = "", [after_id]
        if repository is not None:
            row = _resolve(db, conn, repository, number)
            if row is None:
                return []
            scope = " AND ua.unit_id IN (SELECT unit_id FROM version_units WHERE version_id = ?)"
            args.append(row[0])
        ids = [
            r[0]
            for r in conn.execute(
                db.sql(
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
            db.sql(
                "SELECT ua.unit_id, u.type, u.natural_key, ua.relative_path, ra.url, ra.size,"
                " ra.digests, ua.streamed FROM unit_artifacts ua JOIN units u ON u.id = ua.unit_id"
                " LEFT JOIN remote_artifacts ra ON ra.unit_artifact_id = ua.id"
                f" WHERE ua.artifact_id IS NULL AND ua.unit_id IN ({marks})"
                " ORDER BY ua.unit_id, ua.relative_path, ra.id"
            ),
            ids,
        ).fetchall()
        return rows

    rows = db.run_read(work)
    found: dict[tuple[int, str], MissingArtifact] = {}
    for uid, type_, nk, path, url, size, digests, streamed in rows:
        item = found.get((uid, path))
        if item is None:
            key = UnitKey(type_, tuple(load_json(nk)))
            item = found[(uid, path)] = MissingArtifact(
                uid, key, path, (), None, {}, bool(streamed)
            )
        if url is not None:
            found[(uid, path)] = MissingArtifact(
                uid,
                item.key,
                path,
                (*item.urls, url),
                size,
                dict(_load(digests) or {}),
                item.streamed,
            )
    return list(found.values())


# -- repositories and versions -------------------------------------------------------------


def _repository_id(db: Dialect, conn: Any, name: str, *, create: bool, lock: bool = True) -> int:
    """The id of repository *name* (made first with *create*), its row locked with *lock*."""
    if create:
        conn.execute(
            db.sql("INSERT INTO repositories (name) VALUES (?) ON CONFLICT (name) DO NOTHING"),
            (name,),
        )
    # a reader locks nothing (a read-only PostgreSQL transaction may not)
    lock_rows = db.lock_rows if lock else ""
    row = conn.execute(
        db.sql("SELECT id FROM repositories WHERE name = ?" + lock_rows), (name,)
    ).fetchone()
    if row is None:
        raise RepositoryNotFound(name)
    return int(row[0])


#: the largest version number (a signed 64-bit integer in both databases)
_MAX_NUMBER = 2**63 - 1


def _version_row(
    db: Dialect, conn: Any, repository_id: int, number: int | Literal["latest"]
) -> tuple[int, int, bool] | None:
    if number == "latest":
        sql = (
            "SELECT id, number, complete FROM repository_versions WHERE repository_id = ? "
            "AND complete ORDER BY number DESC LIMIT 1"
        )
        row = conn.execute(db.sql(sql), (repository_id,)).fetchone()
    elif not 0 < number <= _MAX_NUMBER:  # (no such version; nor a number SQL can hold)
        return None
    else:
        sql = (
            "SELECT id, number, complete FROM repository_versions "
            "WHERE repository_id = ? AND number = ?"
        )
        row = conn.execute(db.sql(sql), (repository_id, number)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), bool(row[2]))


def _resolve(db: Dialect, conn: Any, name: str, number: int | None) -> tuple[int, int, bool] | None:
    """(id, number, complete) of version *number* of *name* (None: its latest complete one,
    or None when it has none)."""
    rid = _repository_id(db, conn, name, create=False, lock=False)
    row = _version_row(db, conn, rid, "latest" if number is None else number)
    if row is None and number is not None:
        raise VersionNotFound(f"repository {name!r} has no version {number}")
    return row


def create_repository(db: Dialect, name: str) -> None:
    db.run_write(lambda conn: _repository_id(db, conn, name, create=True))


def repositories(db: Dialect) -> list[str]:
    rows = db.run_read(
        lambda conn: conn.execute("SELECT name FROM repositories ORDER BY name").fetchall()
    )
    return [r[0] for r in rows]


def new_version(
    db: Dialect, name: str, base: int | Literal["latest"] | None, create: bool
) -> VersionHandle:
    """Start the next version of *name* (the number after the largest it ever had)
    holding the units of *base* (see Store.new_version)."""

    def work(conn: Any) -> VersionHandle:
        rid = _repository_id(db, conn, name, create=create)
        base_id = None
        if base is not None:
            row = _version_row(db, conn, rid, base)
            if row is None and base != "latest":
                raise VersionNotFound(f"repository {name!r} has no version {base}")
            if row is not None and not row[2]:
                raise VersionNotWritable(
                    f"version {base} of {name!r} is not complete: it cannot be a base"
                )
            base_id = None if row is None else row[0]
        # the number after the last handed out (the repository's row is locked): never
        # that of an abandoned version gc removed (a discard gives its number back)
        last = conn.execute(
            db.sql(
                "SELECT r.last_number, (SELECT coalesce(max(number), 0) FROM repository_versions "
                "WHERE repository_id = r.id) FROM repositories r WHERE r.id = ?"
            ),
            (rid,),
        ).fetchone()
        number = max(int(last[0]), int(last[1])) + 1
        conn.execute(db.sql("UPDATE repositories SET last_number = ? WHERE id = ?"), (number, rid))
        vid = conn.execute(
            db.sql(
                "INSERT INTO repository_versions (repository_id, number, complete, created) "
                "VALUES (?, ?, ?, ?) RETURNING id"
            ),
            (rid, number, False, _now()),
        ).fetchone()[0]
        if base_id is not None:
            conn.execute(
                db.sql(
                    "INSERT INTO version_units (version_id, unit_id) "
                    "SELECT ?, unit_id FROM version_units WHERE version_id = ?"
                ),
                (vid, base_id),
            )
        return VersionHandle(int(vid), name, int(number), False)

    return db.run_write(work)


def complete_version(db: Dialect, version: VersionHandle) -> VersionHandle:
    """Mark *version* complete."""

    def work(conn: Any) -> None:
        cur = conn.execute(
            db.sql("UPDATE repository_versions SET complete = ? WHERE id = ?"),
            (True, version.id),
        )
        if cur.rowcount != 1:
            raise VersionNotFound(
                f"version {version.number} of {version.repository!r} does not exist"
            )

    db.run_write(work)
    return VersionHandle(version.id, version.repository, version.number, True)


#: Whether unit ``a.unit_id`` is in version ``?``: one probe of the primary key.  The
#: ``OFFSET 0`` keeps PostgreSQL from turning the ``NOT EXISTS`` into an anti join, which
#: it plans from its statistics; they have not seen a new version (its id is above
#: every id analyzed), estimate one row for it when they list every version id (fewer
#: than a hundred in the table), and the plan is then a nested loop reading the other
#: version's whole membership for each unit: quadratic, seconds to minutes under the
#: repository's lock (124 s for three comparisons of 20,000 units each, measured).
#: SQLite probes anyway.
_PROBE = (
    "(SELECT 1 FROM version_units b WHERE b.version_id = ? AND b.unit_id = a.unit_id "
    "LIMIT 1 OFFSET 0)"
)


def only_in_sql(added: bool = False) -> str:
    """The query of :func:`_only_in` (parameters: the version, the other version), with
    ``?`` placeholders; the tests read PostgreSQL's plan of it."""
    return (
        "SELECT 1 FROM version_units a WHERE a.version_id = ?"
        + (" AND a.added" if added else "")
        + " AND NOT EXISTS "
        + _PROBE
        + " LIMIT 1"
    )


def _only_in(
    db: Dialect, conn: Any, version_id: int, other_id: int, *, added: bool = False
) -> bool:
    """Whether version *version_id* holds a unit *other_id* does not (with *added*: one
    its writer added, not one carried over from its base).  One scan of its units in
    order, stopping at the first such unit, with one probe of *other_id*'s primary key
    for each (:data:`_PROBE`)."""
    sql = db.sql(only_in_sql(added))
    return conn.execute(sql, (version_id, other_id)).fetchone() is not None


def _same_units(db: Dialect, conn: Any, version_id: int, other_id: int) -> bool:
    """Whether versions *version_id* and *other_id* hold the same units (two probes, each
    stopping at the first unit only one of them holds)."""
    return not any(
        _only_in(db, conn, *pair) for pair in ((version_id, other_id), (other_id, version_id))
    )


def complete_if_changed(
    db: Dialect, version: VersionHandle, previous: VersionHandle | None, additive: bool = False
) -> VersionHandle:
    """Complete *version*, unless it holds the units of a complete version next to it:
    the latest, or the nearest complete version numbered below it or above it (without
    another run, the nearest below is *previous*, the latest when it was started).  Then
    discard it, and return that version instead.

    The numbers say the order of the repository's history: a version the same as its
    neighbour in that order changes nothing, whatever other runs completed meanwhile; a
    version the same as one further back (the content of two versions ago, say) is a
    change, and is made.  So of several writers completing the same content at once the
    first to finish makes the version and the others find it, also when a writer of
    other content completed a version numbered above it in between; and the latest
    version holds the content of the run that was numbered last, or of one that finished
    after it (or, with *additive*, one holding that run's whole input).

    With *additive* (*version* was started from *previous*'s units, and its run only adds
    to them: a run without ``mirror``), a version that holds the same units as *previous*
    (its run changed nothing) is not made either when the latest version holds every unit
    its writer added (its input: ``version_units.added``; the units carried over from the
    base are not its input): the run after the latest would change nothing, and
    completing it would only take out of the latest what other runs changed meanwhile.
    The latest is returned.  A unit of its input the latest lacks (content changed back
    at one key) makes it a change.  Without *additive*, *previous* is not needed.

    One transaction, with the repository's row locked first (as :func:`new_version` locks
    it; SQLite writers take turns anyway).
    """

    def work(conn: Any) -> VersionHandle:
        row = conn.execute(
            db.sql("SELECT repository_id, number, complete FROM repository_versions WHERE id = ?"),
            (version.id,),
        ).fetchone()
        if row is None:
            raise VersionNotFound(
                f"version {version.number} of {version.repository!r} does not exist"
            )
        rid, number = int(row[0]), int(row[1])
        # the repository's row: completions, new versions and prunes of it take turns
        conn.execute(db.sql("SELECT id FROM repositories WHERE id = ?" + db.lock_rows), (rid,))
        if row[2]:
            raise VersionNotWritable(
                f"version {version.number} of {version.repository!r} is complete"
            )
        neighbours = _neighbours(db, conn, rid, number)
        for found_id, found_number in neighbours:
            if _same_units(db, conn, version.id, found_id):
                _discard(db, conn, version.id, rid, number)
                return VersionHandle(found_id, version.repository, found_number, True)
        if additive and previous is not None and neighbours:
            # (a neighbour was compared already: the same as previous only when it is not)
            compared = {found_id for found_id, _ in neighbours}
            latest_id, latest_number = neighbours[0]
            if (
                previous.id not in compared
                and _is_complete(db, conn, rid, previous.id)  # (gone if pruned meanwhile)
                and not _only_in(db, conn, version.id, latest_id, added=True)
                and _same_units(db, conn, version.id, previous.id)
            ):
                _discard(db, conn, version.id, rid, number)
                return VersionHandle(latest_id, version.repository, latest_number, True)
        conn.execute(
            db.sql("UPDATE repository_versions SET complete = ? WHERE id = ?"),
            (True, version.id),
        )
        return VersionHandle(version.id, version.repository, version.number, True)

    return db.run_write(work)


def _is_complete(db: Dialect, conn: Any, repository_id: int, version_id: int) -> bool:
    """Whether version *version_id* of repository *repository_id* is there and complete."""
    row = conn.execute(
        db.sql("SELECT 1 FROM repository_versions WHERE id = ? AND repository_id = ? AND complete"),
        (version_id, repository_id),
    ).fetchone()
    return row is not None


def _neighbours(db: Dialect, conn: Any, repository_id: int, number: int) -> list[tuple[int, int]]:
    """(id, number) of the complete versions a version numbered *number* is compared with
    when completed: the latest (first, when there is one), and the nearest complete ones
    below and above *number* (each once)."""
    found: list[tuple[int, int]] = []
    latest = _version_row(db, conn, repository_id, "latest")
    if latest is not None:
        found.append((latest[0], latest[1]))
    for sql in (
        "SELECT id, number FROM repository_versions WHERE repository_id = ? AND complete "
        "AND number < ? ORDER BY number DESC LIMIT 1",
        "SELECT id, number FROM repository_versions WHERE repository_id = ? AND complete "
        "AND number > ? ORDER BY number LIMIT 1",
    ):
        near = conn.execute(db.sql(sql), (repository_id, number)).fetchone()
        if near is not None:
            found.append((int(near[0]), int(near[1])))
    return list(dict.fromkeys(found))  # (each once, first place kept)


def _discard(db: Dialect, conn: Any, version_id: int, repository_id: int, number: int) -> None:
    """Delete incomplete version *version_id* (number *number*) and its membership, and give
    its number back when it is the last one handed out."""
    conn.execute(db.sql("DELETE FROM version_units WHERE version_id = ?"), (version_id,))
    conn.execute(db.sql("DELETE FROM repository_versions WHERE id = ?"), (version_id,))
    conn.execute(
        db.sql(
            "UPDATE repositories SET last_number = last_number - 1 WHERE id = ? AND last_number = ?"
        ),
        (repository_id, number),
    )


def discard_version(db: Dialect, version: VersionHandle) -> None:
    """Delete an incomplete version (idempotent); its units stay.  Its number is given back
    when it is the last one handed out (a run that failed, or changed nothing, leaves no gap
    in the numbers); a number handed out after it keeps it taken."""

    def work(conn: Any) -> None:
        row = conn.execute(
            db.sql(
                "SELECT complete, repository_id, number FROM repository_versions WHERE id = ?"
                + db.lock_rows
            ),
            (version.id,),
        ).fetchone()
        if row is None:
            return  # already gone: discarding is idempotent
        if row[0]:
            raise VersionNotWritable(
                f"version {version.number} of {version.repository!r} is complete"
            )
        _discard(db, conn, version.id, row[1], row[2])

    # (unfenced: a writer that lost its lease still takes its own version away)
    db.run_write(work, fenced=False)


def latest_version(db: Dialect, name: str) -> VersionHandle | None:
    row = db.run_read(lambda conn: _resolve(db, conn, name, None))
    return None if row is None else VersionHandle(row[0], name, row[1], row[2])


def get_version(db: Dialect, name: str, number: int) -> VersionHandle:
    row = db.run_read(lambda conn: _resolve(db, conn, name, number))
    assert row is not None
    return VersionHandle(row[0], name, row[1], row[2])


def count_units(db: Dialect, name: str, number: int | None) -> int:
    def work(conn: Any) -> int:
        row = _resolve(db, conn, name, number)
        if row is None:
            return 0
        sql = "SELECT count(*) FROM version_units WHERE version_id = ?"
        return int(conn.execute(db.sql(sql), (row[0],)).fetchone()[0])

    return db.run_read(work)


def list_units(db: Dialect, name: str, number: int | None) -> list[UnitInfo]:
    def work(conn: Any) -> list[Sequence[Any]]:
        row = _resolve(db, conn, name, number)
        if row is None:
            return []
        sql = (
            "SELECT u.id, u.type, u.natural_key, u.fields, ua.relative_path, a.sha256, "
            "a.size, a.digests FROM version_units vu JOIN units u ON u.id = vu.unit_id "
            "LEFT JOIN unit_artifacts ua ON ua.unit_id = u.id "
            "LEFT JOIN artifacts a ON a.id = ua.artifact_id "
            "WHERE vu.version_id = ? ORDER BY u.id, ua.relative_path"
        )
        return list(conn.execute(db.sql(sql), (row[0],)).fetchall())

    return list(_units_from_rows(db.run_read(work)).values())


def version_changes(db: Dialect, version_id: int, base_id: int) -> tuple[int, int]:
    """(units in *version_id* not in *base_id*, units in *base_id* not in *version_id*)."""
    sql = db.sql(
        "SELECT count(*) FROM version_units a WHERE a.version_id = ? AND NOT EXISTS " + _PROBE
    )

    def work(conn: Any) -> tuple[int, int]:
        added = conn.execute(sql, (version_id, base_id)).fetchone()[0]
        removed = conn.execute(sql, (base_id, version_id)).fetchone()[0]
        return int(added), int(removed)

    return db.run_read(work)


def _created(value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    when = datetime.datetime.fromisoformat(str(value))
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def versions(db: Dialect, name: str) -> list[VersionInfo]:
    """Every version of repository *name*, ascending (one query)."""
    sql = db.sql(
        "SELECT v.number, v.created, v.complete, "
        "(SELECT count(*) FROM version_units vu WHERE vu.version_id = v.id) "
        "FROM repositories r LEFT JOIN repository_versions v ON v.repository_id = r.id "
        "WHERE r.name = ? ORDER BY v.number"
    )
    rows = db.run_read(lambda conn: conn.execute(sql, (name,)).fetchall())
    if not rows:
        raise RepositoryNotFound(name)
    return [
        VersionInfo(int(number), _created(created), int(units), bool(complete))
        for number, created, complete, units in rows
        if number is not None  # the one row of a repository without versions
    ]


# -- pages for a repair --------------------------------------------------------------------


def stored_artifacts(
    db: Dialect, repository: str | None, after: int, limit: int
) -> tuple[list[tuple[int, str, int]], int | None]:
    """A page of artifacts (id, sha256, size) by id, and the cursor of the next page
    (None: no more).  The whole store pages by artifact id; a repository pages by unit
    id over the units of all its versions, each version read off its primary key."""

    def whole(conn: Any) -> tuple[list[tuple[int, str, int]], int | None]:
        rows = conn.execute(
            db.sql("SELECT id, sha256, size FROM artifacts WHERE id > ? ORDER BY id LIMIT ?"),
            (after, limit),
        ).fetchall()
        more = len(rows) == limit
        return [(int(i), str(h), int(n)) for i, h, n in rows], rows[-1][0] if more else None

    def scoped(conn: Any) -> tuple[list[tuple[int, str, int]], int | None]:
        found = conn.execute(
            db.sql("SELECT id FROM repositories WHERE name = ?"), (repository,)
        ).fetchone()
        if found is None:
            raise RepositoryNotFound(str(repository))
        version_ids = conn.execute(
            db.sql("SELECT id FROM repository_versions WHERE repository_id = ?"),
            (found[0],),
        ).fetchall()
        # the smallest *limit* unit ids above the cursor are among each version's
        # smallest *limit*: one range of its primary key each
        ids: set[int] = set()
        more = False
        for (version_id,) in version_ids:
            batch = conn.execute(
                db.sql(
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
            db.sql(
                "SELECT DISTINCT a.id, a.sha256, a.size FROM unit_artifacts ua "
                "JOIN artifacts a ON a.id = ua.artifact_id WHERE "
            )
            + db.sql(db.in_list("ua.unit_id"))
            + " ORDER BY a.id",
            (db.list_param(units),),
        ).fetchall()
        return [(int(i), str(h), int(n)) for i, h, n in rows], units[-1] if more else None

    return db.run_read(whole if repository is None else scoped)


def artifact_urls(db: Dialect, artifact_ids: list[int]) -> dict[int, list[str]]:
    """The URLs recorded for the units' files of each artifact, in the order they were
    recorded, each once; an artifact no unit refers to is left out."""

    def work(conn: Any) -> list[Sequence[Any]]:
        return list(
            conn.execute(
                db.sql(
                    "SELECT ua.artifact_id, ra.url FROM unit_artifacts ua "
                    "LEFT JOIN remote_artifacts ra ON ra.unit_artifact_id = ua.id WHERE "
                )
                + db.sql(db.in_list("ua.artifact_id"))
                + " ORDER BY ua.artifact_id, ua.id, ra.id",
                (db.list_param(sorted(set(artifact_ids))),),
            ).fetchall()
        )

    urls: dict[int, list[str]] = {}
    for artifact_id, url in db.run_read(work) if artifact_ids else []:
        known = urls.setdefault(int(artifact_id), [])
        if url is not None and url not in known:
            known.append(url)
    return urls
