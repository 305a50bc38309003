"""Adoption without a sync per file, and the batch sync that must come before a commit."""

from __future__ import annotations

import errno
import hashlib
import os
import sys
from pathlib import Path

import pytest

import triofetch
from triofetch import storage as _storage


def temp_file(storage: triofetch.ArtifactStorage, data: bytes) -> Path:
    path = storage.new_temp_path()
    path.write_bytes(data)
    return path


async def test_deferred_adoption_is_synced_by_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = triofetch.ArtifactStorage(tmp_path)
    synced: list[Path] = []
    fsynced: list[int] = []
    monkeypatch.setattr(_storage, "_syncfs", lambda path: synced.append(path) or True)
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd) or real_fsync(fd))
    data = b"deferred" * 1000
    sha = hashlib.sha256(data).hexdigest()
    stored = await storage.adopt(temp_file(storage, data), sha256=sha, size=len(data), sync=False)
    assert stored.created and stored.path.read_bytes() == data
    assert fsynced == []  # nothing synced yet
    await storage.sync()
    assert synced == [storage.artifacts_dir]
    await storage.sync()  # nothing pending: no second sync
    assert synced == [storage.artifacts_dir]


async def test_sync_without_syncfs_fsyncs_each_pending_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = triofetch.ArtifactStorage(tmp_path)
    monkeypatch.setattr(_storage, "_syncfs", lambda path: False)
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd) or real_fsync(fd))
    for i in range(3):
        data = f"file {i}".encode() * 100
        await storage.adopt(
            temp_file(storage, data),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            sync=False,
        )
    assert fsynced == []
    await storage.sync()
    # each file, its directory and the directories created above it
    assert len(fsynced) >= 3 * 2


async def test_existing_file_is_checked_before_it_is_trusted(tmp_path: Path) -> None:
    """A same-size file left by a crash before its sync is replaced, not reused."""
    storage = triofetch.ArtifactStorage(tmp_path)
    data = b"the real bytes" * 500
    sha = hashlib.sha256(data).hexdigest()
    final = storage.path_for(sha)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"\0" * len(data))  # what an unsynced file can look like after a crash
    stored = await storage.adopt(temp_file(storage, data), sha256=sha, size=len(data))
    assert stored.created
    assert final.read_bytes() == data
    assert (await storage.verify()).ok
    # the same content again: the good file is kept, the temp file removed
    again = await storage.adopt(temp_file(storage, data), sha256=sha, size=len(data))
    assert not again.created
    assert list(storage.temp_dir.iterdir()) == []


def test_syncfs_is_used_where_the_platform_has_it(tmp_path: Path) -> None:
    assert _storage._syncfs(tmp_path) is sys.platform.startswith("linux")


async def test_a_run_stopped_by_its_sync_looks_at_the_file_system_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch sync before a commit fails with ENOSPC: the run stops with a
    StorageWriteError, whose making asks the file system whether it has inodes left
    (``statvfs``, which blocks on a hung network file system): in a worker thread, never on
    the Trio loop."""
    import threading

    from triofetch.store import open_store

    source = tmp_path / "source"
    source.mkdir()
    data = b"synced before its commit" * 100
    (source / "a").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    unit = triofetch.DeclarativeUnit(
        "file",
        ("a", sha),
        {"relative_path": "a"},
        [triofetch.DeclarativeArtifact((source / "a").as_uri(), "a", {"sha256": sha}, len(data))],
    )

    def full(path: Path) -> bool:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    loop_thread = threading.current_thread()
    on_the_loop: list[str] = []
    real_statvfs = os.statvfs

    def statvfs(path: str) -> os.statvfs_result:
        if threading.current_thread() is loop_thread:
            on_the_loop.append(path)
        return real_statvfs(path)

    monkeypatch.setattr(_storage, "_syncfs", full)
    monkeypatch.setattr(os, "statvfs", statvfs)
    async with (
        open_store(None, root=tmp_path / "root") as store,
        triofetch.Downloader() as downloader,
    ):
        creator = triofetch.ContentUnitCreator(store, downloader)
        with pytest.raises(triofetch.StorageWriteError) as raised:
            await creator.run([unit], repository="r")
    assert raised.value.errno == errno.ENOSPC
    assert on_the_loop == []
