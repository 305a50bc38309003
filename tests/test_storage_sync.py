"""Adoption without a sync per file, and the batch sync that must come before a commit."""

from __future__ import annotations

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
