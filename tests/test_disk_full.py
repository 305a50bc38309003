"""A full disk (issue 14, item 3): refused up front, or stopped cleanly mid-run.

Real parts only: a real 2 MiB tmpfs as the storage root (or the export's destination),
mounted for each test and unmounted at teardown (root only: the tests skip elsewhere; CI
runs them as root); a real HTTP server on 127.0.0.1; SQLite and PostgreSQL; the command as
a subprocess (the syncs and the export that only fill a store, or a destination, for a case
run the same main() in process: tests/_cli_helpers.py, run_cli_in_process).  Each case
checks the exit status, the single error line, no traceback, no temp file left, and a store
the project's own checks find whole; then that a run with room completes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import triofetch
from tests._cli_helpers import (
    Result,
    file_requests,
    manifest_of,
    publish,
    run_cli,
    run_cli_in_process,
)
from tests._invariants import check_invariants
from tests.test_serve_ondemand_edges import (
    FakeResponder,
    ScriptedDownloader,
    _serve,
    _store_with,
    files_for,
)
from triofetch import DeclarativeArtifact, DeclarativeUnit, StorageWriteError
from triofetch.serve import _ondemand
from triofetch.store import UnitKey, open_store
from triofetch.testing import FaultServer, Reset, Slow, check_store

KB = 1000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(name: str, size: int) -> bytes:
    """Bytes that do not compress or repeat across files (tmpfs stores them as they are)."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


# -- a real small file system -----------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        check=True,
        capture_output=True,
    )


def remount(where: Path, size: str) -> None:
    """Make room: the same tmpfs, bigger (its files stay)."""
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(where)], check=True, capture_output=True
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a real 2 MiB tmpfs of its own, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    where = tmp_path / "disk"
    where.mkdir()
    _mount_tmpfs(where, "2m")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, capture_output=True)
        if os.path.ismount(where):  # pragma: no cover - busy: detach it
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """``mount(directory)``: an empty read-only tmpfs over *directory* (made if missing),
    unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    mounted: list[Path] = []

    def mount(where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
        mounted.append(where)

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", str(where)], check=False, capture_output=True)


def temp_files(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def stored_files(root: Path) -> list[Path]:
    return [p for p in (root / "artifacts").rglob("*") if p.is_file()]


def declared(files: dict[str, bytes], server: FaultServer) -> list[DeclarativeUnit]:
    """The manifest's files as the sync declares them (to check the store against)."""
    units = []
    for path, data in files.items():
        art = DeclarativeArtifact(
            server.url(f"/repo/{path}"), path, {"sha256": sha(data)}, len(data)
        )
        units.append(DeclarativeUnit("file", (path, sha(data)), {"relative_path": path}, [art]))
    return units


async def complete_units(
    root: Path, db: str | None, units: list[DeclarativeUnit], incomplete_ok: bool = False
) -> dict[UnitKey, bool]:
    """The store's units of *units* (complete or not), after checking every invariant (a
    version left incomplete allowed with *incomplete_ok*)."""
    async with open_store(db, root=root, create=False) as store:
        return await check_invariants(
            store, units, on_demand_ok=False, incomplete_versions_ok=incomplete_ok
        )


async def incomplete_versions(root: Path, db: str | None) -> int:
    """How many versions runs left incomplete in the store."""
    async with open_store(db, root=root, create=False) as store:
        problems = await check_store(store)
    return sum(problem.kind == "incomplete_version" for problem in problems)


