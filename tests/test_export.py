"""``triofetch export``: exactly a version's content, one file per path, a PULP_MANIFEST that
round-trips, on-demand files fetched (and stored) or listed.  The command runs as a
subprocess against real stores (SQLite and PostgreSQL) and a real loopback HTTP server; the
syncs that fill the stores (and read exported manifests back) and the listings run the same
main() in process (tests/_cli_helpers.py, run_cli_in_process).

Versions made before schema 4 could hold two units at one path, or a file and a directory at
one path; such versions are made here by adding rows to ``version_units`` directly, as the
old code did.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import trio
from hypothesis import given, strategies as st

from tests import test_disk_full, test_readonly
from tests._cli_helpers import Result, file_requests, publish, run_cli, run_cli_in_process
from tests.test_readonly import run_on_read_only_root
from triofetch import (
    ContentUnitCreator,
    DeclarativeArtifact,
    DeclarativeUnit,
    Downloader,
    StorageWriteError,
    open_store,
)
from triofetch._cli import _export
from triofetch._cli._export import NOT_FETCHED, Unexportable, export_files, unexportable
from triofetch._cli._inspect import FileRow
from triofetch.manifest import local_source, manifest_base_url, parse_pulp_manifest
from triofetch.storage import ArtifactStorage
from triofetch.testing import FaultServer, Status

#: paths that are awkward for a manifest line, a URL and a file system
AWKWARD = {
    "plain.txt": b"plain\n",
    "with space/a b.txt": b"spaces\n",
    " leading and trailing .txt ": b"edge spaces\n",
    "comma,in,name.txt": b"commas\n",
    "a,b/c,d,e": b"commas in a directory\n",
    "données/été.txt": b"latin\n",
    "日本語/ファイル.txt": b"cjk\n",
    "emoji 😀.txt": b"four bytes\n",
    "deep/1/2/3/4/5/6/7/8/9/10/f.bin": os.urandom(5000),
    "hash#tag.txt": b"hash\n",
    "dir#/#first-in-segment": b"hash at a segment start\n",
    "100%.txt": b"percent\n",
    "%41%2F.txt": b"a literal percent escape, not to be decoded\n",
    "what?.txt": b"question\n",
    "q?x=1&y=2;z+w~": b"query-like\n",
    "quote'and\"double.txt": b"quotes\n",
    "empty.txt": b"",
}


#: a temp dir every user may enter (a read-only root may be run as nobody)
world_readable_tmp = test_readonly.world_readable_tmp
#: a directory on a real 2 MiB tmpfs of its own (another file system: files are copied)
small_disk = test_disk_full.small_disk


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> str | None:
    """The ``--db`` of the store: None (SQLite under --root), or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


def store_args(root: Path, db: str | None) -> tuple[str | Path, ...]:
    return ("--root", root) if db is None else ("--root", root, "--db", db)


def sync(url: str | Path, root: Path, db: str | None, repository: str, *more: str) -> Result:
    result = run_cli_in_process(
        "sync", url, *store_args(root, db), "--repository", repository, *more
    )
    assert result.code == 0, result
    return result


def export(root: Path, db: str | None, dest: Path, *more: str, repository: str = "r") -> Result:
    return run_cli("export", *store_args(root, db), "--repository", repository, *more, dest)


def listing(root: Path, db: str | None, repository: str = "r") -> list[dict[str, object]]:
    result = run_cli_in_process("list", *store_args(root, db), "--repository", repository, "--json")
    assert result.code == 0, result
    rows: list[dict[str, object]] = result.json()
    return rows


def files_under(dest: Path) -> dict[str, bytes]:
    """Every file under *dest* (the manifest excluded), by relative path."""
    found = {}
    for path in dest.rglob("*"):
        if path.is_file() and path.name != "PULP_MANIFEST":
            found[path.relative_to(dest).as_posix()] = path.read_bytes()
    return found


def expected_rows(files: Mapping[str, bytes]) -> list[dict[str, object]]:
    return [
        {"relative_path": p, "sha256": sha(d), "size": len(d), "downloaded": True}
        for p, d in sorted(files.items())
    ]


def add_to_version(root: Path, db: str | None, target: str, source: str) -> None:
    """Add every unit of *source*'s version 1 to *target*'s version 1, as stores made before
    schema 4 could (no repository key checked)."""
    sql = f"""INSERT INTO version_units (version_id, unit_id)
        SELECT tv.id, vu.unit_id
        FROM version_units vu
        JOIN repository_versions sv ON sv.id = vu.version_id
        JOIN repositories s ON s.id = sv.repository_id,
        repository_versions tv JOIN repositories t ON t.id = tv.repository_id
        WHERE s.name = '{source}' AND sv.number = 1 AND t.name = '{target}' AND tv.number = 1"""
    if db is None:
        with sqlite3.connect(root / "triofetch.sqlite3") as conn:
            assert conn.execute(sql).rowcount > 0
        conn.close()
    else:
        import psycopg

        with psycopg.connect(db, autocommit=True) as pg:
            assert pg.execute(sql).rowcount > 0


