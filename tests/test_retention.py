"""Versions, pruning, the writers' lease and garbage collection, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.test_store import counts, file_unit, raw
from triofetch import GCReport, InvalidInput, PruneReport, StoreBusy, StoreError, VersionInfo
from triofetch._durable import fsync_directory
from triofetch.storage import ArtifactStorage
from triofetch.store import NewUnit, RepositoryNotFound, Store, VersionHandle, open_store
from triofetch.store._retention import acquire_lease, release_lease, remove_empty_directories


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(store_url, root=tmp_path / "root") as s:
        yield s


def blob(name: str, size: int = 100) -> bytes:
    return (hashlib.sha256(name.encode()).digest() * (size // 32 + 1))[:size]


async def stored_unit(store: Store, name: str, data: bytes | None = None) -> NewUnit:
    """A file unit whose file is in the storage (as a creator leaves it before committing)."""
    assert store.storage is not None
    data = blob(name) if data is None else data
    await store.storage.add_bytes(data)
    return file_unit(name, data)


async def make_version(
    store: Store, repository: str, units: list[NewUnit], *, complete: bool = True
) -> VersionHandle:
    version = await store.new_version(repository)
    report = await store.commit_units(units, version=version)
    assert not report.failed, report.failed
    return await store.complete_version(version) if complete else version


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(proc.stdout)


def stored_files(store: Store) -> set[str]:
    assert store.storage is not None
    return {p.name for p in store.storage.artifacts_dir.rglob("*") if p.is_file()}


# -- versions ---------------------------------------------------------------------------------


async def test_versions_lists_every_version(store: Store) -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    await make_version(store, "r", [file_unit("a", b"a"), file_unit("b", b"b")])
    await make_version(store, "r", [file_unit("c", b"c")])
    await make_version(store, "r", [file_unit("d", b"d")], complete=False)
    found = await store.versions("r")
    assert [(v.number, v.units, v.complete) for v in found] == [
        (1, 2, True),
        (2, 3, True),
        (3, 4, False),
    ]
    after = datetime.datetime.now(datetime.UTC)
    for v in found:
        assert isinstance(v, VersionInfo)
        assert v.created is not None and v.created.tzinfo is not None
        assert before <= v.created <= after


async def test_versions_of_a_repository_without_versions_and_of_none(store: Store) -> None:
    await store.create_repository("empty")
    assert await store.versions("empty") == []
    with pytest.raises(RepositoryNotFound, match="no repository named 'nope'"):
        await store.versions("nope")


async def test_versions_made_before_schema_4_have_no_created(store: Store) -> None:
    await make_version(store, "r", [file_unit("a", b"a")])
    backend = store._backend
    await trio.to_thread.run_sync(
        backend.run_write,
        lambda c: c.execute("UPDATE repository_versions SET created = NULL"),
    )
    (info,) = await store.versions("r")
    assert info.created is None and info.number == 1 and info.units == 1


# -- prune ------------------------------------------------------------------------------------


async def test_prune_keeps_the_latest_complete_versions(store: Store) -> None:
    for n in range(4):
        await make_version(store, "r", [file_unit(f"f{n}", f"{n}".encode())])
    running = await make_version(store, "r", [file_unit("x", b"x")], complete=False)
    await make_version(store, "other", [file_unit("o", b"o")])
    before = await counts(store)
    report = await store.prune("r", 2)
    assert report == PruneReport("r", (3, 4), (1, 2))
    assert [(v.number, v.complete) for v in await store.versions("r")] == [
        (3, True),
        (4, True),
        (running.number, False),
    ]
    after = await counts(store)
    # versions only: units, artifacts and files stay for gc
    assert after["units"] == before["units"] and after["artifacts"] == before["artifacts"]
    assert after["repository_versions"] == before["repository_versions"] - 2
    assert after["version_units"] == before["version_units"] - (1 + 2)
    assert [v.number for v in await store.versions("other")] == [1]
    # the incomplete version can still be completed, and becomes the latest
    await store.complete_version(running)
    latest = await store.latest_version("r")
    assert latest is not None and latest.number == running.number


async def test_prune_with_fewer_versions_than_kept_deletes_nothing(store: Store) -> None:
    await make_version(store, "r", [file_unit("a", b"a")])
    assert await store.prune("r", 1) == PruneReport("r", (1,), ())
    assert await store.prune("r", 5) == PruneReport("r", (1,), ())
    await store.create_repository("empty")
    assert await store.prune("empty", 1) == PruneReport("empty", (), ())


@pytest.mark.parametrize("keep", [0, -1, True, 1.5, "2", None])
async def test_prune_refuses_bad_keep(store: Store, keep: object) -> None:
    await make_version(store, "r", [file_unit("a", b"a")])
    with pytest.raises(InvalidInput, match="keep"):
        await store.prune("r", keep)  # type: ignore[arg-type]
    assert len(await store.versions("r")) == 1


async def test_prune_unknown_repository(store: Store) -> None:
    with pytest.raises(RepositoryNotFound):
        await store.prune("nope", 1)


# -- garbage collection ------------------------------------------------------------------------


async def test_gc_removes_orphans_and_keeps_what_versions_hold(store: Store) -> None:
    assert store.storage is not None
    old = [await stored_unit(store, f"old{i}") for i in range(3)]
    shared = await stored_unit(store, "shared")
    await make_version(store, "r", [*old, shared])
    # a new version replaces the old files (same paths, new content)
    new = [await stored_unit(store, f"old{i}", blob(f"new{i}", 200)) for i in range(3)]
    await make_version(store, "r", new)
    kept_files = {u.artifacts[0].artifact.sha256 for u in [*new, shared]}  # type: ignore[union-attr]
    old_files = {u.artifacts[0].artifact.sha256 for u in old}  # type: ignore[union-attr]
    # garbage of other kinds: a file without a row, a temp file of a dead process, and a
    # file that is not triofetch's (left alone)
    stray = await store.storage.add_bytes(b"never committed")
    temp = store.storage.temp_dir / f"tf-{dead_pid()}-0123abcd.part"
    temp.write_bytes(b"half a download")
    foreign = store.storage.artifacts_dir / "README"
    foreign.write_text("not ours")

    assert await store.collect_garbage(wait=5) == GCReport(0, 0, 0, 1, stray.size, 1)
    assert stored_files(store) == kept_files | old_files | {"README"}
    assert await store.prune("r", 1) == PruneReport("r", (2,), (1,))
    report = await store.collect_garbage(wait=5)
    assert report == GCReport(0, 3, 3, 3, 300, 0)
    assert stored_files(store) == kept_files | {"README"}
    assert not temp.exists() and foreign.exists()
    units = await store.list_units("r")
    assert sorted(u.key.natural_key[0] for u in units) == ["old0", "old1", "old2", "shared"]
    c = await counts(store)
    assert (c["units"], c["artifacts"], c["unit_artifacts"], c["remote_artifacts"]) == (4, 4, 4, 4)
    # nothing left: a second run removes nothing
    assert await store.collect_garbage(wait=5) == GCReport()


async def test_gc_removes_the_directories_it_leaves_empty(store: Store) -> None:
    """A churning store keeps no directory for every prefix it ever held: those gc empties
    go (and an ``ab`` left empty with them); others, and what is not triofetch's, stay."""
    storage = store.storage
    assert storage is not None
    kept = await stored_unit(store, "kept")
    old = [await stored_unit(store, f"old{i}") for i in range(20)]
    await make_version(store, "r", [kept, *old])
    second = await store.new_version("r", base=None)  # (a mirror: only what it lists)
    assert not (await store.commit_units([kept], version=second)).failed
    await store.complete_version(second)
    top = storage.artifacts_dir
    foreign_empty = top / "not-ours"
    foreign_empty.mkdir()
    foreign_hex = top / "ff" / "ee" / "notes"  # a foreign file in a storage-shaped directory
    foreign_hex.parent.mkdir(parents=True, exist_ok=True)
    foreign_hex.write_text("not ours")
    stray = await storage.add_bytes(b"adopted, never recorded")  # swept by gc: its directory too
    assert await store.prune("r", 1) == PruneReport("r", (2,), (1,))
    report = await store.collect_garbage(wait=5)
    assert (report.units, report.files) == (20, 21)

    kept_path = storage.path_for(kept.artifacts[0].artifact.sha256)  # type: ignore[union-attr]
    directories = {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_dir()}
    assert directories == {
        kept_path.parent.parent.name,
        f"{kept_path.parent.parent.name}/{kept_path.parent.name}",
        "not-ours",
        "ff",
        "ff/ee",
    }
    assert not storage.path_for(stray.sha256).parent.exists()
    assert foreign_hex.read_text() == "not ours"
    # content of a removed prefix is stored again as ever
    again = await stored_unit(store, "old0")
    await make_version(store, "r", [again])
    assert storage.path_for(again.artifacts[0].artifact.sha256).is_file()  # type: ignore[union-attr]
    shas = [u.artifacts[0].artifact.sha256 for u in (kept, again)]  # type: ignore[union-attr]
    assert (await storage.verify(shas)).ok


