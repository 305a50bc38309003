"""The store's behaviour, the same suite on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from triofetch import InvalidDigest, InvalidInput, InvalidUnit, SchemaVersionError, StoreError
from triofetch.store import (
    SCHEMA_VERSION,
    ArtifactConflict,
    ArtifactRecord,
    NewUnit,
    NewUnitArtifact,
    RemoteArtifact,
    RepositoryNotFound,
    Store,
    UnitKey,
    VersionNotFound,
    VersionNotWritable,
    open_store,
)

TABLES = (
    "artifacts",
    "units",
    "unit_artifacts",
    "remote_artifacts",
    "repositories",
    "repository_versions",
    "version_units",
)


# -- helpers (also used by test_store_cancel.py) ------------------------------------------


def record(data: bytes) -> ArtifactRecord:
    return ArtifactRecord(hashlib.sha256(data).hexdigest(), len(data))


def file_unit(name: str, data: bytes, *, on_demand: bool = False, **fields: Any) -> NewUnit:
    rec = record(data)
    remote = RemoteArtifact(f"http://example.invalid/{name}", size=len(data))
    art = NewUnitArtifact(name, None if on_demand else rec, remote)
    return NewUnit("file", (name, rec.sha256), {"relative_path": name, **fields}, (art,))


async def raw(store: Store, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Run a read query straight on the backend (``?`` placeholders)."""
    backend = store._backend
    return await trio.to_thread.run_sync(
        backend.run_read, lambda c: list(c.execute(backend.sql(sql), tuple(params)).fetchall())
    )


async def counts(store: Store) -> dict[str, int]:
    return {t: (await raw(store, f"SELECT count(*) FROM {t}"))[0][0] for t in TABLES}


async def unit_rows(store: Store, key: UnitKey) -> dict[str, Any] | None:
    """Everything the database holds about one unit, or None when it is absent."""
    import json

    rows = await raw(
        store,
        "SELECT id FROM units WHERE type = ? AND natural_key = ?",
        (key.type, json.dumps(list(key.natural_key), ensure_ascii=False, separators=(",", ":"))),
    )
    if not rows:
        return None
    uid = rows[0][0]
    links = await raw(
        store,
        "SELECT ua.relative_path, a.sha256, "
        "(SELECT count(*) FROM remote_artifacts r WHERE r.unit_artifact_id = ua.id) "
        "FROM unit_artifacts ua LEFT JOIN artifacts a ON a.id = ua.artifact_id "
        "WHERE ua.unit_id = ?",
        (uid,),
    )
    versions = await raw(store, "SELECT version_id FROM version_units WHERE unit_id = ?", (uid,))
    return {
        "id": uid,
        "links": {p: (sha, n) for p, sha, n in links},
        "versions": {v for (v,) in versions},
    }


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(store_url, root=tmp_path / "root") as s:
        yield s


# -- opening ----------------------------------------------------------------------------


async def test_open_creates_schema_and_reopens(store_url: str, tmp_path: Path) -> None:
    store = await open_store(store_url)
    assert await counts(store) == dict.fromkeys(TABLES, 0)
    assert (await raw(store, "SELECT version FROM triofetch_schema"))[0][0] == SCHEMA_VERSION
    await store.commit_units([file_unit("a", b"a")])
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.find_units([])
    async with open_store(store_url) as again:
        assert (await counts(again))["units"] == 1


async def test_newer_schema_is_refused(store_url: str) -> None:
    async with open_store(store_url) as store:
        backend = store._backend
        await trio.to_thread.run_sync(
            backend.run_write,
            lambda c: c.execute(backend.sql("UPDATE triofetch_schema SET version = ?"), (99,)),
        )
    with pytest.raises(SchemaVersionError, match=r"99.*newer triofetch"):
        await open_store(store_url)


async def test_default_sqlite_under_root(tmp_path: Path) -> None:
    async with open_store(root=tmp_path) as store:
        assert store.dialect == "sqlite"
        assert store.storage is not None and store.storage.root == tmp_path
    assert (tmp_path / "triofetch.sqlite3").is_file()
    assert (tmp_path / "artifacts").is_dir() and (tmp_path / "tmp").is_dir()