# -- round trip ----------------------------------------------------------------------------


def test_export_round_trips_awkward_paths(
    http_server: FaultServer, tmp_path: Path, db: str | None
) -> None:
    url = publish(http_server, AWKWARD)
    root = tmp_path / "root"
    sync(url, root, db, "r")
    assert listing(root, db) == expected_rows(AWKWARD)
    dest = tmp_path / "export dir, with #?%"
    exported = export(root, db, dest)
    assert exported.code == 0, exported
    assert exported.err == ""
    assert files_under(dest) == AWKWARD
    # syncing the export reproduces the version: same paths, digests and sizes
    other = tmp_path / "other"
    sync(dest / "PULP_MANIFEST", other, None, "copy")
    assert listing(other, None, "copy") == expected_rows(AWKWARD)
    # exporting again over the first export changes nothing
    again = export(root, db, dest)
    assert again.code == 0 and f"{len(AWKWARD)} unchanged" in again.out, again
    assert files_under(dest) == AWKWARD


def test_export_round_trips_without_a_utf8_file_system_encoding(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """Under ``LC_ALL=C`` without UTF-8 mode (file system encoding ASCII) the export of a
    non-ASCII path ended in "internal error: UnicodeEncodeError" (status 70), having written
    part of DEST.  Its files are named by the UTF-8 of their paths, as the manifest names
    them, and a sync of DEST under that locale reads them all back."""
    ascii_locale = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    url = publish(http_server, AWKWARD)
    root = tmp_path / "root"
    sync(url, root, None, "r")
    dest = tmp_path / "export"
    exported = run_cli("export", "--root", root, "--repository", "r", dest, env=ascii_locale)
    assert exported.code == 0, exported
    assert files_under(dest) == AWKWARD
    other = tmp_path / "other"
    back = run_cli("sync", dest, "--root", other, "--repository", "copy", env=ascii_locale)
    assert back.code == 0, back
    assert listing(other, None, "copy") == expected_rows(AWKWARD)


def test_an_export_deeper_than_path_max_syncs_back(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """DEST and a relative path together longer than PATH_MAX (4096 bytes on Linux): the
    export writes them (a directory at a time), and its manifest synced back reads them.
    The file:// transport opened the whole path at once: ENAMETOOLONG, those files failed
    ("cannot open file: File name too long") after an export that said it was complete."""
    files = {
        "/".join(["p" * 250] * 7): b"far below\n",
        "near.txt": b"near\n",
    }
    url = publish(http_server, files)
    root = tmp_path / "root"
    sync(url, root, None, "r")
    dest = tmp_path.joinpath(*["d" * 250] * 10)
    longest = len(os.fsencode(dest)) + 1 + max(len(p) for p in files)
    assert longest > os.pathconf("/", "PC_PATH_MAX")
    exported = export(root, None, dest)
    assert exported.code == 0, exported
    other = tmp_path / "other"
    result = run_cli_in_process(
        "sync", dest / "PULP_MANIFEST", "--root", other, "--repository", "copy"
    )
    assert result.code == 0, result
    assert listing(other, None, "copy") == expected_rows(files)


def test_an_empty_dest_is_refused(http_server: FaultServer, tmp_path: Path) -> None:
    """``export ... ""`` (an unset ``$DEST``) exported into the current directory."""
    url = publish(http_server, {"a.txt": b"a\n"})
    root = tmp_path / "root"
    sync(url, root, None, "r")
    here = tmp_path / "here"
    here.mkdir()
    result = run_cli("export", "--root", root, "--repository", "r", "", cwd=here)
    assert result.code == 2, result
    assert result.err.strip() == "triofetch: error: DEST must not be empty", result
    assert list(here.iterdir()) == []


def test_a_path_the_manifest_cannot_hold_is_refused(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """A manifest line starting with '#' is a comment: such a path cannot round-trip."""
    files = {"#notes.txt": b"a comment?\n", "ok.txt": b"fine\n"}
    for path, data in files.items():
        http_server.add_file(f"/lib/{path.replace('#', '%23')}", data)
    root = tmp_path / "root"

    async def create() -> None:
        async with open_store(root=root) as store, Downloader() as downloader:
            units = [
                DeclarativeUnit(
                    "file",
                    (path, sha(data)),
                    {"relative_path": path, "size": len(data)},
                    [
                        DeclarativeArtifact(
                            http_server.url(f"/lib/{path.replace('#', '%23')}"),
                            path,
                            {"sha256": sha(data)},
                            len(data),
                        )
                    ],
                )
                for path, data in files.items()
            ]
            report = await ContentUnitCreator(store, downloader).run(units, repository="r")
            assert report.ok, report.failures

    trio.run(create)
    assert [r["relative_path"] for r in listing(root, None)] == ["#notes.txt", "ok.txt"]
    dest = tmp_path / "export"
    result = export(root, None, dest)
    assert result.code == 1, result
    assert "'#notes.txt'" in result.err and "cannot be listed in a PULP_MANIFEST" in result.err
    assert not dest.exists()


# -- versions made before repository keys --------------------------------------------------


def test_a_file_and_a_directory_at_one_path_are_refused(
    http_server: FaultServer, tmp_path: Path, db: str | None
) -> None:
    root = tmp_path / "root"
    sync(publish(http_server, {"a": b"file a\n", "z.txt": b"z\n"}, prefix="/r"), root, db, "r")
    sync(publish(http_server, {"a/b": b"file a/b\n"}, prefix="/s"), root, db, "s")
    add_to_version(root, db, "r", "s")
    assert [r["relative_path"] for r in listing(root, db)] == ["a", "a/b", "z.txt"]
    dest = tmp_path / "export"
    result = export(root, db, dest)
    assert result.code == 1, result
    assert "nothing written" in result.err
    line = next(x for x in result.err.splitlines() if "'a/b'" in x)
    assert line.startswith("triofetch: ") and "'a'" in line
    assert sha(b"file a\n") in line and sha(b"file a/b\n") in line
    assert not dest.exists()
    # a DEST that exists is left as it was
    dest.mkdir()
    (dest / "mine").write_bytes(b"mine")
    assert export(root, db, dest).code == 1
    assert sorted(p.name for p in dest.iterdir()) == ["mine"]


def test_two_units_at_one_path_are_refused(
    http_server: FaultServer, tmp_path: Path, db: str | None
) -> None:
    root = tmp_path / "root"
    sync(publish(http_server, {"a": b"old\n", "z": b"z\n"}, prefix="/r"), root, db, "r")
    sync(publish(http_server, {"a": b"new\n"}, prefix="/s"), root, db, "s")
    add_to_version(root, db, "r", "s")
    assert [r["relative_path"] for r in listing(root, db)] == ["a", "a", "z"]
    dest = tmp_path / "export"
    result = export(root, db, dest)
    assert result.code == 1, result
    line = next(x for x in result.err.splitlines() if "twice" in x)
    assert "'a'" in line and sha(b"old\n") in line and sha(b"new\n") in line
    assert "nothing written" in result.err
    assert not dest.exists()


# -- on-demand units -----------------------------------------------------------------------


def test_on_demand_files_are_fetched_and_stored(
    http_server: FaultServer, tmp_path: Path, db: str | None
) -> None:
    files = {"a.txt": b"alpha\n", "dir/b c.bin": os.urandom(2000), "x#1?.txt": b"odd\n"}
    url = publish(http_server, files)
    root = tmp_path / "root"
    sync(url, root, db, "r", "--policy", "on_demand")
    assert [r["downloaded"] for r in listing(root, db)] == [False] * 3
    dest = tmp_path / "export"
    result = export(root, db, dest)
    assert result.code == 0, result
    assert files_under(dest) == files
    assert sorted(file_requests(http_server)) == sorted(f"/repo/{p}" for p in files)
    # stored too: the next export fetches nothing, even with the remote gone
    assert listing(root, db) == expected_rows(files)
    assert run_cli("verify", *store_args(root, db)).code == 0
    http_server.reset_counters()
    for path in files:
        http_server.remove(f"/repo/{path}")
    second = tmp_path / "second"
    assert export(root, db, second).code == 0
    assert files_under(second) == files
    assert file_requests(http_server) == []
    # and the export round-trips
    other = tmp_path / "other"
    sync(second / "PULP_MANIFEST", other, None, "copy")
    assert listing(other, None, "copy") == expected_rows(files)


def test_no_fetch_lists_on_demand_files(http_server: FaultServer, tmp_path: Path) -> None:
    eager = {"a.txt": b"alpha\n", "b.txt": b"beta\n"}
    lazy = {"c.txt": b"gamma\n", "d/e.txt": b"delta\n"}
    root = tmp_path / "root"
    sync(publish(http_server, eager | lazy), root, None, "r", "--policy", "on_demand")
    sync(publish(http_server, eager, prefix="/eager"), root, None, "r")
    http_server.reset_counters()
    dest = tmp_path / "export"
    result = export(root, None, dest, "--no-fetch")
    assert result.code == 1, result
    assert result.err.splitlines() == [
        f"triofetch: not exported: {p}: not downloaded (on-demand; run without --no-fetch to "
        "fetch it)"
        for p in sorted(lazy)
    ]
    assert http_server.requests == []
    assert files_under(dest) == eager
    # the manifest lists what was exported, and only that
    other = tmp_path / "other"
    sync(dest / "PULP_MANIFEST", other, None, "copy")
    assert listing(other, None, "copy") == expected_rows(eager)
    assert [r["downloaded"] for r in listing(root, None)] == [True, True, False, False]


def test_a_fetch_failure_is_listed_and_the_rest_exported(
    http_server: FaultServer, tmp_path: Path, db: str | None
) -> None:
    files = {"good.txt": b"good\n", "bad.txt": b"bad\n", "sub/ok.txt": b"ok\n"}
    url = publish(http_server, files)
    root = tmp_path / "root"
    sync(url, root, db, "r", "--policy", "on_demand")
    http_server.remove("/repo/bad.txt")
    http_server.add_file("/repo/bad.txt", b"bad\n", faults=[Status(404)] * 10)
    dest = tmp_path / "export"
    result = export(root, db, dest)
    assert result.code == 1, result
    lines = [x for x in result.err.splitlines() if "not exported" in x]
    assert len(lines) == 1 and lines[0].startswith("triofetch: not exported: bad.txt: "), result
    assert "404" in lines[0]
    assert files_under(dest) == {"good.txt": b"good\n", "sub/ok.txt": b"ok\n"}
    rows = {r["relative_path"]: r["downloaded"] for r in listing(root, db)}
    assert rows == {"bad.txt": False, "good.txt": True, "sub/ok.txt": True}
    other = tmp_path / "other"
    sync(dest / "PULP_MANIFEST", other, None, "copy")
    assert [r["relative_path"] for r in listing(other, None, "copy")] == ["good.txt", "sub/ok.txt"]


# -- a damaged stored file ------------------------------------------------------------------


def damage(root: Path, data: bytes, new: bytes) -> None:
    """Change the stored file of *data* in place (the store still records *data*)."""
    stored = ArtifactStorage(root).path_for(sha(data))
    stored.chmod(0o644)
    stored.write_bytes(new)


def manifest_is_true(dest: Path) -> dict[str, bytes]:
    """The files the PULP_MANIFEST under *dest* lists, each checked to be there with the
    sha256 and size listed."""
    listed = {}
    for line in (dest / "PULP_MANIFEST").read_text(encoding="utf-8").splitlines():
        path, digest, size = line.rsplit(",", 2)
        data = (dest / path).read_bytes()
        assert (sha(data), len(data)) == (digest, int(size)), line
        listed[path] = data
    return listed


GOOD = {"a.txt": b"old a\n" * 10, "b/c.txt": b"see\n", "d.txt": b"dee\n" * 3}


def test_a_damaged_stored_file_is_not_exported_nor_listed(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """A stored file whose size is not the recorded one is left out: listed as not exported,
    not in DEST (a hard link would be the damaged file itself), not in the manifest, status
    1; the rest is exported.  It was linked and listed with the recorded sha256 and size."""
    root = tmp_path / "root"
    sync(publish(http_server, GOOD), root, None, "r")
    damage(root, GOOD["a.txt"], b"old")
    dest = tmp_path / "dest"
    result = export(root, None, dest)
    assert result.code == 1, result
    assert result.err.splitlines() == [
        "triofetch: not exported: a.txt: the stored file is damaged (size 3, expected 60): "
        "run triofetch repair"
    ]
    assert result.out.startswith("exported 2 files of 'r' version 1"), result
    rest = {p: d for p, d in GOOD.items() if p != "a.txt"}
    assert files_under(dest) == rest
    assert manifest_is_true(dest) == rest
    # --json says it too; and exporting again over the first export still leaves it out
    again = export(root, None, dest, "--json")
    assert again.code == 1, again
    assert again.json()["not_exported"] == [
        {
            "relative_path": "a.txt",
            "reason": "the stored file is damaged (size 3, expected 60): run triofetch repair",
        }
    ]
    assert (again.json()["written"], again.json()["unchanged"]) == (2, 2)
    assert manifest_is_true(dest) == rest
    other = tmp_path / "other"
    sync(dest / "PULP_MANIFEST", other, None, "copy")
    assert listing(other, None, "copy") == expected_rows(rest)


def test_a_missing_stored_file_is_named_as_such(http_server: FaultServer, tmp_path: Path) -> None:
    """A stored file deleted from the storage: the line said only "No such file or
    directory", naming neither the stored file nor what to do."""
    root = tmp_path / "root"
    sync(publish(http_server, GOOD), root, None, "r")
    stored = ArtifactStorage(root).path_for(sha(GOOD["a.txt"]))
    stored.unlink()
    result = export(root, None, tmp_path / "dest")
    assert result.code == 1, result
    assert result.err.splitlines() == [
        f"triofetch: not exported: a.txt: the stored file is damaged (missing: {stored}): "
        "run triofetch repair"
    ]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_version_removed_during_the_export_is_not_called_damaged(
    http_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    """Export takes no lease: prune and gc may remove the version it exports.  Here they do,
    through the store API, at an exact point: after its first file (a.txt) is written, before
    the next (the export's check for a cancel before each file is the hook).  The files gone
    are listed as removed with the version, one line says so and that nothing is damaged,
    status 1 (not everything exported), the manifest lists only the file written, and
    verify is clean.  They were called damaged ("run triofetch repair")."""
    root = tmp_path / "root"
    sync(publish(http_server, GOOD), root, None, "r")
    sync(publish(http_server, {"n.txt": b"en\n"}, prefix="/two"), root, None, "r", "--mirror")

    async def prune_and_gc() -> None:
        async with await open_store(None, root=root, create=False) as store:
            assert (await store.prune("r", keep=1)).deleted == (1,)
            assert (await store.collect_garbage(wait=10)).files == len(GOOD)

    asked = 0

    def before_each_file() -> bool:
        nonlocal asked
        asked += 1
        if asked == 2:
            trio.from_thread.run(prune_and_gc)  # (in the export's own Trio run)
        return False

    monkeypatch.setattr(_export, "_cancel_requested", before_each_file)
    dest = tmp_path / "dest"
    more = ("--json",) if as_json else ()
    result = run_cli_in_process(
        "export", "--root", root, "--repository", "r", "--version", "1", *more, dest
    )
    assert result.code == 1, result
    assert asked == len(GOOD)
    assert "is damaged" not in result.err and "repair" not in result.err, result
    reason = "removed from the store with its version during the export (prune and gc)"
    assert result.err.splitlines() == [
        f"triofetch: not exported: b/c.txt: {reason}",
        f"triofetch: not exported: d.txt: {reason}",
        "triofetch: repository 'r' version 1 was removed while it was being exported (prune "
        "and gc): 2 of its files were gone before being exported, not damaged; export a "
        "version that exists",
    ]
    if as_json:
        out = result.json()
        assert (out["version_removed"], out["written"]) == (True, 1)
        assert out["not_exported"] == [
            {"relative_path": "b/c.txt", "reason": reason},
            {"relative_path": "d.txt", "reason": reason},
        ]
    else:
        assert result.out.startswith("exported 1 files of 'r' version 1"), result
    assert files_under(dest) == manifest_is_true(dest) == {"a.txt": GOOD["a.txt"]}
    verify = run_cli_in_process("verify", "--root", root)
    assert verify.code == 0, verify


def test_a_damaged_stored_file_of_the_right_size_is_not_copied(
    http_server: FaultServer, tmp_path: Path, small_disk: Path
) -> None:
    """Copied (DEST on another file system: a real tmpfs), a file is hashed as it is copied:
    damaged bytes of the recorded size are not exported either, and the part copied is
    removed.  A hard link is checked by size only (nothing is read)."""
    root = tmp_path / "root"
    sync(publish(http_server, GOOD), root, None, "r")
    bad = b"OLD A\n" * 10
    assert len(bad) == len(GOOD["a.txt"])
    damage(root, GOOD["a.txt"], bad)
    dest = small_disk / "dest"
    result = export(root, None, dest)
    assert result.code == 1, result
    assert result.err.splitlines() == [
        f"triofetch: not exported: a.txt: the stored file is damaged (sha256 is {sha(bad)}): "
        "run triofetch repair"
    ]
    assert "(2 copies)" in result.out, result
    rest = {p: d for p, d in GOOD.items() if p != "a.txt"}
    assert files_under(dest) == rest  # no temp file either
    assert manifest_is_true(dest) == rest


# -- the check itself, in process ----------------------------------------------------------


def row(path: str, content: bytes, unit: int, downloaded: bool = True) -> FileRow:
    return FileRow(path, sha(content), len(content), downloaded, unit)


def test_every_conflict_is_named(tmp_path: Path) -> None:
    rows = sorted(
        [
            row("a", b"1", 1),
            row("a/b", b"2", 2),
            row("a/c/d", b"3", 3),
            row("x", b"4", 4),
            row("x", b"5", 5),
            row("x", b"6", 6, downloaded=False),
            row("fine/y", b"7", 7),
        ],
        key=lambda r: r.relative_path,
    )
    problems = unexportable(rows, tmp_path)
    assert problems == [
        f"'x' is in the version 3 times: (sha256 {sha(b'4')}, unit 4) and "
        f"(sha256 {sha(b'5')}, unit 5) and (sha256 {sha(b'6')}, unit 6)",
        f"'a' (sha256 {sha(b'1')}, unit 1) is a file and also a directory of 'a/b' "
        f"(sha256 {sha(b'2')}, unit 2) (and 1 more files under it)",
    ]
    dest = tmp_path / "dest"
    storage = ArtifactStorage(tmp_path / "root")
    with pytest.raises(Unexportable) as caught:
        export_files(storage, rows, dest)
    assert caught.value.problems == problems
    assert not dest.exists()


def test_the_old_manifest_goes_before_a_file_in_the_way_of_a_directory(tmp_path: Path) -> None:
    """A file of an earlier export where the new version needs a directory is removed:
    the earlier manifest goes first, so an export stopped then leaves none listing it."""
    storage = ArtifactStorage(tmp_path / "root")
    for data in (b"a file\n", b"zed\n"):
        stored = storage.path_for(sha(data))
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(data)
    dest = tmp_path / "dest"
    first = export_files(storage, [row("a", b"a file\n", 1), row("z", b"zed\n", 2)], dest)
    assert first.written == 2 and (dest / "PULP_MANIFEST").exists()
    # a/b is not stored: it fails once "a" is replaced by a directory; then a stop
    stops = iter([False, True])
    report = export_files(
        storage,
        [row("a/b", b"not stored\n", 3), row("z", b"zed\n", 2)],
        dest,
        stopped=lambda: next(stops),
    )
    assert report.interrupted and report.written == 0
    assert [p for p, _ in report.errors] == ["a/b"]
    assert (dest / "a").is_dir()
    assert not (dest / "PULP_MANIFEST").exists()


#: an export (export_files, copying: DEST is taken for another file system) that kills itself
#: with SIGKILL in the middle of its copy number argv[3], as ``kill -9`` would
_KILLED_EXPORT = """
import os, signal, sys
from pathlib import Path
from triofetch._cli import _export
from triofetch._cli._inspect import FileRow

def row(path, content, unit):
    return FileRow(path, _export.hashlib.sha256(content).hexdigest(), len(content), True, unit)

copies = 0
real_copy = _export._copy

def link(*args, **kwargs):
    raise OSError(18, "Invalid cross-device link")

def copy_then_die(src, name, dir_fd):
    global copies
    copies += 1
    if copies < int(sys.argv[3]):
        return real_copy(src, name, dir_fd)
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    os.write(out, Path(src).read_bytes()[:3])  # part of the file copied
    os.kill(os.getpid(), signal.SIGKILL)

_export.os.link = link
_export._copy = copy_then_die
storage = _export.ArtifactStorage(Path(sys.argv[1]))
rows = [row("d/e/deep.bin", b"deep file\\n", 2), row("top.bin", b"top file\\n", 1)]
_export.export_files(storage, rows, Path(sys.argv[2]))
"""


def _two_stored_files(tmp_path: Path) -> tuple[ArtifactStorage, dict[str, bytes]]:
    """A storage under ``tmp_path/root`` holding two files, and {relative path: bytes}."""
    storage = ArtifactStorage(tmp_path / "root")
    files = {"top.bin": b"top file\n", "d/e/deep.bin": b"deep file\n"}
    for data in files.values():
        stored = storage.path_for(sha(data))
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(data)
    return storage, files


def test_the_temp_files_of_a_killed_export_are_removed_by_the_next(tmp_path: Path) -> None:
    """An export killed (``kill -9``, a second signal) while it copies a file leaves that
    file's temp in DEST, and nothing else ever removed it (the storage's cleanups know only
    ``<root>/tmp``): each killed export leaked a part of a file there.  The next export to
    DEST removes the temp files of exports that are gone (anywhere under DEST: see the
    next test), and spares a live export's."""
    storage, files = _two_stored_files(tmp_path)
    dest = tmp_path / "dest"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for copy, where in ((1, "d/e"), (2, ".")):  # killed copying d/e/deep.bin, then top.bin
        killed = subprocess.run(
            [sys.executable, "-c", _KILLED_EXPORT, str(storage.root), str(dest), str(copy)],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        left = {p.parent.relative_to(dest).as_posix() for p in dest.rglob(".tf-export-*")}
        assert where in left  # the part of the file it was copying
    being_copied = (  # a live export's temp file, named by that export
        "import sys; from pathlib import Path; from triofetch._cli import _export; "
        "live = Path(sys.argv[1], _export._temp_name()); live.write_bytes(b'being copied'); "
        "print(live.name, flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", being_copied, str(dest / "d")],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as alive:
        assert alive.stdout is not None
        live = dest / "d" / alive.stdout.readline().strip()
        rows = [row("d/e/deep.bin", files["d/e/deep.bin"], 2), row("top.bin", files["top.bin"], 1)]
        report = export_files(storage, rows, dest)
        assert report.errors == [] and report.written == 2
        assert files_under(dest) == files | {"d/" + live.name: b"being copied"}
        assert sorted(dest.rglob(".tf-export-*")) == [live]  # a live export's is spared
        assert alive.stdin is not None
        alive.stdin.close()


def test_a_killed_exports_temp_file_goes_wherever_it_is_under_dest(tmp_path: Path) -> None:
    """A temp file a killed export left in a directory the next export does not write to
    (the version exported next has no file there) is removed by it too: only the
    directories it wrote to were swept, and such a temp file stayed for ever.  Anywhere
    under DEST, at any depth; never one of a live export, never one outside DEST reached
    through a symbolic link."""
    storage, files = _two_stored_files(tmp_path)
    dest = tmp_path / "dest"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run(  # killed copying d/e/deep.bin, its first file
        [sys.executable, "-c", _KILLED_EXPORT, str(storage.root), str(dest), "1"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [left] = dest.rglob(".tf-export-*")
    assert left.parent == dest / "d" / "e"
    # a temp file named as a process that has ended names it, outside DEST, reached from
    # DEST by a symbolic link to its directory
    name_of_a_dead_export = "from triofetch._cli import _export; print(_export._temp_name())"
    dead_name = subprocess.run(
        [sys.executable, "-c", name_of_a_dead_export],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / dead_name).write_bytes(b"not DEST's")
    (dest / "d" / "link").symlink_to(outside, target_is_directory=True)
    live = dest / "d" / _export._temp_name()  # this process's: alive
    live.write_bytes(b"being copied")
    report = export_files(storage, [row("top.bin", files["top.bin"], 1)], dest)
    assert report.errors == [] and report.written == 1
    assert not left.exists()
    assert sorted(dest.rglob(".tf-export-*")) == [live]
    assert (outside / dead_name).read_bytes() == b"not DEST's"


def test_a_stop_ends_the_sweep_of_dest_even_in_one_long_listing(tmp_path: Path) -> None:
    """The walk of DEST for killed exports' temp files asks *stopped* as it goes, also
    within one directory of many names (here 5,000 beside a dead export's temp file):
    stopped, it removes nothing more and the export writes nothing.  It walked all DEST
    first, whatever *stopped* said, and removed that temp file."""
    storage, files = _two_stored_files(tmp_path)
    dest = tmp_path / "dest"
    crowded = dest / "crowded"
    crowded.mkdir(parents=True)
    for i in range(5000):
        (crowded / f"n{i:04}").touch()
    name_it = "from triofetch._cli import _export; print(_export._temp_name())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    dead = crowded / subprocess.run(  # named by a process that has ended
        [sys.executable, "-c", name_it], env=env, capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout.strip()  # fmt: skip
    dead.write_bytes(b"left by a killed export")
    asked = 0

    def stopped() -> bool:  # (not before "crowded" is opened: then, in its listing)
        nonlocal asked
        asked += 1
        return asked > 1

    report = export_files(storage, [row("top.bin", files["top.bin"], 1)], dest, stopped=stopped)
    assert report.interrupted and report.interrupted_sweeping and report.written == 0
    assert asked == 2  # before opening "crowded", then in its listing
    assert dead.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["crowded"]
    report = export_files(storage, [row("top.bin", files["top.bin"], 1)], dest)
    assert report.written == 1 and not report.interrupted_sweeping
    assert not dead.exists()


def test_paths_a_manifest_cannot_carry(tmp_path: Path) -> None:
    long_name = "/".join(["é" * 100] * 9)  # 1,808 bytes; 5,408 once URL-quoted
    rows = [
        row("#comment", b"1", 1),
        row("a#b", b"2", 2),
        row("bad\udcff", b"3", 3),
        row(long_name, b"4", 4),
        row("ok", b"5", 5),
    ]
    deep = tmp_path.joinpath(*["é" * 100] * 5)  # 3,000 bytes of URL
    problems = unexportable(rows, deep)
    assert problems[0] == "'bad\\udcff' cannot be written as UTF-8"
    assert problems[1].startswith("'#comment' cannot be listed in a PULP_MANIFEST: a line")
    assert problems[2].startswith(f"{long_name!r} cannot be listed in a PULP_MANIFEST: the")
    assert "URL would be longer than 8192 bytes" in problems[2]
    assert len(problems) == 3
    # the same long path is fine below a short DEST
    assert unexportable([row(long_name, b"4", 4)], tmp_path) == []


def test_on_demand_files_on_a_read_only_root_are_listed(
    http_server: FaultServer, world_readable_tmp: Path
) -> None:
    """Fetching needs a writable store: on a read-only root the rest is still exported."""
    eager = {"a.txt": b"alpha\n"}
    lazy = {"b.txt": b"beta\n", "c/d.txt": b"delta\n"}
    root = world_readable_tmp / "root"
    sync(publish(http_server, eager | lazy), root, None, "r", "--policy", "on_demand")
    sync(publish(http_server, eager, prefix="/eager"), root, None, "r")
    http_server.reset_counters()
    for flags, reason in (
        ((), "not downloaded (cannot write the store to fetch it: "),
        (("--no-fetch",), NOT_FETCHED),
    ):
        dest = world_readable_tmp / f"out{len(flags)}"
        dest.mkdir()
        os.chmod(dest, 0o777)
        result = run_on_read_only_root(
            root, "export", "--root", "{root}", "--repository", "r", *flags, dest
        )
        assert result.code == 1, result
        lines = result.err.splitlines()
        assert len(lines) == 2 and "Traceback" not in result.err, result
        for line, path in zip(lines, sorted(lazy), strict=True):
            assert line.startswith(f"triofetch: not exported: {path}: {reason}"), result
        assert files_under(dest) == eager
    assert http_server.requests == []


_SEGMENT = st.text(alphabet="ab #,%?&+=;~'\"é😀", min_size=1, max_size=4).filter(
    lambda s: s not in (".", "..")
)
_PATH = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)
_CONTENTS = [b"", b"one\n", b"two\n", b"three\n"]


def _expected_refusal(paths: list[str]) -> bool:
    known = set(paths)
    if len(known) < len(paths) or any(p.startswith("#") for p in known):
        return True
    return any(p[:i] in known for p in known for i, c in enumerate(p) if c == "/")


@given(files=st.lists(st.tuples(_PATH, st.sampled_from(_CONTENTS)), min_size=1, max_size=8))
def test_what_export_writes_reads_back(files: list[tuple[str, bytes]]) -> None:
    """Any set of paths: refused exactly when it holds a conflict or a '#' line; otherwise the
    files on disk, the manifest as sync parses it, and the file URLs it gives all match."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = ArtifactStorage(Path(tmp, "root"))
        for data in _CONTENTS:
            stored = storage.path_for(sha(data))
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(data)
        rows = sorted(
            (row(path, data, unit) for unit, (path, data) in enumerate(files, 1)),
            key=lambda r: (r.relative_path, r.unit_id),
        )
        dest = Path(tmp, "out #?%")
        problems = unexportable(rows, dest)
        assert bool(problems) == _expected_refusal([p for p, _ in files]), problems
        if problems:
            return
        report = export_files(storage, rows, dest, checked=True)
        assert report.errors == [] and report.written == len(rows)
        assert files_under(dest) == dict(files)
        source = local_source(dest)
        with open(dest / "PULP_MANIFEST", "rb") as lines:
            manifest = parse_pulp_manifest(lines, base_url=manifest_base_url(source))
        assert sorted((e.relative_path, e.sha256, e.size) for e in manifest.entries) == sorted(
            (p, sha(d), len(d)) for p, d in files
        )
        for entry in manifest.entries:
            url = urlsplit(manifest.url_for(entry.relative_path))
            assert Path(unquote(url.path)) == dest / entry.relative_path


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (errno.EMFILE, "before it ran out of file descriptors (too many open files); "),
        (errno.EROFS, "before a write failed (read-only file system); "),
        (errno.ENOSPC, "before the disk filled (no space left on device); "),
    ],
)
def test_the_stop_line_names_what_ran_out(tmp_path: Path, error: int, said: str) -> None:
    """An export stopped by too many open files said "before a write failed", where the call
    that failed was an open: it names the descriptors now."""
    report = _export.ExportReport(linked=3)
    report.disk_error = StorageWriteError(OSError(error, os.strerror(error)), tmp_path)
    line = _export._stopped_by_disk(report, 10, tmp_path)
    assert line.startswith(f"wrote 3 of 10 files to {tmp_path} {said}"), line
