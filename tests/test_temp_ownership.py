"""Temp files a caller cannot leak (issue #17, item 2).

A ``Downloader`` opened without ``temp_dir=`` writes into a private directory it makes when
entered and removes, with everything still in it, when it closes: a file survives only when
the caller moved it out (``destination=`` or ``DownloadResult.move_to``).  With an explicit
``temp_dir`` the files left there are the caller's; the synchronous ``fetch()`` and
``download_units()`` hand their files to the caller.

Every test points the system temp dir (``tempfile.tempdir``) at a fresh directory, so
"nothing left behind" is checked by listing it.  On the old code the first test fails: the
ten dropped results stayed there as ``tf-*.part`` files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import triofetch
from triofetch.downloader import _result
from triofetch.testing import FaultServer, Hang

DATA = os.urandom(40_000)
SHA256 = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def system_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The system temp dir, for this test: an empty directory."""
    d = tmp_path / "system-tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    yield d


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def serve(server: FaultServer, count: int) -> list[str]:
    for i in range(count):
        server.add_file(f"/f{i}", DATA)
    return [server.url(f"/f{i}") for i in range(count)]


async def test_dropped_results_leave_nothing(http_server: FaultServer, system_tmp: Path) -> None:
    """The issue's snippet: ten fetches whose results are dropped leave no file."""
    urls = serve(http_server, 10)
    async with triofetch.Downloader() as dl:
        async with trio.open_nursery() as nursery:
            for url in urls:
                nursery.start_soon(dl.fetch, url)
        private = dl.temp_dir
        assert private is not None and private.parent == system_tmp
        assert len(listing(private)) == 10  # the results, until the downloader closes
    assert listing(system_tmp) == []
    assert dl.temp_dir is None


async def test_private_directory_life(http_server: FaultServer, system_tmp: Path) -> None:
    (url,) = serve(http_server, 1)
    dl = triofetch.Downloader()
    assert dl.temp_dir is None  # nothing made before it is entered
    assert listing(system_tmp) == []
    async with dl:
        private = dl.temp_dir
        assert private is not None and private.is_dir()
        assert private.name.startswith(f"triofetch-{os.getpid()}-")
        result = await dl.fetch(url, expected_digests={"sha256": SHA256})
        assert result.path.parent == private
        assert result.path.read_bytes() == DATA
    assert not private.exists() and not result.path.exists()


async def test_two_downloaders_have_their_own_directories(system_tmp: Path) -> None:
    async with triofetch.Downloader() as a, triofetch.Downloader() as b:
        assert a.temp_dir is not None and b.temp_dir is not None
        assert a.temp_dir != b.temp_dir
    assert listing(system_tmp) == []


async def test_move_to_keeps_the_file(
    http_server: FaultServer, system_tmp: Path, tmp_path: Path
) -> None:
    (url,) = serve(http_server, 1)
    target = tmp_path / "kept.bin"
    async with triofetch.Downloader() as dl:
        result = await dl.fetch(url)
        moved = await result.move_to(target)
        assert not result.path.exists()
    assert moved.path == target and target.read_bytes() == DATA
    assert (moved.url, moved.size, moved.sha256, moved.attempts) == (
        result.url,
        result.size,
        SHA256,
        1,
    )
    assert listing(system_tmp) == []


async def test_move_to_replaces_an_existing_file(
    http_server: FaultServer, system_tmp: Path, tmp_path: Path
) -> None:
    (url,) = serve(http_server, 1)
    target = tmp_path / "kept.bin"
    target.write_bytes(b"old")
    async with triofetch.Downloader() as dl:
        result = await dl.fetch(url)
        await result.move_to(str(target))
    assert target.read_bytes() == DATA