async def test_entering_one_open_store_call_twice_at_once_is_wrong_context(
    tmp_path: Path,
) -> None:
    """``opening = open_store(...)`` entered again inside its own block opened a second
    store in place of the first, and the outer block then closed the second one twice:
    the first store's connections and checkpoint thread were never closed.  Now the nested
    entry is WrongContext; one block after the other still works."""
    import triofetch

    def store_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("triofetch-")]

    before = store_threads()
    opening = open_store(root=tmp_path)
    async with opening as first:
        with pytest.raises(triofetch.WrongContext, match="already open"):
            async with opening:
                pass  # pragma: no cover
        assert await first.find_units([]) == {}
    assert repr(first) == "<Store sqlite closed>" and store_threads() == before
    async with opening as again:
        assert again is not first and await again.find_units([]) == {}
    assert repr(again) == "<Store sqlite closed>" and store_threads() == before


@pytest.mark.parametrize(
    "url", ["mysql://x/y", "sqlite://", "sqlite:///:memory:", "", "postgresq://x"]
)
async def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInput):
        await open_store(url)
    with pytest.raises(InvalidInput):
        await open_store()


def test_bad_root_or_storage_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"root must be a path.*got 3"):
        open_store(root=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"root must be a path.*got ''"):
        open_store(root="")  # (a store was made in the current directory)
    with pytest.raises(InvalidInput, match=r"storage must be an ArtifactStorage.*got 'x'"):
        open_store(root=tmp_path, storage="x")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


async def test_unreachable_postgres_is_a_store_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from triofetch.store import _postgres

    url = f"postgresql://u:secret@127.0.0.1:{port}/x?connect_timeout=2"
    backend = _postgres.PostgresBackend(url, 1, timeout=1)
    with pytest.raises(StoreError) as info:
        await trio.to_thread.run_sync(backend.open)
    assert "secret" not in str(info.value)