def one_error_line(err: str) -> str:
    """The message of the one ``triofetch: error:`` line that stderr must be."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("triofetch: error: "), err
    return lines[0].removeprefix("triofetch: error: ")


def stopped_run(
    message: str,
    pattern: re.Pattern[str],
    root: Path,
    db: str | None,
    files: dict[str, bytes],
    server: FaultServer,
) -> tuple[re.Match[str], int, list[DeclarativeUnit]]:
    """A sync that a resource running out stopped: its one line matches *pattern* (groups
    ``dir``, ``stored``, ``committed``), the write that failed was the storage's, no temp
    file is left, and the store holds exactly the units committed, each complete.  The
    match, the units committed, and the declared units."""
    match = pattern.fullmatch(message)
    assert match, message
    assert match["dir"] in (str(root / "tmp"), str(root / "artifacts"))
    stored, committed = int(match["stored"]), int(match["committed"])
    assert committed <= stored < len(files)
    assert temp_files(root) == []
    units = declared(files, server)
    # The run's version is discarded, unless the database was on the full disk too and
    # could not be written (then the line says so, "committing failed too"): the version
    # stays incomplete, seen by no reader (see creator/_versions.py)
    database_failed = match.groupdict().get("db") is not None
    found = trio.run(complete_units, root, db, units, database_failed)
    assert all(found.values()) and len(found) == committed
    return match, committed, units


def resync_completed(
    out: str,
    root: Path,
    db: str | None,
    units: list[DeclarativeUnit],
    server: FaultServer,
    committed: int,
    left: int = 0,
) -> None:
    """The same sync run again once there was room: version 1 made of every unit, each
    complete (version 2 when the stopped run left its version 1 incomplete, *left*: a
    number is never used twice, and gc removes that one); the *committed* units of the
    stopped run were not fetched again (the server's counters reset before the run)."""
    assert f"version {1 + left} created" in out, out
    assert len(file_requests(server)) <= len(units) - committed
    found = trio.run(complete_units, root, db, units, left > 0)
    assert len(found) == len(units) and all(found.values())


# 40 files of 100 kB: 4 MB, twice the disk
FILES = {f"d/f{i:02d}.bin": content(f"f{i}", 100 * KB) for i in range(40)}

# -- refused before downloading ---------------------------------------------------------------


def refused_up_front(
    server: FaultServer, files: dict[str, bytes], root: Path, need: str
) -> re.Match[str]:
    """A sync of *files* into *root* refused before downloading: status 2, one line that is
    *need* (a regular expression), then the root and the way round it; nothing requested,
    nothing written (no store was made either).  The line's match."""
    url = publish(server, files)
    result = run_cli("sync", url, "--root", root, "--repository", "r")
    assert result.code == 2, result
    message = one_error_line(result.err)
    match = re.fullmatch(
        need + re.escape(str(root)) + r" \(--ignore-free-space to try anyway\)", message
    )
    assert match, message
    assert file_requests(server) == []  # nothing downloaded
    assert not root.exists()  # nothing written
    return match


def test_sync_needing_more_than_the_free_space_is_refused_up_front(
    http_server: FaultServer, small_disk: Path
) -> None:
    root = small_disk / "root"
    match = refused_up_front(
        http_server,
        FILES,
        root,
        r"the manifest's files not stored yet need 4\.0 MB, only (\d\.\d) MB is free under ",
    )
    assert float(match[1]) <= 2.1


def test_a_sync_needing_more_inodes_than_are_free_is_refused_up_front(
    http_server: FaultServer, small_disk: Path
) -> None:
    """A file system with room for the bytes but not for the files (few inodes: a real
    tmpfs mounted with nr_inodes=32).  The sync went on, stopped after a few files, and
    said "free some space" while ``df -h`` showed the disk nearly empty."""
    remount_inodes(small_disk, 32, size="2m")
    many = {f"f{i}.txt": f"file {i}\n".encode() for i in range(60)}
    root = small_disk / "root"
    match = refused_up_front(
        http_server,
        many,
        root,
        r"the manifest's 60 files not stored yet need as many inodes, only (\d+) are free "
        r"under ",
    )
    assert int(match[1]) < 32
    # the same number of files of three contents: three inodes' worth, synced
    three = {f"g{i}.txt": f"content {i % 3}\n".encode() for i in range(60)}
    url = publish(http_server, three, prefix="/three")
    result = run_cli("sync", url, "--root", root, "--repository", "r")
    assert result.code == 0, result


def test_a_manifest_declaring_a_petabyte_file_is_refused_without_a_request(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """Any disk: a manifest's declared sizes are believed before a byte is fetched."""
    data = b"small"
    http_server.add_file("/repo/huge.iso", data)
    manifest = f"huge.iso,{sha(data)},{10**15}\n".encode()
    url = publish(http_server, {}, manifest=manifest)
    result = run_cli("sync", url, "--root", tmp_path / "root", "--repository", "r")
    assert result.code == 2, result
    message = one_error_line(result.err)
    assert message.startswith("the manifest's files not stored yet need 1000.0 TB, only "), message
    assert file_requests(http_server) == []


def test_what_is_stored_already_is_not_counted(http_server: FaultServer, small_disk: Path) -> None:
    """A re-sync of a store nearly filling its disk is not refused: only new files count."""
    remount(small_disk, "6m")
    root = small_disk / "root"
    url = publish(http_server, FILES)
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    remount(small_disk, f"{4 * 1024 + 1024}k")  # 1 MiB free or so, 4 MB stored
    more = {**FILES, "new.bin": content("new", 300 * KB)}
    url = publish(http_server, more, prefix="/more")
    result = run_cli("sync", url, "--root", root, "--repository", "r")
    assert result.code == 0, result
    big = {**FILES, "big.bin": content("big", 3000 * KB)}
    url = publish(http_server, big, prefix="/big")
    result = run_cli("sync", url, "--root", root, "--repository", "r")
    assert result.code == 2, result
    assert "files not stored yet need 3.0 MB, only" in one_error_line(result.err), result


# -- stopped mid-run --------------------------------------------------------------------------

_STOPPED = re.compile(
    r"no space left on device under (?P<dir>\S+): (?P<stored>\d+) files stored, "
    r"(?P<committed>\d+) committed(?P<db>; committing failed too \(.+\), rolled back: the store "
    r"is consistent)?; free some space and run the command again"
)


@pytest.mark.parametrize("database", ["on the full disk", "elsewhere"])
def test_sync_on_a_full_disk_stops_with_one_line_then_a_resync_completes(
    http_server: FaultServer, small_disk: Path, tmp_path: Path, database: str
) -> None:
    url = publish(http_server, FILES)
    root = small_disk / "root"
    db = None if database == "on the full disk" else f"sqlite:///{tmp_path / 'db.sqlite3'}"
    where = ("--db", db) if db else ()
    args = ("sync", url, "--root", root, "--repository", "r", *where)
    result = run_cli(*args, "--ignore-free-space", "--connections", "2")
    assert result.code == 1, result
    match, committed, units = stopped_run(
        one_error_line(result.err), _STOPPED, root, db, FILES, http_server
    )
    stored = int(match["stored"])
    assert stored > 0
    # no download started once the disk was full: those running (at most 2 connections,
    # 4 units) were cancelled, nothing else was asked for
    assert len(file_requests(http_server)) <= stored + 4 + 1
    if db is not None:  # the database had room: every complete unit was committed
        assert match["db"] is None
        assert committed == stored
    verify = run_cli("verify", "--root", root, *where)
    assert verify.code == 0, verify
    # a version left incomplete only when the database could not be written either
    left = trio.run(incomplete_versions, root, db)
    assert left == 0 or (left == 1 and match["db"] is not None), (left, match[0])

    remount(small_disk, "16m")
    http_server.reset_counters()
    again = run_cli("sync", url, "--root", root, "--repository", "r", *where)
    assert again.code == 0, again
    assert again.err == "", again
    resync_completed(again.out, root, db, units, http_server, committed, left)
    assert run_cli("verify", "--root", root, *where).code == 0


async def test_creator_run_raises_storage_write_error_itself_after_committing(
    http_server: FaultServer, small_disk: Path, store_url: str
) -> None:
    """The library: the typed error (not a group), raised after the complete units were
    committed; nothing after the fault was requested; a run with room completes."""

    def unit(name: str, size: int) -> DeclarativeUnit:
        data = content(name, size)
        http_server.add_file(f"/lib/{name}", data)
        art = DeclarativeArtifact(
            http_server.url(f"/lib/{name}"), name, {"sha256": sha(data)}, len(data)
        )
        return DeclarativeUnit("file", (name, sha(data)), {"relative_path": name}, [art])

    before = [unit(f"before{i}", 50 * KB) for i in range(5)]
    big = unit("big", 3000 * KB)
    after = [unit(f"after{i}", 50 * KB) for i in range(5)]
    units = [*before, big, *after]
    async with (
        open_store(store_url, root=small_disk / "root") as store,
        triofetch.Downloader(connections=1, retries=0) as dl,
    ):
        assert store.storage is not None
        # one unit at a time: the order of events is the input's
        creator = triofetch.ContentUnitCreator(store, dl, units_in_flight=1)
        with pytest.raises(StorageWriteError) as caught:
            await creator.run(units, repository="r")
        error = caught.value
        assert type(error) is StorageWriteError
        assert error.errno == errno.ENOSPC and error.full
        assert error.path == str(store.storage.temp_dir)
        assert isinstance(error.__cause__, OSError)
        assert error.__cause__.errno == errno.ENOSPC
        assert str(error) == f"no space left on device under {store.storage.temp_dir}"
        assert error.database_error is None
        report = error.report
        assert report is not None
        assert (report.units_new, report.artifacts_downloaded, report.version) == (5, 5, None)
        requested = {r.path for r in http_server.requests}
        assert not any(p.startswith("/lib/after") for p in requested), requested
        found = await check_invariants(store, units, on_demand_ok=False)
        assert set(found) == {UnitKey(u.type, u.natural_key) for u in before}
        assert await store.latest_version("r") is None  # no version: the run did not finish

        remount(small_disk, "16m")
        report = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
        assert report.ok and report.created
        assert (report.units_existing, report.units_new) == (5, 6)
        found = await check_invariants(store, units, on_demand_ok=False)
        assert len(found) == len(units) and all(found.values())


# -- export -----------------------------------------------------------------------------------


def stopped_export_wrote_part(
    result: Result, dest: Path, files: dict[str, bytes], why: str
) -> None:
    """An export a full disk (or inode table) stopped: status 1, one line saying how many of
    *files* it wrote to *dest* and then *why* (a regular expression), and those files whole
    in DEST, with no temp file and no manifest."""
    assert result.code == 1, result
    message = one_error_line(result.err)
    match = re.fullmatch(
        rf"wrote (\d+) of {len(files)} files to {re.escape(str(dest))}{why}", message
    )
    assert match, message
    written = int(match[1])
    assert 0 < written < len(files)
    on_disk = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert len(on_disk) == written, sorted(on_disk)  # no temp file, no manifest
    assert all(files[path] == data for path, data in on_disk.items())


def test_export_on_a_full_disk_says_what_it_wrote_and_leaves_no_temp_file(
    http_server: FaultServer, small_disk: Path, tmp_path: Path
) -> None:
    files = {f"d/f{i}.bin": content(f"e{i}", 300 * KB) for i in range(10)}
    url = publish(http_server, files)
    root = tmp_path / "root"
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    dest = small_disk / "dest"
    result = run_cli("export", "--root", root, "--repository", "r", dest)
    stopped_export_wrote_part(
        result,
        dest,
        files,
        r" before the disk filled \(no space left on device\); no PULP_MANIFEST written: "
        r"free some space and run the export again",
    )

    remount(small_disk, "16m")
    again = run_cli("export", "--root", root, "--repository", "r", dest)
    assert again.code == 0, again
    lines = (dest / "PULP_MANIFEST").read_text().splitlines()
    assert sorted(lines) == sorted(manifest_of(files).decode().splitlines())
    on_disk = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert on_disk == {*files, "PULP_MANIFEST"}


def test_a_reexport_stopped_by_a_full_disk_leaves_no_old_manifest(
    http_server: FaultServer, small_disk: Path, tmp_path: Path
) -> None:
    """Exporting version 2 over an export of version 1 replaces a file, then fills the disk:
    the PULP_MANIFEST of version 1 is gone (it was left, listing the old sha256 of the file
    replaced, while the command said no PULP_MANIFEST was written)."""
    v1 = {"a.txt": content("old a", 60 * KB), "b.txt": content("b", 10 * KB)}
    v2 = {
        "a.txt": content("new a", 60 * KB),
        "b.txt": v1["b.txt"],
        "c.bin": content("c", 2500 * KB),
    }
    root = tmp_path / "root"
    args = ("--root", root, "--repository", "r")
    assert run_cli_in_process("sync", publish(http_server, v1, prefix="/v1"), *args).code == 0
    v2_url = publish(http_server, v2, prefix="/v2")
    assert run_cli_in_process("sync", v2_url, *args, "--mirror").code == 0
    dest = small_disk / "dest"
    first = run_cli_in_process("export", *args, "--version", "1", dest)
    assert first.code == 0, first
    assert (dest / "PULP_MANIFEST").read_bytes() == manifest_of(v1)

    result = run_cli("export", *args, dest)
    assert result.code == 1, result
    assert one_error_line(result.err) == (
        f"wrote 2 of 3 files to {dest} before the disk filled (no space left on device); "
        "no PULP_MANIFEST written: free some space and run the export again"
    )
    on_disk = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == {"a.txt": v2["a.txt"], "b.txt": v2["b.txt"]}  # no manifest, no temp

    remount(small_disk, "16m")
    again = run_cli("export", *args, dest)
    assert again.code == 0, again
    assert sorted((dest / "PULP_MANIFEST").read_bytes().splitlines()) == sorted(
        manifest_of(v2).splitlines()
    )


# -- out of inodes mid-run --------------------------------------------------------------------


def remount_inodes(where: Path, inodes: int, size: str = "16m") -> None:
    """The same tmpfs with room for the bytes, and for *inodes* files and directories."""
    subprocess.run(
        ["mount", "-o", f"remount,size={size},nr_inodes={inodes}", str(where)],
        check=True,
        capture_output=True,
    )


# 40 small files of 40 contents: each stored file takes an inode, and most take two more
# for its directories (artifacts/ab/cd/), which the check before downloading leaves out
INODE_FILES = {f"d/f{i:02d}.txt": f"content {i}\n".encode() for i in range(40)}

_NO_INODES = re.compile(
    r"no space left on device \(no free inodes\) under (?P<dir>\S+): (?P<stored>\d+) files "
    r"stored, (?P<committed>\d+) committed(?P<db>; committing failed too \(.+\), rolled back: "
    r"the store is consistent)?; free some inodes \(remove files\) and run the command again"
)


def test_sync_out_of_inodes_mid_run_says_so_then_a_resync_completes(
    http_server: FaultServer, small_disk: Path
) -> None:
    """A real tmpfs with 16 MiB free and 64 inodes: the 40 files fit the check before
    downloading (40 <= 63 free inodes), but not with their directories.  The run stopped
    and said "free some space" while ``df -h`` showed the disk nearly empty; it says the
    file system has no free inodes, and to remove files."""
    remount_inodes(small_disk, 64)
    url = publish(http_server, INODE_FILES)
    root = small_disk / "root"
    args = ("sync", url, "--root", root, "--repository", "r")
    result = run_cli(*args)
    assert result.code == 1, result
    match, committed, units = stopped_run(
        one_error_line(result.err), _NO_INODES, root, None, INODE_FILES, http_server
    )
    assert int(match["stored"]) > 0
    assert shutil.disk_usage(small_disk).free > 15 * 1024 * 1024  # the bytes had room

    remount_inodes(small_disk, 1024)
    http_server.reset_counters()
    again = run_cli(*args)
    assert again.code == 0, again
    resync_completed(again.out, root, None, units, http_server, committed)


async def test_creator_run_out_of_inodes_records_it_on_the_error(
    http_server: FaultServer, small_disk: Path
) -> None:
    """The library: the StorageWriteError says, when it is made, that the file system has
    no free inode (a later look may find some: the run removes its temp files)."""
    remount_inodes(small_disk, 32)
    units = declared(INODE_FILES, http_server)
    for path, data in INODE_FILES.items():
        http_server.add_file(f"/repo/{path}", data)
    async with (
        open_store(None, root=small_disk / "root") as store,
        triofetch.Downloader(connections=4) as dl,
    ):
        assert store.storage is not None
        with pytest.raises(StorageWriteError) as caught:
            await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
        error = caught.value
        assert type(error) is StorageWriteError
        assert error.errno == errno.ENOSPC and error.full and error.inodes_exhausted
        assert str(error) == f"no space left on device (no free inodes) under {error.path}"
        assert error.report is not None and error.report.units_new < len(units)


def test_export_out_of_inodes_says_so(
    http_server: FaultServer, small_disk: Path, tmp_path: Path
) -> None:
    """An export onto a real tmpfs with room for the bytes and 16 inodes: it stops at the
    first file it cannot make and says the file system ran out of inodes (it said "the
    disk filled ... free some space"); exporting again with more inodes finishes."""
    files = {f"d{i % 4}/f{i:02d}.txt": f"export {i}\n".encode() for i in range(30)}
    url = publish(http_server, files)
    root = tmp_path / "root"
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    remount_inodes(small_disk, 16)
    dest = small_disk / "dest"
    result = run_cli("export", "--root", root, "--repository", "r", dest)
    stopped_export_wrote_part(
        result,
        dest,
        files,
        r" before the file system ran out of inodes \(no space left on device\); no "
        r"PULP_MANIFEST written: free some inodes \(remove files\) and run the export again",
    )

    remount_inodes(small_disk, 1024)
    again = run_cli("export", "--root", root, "--repository", "r", dest)
    assert again.code == 0, again
    assert sorted((dest / "PULP_MANIFEST").read_bytes().splitlines()) == sorted(
        manifest_of(files).splitlines()
    )


# -- the storage's own writes -----------------------------------------------------------------


async def test_add_bytes_on_a_full_disk_raises_storage_write_error_and_leaves_no_temp_file(
    small_disk: Path,
) -> None:
    """``ArtifactStorage.add_bytes`` of more bytes than the disk holds: the write fails
    part-way.  It raised the bare OSError and left the part written in the temp area (3 MB
    into a 2 MiB disk: the disk stayed full); it raises StorageWriteError naming the temp
    area, leaves nothing behind, and the storage takes the next file that fits."""
    storage = triofetch.ArtifactStorage(small_disk / "root")
    too_big = content("too big", 3000 * KB)
    with pytest.raises(StorageWriteError) as caught:
        await storage.add_bytes(too_big)
    error = caught.value
    assert error.errno == errno.ENOSPC and error.full
    assert error.path == str(storage.temp_dir)
    assert temp_files(small_disk / "root") == []
    assert stored_files(small_disk / "root") == []
    fits = content("fits", 500 * KB)
    stored = await storage.add_bytes(fits)
    assert stored.path.read_bytes() == fits
    assert temp_files(small_disk / "root") == []
    assert await storage.verify() == triofetch.VerifyReport(checked=1, corrupted=())


# -- the content app fetching on demand onto a full disk --------------------------------------


@dataclass
class _WindowWatch(FakeResponder):
    """Records, at every piece sent, the most bytes the flight's attempt held in memory."""

    files: Any = None
    most_in_memory: int = 0
    #: the disk to watch, and its free space once most of the body was sent
    disk: Path | None = None
    free_late: int | None = None

    async def body(self, data: bytes, *, more: bool = False) -> None:
        for flight in self.files._flights.values():
            if flight.attempt is not None:
                held = flight.attempt._window_size  # (bytes not yet hashed included)
                self.most_in_memory = max(self.most_in_memory, held)
        if self.disk is not None and self.free_late is None and len(self.sent) > 9_000 * KB:
            self.free_late = shutil.disk_usage(self.disk).free
        await super().body(data, more=more)


async def test_on_demand_onto_a_full_disk_serves_the_file_without_storing_it(
    http_server: FaultServer, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 12 MB file fetched on demand into a store on a 2 MiB disk: the temp file fills
    the disk part-way.  The flight failed with the OSError and every client got a response
    cut short (and the next request the same); now the body is served whole from memory,
    validated as always, not stored (the next request fetches it again), the temp file's
    space is given back at once, and the bytes in memory stay bounded by the window."""
    data = content("big", 12_000 * KB)
    async for h in _store_with(http_server, small_disk, "big.bin", data):
        async with triofetch.Downloader() as dl:
            files = files_for(h, dl)
            with trio.fail_after(60):
                async with files.running():
                    for round_ in (1, 2):
                        ex = _WindowWatch(disk=small_disk)
                        ex.files = files
                        outcome = await _serve(files, h, ex)
                        await files.wait_idle()
                        assert outcome == "finish", (outcome, len(ex.sent), caplog.text)
                        assert ex.status == 200 and bytes(ex.sent) == data
                        assert files.upstream_gets == round_  # (not stored: fetched again)
                        # the window, a chunk past it, and the batches not yet hashed (the
                        # one gathering, the one queued, the one in the thread: each up to
                        # a chunk past _FLUSH_MAX); a chunk is 256 KiB at most
                        chunk = 256 * 1024
                        bound = _ondemand._WINDOW + chunk + 3 * (_ondemand._FLUSH_MAX + chunk)
                        assert ex.most_in_memory <= bound, (ex.most_in_memory, bound)
                        # the part written was given back while the body still streamed
                        assert ex.free_late is not None and ex.free_late > 1_500 * KB
        assert [m.relative_path for m in await h.store.missing_artifacts("r")] == ["big.bin"]
        assert temp_files(small_disk / "root") == []
        assert stored_files(small_disk / "root") == []
        assert shutil.disk_usage(small_disk).free > 1_500 * KB  # (the partial file is gone)
    warnings = [r.getMessage() for r in caplog.records if r.name == "triofetch.serve"]
    said = (
        "big.bin: fetched on demand but not stored: "
        f"no space left on device under {small_disk / 'root' / 'tmp'}"
    )
    assert len(warnings) == 2 and all(w.startswith(said) for w in warnings), warnings


async def test_on_demand_small_file_onto_a_full_disk_is_served_then_stored_once_room(
    http_server: FaultServer, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A small file (kept in memory, never in a temp file) fetched while the disk is full:
    served whole, not stored; once there is room, the next request stores it."""
    data = content("small", 20 * KB)
    async for h in _store_with(http_server, small_disk, "small.bin", data):
        filler = small_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        assert shutil.disk_usage(small_disk).free < 4096
        async with triofetch.Downloader() as dl:
            files = files_for(h, dl)
            with trio.fail_after(30):
                async with files.running():
                    full = FakeResponder()
                    assert await _serve(files, h, full) == "finish"
                    await files.wait_idle()
                    assert bytes(full.sent) == data
                    assert await h.store.missing_artifacts("r") != []
                    filler.unlink()
                    room = FakeResponder()
                    assert await _serve(files, h, room) == "finish"
                    await files.wait_idle()
                    assert bytes(room.sent) == data
        assert await h.store.missing_artifacts("r") == []
        assert temp_files(small_disk / "root") == []
        assert [p.read_bytes() for p in stored_files(small_disk / "root")] == [data]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("small.bin: fetched on demand but not stored: ")
    assert "no space left on device" in warning


async def test_add_bytes_on_a_read_only_temp_area_raises_storage_write_error(
    tmp_path: Path, read_only_mount: Callable[[Path], None]
) -> None:
    """A read-only temp area: writing fails with EROFS, and so does removing the file that
    was never created (Linux checks the mount before the name).  add_bytes raised that
    second, bare OSError."""
    storage = triofetch.ArtifactStorage(tmp_path / "root")
    read_only_mount(storage.temp_dir)
    with pytest.raises(StorageWriteError) as caught:
        await storage.add_bytes(b"x" * 1000)
    assert caught.value.errno == errno.EROFS and not caught.value.full
    assert caught.value.path == str(storage.temp_dir)


async def test_on_demand_onto_a_read_only_temp_area_serves_and_the_service_lives_on(
    http_server: FaultServer, tmp_path: Path, read_only_mount: Callable[[Path], None]
) -> None:
    """A read-only temp area under the content app: a 300 kB file is served from memory,
    not stored.  The cleanup of the flight unlinked its temp file, which failed with EROFS
    and brought down the whole on-demand service (its nursery)."""
    data = content("ro", 300 * KB)
    async for h in _store_with(http_server, tmp_path, "ro.bin", data):
        assert h.store.storage is not None
        read_only_mount(h.store.storage.temp_dir)
        chunks = [data[i : i + 50 * KB] for i in range(0, len(data), 50 * KB)]
        files = files_for(h, ScriptedDownloader(chunks, pause=0.01))
        with trio.fail_after(10):
            async with files.running():
                for _ in range(2):  # (the service still answers)
                    ex = FakeResponder()
                    assert await _serve(files, h, ex) == "finish"
                    await files.wait_idle()
                    assert bytes(ex.sent) == data
        assert [m.relative_path for m in await h.store.missing_artifacts("r")] == ["ro.bin"]


class _BreaksOffOnce(ScriptedDownloader):
    """The first attempt gets *first* bytes, then the upstream breaks off; the retry gets
    the whole body."""

    def __init__(self, data: bytes, first: int) -> None:
        super().__init__([], pause=0.01)
        self.data, self.first = data, first

    async def stream(self, url: str, consumer: Callable[[], Any]) -> Any:
        step = 100 * KB
        attempt = consumer()
        for i in range(0, self.first, step):
            await attempt.feed(self.data[i : min(i + step, self.first)])
            await trio.sleep(self.pause)
        await trio.sleep(0.2)  # (its writer writes what it was given)
        attempt = consumer()  # the retry
        for i in range(0, len(self.data), step):
            await attempt.feed(self.data[i : i + step])
            await trio.sleep(self.pause)
        return await attempt.finish()


async def test_a_retry_gets_the_space_of_the_attempt_it_replaces(
    http_server: FaultServer, small_disk: Path
) -> None:
    """A 1.5 MB file on a 2 MiB disk; the upstream breaks off after 1.2 MB and the retry
    fetches it whole.  The replaced attempt's temp file (removed, but open until the flight
    ended) kept its 1.2 MB, so the retry ran out of space: a file that fits was served but
    never stored, and fetched again by every request."""
    data = content("retry", 1500 * KB)
    async for h in _store_with(http_server, small_disk, "retry.bin", data):
        files = files_for(h, _BreaksOffOnce(data, 1200 * KB))
        ex = FakeResponder()
        with trio.fail_after(20):
            async with files.running():
                outcome = await _serve(files, h, ex)
                await files.wait_idle()
        assert isinstance(outcome, Exception)  # (the response begun was cut short)
        assert await h.store.missing_artifacts("r") == []
        assert [p.read_bytes() for p in stored_files(small_disk / "root")] == [data]
        assert temp_files(small_disk / "root") == []


async def test_a_temp_file_that_cannot_be_removed_is_said_once(
    http_server: FaultServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The temp file of an attempt a retry replaced is removed twice (when replaced, and
    when the flight ends): when removing it fails, one WARNING names it, not two."""
    data = content("unremovable", 600 * KB)
    real_unlink = os.unlink
    refused: list[str] = []

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        # (the first temp file removed is the replaced attempt's; only its removal fails)
        first = os.fspath(path) == refused[0] if refused else ".part" in os.fspath(path)
        if first and os.path.exists(path):
            refused.append(os.fspath(path))
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        real_unlink(path, *args, **kwargs)

    async for h in _store_with(http_server, tmp_path, "unremovable.bin", data):
        files = files_for(h, _BreaksOffOnce(data, 300 * KB))
        monkeypatch.setattr(os, "unlink", unlink)
        with trio.fail_after(20), caplog.at_level("WARNING", logger=_ondemand.log.name):
            async with files.running():
                await _serve(files, h, FakeResponder())
                await files.wait_idle()
        monkeypatch.undo()
        replaced = refused[0]
        assert refused.count(replaced) == 2  # (both removals were refused)
        said = [
            r.getMessage()
            for r in caplog.records
            if "cannot remove the temp file" in r.getMessage()
        ]
        error = PermissionError(errno.EACCES, "Permission denied", replaced)
        assert said == [f"cannot remove the temp file {replaced}: {error}"]
        assert await h.store.missing_artifacts("r") == []


# -- the Downloader writing into a full temp directory ------------------------------------------


async def test_fetch_into_a_full_temp_dir_raises_temp_file_error_and_tries_no_mirror(
    http_server: FaultServer, small_disk: Path
) -> None:
    """``Downloader.fetch`` of a 3 MB file into a 2 MiB temp directory raised the bare
    OSError (not the DownloadError it documents; ``fetch_many`` crashed instead of handing
    over an outcome).  It raises TempFileError now, once: neither a retry nor the mirror is
    tried (they would write to the same disk), and no temp file is left."""
    data = content("big", 3000 * KB)
    http_server.add_file("/a/big.bin", data)
    http_server.add_file("/b/big.bin", data)
    urls = [http_server.url("/a/big.bin"), http_server.url("/b/big.bin")]
    async with triofetch.Downloader(temp_dir=small_disk, retries=3) as dl:
        with pytest.raises(triofetch.TempFileError) as caught:
            await dl.fetch(urls, expected_digests={"sha256": sha(data)})
    error = caught.value
    assert isinstance(error, triofetch.DownloadError) and not error.retryable
    assert error.errno == errno.ENOSPC and error.full and error.path == str(small_disk)
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    assert str(error) == (
        f"cannot write the temp file in {small_disk}: no space left on device ({urls[0]})"
    )
    assert error.attempts == [error]
    assert (http_server.count("/a/big.bin"), http_server.count("/b/big.bin")) == (1, 0)
    assert os.listdir(small_disk) == []


async def test_fetch_of_a_small_file_into_a_full_temp_dir_raises_temp_file_error(
    http_server: FaultServer, small_disk: Path
) -> None:
    """The same for a small file, which the finishing thread creates and writes whole."""
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    http_server.add_file("/small.bin", b"s" * 20_000)
    async with triofetch.Downloader(temp_dir=small_disk) as dl:
        with pytest.raises(triofetch.TempFileError) as caught:
            await dl.fetch(http_server.url("/small.bin"))
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(small_disk) == ["filler"]


async def test_fetch_many_into_a_full_temp_dir_hands_over_failed_outcomes(
    http_server: FaultServer, small_disk: Path
) -> None:
    """``fetch_many`` with a file too large for the disk beside one that fits: the large
    one is a FetchFailed outcome holding the TempFileError, the other one is fetched.
    (The large one comes slowly, 256 KB every 50 ms, so that the small one is written
    before the disk is full: sent at full speed, the large one filled it first now and
    then, under load, and the small one failed too, rightly.)"""
    big, small = content("big", 3000 * KB), content("small", 20 * KB)
    http_server.add_file("/big.bin", big, faults=[Slow(0.05, 256 * KB)])
    http_server.add_file("/small.bin", small)
    outcomes = {}
    async with triofetch.Downloader(temp_dir=small_disk) as dl:
        requests = [http_server.url("/big.bin"), http_server.url("/small.bin")]
        async with dl.fetch_many(requests) as received:
            async for outcome in received:
                outcomes[outcome.request.url.rsplit("/", 1)[1]] = outcome
    failed, fetched = outcomes["big.bin"], outcomes["small.bin"]
    assert not failed.ok and isinstance(failed.error, triofetch.TempFileError)
    assert failed.error.full
    assert fetched.ok and fetched.result.path.read_bytes() == small
    assert os.listdir(small_disk) == [fetched.result.path.name]


def _fill_but(disk: Path, room: int) -> None:
    """Fill *disk* with a file ``filler``, leaving about *room* bytes free."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.ftruncate(fd, os.fstat(fd).st_size - room)
    os.close(fd)


async def test_a_body_error_while_the_temp_file_fails_is_one_error(
    http_server: FaultServer, small_disk: Path
) -> None:
    """The connection breaks, or the body grows past its expected size, while the writer
    thread is failing to write a batch to the nearly full disk (a thread cannot be
    interrupted): the nursery raised both errors as a group, which escaped fetch (and
    crashed fetch_many).  One error now.  A race: tried five times each."""
    data = content("big", 3000 * KB)
    http_server.add_file("/reset.bin", data, faults=[Reset(after_bytes=1_100_000)])
    http_server.add_file("/long.bin", data, content_length=False)
    _fill_but(small_disk, 500 * KB)
    async with triofetch.Downloader(temp_dir=small_disk, retries=0) as dl:
        for _ in range(5):
            with pytest.raises(triofetch.DownloadError):
                await dl.fetch(http_server.url("/long.bin"), expected_size=1_100_000)
            async with dl.fetch_many([http_server.url("/reset.bin")]) as received:
                outcomes = [outcome async for outcome in received]
            assert len(outcomes) == 1 and not outcomes[0].ok, outcomes
            assert os.listdir(small_disk) == ["filler"]


async def test_a_cancellation_while_the_temp_file_fails_is_a_cancellation(
    small_disk: Path,
) -> None:
    """A cancellation from outside while the writer thread fails on a full disk: the
    cancel scope took the Cancelled out of the group and let a group of the lone
    TempFileError escape.  Either the cancellation alone (the scope ends quietly) or the
    TempFileError alone, when it came first."""
    from triofetch.downloader._plan import FetchPlan
    from triofetch.downloader._sinks import _LargeFiles, _Sink

    plan = FetchPlan({}, None, ("sha256", "sha512", "sha384", "sha224"), {}, None, None)
    for _ in range(5):
        sink = _Sink(str(small_disk / "t.part"), plan, "http://127.0.0.1/x")
        try:
            with trio.CancelScope() as scope:
                async with _LargeFiles(trio.CapacityLimiter(4)).writing(sink) as put:
                    await put([b"x" * 3_000_000])
                    await trio.lowlevel.checkpoint()
                    await trio.lowlevel.checkpoint()
                    scope.cancel()
                    await trio.lowlevel.checkpoint()
        except triofetch.TempFileError:
            pass
        finally:
            sink.discard()
        assert os.listdir(small_disk) == []