async def test_adopt_makes_its_directory_again_when_it_went_meanwhile(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program adopting without the writers' lease may see gc remove the (empty)
    directory between its mkdir and its link: the directory is made again."""
    storage = store.storage
    assert storage is not None
    real_link = os.link
    removed: list[str] = []

    def link_after_gc(src: object, dst: object) -> None:
        parent = os.path.dirname(os.fspath(dst))  # type: ignore[arg-type]
        if not removed and str(storage.artifacts_dir) in parent:
            os.rmdir(parent)  # what gc does to an empty directory
            removed.append(parent)
        real_link(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr("triofetch.storage.os.link", link_after_gc)
    stored = await storage.add_bytes(b"content of a prefix gc had emptied")
    assert removed and storage.path_for(stored.sha256).read_bytes().startswith(b"content")


async def test_gc_removes_an_abandoned_incomplete_version(store: Store) -> None:
    kept = await stored_unit(store, "kept")
    await make_version(store, "r", [kept])
    # a writer that died: its version incomplete, units committed into it, files adopted
    lost = [await stored_unit(store, f"lost{i}") for i in range(2)]
    await make_version(store, "r", [*lost, kept], complete=False)
    adopted_only = await stored_unit(store, "adopted, never committed")
    report = await store.collect_garbage(wait=5)
    assert report == GCReport(1, 2, 2, 3, 300, 0)
    assert [(v.number, v.complete) for v in await store.versions("r")] == [(1, True)]
    assert stored_files(store) == {kept.artifacts[0].artifact.sha256}  # type: ignore[union-attr]
    assert adopted_only.artifacts[0].artifact is not None
    c = await counts(store)
    assert (c["units"], c["artifacts"], c["version_units"]) == (1, 1, 1)


async def test_the_number_of_an_abandoned_version_is_not_handed_out_again(store: Store) -> None:
    """The number of a version abandoned (its writer killed) and collected by gc is not
    given to a later one: ``triofetch versions`` listed it, with other content.  A version
    its own run discarded (a failed run, or one that changed nothing) gives its number back
    when it was the last one handed out, so that failed and no-op runs leave no gaps."""
    kept = await stored_unit(store, "kept")
    await make_version(store, "r", [kept])
    abandoned = await make_version(store, "r", [await stored_unit(store, "lost")], complete=False)
    assert abandoned.number == 2
    assert (await store.collect_garbage(wait=5)).versions == 1
    assert [v.number for v in await store.versions("r")] == [1]
    third = await store.new_version("r")
    assert third.number == 3  # not 2 again
    await store.discard_version(third)
    again = await make_version(store, "r", [kept, await stored_unit(store, "new")])
    assert again.number == 3  # given back by the discard
    assert await store.prune("r", 1) == PruneReport("r", (3,), (1,))
    first, second = await store.new_version("r"), await store.new_version("r")
    assert (first.number, second.number) == (4, 5)
    await store.discard_version(first)  # not the last handed out: 4 stays taken
    assert (await store.new_version("r")).number == 6
    # each repository counts its own
    assert (await store.new_version("other")).number == 1


async def test_gc_keeps_on_demand_units_and_shared_artifacts(store: Store) -> None:
    data = blob("same content")
    await store.storage.add_bytes(data)  # type: ignore[union-attr]
    # two units with one artifact; one of them becomes an orphan
    a = file_unit("a", data)
    b = file_unit("b", data)
    lazy = file_unit("lazy", b"lazy", on_demand=True)
    await make_version(store, "r", [a, b, lazy])
    version = await store.new_version("r")
    removed = await store.remove_from_version(
        version, [(await store.find_units([b.key]))[b.key].id]
    )
    assert removed == 1
    await store.complete_version(version)
    await store.prune("r", 1)
    assert await store.collect_garbage(wait=5) == GCReport(0, 1, 0, 0, 0, 0)
    assert stored_files(store) == {hashlib.sha256(data).hexdigest()}
    assert sorted(u.key.natural_key[0] for u in await store.list_units("r")) == ["a", "lazy"]


async def test_gc_without_storage_cleans_the_database(store_url: str, tmp_path: Path) -> None:
    async with open_store(store_url) as store:
        assert store.storage is None
        await make_version(store, "r", [file_unit("a", b"a")], complete=False)
        assert await store.collect_garbage(wait=1) == GCReport(1, 1, 1, 0, 0, 0)


@pytest.mark.parametrize("wait", [-1, float("nan"), float("inf"), True, "5", None])
async def test_gc_refuses_bad_wait(store: Store, wait: object) -> None:
    with pytest.raises(InvalidInput, match="wait"):
        await store.collect_garbage(wait=wait)  # type: ignore[arg-type]


# -- the lease ----------------------------------------------------------------------------------


async def test_gc_waits_for_a_writer_then_gives_up(store_url: str, tmp_path: Path) -> None:
    async with (
        open_store(store_url, root=tmp_path / "root") as writer,
        open_store(store_url, root=tmp_path / "root") as collector,
    ):
        await make_version(writer, "r", [file_unit("a", b"a")], complete=False)
        for gc_store in (writer, collector):  # another store, or the writer's own
            async with writer.lease():
                started = trio.current_time()
                with pytest.raises(StoreBusy, match="nothing") as caught:
                    await gc_store.collect_garbage(wait=0.3)
                assert caught.value.waited == 0.3
                assert trio.current_time() - started >= 0.3
            assert (await counts(collector))["units"] == 1  # nothing removed
        # leases are shared: several writers at once; gc goes once the last one left
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def hold(seconds: float) -> None:
                async with writer.lease():
                    await trio.sleep(seconds)

            async def collect() -> None:
                await trio.sleep(0.05)
                report = await collector.collect_garbage(wait=10)
                assert report.versions == 1
                assert trio.current_time() - started >= 0.4
                done.set()

            started = trio.current_time()
            nursery.start_soon(hold, 0.2)
            nursery.start_soon(hold, 0.4)
            nursery.start_soon(collect)
        assert done.is_set()


async def test_a_writer_waits_for_gc(store: Store) -> None:
    held = await acquire_lease(store._backend, exclusive=True, wait=0)
    entered = trio.Event()

    async def writer() -> None:
        async with store.lease():
            entered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.sleep(0.2)
        assert not entered.is_set()
        await release_lease(held)
        with trio.fail_after(5):
            await entered.wait()


async def test_cancelled_while_waiting_leaves_no_lease(store: Store) -> None:
    held = await acquire_lease(store._backend, exclusive=True, wait=0)
    with trio.move_on_after(0.2) as scope:
        async with store.lease():
            raise AssertionError("entered a lease gc holds")  # pragma: no cover
    assert scope.cancelled_caught
    with trio.move_on_after(0.2) as scope:
        await store.collect_garbage(wait=60)
    assert scope.cancelled_caught
    await release_lease(held)
    # neither left a lease behind: gc takes it at once, and so does a writer
    assert await store.collect_garbage(wait=0) == GCReport()
    with trio.fail_after(2):
        async with store.lease():
            pass


async def test_a_lease_ends_with_its_block_even_on_error(store: Store) -> None:
    with pytest.raises(KeyError):
        async with store.lease():
            raise KeyError("boom")
    assert await store.collect_garbage(wait=0) == GCReport()
    await store.aclose()
    with pytest.raises(Exception, match="closed"):
        async with store.lease():
            pass  # pragma: no cover


_HOLDER = """
import sys, trio
from triofetch.store import open_store

async def main():
    async with open_store(sys.argv[1]) as store, store.lease():
        print("held", flush=True)
        await trio.sleep(600)

trio.run(main)
"""


async def test_the_lease_of_a_killed_process_is_released(store: Store, store_url: str) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _HOLDER, store_url], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(30):
            assert (await proc.stdout.receive_some(100)).startswith(b"held")
        with pytest.raises(StoreBusy):
            await store.collect_garbage(wait=0.2)
        os.kill(proc.pid, 9)
        await proc.wait()
        with trio.fail_after(10):
            assert await store.collect_garbage(wait=5) == GCReport()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _end_lease_sessions(dsn: str) -> int:
    """End the sessions holding advisory locks in *dsn*'s database, as a DBA's script, an
    ``idle_session_timeout`` or a network cut would: how many were ended."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
            "JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
async def test_a_writer_whose_lease_session_ended_commits_nothing_more(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """The lease of a PostgreSQL writer is a session of its own, idle while the writer works:
    the server may end it while the writer lives on.  gc can run then, and removes what the
    writer found or stored; so the writer's next commit is refused, rolled back, and says
    why.  (It was committed: rows whose files gc had just removed.)"""
    async with (
        open_store(postgres_dsn, root=tmp_path / "root") as writer,
        open_store(postgres_dsn, root=tmp_path / "root") as collector,
    ):
        async with writer.lease():
            unit = await stored_unit(writer, "a")  # adopted, about to be committed
            version = await writer.new_version("r")
            assert await trio.to_thread.run_sync(_end_lease_sessions, postgres_dsn) == 1
            report = await collector.collect_garbage(wait=5)  # no writer holds the lease now
            assert (report.versions, report.files) == (1, 1)
            for target in (None, version):
                with pytest.raises(StoreError, match="writers' lease was lost"):
                    await writer.commit_units([unit], version=target)
            await writer.discard_version(version)  # (removing needs no lease)
        assert (await counts(writer))["units"] == 0
        # the next writer takes a lease of its own and goes on
        async with writer.lease():
            unit = await stored_unit(writer, "a")
            assert (await writer.commit_units([unit])).outcomes[0].status == "committed"


async def test_gc_leaves_the_schema_as_it_was(store: Store) -> None:
    """The indexes the collector makes for its deletes are gone once it committed."""
    backend = store._backend
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if backend.dialect == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    )

    async def indexes() -> set[str]:
        return {str(r[0]) for r in await raw(store, query)}

    before = await indexes()
    await make_version(store, "r", [await stored_unit(store, "a")], complete=False)
    assert (await store.collect_garbage(wait=1)).units == 1
    assert await indexes() == before
    assert not any(name.startswith("triofetch_gc") for name in before)


def _gc_directories_first(storage: ArtifactStorage, real: Callable[..., Any]) -> Callable[..., Any]:
    """*real*, preceded once by what gc's last step does (the empty directories removed):
    a collector running between a writer's steps, the writer holding no lease."""
    done: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(remove_empty_directories(storage))
        return real(*args, **kwargs)

    wrapped.done = done  # type: ignore[attr-defined]
    return wrapped


async def test_a_durable_adoption_survives_gc_removing_its_new_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc removes the ``ab/cd`` (and ``ab``) a durable adoption just made, before it fsyncs
    them: the directories are made again, not a StoreError ('cannot adopt')."""
    storage = ArtifactStorage(tmp_path / "root")
    fsync = _gc_directories_first(storage, fsync_directory)
    monkeypatch.setattr("triofetch.storage.fsync_directory", fsync)
    stored = await storage.add_bytes(b"a prefix made, emptied by gc, then fsynced")
    assert fsync.done == [2]  # type: ignore[attr-defined]
    assert storage.path_for(stored.sha256).read_bytes().startswith(b"a prefix")


@pytest.fixture
def file_elsewhere(tmp_path: Path) -> Iterator[Path]:
    """A file on another file system than *tmp_path* (its link into the storage: EXDEV)."""
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to adopt from")
    path = other / f"triofetch-test-{os.getpid()}-{tmp_path.name}"
    path.write_bytes(b"copied across file systems while gc ran")
    yield path
    path.unlink(missing_ok=True)


async def test_a_cross_filesystem_adoption_survives_gc_removing_its_directory(
    tmp_path: Path, file_elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file adopted from another file system is copied into the storage's temp area,
    then linked in; gc may remove the (still empty) directory during the copy: it is made
    again, not a StoreError."""
    storage = ArtifactStorage(tmp_path / "root", durable=False)
    data = b"copied across file systems while gc ran"
    sha256 = hashlib.sha256(data).hexdigest()
    copy = _gc_directories_first(storage, shutil.copyfile)
    monkeypatch.setattr("triofetch.storage.shutil.copyfile", copy)
    stored = await storage.adopt(file_elsewhere, sha256=sha256, size=len(data))
    assert copy.done == [2]  # type: ignore[attr-defined]
    assert stored.created and storage.path_for(sha256).read_bytes() == data
