"""Schema migrations of the SQLite store, and what schema versions 2 and 3 changed.

A database written by schema version 1 (the unique text indexes on ``artifacts.sha256`` and
on the units' keys) is
built here from version 1's own statements, filled, and opened by this code: it must come
out at the current version with every row, id and foreign key intact, and keep working.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
import trio

from triofetch.store import (
    SCHEMA_VERSION,
    ArtifactRecord,
    NewUnit,
    NewUnitArtifact,
    RemoteArtifact,
    _commit,
    _sqlite,
    _types,
    open_store,
)
from triofetch.store._schema import SQLITE_MIGRATIONS, sha256_prefix, unit_key_hash

from .test_store import file_unit, raw, record


def _version1_database(path: Path, count: int) -> list[str]:
    """A schema-1 SQLite database holding *count* file units; their sha256s."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for statement in SQLITE_MIGRATIONS[1]:
        assert isinstance(statement, str)
        conn.execute(statement)
    conn.execute(
        "CREATE TABLE triofetch_schema (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "version INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO triofetch_schema VALUES (1, 1)")
    conn.execute("INSERT INTO repositories (id, name) VALUES (1, 'old')")
    conn.execute(
        "INSERT INTO repository_versions (id, repository_id, number, complete) VALUES (1, 1, 1, 1)"
    )
    shas = []
    for i in range(count):
        data = f"file {i}".encode()
        sha = hashlib.sha256(data).hexdigest()
        shas.append(sha)
        # ids deliberately not 1..n: the migration must keep them
        aid, uid = 100 + 3 * i, 500 + 7 * i
        conn.execute(
            "INSERT INTO artifacts (id, sha256, size, digests) VALUES (?, ?, ?, ?)",
            (aid, sha, len(data), json.dumps({"sha256": sha})),
        )
        conn.execute(
            "INSERT INTO units (id, type, natural_key, fields) VALUES (?, 'file', ?, '{}')",
            (uid, json.dumps([f"f{i}", sha], separators=(",", ":"))),
        )
        conn.execute(
            "INSERT INTO unit_artifacts (id, unit_id, relative_path, artifact_id) "
            "VALUES (?, ?, ?, ?)",
            (uid, uid, f"f{i}", aid),
        )
        conn.execute("INSERT INTO version_units (version_id, unit_id) VALUES (1, ?)", (uid,))
    conn.execute("COMMIT")
    conn.close()
    return shas


def _schema_of(path: Path) -> tuple[int, list[str], int]:
    """(schema version, the indexes of artifacts and units, foreign_keys setting)."""
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("SELECT version FROM triofetch_schema").fetchone()[0]
        indexes = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name IN ('artifacts', 'units')"
            )
        ]
        fk_on = conn.execute("PRAGMA foreign_keys").fetchone()[0]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return version, sorted(indexes), fk_on
    finally:
        conn.close()


async def test_version1_database_is_migrated_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    shas = _version1_database(db, 50)
    async with open_store(f"sqlite:///{db}") as store:
        assert SCHEMA_VERSION == 6
        # version 6: the largest number each repository handed out, and the next one after it
        rows = await raw(store, "SELECT name, last_number FROM repositories")
        assert [tuple(r) for r in rows] == [("old", 1)]
        # version 5: no unit of before streams its files
        rows = await raw(store, "SELECT count(*) FROM unit_artifacts WHERE streamed")
        assert rows[0][0] == 0
        # every unit kept its id, and got its key hash
        rows = await raw(store, "SELECT id, type, natural_key, key_hash FROM units ORDER BY id")
        assert [r[0] for r in rows] == [500 + 7 * i for i in range(50)]
        assert all(r[3] == unit_key_hash(r[1], r[2]) for r in rows)
        # every artifact kept its id, and got its prefix
        rows = await raw(store, "SELECT id, sha256, sha256_prefix FROM artifacts ORDER BY id")
        assert [r[0] for r in rows] == [100 + 3 * i for i in range(50)]
        assert all(r[2] == sha256_prefix(r[1]) for r in rows)
        assert [r[1] for r in rows] == shas
        # lookups by sha256 and by unit key still see the old rows
        found = await store.find_artifacts([*shas[:5], "0" * 64])
        assert sorted(found) == sorted(shas[:5])
        units = await store.find_units([("file", (f"f{i}", shas[i])) for i in range(50)])
        assert len(units) == 50
        assert {u.id for u in units.values()} == {500 + 7 * i for i in range(50)}
        assert all(next(iter(u.artifacts.values())) is not None for u in units.values())
        assert await store.count_units("old") == 50
        # and writing goes on: an existing artifact is reused, not recorded twice
        old = ArtifactRecord(shas[0], len(b"file 0"))
        report = await store.commit_units(
            [
                NewUnit(
                    "file",
                    ("again", shas[0]),
                    {"relative_path": "again"},
                    (NewUnitArtifact("again", old),),
                )
            ]
        )
        assert [o.status for o in report] == ["committed"]
        assert (await raw(store, "SELECT count(*) FROM artifacts WHERE sha256 = ?", (shas[0],)))[0][
            0
        ] == 1
        report = await store.commit_units([file_unit("new", b"new bytes")])
        assert [o.status for o in report] == ["committed"]
        assert (await store.new_version("old")).number == 2
    version, indexes, _ = _schema_of(db)
    assert version == SCHEMA_VERSION
    # the unique text indexes are gone
    assert indexes == ["artifacts_sha256_prefix", "units_key_hash", "units_repo_key"]


