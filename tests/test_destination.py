"""``fetch(..., destination=...)``: the validated file is moved into place, atomically.

On every transport (and ``file://``): the result's path is the destination, nothing is left
in the temp area, an existing file is replaced only by a complete and valid one, and every
failure leaves the destination exactly as it was.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import trio

import triofetch
from triofetch.downloader import _result as _downloader
from triofetch.testing import FaultServer, Slow, Truncate, WrongBytes

SMALL = os.urandom(20_000)
LARGE = os.urandom(3 * 1024 * 1024 + 17)  # streamed through the large-body pipeline


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    temp, out = tmp_path / "tmp", tmp_path / "out"
    temp.mkdir()
    out.mkdir()
    return temp, out


def downloader(transport: str, temp: Path, **kw: object) -> triofetch.Downloader:
    kw.setdefault("backoff", 0.01)
    return triofetch.Downloader(transport=transport, temp_dir=temp, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [SMALL, LARGE, b""], ids=["small", "large", "empty"])
async def test_file_lands_at_destination(
    http_server: FaultServer, transport: str, dirs: tuple[Path, Path], data: bytes
) -> None:
    temp, out = dirs
    http_server.add_file("/f", data)
    target = out / "f.bin"
    async with downloader(transport, temp) as dl:
        result = await dl.fetch(
            http_server.url("/f"),
            expected_digests={"sha256": sha(data)},
            expected_size=len(data),
            destination=target,
        )
    assert result.path == target
    assert target.read_bytes() == data
    assert result.sha256 == sha(data) and result.size == len(data)
    assert os.listdir(temp) == []
    assert os.listdir(out) == ["f.bin"]


async def test_existing_file_is_replaced_and_string_paths_work(
    http_server: FaultServer, transport: str, dirs: tuple[Path, Path]
) -> None:
    temp, out = dirs
    http_server.add_file("/f", SMALL)
    target = out / "f.bin"
    target.write_bytes(b"old content")
    async with downloader(transport, temp) as dl:
        result = await dl.fetch(http_server.url("/f"), destination=str(target))
    assert result.path == target
    assert target.read_bytes() == SMALL
    assert os.listdir(temp) == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [(WrongBytes(), triofetch.DigestMismatch), (Truncate(100), triofetch.TruncatedBody)],
    ids=["wrong-bytes", "truncated"],
)
async def test_failure_leaves_destination_untouched(
    http_server: FaultServer,
    transport: str,
    dirs: tuple[Path, Path],
    fault: object,
    error: type[Exception],
) -> None:
    temp, out = dirs
    http_server.add_file("/f", SMALL, faults=[fault] * 5)
    target = out / "f.bin"
    target.write_bytes(b"old content")
    async with downloader(transport, temp, retries=1) as dl:
        with pytest.raises(error):
            await dl.fetch(
                http_server.url("/f"), expected_digests={"sha256": sha(SMALL)}, destination=target
            )
    assert target.read_bytes() == b"old content"
    assert os.listdir(temp) == []
    assert os.listdir(out) == ["f.bin"]


async def test_size_mismatch_leaves_no_destination(
    http_server: FaultServer, transport: str, dirs: tuple[Path, Path]
) -> None:
    temp, out = dirs
    http_server.add_file("/f", SMALL)
    async with downloader(transport, temp, retries=0) as dl:
        with pytest.raises(triofetch.SizeMismatch, match=r"expected 7 bytes"):
            await dl.fetch(http_server.url("/f"), expected_size=7, destination=out / "f.bin")
    assert os.listdir(temp) == [] and os.listdir(out) == []


async def test_missing_directory_is_a_destination_error(
    http_server: FaultServer, transport: str, dirs: tuple[Path, Path]
) -> None:
    temp, out = dirs
    http_server.add_file("/f", SMALL)
    target = out / "no" / "such" / "f.bin"
    async with downloader(transport, temp) as dl:
        with pytest.raises(triofetch.DestinationError) as info:
            await dl.fetch(http_server.url("/f"), destination=target)
    assert info.value.destination == str(target)
    assert str(target) in str(info.value) and http_server.url("/f") in str(info.value)
    assert len(info.value.attempts) == 1  # not retried: the download was fine
    assert http_server.count("/f") == 1
    assert os.listdir(temp) == [] and os.listdir(out) == []


async def test_a_destination_error_tries_no_mirror(
    http_server: FaultServer, transport: str, dirs: tuple[Path, Path]
) -> None:
    """The move into place failed: the next mirror would download the same bytes only to
    fail the same way (it was downloaded again from each mirror)."""
    temp, out = dirs
    http_server.add_file("/a/f", LARGE)
    http_server.add_file("/b/f", LARGE)
    target = out / "no" / "such" / "f.bin"
    async with downloader(transport, temp) as dl:
        with pytest.raises(triofetch.DestinationError) as info:
            await dl.fetch([http_server.url("/a/f"), http_server.url("/b/f")], destination=target)
    assert len(info.value.attempts) == 1
    assert (http_server.count("/a/f"), http_server.count("/b/f")) == (1, 0)
    assert os.listdir(temp) == [] and os.listdir(out) == []


async def test_cancelled_fetch_leaves_nothing(
    http_server: FaultServer, transport: str, dirs: tuple[Path, Path]
) -> None:
    temp, out = dirs
    http_server.add_file("/f", LARGE, faults=[Slow(delay=0.05, chunk=1000)])
    async with downloader(transport, temp) as dl:
        with trio.move_on_after(0.3):
            await dl.fetch(http_server.url("/f"), destination=out / "f.bin")
    assert os.listdir(temp) == [] and os.listdir(out) == []


async def test_file_url_to_destination(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    temp, out = dirs
    source = tmp_path / "source.bin"
    source.write_bytes(SMALL)
    async with triofetch.Downloader(temp_dir=temp) as dl:
        result = await dl.fetch(source.as_uri(), destination=out / "copy.bin")
    assert result.path.read_bytes() == SMALL
    assert os.listdir(temp) == []


@pytest.mark.parametrize("bad", [123, "", "dir" + os.sep])
async def test_bad_destination_rejected_before_io(bad: object, dirs: tuple[Path, Path]) -> None:
    temp, _ = dirs
    async with triofetch.Downloader(temp_dir=temp) as dl:
        with pytest.raises(triofetch.InvalidInput, match="destination"):
            await dl.fetch("http://127.0.0.1:9/never", destination=bad)  # type: ignore[arg-type]


def test_across_filesystems_copies_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.replace fails with EXDEV across filesystems: the bytes are copied next to the
    destination under a temp name, renamed over it, and the temp file is removed."""
    temp = tmp_path / "a.part"
    temp.write_bytes(SMALL)
    target = tmp_path / "out" / "f.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    real_replace = os.replace
    calls: list[tuple[str, str]] = []

    def replace(src: str, dst: str) -> None:
        calls.append((os.fspath(src), os.fspath(dst)))
        if os.fspath(src) == str(temp):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(_downloader.os, "replace", replace)
    _downloader.place_file(str(temp), str(target), "http://x.invalid/f")
    assert target.read_bytes() == SMALL
    assert not temp.exists()
    assert os.listdir(target.parent) == ["f.bin"]
    staged = calls[1][0]
    assert os.path.dirname(staged) == str(target.parent) and staged.endswith(".part")


