"""The synchronous fetch(): plain scripts and threads, same validation and errors."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
import trio

import triofetch
from triofetch.testing import FaultServer, Status, WrongBytes

DATA = os.urandom(50_000)
SHA256 = hashlib.sha256(DATA).hexdigest()


def test_fetch_success(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/a.bin", DATA)
    result = triofetch.fetch(
        http_server.url("/a.bin"),
        expected_digests={"sha256": SHA256},
        expected_size=len(DATA),
        temp_dir=tmp_path,
    )
    assert result.path.parent == tmp_path
    assert result.path.read_bytes() == DATA
    assert result.digests == {"sha256": SHA256}


def test_fetch_retries_and_options(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(502)])
    result = triofetch.fetch(
        http_server.url("/a.bin"), temp_dir=tmp_path, backoff=0.01, digests=["sha1"]
    )
    assert result.attempts == 2
    assert result.digests["sha1"] == hashlib.sha1(DATA).hexdigest()


def test_fetch_error_removes_temp_file(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/a.bin", DATA, faults=[WrongBytes()] * 5)
    with pytest.raises(triofetch.DigestMismatch) as info:
        triofetch.fetch(
            http_server.url("/a.bin"),
            expected_digests={"sha256": SHA256},
            temp_dir=tmp_path,
            retries=0,
        )
    assert info.value.expected == SHA256
    assert list(tmp_path.iterdir()) == []


def test_fetch_credentials_not_in_errors(http_server: FaultServer, tmp_path: Path) -> None:
    url = http_server.url("/missing").replace("http://", "http://bob:hunter2@")
    with pytest.raises(triofetch.HTTPStatusError) as info:
        triofetch.fetch(url, temp_dir=tmp_path)
    assert "hunter2" not in str(info.value)
    assert http_server.url("/missing") in str(info.value)


def test_fetch_rejects_bad_arguments_before_io(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/a.bin", DATA)
    with pytest.raises(triofetch.UnsupportedAlgorithm):
        triofetch.fetch(http_server.url("/a.bin"), digests=["md6"], temp_dir=tmp_path)
    with pytest.raises(triofetch.InvalidDigest):
        triofetch.fetch(http_server.url("/a.bin"), expected_digests={"md5": "x"}, temp_dir=tmp_path)
    with pytest.raises(triofetch.InvalidInput, match="'/nonexistent/t' is not an existing dir"):
        triofetch.fetch(http_server.url("/a.bin"), temp_dir="/nonexistent/t")
    assert http_server.count("/a.bin") == 0


def test_fetch_from_threads(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/a.bin", DATA)
    results: list[triofetch.DownloadResult] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(triofetch.fetch(http_server.url("/a.bin"), temp_dir=tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len({r.path for r in results}) == 6
    assert all(r.sha256 == SHA256 for r in results)


async def test_fetch_inside_trio_points_to_downloader(http_server: FaultServer) -> None:
    http_server.add_file("/a.bin", DATA)
    with pytest.raises(triofetch.WrongContext, match="Downloader"):
        triofetch.fetch(http_server.url("/a.bin"))
    assert http_server.count("/a.bin") == 0
    await trio.lowlevel.checkpoint()