async def test_migration_is_applied_once_by_racing_openers(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    _version1_database(db, 20)
    opened: list[int] = []

    async def opener() -> None:
        async with open_store(f"sqlite:///{db}") as store:
            opened.append(len(await raw(store, "SELECT id FROM artifacts")))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(opener)
    assert opened == [20] * 4
    assert _schema_of(db)[0] == SCHEMA_VERSION


async def test_new_database_uses_the_prefix_index(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite3"
    async with open_store(f"sqlite:///{db}") as store:
        await store.commit_units([file_unit("a", b"a")])
        plan = await raw(
            store,
            "EXPLAIN QUERY PLAN SELECT id FROM artifacts WHERE sha256_prefix IN (1, 2)",
        )
        assert any("artifacts_sha256_prefix" in str(row) for row in plan)
        plan = await raw(
            store, "EXPLAIN QUERY PLAN SELECT id, natural_key FROM units WHERE key_hash IN (1, 2)"
        )
        assert any("units_key_hash" in str(row) for row in plan)
        assert (await raw(store, "PRAGMA page_size"))[0][0] == 4096
    version, indexes, _ = _schema_of(db)
    assert (version, indexes) == (
        SCHEMA_VERSION,
        ["artifacts_sha256_prefix", "units_key_hash", "units_repo_key"],
    )


def _colliding(prefix: str, count: int) -> list[str]:
    """*count* different sha256 hex digests sharing the indexed prefix (4 bytes)."""
    return [prefix + hashlib.sha256(str(i).encode()).hexdigest()[8:] for i in range(count)]


async def test_sha256_prefix_collisions_keep_artifacts_apart(store_url: str) -> None:
    """Digests sharing the indexed prefix are distinct artifacts, each recorded once.

    Prefix collisions come naturally past ~100,000 artifacts, and an attacker can make them
    at will: a collision must never merge two artifacts nor hide one.
    """
    shas = _colliding("00c0ffee", 6)
    assert len({sha256_prefix(s) for s in shas}) == 1

    def unit(i: int, sha: str, size: int) -> NewUnit:
        return NewUnit(
            "file",
            (f"c{i}", sha),
            {"relative_path": f"c{i}"},
            (NewUnitArtifact(f"c{i}", ArtifactRecord(sha, size)),),
        )

    async with open_store(store_url) as store:
        # the first three, then all six (three already there) in one batch, twice
        first = await store.commit_units([unit(i, shas[i], 10 + i) for i in range(3)])
        assert [o.status for o in first] == ["committed"] * 3
        both = await store.commit_units([unit(i + 10, s, 10 + i) for i, s in enumerate(shas)])
        assert [o.status for o in both] == ["committed"] * 6
        found = await store.find_artifacts(shas + _colliding("00c0ffee", 8)[6:])
        assert {s: r.size for s, r in found.items()} == {s: 10 + i for i, s in enumerate(shas)}
        rows = await raw(store, "SELECT sha256, count(*) FROM artifacts GROUP BY sha256")
        assert sorted(rows) == sorted((s, 1) for s in shas)
        # a wrong size for one of them fails only the unit that brings it
        clash = await store.commit_units([unit(20, shas[4], 999), unit(21, shas[5], 15)])
        assert [o.status for o in clash] == ["failed", "committed"]
        units = await store.find_units([("file", (f"c{i + 10}", s)) for i, s in enumerate(shas)])
        links = {
            key.natural_key[1]: next(iter(info.artifacts.values())) for key, info in units.items()
        }
        assert {sha: rec.sha256 if rec else None for sha, rec in links.items()} == {
            s: s for s in shas
        }


async def test_fill_artifacts_with_colliding_prefixes(store_url: str) -> None:
    shas = _colliding("7fffffff", 3)
    async with open_store(store_url) as store:
        report = await store.commit_units(
            [
                NewUnit(
                    "file",
                    (f"d{i}", s),
                    {"relative_path": f"d{i}"},
                    (NewUnitArtifact(f"d{i}", None, RemoteArtifact(f"http://x.invalid/d{i}")),),
                )
                for i, s in enumerate(shas)
            ]
        )
        ids = {o.unit.natural_key[1]: o.unit_id for o in report}
        filled = await store.fill_artifacts(
            {ids[s]: {f"d{i}": ArtifactRecord(s, 5 + i)} for i, s in enumerate(shas)}
        )
        assert filled == 3
        found = await store.find_artifacts(shas)
        assert {s: r.size for s, r in found.items()} == {s: 5 + i for i, s in enumerate(shas)}


def test_prefix_is_a_signed_32_bit_integer() -> None:
    assert sha256_prefix("00" * 32) == 0
    assert sha256_prefix("7fffffff" + "00" * 28) == 2**31 - 1
    assert sha256_prefix("80000000" + "ff" * 28) == -(2**31)
    assert sha256_prefix("ff" * 32) == -1
    assert sha256_prefix(record(b"x").sha256) == int.from_bytes(
        hashlib.sha256(b"x").digest()[:4], "big", signed=True
    )


def test_unit_key_hash_is_stable() -> None:
    """The hash is stored: it must never change between processes or versions."""
    assert unit_key_hash("file", '["a","b"]') == unit_key_hash("file", '["a","b"]')
    # pinned values (a change here would need a migration rehashing every unit)
    assert unit_key_hash("file", '["a"]') == int.from_bytes(
        hashlib.blake2b(b'file\x00["a"]', digest_size=8).digest(), "big", signed=True
    )
    assert unit_key_hash("file", '["a","b"]') != unit_key_hash("file", '["a\\u0000b"]')
    assert unit_key_hash("a", '["b"]') != unit_key_hash("b", '["a"]')
    values = {unit_key_hash("t", f'["{i}"]') for i in range(10_000)}
    assert len(values) == 10_000
    assert all(-(1 << 63) <= v < 1 << 63 for v in values)


async def test_unit_key_hash_collisions_keep_units_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key hashed alike: lookups compare whole keys, so nothing merges or hides."""

    def constant(type_: str, natural_key: str) -> int:
        return 7

    # where a unit's hash is made (with the unit, or again by the writer) and where lookups
    # make theirs
    for module in (_types, _commit, _sqlite):
        monkeypatch.setattr(module, "unit_key_hash", constant)
    async with open_store(f"sqlite:///{tmp_path / 'c.sqlite3'}") as store:
        first = await store.commit_units(
            [file_unit(f"k{i}", f"body {i}".encode()) for i in range(3)]
        )
        assert [o.status for o in first] == ["committed"] * 3
        again = await store.commit_units(
            [file_unit(f"k{i}", f"body {i}".encode()) for i in range(5)]
        )
        assert [o.status for o in again] == ["existing"] * 3 + ["committed"] * 2
        assert [o.unit_id for o in again][:3] == [o.unit_id for o in first]
        assert len({o.unit_id for o in again}) == 5
        keys = [u.key for u in (file_unit(f"k{i}", f"body {i}".encode()) for i in range(6))]
        found = await store.find_units(keys)
        assert sorted(k.natural_key[0] for k in found) == [f"k{i}" for i in range(5)]
        rows = await raw(store, "SELECT natural_key, count(*), min(key_hash) FROM units GROUP BY 1")
        assert len(rows) == 5 and all(r[1] == 1 and r[2] == 7 for r in rows)