def test_a_temp_file_that_cannot_be_removed_after_the_copy_does_not_fail_the_move(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Across filesystems, once the copy is renamed over the destination the move has
    succeeded: a temp file that cannot be removed then (its file system turned read-only)
    is a WARNING naming it, not a DestinationError for a file that is in place."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    area = tmp_path / "area"
    area.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(area)],
        check=True,
        capture_output=True,
    )
    try:
        temp = area / "a.part"
        temp.write_bytes(SMALL)
        subprocess.run(["mount", "-o", "remount,ro", str(area)], check=True, capture_output=True)
        target = tmp_path / "out" / "f.bin"
        target.parent.mkdir()
        target.write_bytes(b"old")
        with caplog.at_level("WARNING", logger="triofetch.downloader"):
            _downloader.place_file(str(temp), str(target), "http://x.invalid/f")
        assert target.read_bytes() == SMALL
        assert os.listdir(target.parent) == ["f.bin"]
        assert [r.getMessage() for r in caplog.records if str(temp) in r.getMessage()]
    finally:
        subprocess.run(["umount", str(area)], check=False, capture_output=True)


def test_sync_fetch_destination(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/f", SMALL)
    target = tmp_path / "f.bin"
    result = triofetch.fetch(
        http_server.url("/f"), destination=target, temp_dir=tmp_path, transport="trio"
    )
    assert result.path == target and target.read_bytes() == SMALL
    assert os.listdir(tmp_path) == ["f.bin"]