async def test_move_to_across_file_systems(
    http_server: FaultServer,
    system_tmp: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rename across file systems fails with EXDEV: the bytes are copied next to the
    target under a temp name, renamed over it, and the original removed."""
    (url,) = serve(http_server, 1)
    target_dir = tmp_path / "elsewhere"
    target_dir.mkdir()
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if Path(src).parent != target_dir:  # from the temp dir: "another file system"
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    async with triofetch.Downloader() as dl:
        result = await dl.fetch(url)
        monkeypatch.setattr(_result.os, "replace", replace)
        moved = await result.move_to(target_dir / "f.bin")
        assert not result.path.exists()
    assert moved.path.read_bytes() == DATA
    assert listing(target_dir) == ["f.bin"]
    assert listing(system_tmp) == []


async def test_move_to_failure_keeps_the_result(
    http_server: FaultServer, system_tmp: Path, tmp_path: Path
) -> None:
    (url,) = serve(http_server, 1)
    async with triofetch.Downloader() as dl:
        result = await dl.fetch(url)
        with pytest.raises(triofetch.DestinationError) as info:
            await result.move_to(tmp_path / "no" / "such" / "dir" / "f.bin")
        assert "no/such/dir/f.bin" in str(info.value)
        assert result.path.read_bytes() == DATA  # still there, still valid
        a_dir = tmp_path / "a-dir"
        a_dir.mkdir()
        with pytest.raises(triofetch.DestinationError):
            await result.move_to(a_dir)
        with pytest.raises(triofetch.InvalidInput, match="takes a path"):
            await result.move_to(42)  # type: ignore[arg-type]
        with pytest.raises(triofetch.InvalidInput, match="file name"):
            await result.move_to(str(tmp_path) + os.sep)
        moved = await result.move_to(tmp_path / "f.bin")
    assert moved.path.read_bytes() == DATA
    assert listing(system_tmp) == []


async def test_destination_survives_the_downloader(
    http_server: FaultServer, system_tmp: Path, tmp_path: Path
) -> None:
    (url,) = serve(http_server, 1)
    async with triofetch.Downloader() as dl:
        result = await dl.fetch(url, destination=tmp_path / "d.bin")
    assert result.path.read_bytes() == DATA
    assert listing(system_tmp) == []


async def test_explicit_temp_dir_files_are_the_callers(
    http_server: FaultServer, system_tmp: Path, tmp_path: Path
) -> None:
    urls = serve(http_server, 2)
    mine = tmp_path / "mine"
    mine.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    async with triofetch.Downloader(temp_dir=mine) as dl:
        assert dl.temp_dir == mine
        first = await dl.fetch(urls[0])
        async with triofetch.Downloader() as private_dl:
            # a fetch's own temp_dir is the caller's too, even on a private downloader
            second = await private_dl.fetch(urls[1], temp_dir=other)
    assert first.path.parent == mine and first.path.read_bytes() == DATA
    assert second.path.parent == other and second.path.read_bytes() == DATA
    assert listing(system_tmp) == []
    assert dl.temp_dir == mine  # (the caller's directory, open or not)


async def test_fetch_many_leaves_nothing(http_server: FaultServer, system_tmp: Path) -> None:
    urls = serve(http_server, 6)
    async with triofetch.Downloader() as dl, dl.fetch_many(urls) as outcomes:
        got = [outcome async for outcome in outcomes]
    assert all(o.ok for o in got) and len(got) == 6
    assert listing(system_tmp) == []


async def test_cancelled_downloader_removes_its_directory(
    http_server: FaultServer, system_tmp: Path
) -> None:
    (url,) = serve(http_server, 1)
    http_server.add_file("/hang", DATA, faults=[Hang(5.0)])
    with trio.move_on_after(0.5):
        async with triofetch.Downloader() as dl:
            await dl.fetch(url)
            await dl.fetch(http_server.url("/hang"))
    assert listing(system_tmp) == []


async def test_plan_made_before_entering(http_server: FaultServer, system_tmp: Path) -> None:
    """A plan made before the downloader is entered writes into its private directory."""
    (url,) = serve(http_server, 1)
    dl = triofetch.Downloader()
    plan = dl.plan(expected_size=len(DATA))
    assert plan.temp_dir is None
    async with dl:
        result = await dl.fetch_planned(url, plan)
        assert result.path.parent == dl.temp_dir
    assert listing(system_tmp) == []


def test_sync_fetch_hands_the_file_over(http_server: FaultServer, system_tmp: Path) -> None:
    (url,) = serve(http_server, 1)
    result = triofetch.fetch(url)
    assert result.path.parent == system_tmp and result.path.read_bytes() == DATA
    assert listing(system_tmp) == [result.path.name]


def test_sync_download_units_hands_the_files_over(
    http_server: FaultServer, system_tmp: Path
) -> None:
    urls = serve(http_server, 3)
    units = [
        triofetch.DeclarativeUnit(
            type="file",
            natural_key=(f"u{i}",),
            artifacts=[triofetch.DeclarativeArtifact(url, f"u{i}.bin")],
        )
        for i, url in enumerate(urls)
    ]
    kept = []
    for done in triofetch.download_units(units):
        assert done.ok
        kept.extend(done.results.values())
    assert len(kept) == 3
    for result in kept:  # every file is still there after the loop: the caller's
        assert result.path.parent == system_tmp and result.path.read_bytes() == DATA
