"""ArtifactStorage: content-addressed adoption, reading, verification, stale temp cleanup."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from triofetch import (
    InvalidDigest,
    InvalidInput,
    StorageWriteError,
    StoreError,
    UnsupportedAlgorithm,
)
from triofetch._tempfiles import new_temp_path
from triofetch.storage import (
    ArtifactMismatch,
    ArtifactMissing,
    ArtifactStorage,
    FileToAdopt,
    StoredArtifact,
    VerifyReport,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_temp(storage: ArtifactStorage, data: bytes) -> Path:
    path = storage.new_temp_path()
    path.write_bytes(data)
    return path


def temp_files(storage: ArtifactStorage) -> list[str]:
    return sorted(os.listdir(storage.temp_dir))


@pytest.fixture
def storage(tmp_path: Path) -> ArtifactStorage:
    return ArtifactStorage(tmp_path / "root")


async def test_adopt_moves_into_place(storage: ArtifactStorage) -> None:
    data = b"hello artifact"
    tmp = write_temp(storage, data)
    digests = {"sha256": sha(data), "md5": hashlib.md5(data).hexdigest()}
    stored = await storage.adopt(tmp, sha256=sha(data).upper(), size=len(data), digests=digests)
    assert stored.created and stored.sha256 == sha(data) and stored.digests == digests
    assert stored.record.sha256 == sha(data) and stored.record.digests == digests
    expected = storage.root / "artifacts" / sha(data)[:2] / sha(data)[2:4] / sha(data)
    assert stored.path == expected == storage.path_for(sha(data))
    assert expected.read_bytes() == data
    assert not stat.S_IMODE(expected.stat().st_mode) & 0o222  # read-only
    assert not tmp.exists() and temp_files(storage) == []
    assert await storage.exists(sha(data))
    assert await storage.read_bytes(sha(data)) == data
    async with await storage.open(sha(data)) as f:
        assert await f.read() == data
    with storage.open_sync(sha(data)) as f:
        assert f.read() == data


async def test_adopt_duplicate_removes_temp(storage: ArtifactStorage) -> None:
    data = b"twice"
    first = await storage.adopt(write_temp(storage, data), sha256=sha(data), size=len(data))
    tmp = write_temp(storage, data)
    second = await storage.adopt(tmp, sha256=sha(data), size=len(data))
    assert first.created and not second.created
    assert not tmp.exists() and temp_files(storage) == []


async def test_many_adopters_at_once(storage: ArtifactStorage) -> None:
    data = os.urandom(300_000)
    created = []

    async def adopt() -> None:
        tmp = write_temp(storage, data)
        created.append((await storage.adopt(tmp, sha256=sha(data), size=len(data))).created)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(adopt)
    assert created.count(True) == 1
    assert temp_files(storage) == []
    files = [p for p in storage.artifacts_dir.rglob("*") if p.is_file()]
    assert files == [storage.path_for(sha(data))]


async def test_adopt_result(storage: ArtifactStorage) -> None:
    @dataclass
    class Result:  # the downloader's DownloadResult, as far as adopt_result cares
        path: Path
        size: int
        digests: dict[str, str]
        url: str = "http://example.invalid/x"

    data = b"downloaded"
    stored = await storage.adopt_result(
        Result(write_temp(storage, data), len(data), {"sha256": sha(data)})
    )
    assert stored.sha256 == sha(data)
    with pytest.raises(InvalidDigest):
        await storage.adopt_result(Result(write_temp(storage, data), len(data), {}))


async def test_adopt_refuses_lies(storage: ArtifactStorage) -> None:
    data = b"the real content"
    tmp = write_temp(storage, data)
    with pytest.raises(ArtifactMismatch) as info:
        await storage.adopt(
            tmp, sha256=sha(b"other"), size=len(data), digests={"sha256": sha(data)}
        )
    assert info.value.field == "sha256" and isinstance(info.value, InvalidInput)
    with pytest.raises(ArtifactMismatch, match="size"):
        await storage.adopt(tmp, sha256=sha(data), size=len(data) + 1)
    with pytest.raises(InvalidDigest):
        await storage.adopt(tmp, sha256="not-a-digest", size=len(data))
    with pytest.raises(InvalidInput):
        await storage.adopt(tmp, sha256=sha(data), size=-1)
    with pytest.raises(InvalidInput, match="no such file"):
        await storage.adopt(tmp.with_name("gone.part"), sha256=sha(data), size=1)
    assert tmp.read_bytes() == data  # the caller's file is left as it was
    assert not any(p.is_file() for p in storage.artifacts_dir.rglob("*"))


async def test_damaged_copy_is_replaced(storage: ArtifactStorage) -> None:
    data = b"good bytes"
    final = storage.path_for(sha(data))
    final.parent.mkdir(parents=True)
    final.write_bytes(b"truncated")
    stored = await storage.adopt(write_temp(storage, data), sha256=sha(data), size=len(data))
    assert stored.created and final.read_bytes() == data


async def test_missing_artifact(storage: ArtifactStorage) -> None:
    with pytest.raises(ArtifactMissing):
        await storage.open(sha(b"never"))
    with pytest.raises(ArtifactMissing):
        await storage.read_bytes(sha(b"never"))
    with pytest.raises(ArtifactMissing):
        storage.open_sync(sha(b"never"))
    assert not await storage.exists(sha(b"never"))


async def test_add_bytes(storage: ArtifactStorage) -> None:
    stored = await storage.add_bytes(b"abc", algorithms=["sha512"])
    assert stored.digests["sha512"] == hashlib.sha512(b"abc").hexdigest()
    assert (await storage.add_bytes(b"abc")).created is False
    assert temp_files(storage) == []


async def test_add_bytes_refuses_what_it_cannot_store(storage: ArtifactStorage) -> None:
    """An unknown algorithm is UnsupportedAlgorithm, as for the downloader's ``digests=``
    (hashlib's bare ValueError came out of the worker thread), and data that is not
    bytes-like is InvalidInput (a TypeError came from hashlib); nothing is written."""
    with pytest.raises(UnsupportedAlgorithm, match="nope"):
        await storage.add_bytes(b"x", algorithms=["nope"])
    with pytest.raises(UnsupportedAlgorithm, match="shake_128"):
        await storage.add_bytes(b"x", algorithms="shake_128")
    for data in ("text", None, 5, [1, 2]):
        with pytest.raises(InvalidInput, match="bytes"):
            await storage.add_bytes(data)  # type: ignore[arg-type]
    assert temp_files(storage) == [] and await storage.verify() == VerifyReport(0, ())
    # bytes-like values are stored as their bytes
    words = memoryview(bytearray(b"abcd")).cast("I")
    stored = await storage.add_bytes(words, algorithms="md5")
    assert stored.size == 4 and stored.path.read_bytes() == b"abcd"
    assert stored.digests["md5"] == hashlib.md5(b"abcd").hexdigest()


async def test_adopt_many_refuses_what_is_not_files_to_adopt(storage: ArtifactStorage) -> None:
    """A str (or bytes) instead of a collection, or an item that is not a FileToAdopt, is
    InvalidInput before anything is adopted: one AttributeError per character or path was
    returned as each "file's" outcome."""
    tmp = write_temp(storage, b"kept")
    good = FileToAdopt(tmp, sha(b"kept"), 4)
    for files in ("abc", b"abc", str(tmp)):
        with pytest.raises(InvalidInput, match="collection"):
            await storage.adopt_many(files)  # type: ignore[arg-type]
    for files in ([str(tmp)], [good, tmp], [good, None]):
        with pytest.raises(InvalidInput, match="FileToAdopt"):
            await storage.adopt_many(files)  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="iterable"):
        await storage.adopt_many(5)  # type: ignore[arg-type]
    assert tmp.read_bytes() == b"kept" and not await storage.exists(sha(b"kept"))


async def test_adopt_many_adopts_paths_and_bytes_in_one_thread(
    storage: ArtifactStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temp files and bytes, adopted in one worker-thread round trip; each file gets its
    own outcome in order, and one refused file stops none of the others."""
    threads = 0
    run_sync = trio.to_thread.run_sync

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal threads
        threads += 1
        return await run_sync(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    on_disk, in_memory, lie, twice = b"from a temp file", b"from memory", b"a lie", b"twice"
    tmp = write_temp(storage, on_disk)
    lying = write_temp(storage, lie)
    outcomes = await storage.adopt_many(
        [
            FileToAdopt(tmp, sha(on_disk), len(on_disk), {"sha256": sha(on_disk)}),
            FileToAdopt(in_memory, sha(in_memory), len(in_memory)),
            FileToAdopt(lying, sha(lie), len(lie) + 1),  # the wrong size: refused
            FileToAdopt(b"short", sha(b"short"), 9),  # bytes of another size: refused
            FileToAdopt(twice, sha(twice), len(twice)),
            FileToAdopt(twice, sha(twice), len(twice)),  # the same content again
            FileToAdopt(b"x", "not-a-digest", 1),
        ],
        sync=False,
    )
    assert threads == 1
    first, second, wrong_size, wrong_bytes, third, again, bad_digest = outcomes
    assert isinstance(first, StoredArtifact) and first.created
    assert first.path.read_bytes() == on_disk and not tmp.exists()
    assert isinstance(second, StoredArtifact) and second.path.read_bytes() == in_memory
    assert isinstance(wrong_size, ArtifactMismatch) and wrong_size.path == lying
    assert isinstance(wrong_bytes, ArtifactMismatch) and wrong_bytes.path is None
    assert "the bytes given" in str(wrong_bytes)
    assert isinstance(third, StoredArtifact) and third.created
    assert isinstance(again, StoredArtifact) and not again.created
    assert isinstance(bad_digest, InvalidDigest)
    # the refused temp file is the caller's, as it was; nothing else is left behind
    assert temp_files(storage) == [lying.name] and lying.read_bytes() == lie
    await storage.sync()
    assert await storage.verify() == VerifyReport(checked=3, corrupted=())


async def test_adopt_many_disk_full_writing_bytes_names_the_temp_area(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing a file's bytes to a temp file fails with ENOSPC: a StorageWriteError that
    names the temp area, where the write went (it named ``artifacts``), and no temp file
    is left."""
    storage = ArtifactStorage(tmp_path / "root")
    real_open = open

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb" and Path(file).parent == storage.temp_dir:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    import triofetch.storage as storage_module

    monkeypatch.setattr(storage_module, "open", full_open, raising=False)
    (outcome,) = await storage.adopt_many([FileToAdopt(b"data", sha(b"data"), 4)], sync=False)
    assert isinstance(outcome, StorageWriteError)
    assert os.listdir(storage.temp_dir) == []
    assert outcome.path == str(storage.temp_dir), outcome.path


async def test_adopt_many_on_a_read_only_storage(storage: ArtifactStorage) -> None:
    readonly = ArtifactStorage(storage.root, readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        await readonly.adopt_many([FileToAdopt(b"x", sha(b"x"), 1)])


async def test_verify_reports_corruption(storage: ArtifactStorage) -> None:
    good = await storage.add_bytes(b"good")
    bad = await storage.add_bytes(b"will rot")
    os.chmod(bad.path, 0o644)
    bad.path.write_bytes(b"rotten!!")
    report = await storage.verify()
    assert report.checked == 2 and not report.ok
    assert [(c.sha256, c.path) for c in report.corrupted] == [(bad.sha256, bad.path)]
    assert "sha256 is" in report.corrupted[0].reason

    missing = sha(b"absent")
    report = await storage.verify([good.sha256, missing], sizes={good.sha256: 99})
    assert {c.sha256: c.reason for c in report.corrupted} == {
        good.sha256: "size 4, expected 99",
        missing: "missing",
    }
    assert (await storage.verify([good.sha256])).ok


async def test_cleanup_spares_live_writers(storage: ArtifactStorage) -> None:
    # a process that is alive while the cleanup runs, and one that is gone
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: ASYNC220
    dead = await trio.lowlevel.open_process([sys.executable, "-c", "pass"])
    await dead.wait()
    try:
        mine = new_temp_path(storage.temp_dir)
        theirs = storage.temp_dir / f"tf-{live.pid}-aaaa.part"
        stale = storage.temp_dir / f"tf-{dead.pid}-bbbb.part"
        foreign = storage.temp_dir / "notes.txt"
        for p in (mine, theirs, stale, foreign):
            p.write_bytes(b"x")
        assert await storage.cleanup_temp(older_than=3600) == []  # too young
        assert await storage.cleanup_temp() == [stale]
        assert sorted(temp_files(storage)) == sorted(p.name for p in (mine, theirs, foreign))
    finally:
        live.kill()
        live.wait()
    assert await storage.cleanup_temp() == [theirs]


async def test_misused_adopt_result_and_cleanup_temp_are_invalid_input(
    storage: ArtifactStorage,
) -> None:
    """adopt_result(5) raised AttributeError ('int' object has no attribute 'digests');
    cleanup_temp(older_than="1h") was accepted, and failed on the first stale temp file
    with a TypeError comparing it with a number (older_than=-1 passed as 0)."""
    with pytest.raises(InvalidInput, match=r"adopt_result\(\) takes a DownloadResult, got 5"):
        await storage.adopt_result(5)  # type: ignore[arg-type]
    stale = storage.temp_dir / "tf-999999999-cccc.part"  # (no such process)
    stale.write_bytes(b"x")
    for bad in ("1h", -1, float("nan")):
        with pytest.raises(InvalidInput, match=r"older_than \(seconds\) must be a number"):
            await storage.cleanup_temp(older_than=bad)  # type: ignore[arg-type]
    assert stale.exists()
    assert await storage.cleanup_temp() == [stale]


async def test_temp_files_of_other_machines_and_containers_are_not_ours(
    storage: ArtifactStorage,
) -> None:
    """Workers on other machines, or in other containers, share the storage root; their
    pids are their own (pid 1 in every container), so a pid in a temp name means a process
    only together with the pid space the name carries.  (Every temp file of a writer
    elsewhere with this process's pid was removed at the end of this process's run, and one
    with a pid not alive here by the next sync's cleanup: their downloads then failed,
    "cannot adopt ...: no such file".)"""
    dead = await trio.lowlevel.open_process([sys.executable, "-c", "pass"])
    await dead.wait()
    mine = new_temp_path(storage.temp_dir)
    elsewhere = "0badf00d"  # another pid space than ours
    assert f"-{elsewhere}-" not in mine.name
    twin = storage.temp_dir / f"tf-{os.getpid()}-{elsewhere}-aaaa.part"  # our pid, elsewhere
    theirs = storage.temp_dir / f"tf-{dead.pid}-{elsewhere}-bbbb.part"  # not alive here
    stale = storage.temp_dir / mine.name.replace(f"-{os.getpid()}-", f"-{dead.pid}-", 1)
    for p in (mine, twin, theirs, stale):
        p.write_bytes(b"x")
    assert await storage.cleanup_temp() == [stale]
    assert storage.remove_temp_files() == [mine]
    assert temp_files(storage) == sorted([twin.name, theirs.name])
    # left by a writer elsewhere that died: its files go once no longer written for a day
    # (or for older_than)
    os.utime(theirs, (0, os.stat(theirs).st_mtime - 25 * 3600))
    assert await storage.cleanup_temp() == [theirs]
    assert await storage.cleanup_temp(older_than=3600) == []
    os.utime(twin, (0, os.stat(twin).st_mtime - 7200))
    assert await storage.cleanup_temp(older_than=3600) == [twin]


def test_storage_root_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    from triofetch import StoreError

    with pytest.raises(StoreError):
        ArtifactStorage(tmp_path / "file")
    with pytest.raises(InvalidDigest):
        ArtifactStorage(tmp_path / "ok").path_for("../../etc/passwd")


@pytest.mark.parametrize("root", [5, None, b"/tmp/root", ["/tmp"], ""])  # ("": the cwd)
def test_storage_root_must_be_a_path(root: object) -> None:
    """A root that is not a path is InvalidInput saying what was expected (pathlib's
    TypeError came out)."""
    with pytest.raises(InvalidInput, match="root must be a path") as info:
        ArtifactStorage(root)  # type: ignore[arg-type]
    assert repr(root) in str(info.value)


def test_remove_dead_temp_files_spares_the_live_and_the_foreign(tmp_path: Path) -> None:
    """``remove_dead_temp_files`` (the sweep ``cleanup_temp`` and ``export`` share) removes
    the temp files of processes of this pid space that are gone, keeps the live ones' (this
    process's and another's), another pid space's until it is a day old, names of other
    prefixes, and honours ``older_than``; it takes a path or a directory's descriptor."""
    from triofetch.storage import remove_dead_temp_files, temp_file_name

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(gone.stdout)  # (a pid that has just exited: reused within ms only on a busy box)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = temp_file_name(prefix=".x-", suffix="")
        space = mine.split("-")[2]
        names = {
            "mine": mine,
            "dead": f".x-{dead}-{space}-abc",
            "dead_old_style": f".x-{dead}-abc",
            "live": f".x-{live.pid}-{space}-abc",
            "foreign_new": f".x-{dead}-0badc0de-abc",
            "foreign_old": f".x-{live.pid}-0badc0df-abc",
            "other_prefix": f".y-{dead}-{space}-abc",
        }
        if space in ("0badc0de", "0badc0df"):  # pragma: no cover - one chance in 2**31
            pytest.skip("this process's pid space is the one the test calls foreign")
        for name in names.values():
            (tmp_path / name).write_bytes(b"part")
        day_ago = time.time() - 25 * 3600
        os.utime(tmp_path / names["foreign_old"], (day_ago, day_ago))
        # (an hour old at least: only the foreign one, 25 hours old, is)
        hour = remove_dead_temp_files(tmp_path, prefix=".x-", suffix="", older_than=3600)
        assert hour == [names["foreign_old"]]
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            removed = remove_dead_temp_files(fd, prefix=".x-", suffix="")
        finally:
            os.close(fd)
        assert sorted(removed) == sorted(names[k] for k in ("dead", "dead_old_style"))
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {names[k] for k in ("mine", "live", "foreign_new", "other_prefix")}
    finally:
        live.kill()
        live.wait()