def _end_other_sessions(dsn: str) -> int:
    """End every other session of *dsn*'s database, as a server restart or an
    ``idle_session_timeout`` would: how many were ended."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
async def test_reads_go_on_after_the_pooled_connections_died(postgres_dsn: str) -> None:
    """Every pooled connection ended by the server (a restart, ``idle_session_timeout``):
    a read (or a write found so before it commits) is run again on a new connection, so
    ``triofetch serve`` answers on; it was a StoreError (a 500) for each dead connection of
    the pool."""
    async with await open_store(postgres_dsn, pool_size=3) as store:
        await store.create_repository("r")

        def slow(conn: Any) -> None:
            conn.execute("SELECT pg_sleep(0.2)")

        async with trio.open_nursery() as nursery:  # three connections in the pool
            for _ in range(3):
                nursery.start_soon(trio.to_thread.run_sync, store._backend.run_read, slow)
        assert await trio.to_thread.run_sync(_end_other_sessions, postgres_dsn) >= 3
        for _ in range(4):
            assert await store.repositories() == ["r"]
        # a write whose connection is found dead before it commits is run again too
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(trio.to_thread.run_sync, store._backend.run_read, slow)
        assert await trio.to_thread.run_sync(_end_other_sessions, postgres_dsn) >= 3
        await store.create_repository("s")
        assert await store.repositories() == ["r", "s"]


# -- committing and finding -----------------------------------------------------------


async def test_commit_find_roundtrip(store: Store) -> None:
    a = file_unit("dir/a.txt", b"alpha", arch="x86_64", tags=["x", {"y": None}], n=1.5)
    b = file_unit("b.txt", b"beta", on_demand=True)
    c = NewUnit("pkg", ("c", "1.0", "é✓"), {}, ())
    report = await store.commit_units([a, b, c])
    assert [o.status for o in report] == ["committed"] * 3
    assert len(set(report.unit_ids.values())) == 3

    found = await store.find_units([a.key, b.key, c.key, ("file", ("nope", "x"))])
    assert set(found) == {a.key, b.key, c.key}
    info = found[a.key]
    assert info.id == report.unit_ids[a.key]
    assert info.fields == {
        "relative_path": "dir/a.txt",
        "arch": "x86_64",
        "tags": ["x", {"y": None}],
        "n": 1.5,
    }
    assert info.artifacts == {"dir/a.txt": record(b"alpha")}
    assert info.complete and info.missing == ()
    assert found[b.key].missing == ("b.txt",) and not found[b.key].complete
    assert found[c.key].artifacts == {} and found[c.key].key == UnitKey("pkg", ("c", "1.0", "é✓"))

    arts = await store.find_artifacts([record(b"alpha").sha256, record(b"beta").sha256])
    assert arts == {record(b"alpha").sha256: record(b"alpha")}  # b is on demand
    assert (await counts(store))["remote_artifacts"] == 2
    assert await store.find_units([]) == {}
    assert await store.find_artifacts([]) == {}


async def test_digests_roundtrip(store: Store) -> None:
    data = b"digests"
    digests = {n: hashlib.new(n, data).hexdigest() for n in ("sha256", "sha512", "md5")}
    rec = ArtifactRecord(digests["sha256"].upper(), len(data), digests)
    assert rec.sha256 == digests["sha256"]
    unit = NewUnit("file", ("d", rec.sha256), {"relative_path": "d"}, (NewUnitArtifact("d", rec),))
    await store.commit_units([unit])
    assert (await store.find_artifacts([rec.sha256]))[rec.sha256].digests == digests


async def test_existing_units_are_reused(store: Store) -> None:
    a, b = file_unit("a", b"a"), file_unit("b", b"b")
    first = await store.commit_units([a])
    again = await store.commit_units([b, a, b])
    assert [o.status for o in again] == ["committed", "existing", "existing"]
    assert again.outcomes[1].unit_id == first.outcomes[0].unit_id
    assert again.outcomes[2].unit_id == again.outcomes[0].unit_id
    assert (await counts(store))["units"] == 2
    assert (await counts(store))["unit_artifacts"] == 2


async def test_shared_artifact_lands_once(store: Store) -> None:
    units = [file_unit(f"copy{i}", b"same bytes") for i in range(5)]
    await store.commit_units(units[:2])
    await store.commit_units(units[2:])
    c = await counts(store)
    assert c["artifacts"] == 1 and c["units"] == 5 and c["unit_artifacts"] == 5


async def test_one_bad_unit_does_not_sink_the_batch(store: Store) -> None:
    good = file_unit("good", b"good")
    mutated = object.__new__(NewUnit)  # a unit that skipped validation
    for name, value in [("type", "file"), ("natural_key", ("m",)), ("fields", {"x": {1}}),
                        ("artifacts", ()), ("fields_json", "")]:  # fmt: skip
        object.__setattr__(mutated, name, value)
    await store.commit_units([file_unit("first", b"12345")])
    liar = NewUnit(  # claims another size for a sha256 the database knows
        "file",
        ("liar", record(b"12345").sha256),
        {"relative_path": "liar"},
        (NewUnitArtifact("liar", ArtifactRecord(record(b"12345").sha256, 4)),),
    )
    report = await store.commit_units([mutated, good, liar])
    assert [o.status for o in report] == ["failed", "committed", "failed"]
    assert isinstance(report.outcomes[0].error, InvalidUnit)
    assert isinstance(report.outcomes[2].error, ArtifactConflict)
    assert report.outcomes[2].error.recorded_size == 5
    assert await unit_rows(store, liar.key) is None
    assert await unit_rows(store, mutated.key) is None
    assert report.failed == (report.outcomes[0], report.outcomes[2])


async def test_database_error_fails_only_its_unit(store: Store) -> None:
    units = [file_unit(f"u{i}", bytes([i])) for i in range(6)]
    bad = units[3].key
    error: type[Exception]
    if store.dialect == "sqlite":
        error = sqlite3.IntegrityError
    else:
        import psycopg

        error = psycopg.errors.CheckViolation

    def fault(step: str, keys: Sequence[UnitKey]) -> None:
        if step == "unit_artifacts" and bad in keys:
            raise error("injected")

    store._backend.fault = fault
    version = await store.new_version("r")
    report = await store.commit_units(units, version=version)
    assert [o.status for o in report] == ["committed"] * 3 + ["failed"] + ["committed"] * 2
    assert isinstance(report.outcomes[3].error, StoreError)
    assert await unit_rows(store, bad) is None
    assert (await counts(store))["version_units"] == 5
    store._backend.fault = None


async def test_crash_mid_commit_writes_nothing(store: Store) -> None:
    class Boom(Exception):
        pass

    def fault(step: str, keys: Sequence[UnitKey]) -> None:
        if step == "remote_artifacts":
            raise Boom

    store._backend.fault = fault
    with pytest.raises(Boom):
        await store.commit_units([file_unit("a", b"a"), file_unit("b", b"b")])
    store._backend.fault = None
    assert await counts(store) == dict.fromkeys(TABLES, 0)


async def test_fill_on_demand_artifacts(store: Store) -> None:
    lazy = file_unit("lazy", b"lazy", on_demand=True)
    lazy2 = file_unit("lazy2", b"lazy2", on_demand=True)
    report = await store.commit_units([lazy, lazy2])
    uid = report.unit_ids[lazy.key]
    assert await store.fill_artifacts({uid: {"lazy": record(b"lazy")}}) == 1
    assert await store.fill_artifacts({uid: {"lazy": record(b"lazy")}}) == 0  # already there
    assert (await store.find_units([lazy.key]))[lazy.key].complete
    with pytest.raises(ArtifactConflict):
        await store.fill_artifacts({uid: {"lazy": ArtifactRecord(record(b"lazy").sha256, 99)}})
    # committing the unit again, downloaded this time, fills what it lacked
    again = await store.commit_units([file_unit("lazy2", b"lazy2")])
    assert again.outcomes[0].status == "existing"
    assert (await store.find_units([lazy2.key]))[lazy2.key].complete
    assert await store.fill_artifacts({}) == 0


# -- repositories and versions ------------------------------------------------------------


async def test_versions(store: Store) -> None:
    a, b, c = file_unit("a", b"a"), file_unit("b", b"b"), file_unit("c", b"c")
    assert await store.repositories() == []
    v1 = await store.new_version("repo")
    assert (v1.repository, v1.number, v1.complete) == ("repo", 1, False)
    r = await store.commit_units([a, b], version=v1)
    assert await store.latest_version("repo") is None
    assert await store.count_units("repo") == 0  # nothing complete yet
    assert await store.count_units("repo", 1) == 2
    v1 = await store.complete_version(v1)
    assert v1.complete and await store.latest_version("repo") == v1
    with pytest.raises(VersionNotWritable):
        await store.commit_units([c], version=v1)
    with pytest.raises(VersionNotWritable):
        await store.add_to_version(v1, [1])
    with pytest.raises(VersionNotWritable):
        await store.discard_version(v1)
    assert await unit_rows(store, c.key) is None

    v2 = await store.new_version("repo")  # based on the latest: a, b
    assert v2.number == 2 and await store.count_units("repo", 2) == 2
    await store.commit_units([c], version=v2)
    assert await store.remove_from_version(v2, [r.unit_ids[a.key]]) == 1
    assert await store.add_to_version(v2, [r.unit_ids[a.key], r.unit_ids[b.key]]) == 1
    assert await store.remove_from_version(v2, [r.unit_ids[a.key]]) == 1
    await store.complete_version(v2)
    listed = await store.list_units("repo")
    assert [u.key for u in listed] == [b.key, c.key]
    assert [u.key for u in await store.list_units("repo", 1)] == [a.key, b.key]
    assert await store.get_version("repo", 2) == (await store.latest_version("repo"))

    mirror = await store.new_version("repo", base=None)
    assert await store.count_units("repo", mirror.number) == 0
    await store.discard_version(mirror)
    await store.discard_version(mirror)  # idempotent
    with pytest.raises(VersionNotFound):
        await store.count_units("repo", mirror.number)
    with pytest.raises(VersionNotFound):
        await store.commit_units([a], version=mirror)
    with pytest.raises(VersionNotFound):
        await store.complete_version(mirror)

    old = await store.new_version("repo", base=1)
    assert await store.count_units("repo", old.number) == 2
    with pytest.raises(VersionNotFound):
        await store.new_version("repo", base=42)
    with pytest.raises(VersionNotWritable):
        await store.new_version("repo", base=old.number)  # not complete
    await store.create_repository("other")
    assert await store.repositories() == ["other", "repo"]


async def test_a_version_number_past_64_bits_is_no_such_version(store: Store) -> None:
    """``2**63`` is a number no database column holds: SQLite's driver raised a bare
    OverflowError (``triofetch list --version 9223372036854775808`` was status 70)."""
    await store.create_repository("repo")
    for number in (2**63, 10**20):
        for call in (
            store.get_version("repo", number),
            store.list_units("repo", number),
            store.count_units("repo", number),
        ):
            with pytest.raises(VersionNotFound):
                await call


async def test_unknown_repository(store: Store) -> None:
    for call in (
        store.latest_version("ghost"),
        store.list_units("ghost"),
        store.count_units("ghost"),
        store.new_version("ghost", create_repository=False),
    ):
        with pytest.raises(RepositoryNotFound, match="ghost"):
            await call
    assert await counts(store) == dict.fromkeys(TABLES, 0)


async def test_a_repository_name_that_is_not_unicode_text_is_invalid_input(store: Store) -> None:
    """A lone surrogate (``os.fsdecode`` of a directory name not in UTF-8) raised the bare
    UnicodeEncodeError of the database driver from every call naming the repository."""
    name = "repo\udcff"
    for call in (
        store.create_repository(name),
        store.new_version(name),
        store.latest_version(name),
    ):
        with pytest.raises(InvalidInput, match="valid Unicode text"):
            await call
    assert await store.repositories() == []


# -- bad input ----------------------------------------------------------------------------

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: NewUnit("file", ("x" * 3000,)), InvalidUnit),
        (lambda: NewUnit("file", ("é" * 1100,)), InvalidUnit),
        (lambda: NewUnit("t" * 200, ("x",)), InvalidUnit),
        (lambda: NewUnit("file", (1, "x")), InvalidUnit),  # type: ignore[arg-type]
        (lambda: NewUnit("file", ()), InvalidUnit),
        (lambda: NewUnit("file", "abc"), InvalidUnit),  # type: ignore[arg-type]
        (lambda: NewUnit("", ("x",)), InvalidUnit),
        (lambda: NewUnit("file", ("a\x00b",)), InvalidUnit),
        (lambda: NewUnit("file", ("\ud800",)), InvalidUnit),
        (lambda: NewUnit("file", ("x",), {"f": {1, 2}}), InvalidUnit),
        (lambda: NewUnit("file", ("x",), {"f": float("nan")}), InvalidUnit),
        (lambda: NewUnit("file", ("x",), {"f": b"bytes"}), InvalidUnit),
        (lambda: NewUnit("file", ("x",), {1: "int key"}), InvalidUnit),  # type: ignore[dict-item]
        (lambda: NewUnit("file", ("x",), {"f": "nul\x00"}), InvalidUnit),
        (lambda: NewUnit("file", ("x",), ["not", "a", "dict"]), InvalidUnit),  # type: ignore[arg-type]
        (lambda: ArtifactRecord("ab" * 31, 1), InvalidDigest),
        (lambda: ArtifactRecord("zz" * 32, 1), InvalidDigest),
        (lambda: ArtifactRecord(SHA, -1), InvalidInput),
        (lambda: ArtifactRecord(SHA, 1, {"sha256": "cd" * 32}), InvalidDigest),
        (lambda: ArtifactRecord(SHA, 1, {"md5": "00"}), InvalidDigest),
        (lambda: RemoteArtifact("http://x", digests={"sha1": "x" * 40}), InvalidDigest),
        (lambda: RemoteArtifact(()), InvalidUnit),
        (lambda: NewUnitArtifact("../etc/passwd", ArtifactRecord(SHA, 1)), InvalidUnit),
        (lambda: NewUnitArtifact("/abs", ArtifactRecord(SHA, 1)), InvalidUnit),
        (lambda: NewUnitArtifact("a//b", ArtifactRecord(SHA, 1)), InvalidUnit),
        (lambda: NewUnitArtifact("nothing"), InvalidUnit),
        (
            lambda: NewUnitArtifact(
                "x",
                ArtifactRecord(SHA, 1),
                RemoteArtifact("http://x", digests={"sha256": "cd" * 32}),
            ),
            InvalidDigest,
        ),
        (
            lambda: NewUnit(
                "file",
                ("x",),
                {},
                (NewUnitArtifact("p", ArtifactRecord(SHA, 1)),) * 2,
            ),
            InvalidUnit,
        ),
    ],
)
def test_bad_values_are_refused(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


async def test_bad_input_writes_nothing(store: Store) -> None:
    with pytest.raises(InvalidUnit):
        await store.commit_units(["not a unit"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput):
        await store.find_units([("file", "not-a-tuple-of-str")])
    with pytest.raises(InvalidInput):
        await store.find_artifacts("ab" * 32)  # a str, not a list of them
    with pytest.raises(InvalidDigest):
        await store.find_artifacts(["xyz"])
    with pytest.raises(InvalidInput):
        await store.new_version("")
    with pytest.raises(InvalidInput):
        await store.new_version("r", base="first")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await store.add_to_version(await store.new_version("r"), ["1"])  # type: ignore[list-item]
    c = await counts(store)
    assert c["units"] == c["artifacts"] == c["version_units"] == 0


async def test_a_version_that_is_not_a_handle_is_invalid_input(store: Store) -> None:
    handle = await store.new_version("r")
    calls = [
        lambda v: store.add_to_version(v, [1]),
        lambda v: store.place_units(v, [1]),
        lambda v: store.remove_from_version(v, [1]),
        lambda v: store.version_changes(v, handle),
        lambda v: store.version_changes(handle, v),
        store.complete_version,
        store.discard_version,
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match=r"must be a VersionHandle.*got 'v'"):
            await call("v")
    assert (await store.get_version("r", handle.number)) == handle  # nothing changed


async def test_a_version_number_or_fills_of_a_wrong_type_are_invalid_input(
    store: Store,
) -> None:
    """get_version("r", "1") (a number read from a command line or a URL, say) raised
    TypeError: '<' not supported between 'int' and 'str', from deep in the version query;
    fill_artifacts({id: 5}) an AttributeError ('int' object has no attribute 'items')."""
    await store.create_repository("r")
    calls = [
        lambda n: store.get_version("r", n),
        lambda n: store.list_units("r", n),
        lambda n: store.count_units("r", n),
    ]
    for call in calls:
        for bad in ("1", 1.0, True):
            with pytest.raises(
                InvalidInput, match=f"a version number must be an integer, got {bad!r}"
            ):
                await call(bad)
    with pytest.raises(InvalidInput, match=r"files of unit 1 must be a mapping .*got 5"):
        await store.fill_artifacts({1: 5})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match=r"fills must be a mapping .*got \[1\]"):
        await store.fill_artifacts([1])  # type: ignore[arg-type]


# -- concurrency and cancellation -------------------------------------------------------


async def test_concurrent_tasks_commit_overlapping_batches(store: Store) -> None:
    units = [file_unit(f"f{i}", str(i % 40).encode()) for i in range(120)]
    reports = []

    async def worker(start: int) -> None:
        # (empty, not "latest": a worker that starts after another completed its version
        # would carry that one's units over, and the count below would depend on timing)
        version = await store.new_version("shared", base=None)
        for s in range(start, start + 60, 20):
            reports.append(await store.commit_units(units[s : s + 20], version=version))
        await store.complete_version(version)

    async with trio.open_nursery() as nursery:
        for start in (0, 30, 60, 30, 0, 60):
            nursery.start_soon(worker, start)
    assert all(not r.failed for r in reports)
    c = await counts(store)
    assert (c["units"], c["artifacts"], c["unit_artifacts"]) == (120, 40, 120)
    assert sorted(v.number for v in [await store.get_version("shared", n) for n in range(1, 7)])
    assert c["version_units"] == 6 * 60


async def test_cancel_while_waiting_writes_nothing(store: Store) -> None:
    store.limiter.total_tokens = 1
    held = trio.Event()
    release = trio.Event()

    async def hog() -> None:
        async with store.limiter:
            held.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hog)
        await held.wait()
        with trio.move_on_after(0.05) as scope:
            await store.commit_units([file_unit("a", b"a")])
        assert scope.cancelled_caught
        release.set()
    assert (await counts(store))["units"] == 0


async def test_started_commit_is_shielded(store: Store) -> None:
    started = threading.Event()
    go_on = threading.Event()

    def fault(step: str, keys: Sequence[UnitKey]) -> None:
        if step == "units":
            started.set()
            go_on.wait(10)

    store._backend.fault = fault
    unit = file_unit("a", b"a")
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_when_started() -> None:
                await trio.to_thread.run_sync(started.wait, 10)
                scope.cancel()  # delivered while the commit's thread is blocked
                go_on.set()

            nursery.start_soon(cancel_when_started)
            report = await store.commit_units([unit])
            assert report.outcomes[0].status == "committed"
            await trio.sleep(1)  # the cancel arrives here, after the commit
    assert scope.cancelled_caught
    store._backend.fault = None
    rows = await unit_rows(store, unit.key)
    assert rows is not None and rows["links"] == {"a": (record(b"a").sha256, 1)}


async def test_aclose_waits_for_running_operations(store_url: str) -> None:
    store = await open_store(store_url)
    units = [file_unit(f"c{i}", bytes([i])) for i in range(50)]
    async with trio.open_nursery() as nursery:
        for i in range(0, 50, 10):
            nursery.start_soon(store.commit_units, units[i : i + 10])
        await trio.testing.wait_all_tasks_blocked()  # all of them started
        await store.aclose()  # while the commits run: they finish, then it closes
    async with open_store(store_url) as again:
        assert (await counts(again))["units"] == 50
