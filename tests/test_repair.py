"""Repair: stored files that went missing or bad are fetched again from where they came from.

The library's ``triofetch.repair`` on both backends, and ``triofetch repair`` run as a
subprocess; a real loopback server serves the files and counts the requests.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import trio

import triofetch
from tests._cli_helpers import publish, run_cli, run_cli_in_process
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import (
    ArtifactRecord,
    NewUnit,
    NewUnitArtifact,
    RepositoryNotFound,
    Store,
)
from triofetch.testing import FaultServer, Slow, WrongBytes


def content(name: str, size: int = 1500) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_unit(server: FaultServer, name: str, *, prefix: str = "/repo") -> DeclarativeUnit:
    data = content(name)
    server.add_file(f"{prefix}/{name}", data)
    art = DeclarativeArtifact(
        server.url(f"{prefix}/{name}"), name, {"sha256": sha(data)}, len(data)
    )
    return DeclarativeUnit("file", (name, sha(data)), {"relative_path": name}, [art])


def writable(path: Path) -> Path:
    """Stored files are read-only (0444): make one writable to damage it."""
    path.chmod(0o644)
    return path


def temp_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())


async def synced(
    store: Store, dl: triofetch.Downloader, units: list[DeclarativeUnit], repository: str = "r"
) -> None:
    report = await triofetch.ContentUnitCreator(store, dl).run(units, repository=repository)
    assert report.ok, report.failures


def stored(store: Store, name: str) -> Path:
    assert store.storage is not None
    return store.storage.path_for(sha(content(name)))


# -- the URLs are recorded ----------------------------------------------------------------------


async def test_urls_recorded_for_immediate_downloads(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = [file_unit(http_server, f"f{i}.txt") for i in range(5)]
    await synced(store, dl, units)
    page, _ = await store.stored_artifacts()
    assert sorted(s for _, s, _ in page) == sorted(sha(content(f"f{i}.txt")) for i in range(5))
    urls = await store.artifact_urls([i for i, _, _ in page])
    by_sha = {s: urls[i] for i, s, _ in page}
    for i in range(5):
        name = f"f{i}.txt"
        assert by_sha[sha(content(name))] == [http_server.url(f"/repo/{name}")]


async def test_stored_artifacts_pages_and_scope(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, f"a{i}") for i in range(7)], "one")
    await synced(store, dl, [file_unit(http_server, f"b{i}") for i in range(3)], "two")
    # a second version of "two": one unit more, one unit in both
    await synced(store, dl, [file_unit(http_server, n) for n in ("b0", "b9", "a0")], "two")

    async def pages(repository: str | None) -> list[list[tuple[int, str, int]]]:
        found = []
        cursor: int | None = 0
        while cursor is not None:
            page, cursor = await store.stored_artifacts(repository, after=cursor, limit=3)
            found.append(page)
        return found

    everything = await pages(None)
    assert all(len(p) <= 3 for p in everything)
    ids = [i for p in everything for i, _, _ in p]
    assert len(ids) == 11 and ids == sorted(set(ids))
    two = [s for p in await pages("two") for _, s, _ in p]
    want = {sha(content(n)) for n in ("b0", "b1", "b2", "b9", "a0")}
    assert len(two) == len(want) and set(two) == want
    with pytest.raises(RepositoryNotFound):
        await store.stored_artifacts("nope")


# -- the library ---------------------------------------------------------------------------------


async def test_intact_store_fetches_nothing(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, f"f{i}") for i in range(4)])
    before = len(http_server.requests)
    report = await triofetch.repair(store, dl)
    assert report.ok and report.checked == 4
    assert report.repaired == [] and report.failed == []
    assert len(http_server.requests) == before


async def test_deleted_file_is_downloaded_again(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, f"f{i}") for i in range(6)])
    gone = stored(store, "f2")
    gone.unlink()
    report = await triofetch.repair(store, dl)
    assert report.ok and report.checked == 6
    assert [(r.sha256, r.path, r.reason) for r in report.repaired] == [
        (sha(content("f2")), gone, "missing")
    ]
    assert http_server.count("/repo/f2") == 2  # the sync, then the repair
    assert all(http_server.count(f"/repo/f{i}") == 1 for i in (0, 1, 3, 4, 5))
    assert gone.read_bytes() == content("f2")
    assert stat.S_IMODE(gone.stat().st_mode) == 0o444
    assert store.storage is not None
    assert (await store.storage.verify()).ok
    assert temp_files(store.storage.root) == []


async def test_a_downloader_not_open_is_wrong_context(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """Raised before hashing the store, where every damaged file was listed as failed."""
    await synced(store, dl, [file_unit(http_server, f"f{i}") for i in range(2)])
    stored(store, "f1").unlink()
    with pytest.raises(triofetch.WrongContext, match="Downloader is not open"):
        await triofetch.repair(store, triofetch.Downloader())
    assert not stored(store, "f1").exists()


async def test_a_store_or_downloader_of_a_wrong_type_is_invalid_input(
    store: Store, dl: triofetch.Downloader
) -> None:
    """repair(5, dl) and repair(store, 5) raised AttributeError ('int' object has no
    attribute 'storage' / 'is_open'); the creator refuses the same with InvalidInput."""
    with pytest.raises(triofetch.InvalidInput, match=r"store must be a Store .*got 5"):
        await triofetch.repair(5, dl)  # type: ignore[arg-type]
    with pytest.raises(triofetch.InvalidInput, match=r"downloader must be a Downloader.*got 5"):
        await triofetch.repair(store, 5)  # type: ignore[arg-type]


async def test_truncated_and_overwritten_files_are_replaced(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, n) for n in ("a", "b", "c")])
    short = writable(stored(store, "a"))
    os.truncate(short, 100)
    flipped = writable(stored(store, "b"))
    flipped.write_bytes(b"X" * len(content("b")))  # same size, other bytes
    report = await triofetch.repair(store, dl)
    assert report.ok and report.checked == 3
    reasons = {r.path: r.reason for r in report.repaired}
    assert reasons[short] == f"size 100, expected {len(content('a'))}"
    assert reasons[flipped].startswith("sha256 is ")
    assert len(reasons) == 2
    assert short.read_bytes() == content("a") and flipped.read_bytes() == content("b")
    assert http_server.count("/repo/c") == 1
    assert store.storage is not None
    assert (await store.storage.verify()).ok


async def test_file_the_server_lost_is_reported_and_left_alone(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, n) for n in ("kept", "lost", "lost2")])
    damaged = writable(stored(store, "lost"))
    os.truncate(damaged, 10)
    stored(store, "lost2").unlink()
    http_server.remove("/repo/lost")
    http_server.remove("/repo/lost2")
    report = await triofetch.repair(store, dl)
    assert not report.ok and report.repaired == []
    failed = {f.sha256: f for f in report.failed}
    assert set(failed) == {sha(content("lost")), sha(content("lost2"))}
    lost = failed[sha(content("lost"))]
    assert lost.reason.startswith(f"size 10, expected {len(content('lost'))}; ")
    assert "404" in lost.reason
    assert lost.urls == (http_server.url("/repo/lost"),)
    assert failed[sha(content("lost2"))].reason.startswith("missing; ")
    # not made worse: the same ten bytes; nothing half-written beside it, no temp file
    assert damaged.read_bytes() == content("lost")[:10]
    assert not stored(store, "lost2").exists()
    assert store.storage is not None
    assert temp_files(store.storage.root) == []


async def test_a_directory_where_a_stored_file_goes_is_reported_not_raised(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """A directory in the place of a stored file, or a file in the place of its
    directory: the repair (and a re-sync) crashed with the bare IsADirectoryError or
    NotADirectoryError of the move into place.  It is a StoreError now: the repair
    reports the file it could not put back, the sync fails that unit, nothing is left in
    the temp area."""
    units = [file_unit(http_server, n) for n in ("a", "b")]
    await synced(store, dl, units)
    in_the_way = stored(store, "a")
    in_the_way.unlink()
    in_the_way.mkdir()
    shard = stored(store, "b").parent
    for child in shard.iterdir():
        child.unlink()
    shard.rmdir()
    shard.write_bytes(b"not a directory")
    report = await triofetch.repair(store, dl)
    assert not report.ok and report.repaired == []
    failed = {f.sha256: f.reason for f in report.failed}
    assert set(failed) == {sha(content("a")), sha(content("b"))}
    assert "Is a directory" in failed[sha(content("a"))]
    assert "Not a directory" in failed[sha(content("b"))]
    again = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
    assert not again.ok and len(again.failures) == 2
    assert all(isinstance(f.error, triofetch.UnitFailed) for f in again.failures)
    assert all(isinstance(f.error.cause, triofetch.StoreError) for f in again.failures)  # type: ignore[attr-defined]
    assert store.storage is not None
    assert temp_files(store.storage.root) == []


async def test_wrong_bytes_from_the_server_are_not_adopted(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, "w")])
    damaged = writable(stored(store, "w"))
    os.truncate(damaged, 7)
    http_server.add_faults("/repo/w", [WrongBytes(), WrongBytes()])  # every attempt
    report = await triofetch.repair(store, dl)
    assert not report.ok and report.repaired == []
    [failed] = report.failed
    assert "sha256" in failed.reason and failed.urls == (http_server.url("/repo/w"),)
    assert damaged.read_bytes() == content("w")[:7]
    assert store.storage is not None
    assert temp_files(store.storage.root) == []
    # the server is right again: the next repair mends it
    again = await triofetch.repair(store, dl)
    assert again.ok and [r.path for r in again.repaired] == [damaged]
    assert damaged.read_bytes() == content("w")


async def test_cancelled_repair_leaves_the_file_and_no_temp_file(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, "slow")])
    damaged = writable(stored(store, "slow"))
    damaged.write_bytes(b"Z" * len(content("slow")))
    http_server.add_faults("/repo/slow", [Slow(0.2, chunk=100)])
    with trio.move_on_after(0.5) as scope:
        await triofetch.repair(store, dl)
    assert scope.cancelled_caught
    assert http_server.count("/repo/slow") == 2  # the download had started
    assert damaged.read_bytes() == b"Z" * len(content("slow"))
    assert store.storage is not None
    assert temp_files(store.storage.root) == []


async def test_repository_limits_the_work(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    await synced(store, dl, [file_unit(http_server, f"a{i}") for i in range(3)], "one")
    await synced(store, dl, [file_unit(http_server, f"b{i}") for i in range(5)], "two")
    stored(store, "a1").unlink()
    stored(store, "b1").unlink()
    report = await triofetch.repair(store, dl, repository="one")
    assert report.ok and report.checked == 3
    assert [r.sha256 for r in report.repaired] == [sha(content("a1"))]
    assert http_server.count("/repo/b1") == 1
    assert not stored(store, "b1").exists()
    with pytest.raises(RepositoryNotFound):
        await triofetch.repair(store, dl, repository="three")


async def test_second_mirror_when_the_first_is_gone(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    data = content("m")
    http_server.add_file("/a-mirror/m", data)
    http_server.add_file("/b-mirror/m", data)
    urls = [http_server.url("/a-mirror/m"), http_server.url("/b-mirror/m")]
    art = DeclarativeArtifact(urls, "m", {"sha256": sha(data)}, len(data))
    await synced(
        store, dl, [DeclarativeUnit("file", ("m", sha(data)), {"relative_path": "m"}, [art])]
    )
    assert http_server.count("/b-mirror/m") == 0
    stored(store, "m").unlink()
    http_server.remove("/a-mirror/m")
    report = await triofetch.repair(store, dl)
    assert report.ok and [r.sha256 for r in report.repaired] == [sha(data)]
    assert http_server.count("/a-mirror/m") >= 2 and http_server.count("/b-mirror/m") == 1
    assert stored(store, "m").read_bytes() == data


async def test_urls_of_every_unit_holding_the_file_are_tried(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    # two units (two repositories' paths) share one artifact; only the second's URL works
    data = content("shared")
    http_server.add_file("/x/one", data)
    http_server.add_file("/y/two", data)
    units = [
        DeclarativeUnit(
            "file",
            (name, sha(data)),
            {"relative_path": name},
            [DeclarativeArtifact(http_server.url(path), name, {"sha256": sha(data)}, len(data))],
        )
        for name, path in (("one", "/x/one"), ("two", "/y/two"))
    ]
    await synced(store, dl, units)
    stored(store, "shared").unlink()
    http_server.remove("/x/one")
    report = await triofetch.repair(store, dl)
    assert report.ok and report.checked == 1 and len(report.repaired) == 1
    assert http_server.count("/y/two") >= 1
    assert stored(store, "shared").read_bytes() == data


async def test_no_url_recorded(store: Store, dl: triofetch.Downloader) -> None:
    assert store.storage is not None
    art = await store.storage.add_bytes(b"made here, from no URL\n")
    unit = NewUnit(
        "blob", ("x",), {}, (NewUnitArtifact("x", ArtifactRecord(art.sha256, art.size)),)
    )
    await store.commit_units([unit])
    art.path.unlink()
    report = await triofetch.repair(store, dl)
    assert not report.ok
    assert [(f.sha256, f.reason, f.urls) for f in report.failed] == [
        (art.sha256, "missing; no URL recorded", ())
    ]


# -- the command ---------------------------------------------------------------------------------

FILES = {"a.txt": b"alpha\n", "dir/b.bin": os.urandom(3000), "c d.txt": b"a space\n"}


def cli_sync(server: FaultServer, root: Path, files: dict[str, bytes], repository: str) -> None:
    """Fill the store of a case: the sync's main() in process (tests/_cli_helpers.py,
    run_cli_in_process); repair and verify run as processes."""
    url = publish(server, files, prefix=f"/{repository}")
    result = run_cli_in_process("sync", url, "--root", root, "--repository", repository)
    assert result.code == 0, result


def test_cli_repairs_and_verify_is_clean(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    cli_sync(http_server, root, FILES, "r")
    gone = root / "artifacts" / sha(FILES["dir/b.bin"])[:2] / sha(FILES["dir/b.bin"])[2:4]
    gone = gone / sha(FILES["dir/b.bin"])
    gone.unlink()
    assert run_cli("verify", "--root", root).code == 1
    result = run_cli("repair", "--root", root, "--json")
    assert result.code == 0, result
    assert result.json() == {
        "checked": 3,
        "repaired": [{"sha256": sha(FILES["dir/b.bin"]), "path": str(gone), "reason": "missing"}],
        "failed": [],
        "ok": True,
    }
    assert http_server.count("/r/dir/b.bin") == 2
    assert run_cli("verify", "--root", root).code == 0
    again = run_cli("repair", "--root", root)
    assert again.code == 0, again
    assert again.out == "checked 3 stored files: 0 repaired, 0 could not be repaired\n"
    assert again.err == ""


def test_cli_human_output_and_exit_1(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    cli_sync(http_server, root, FILES, "r")
    paths = {
        name: root / "artifacts" / sha(d)[:2] / sha(d)[2:4] / sha(d) for name, d in FILES.items()
    }
    paths["a.txt"].unlink()
    writable(paths["c d.txt"]).write_bytes(b"a SPACE\n")
    http_server.remove("/r/c d.txt")
    result = run_cli("repair", "--root", root)
    assert result.code == 1, result
    assert result.out == "checked 3 stored files: 1 repaired, 1 could not be repaired\n"
    lines = result.err.splitlines()
    assert f"triofetch: repaired: {paths['a.txt']}: missing" in lines
    failed = [line for line in lines if line.startswith("triofetch: not repaired: ")]
    assert len(failed) == 1
    assert failed[0].startswith(f"triofetch: not repaired: {sha(FILES['c d.txt'])}: sha256 is ")
    assert "404" in failed[0]
    assert paths["c d.txt"].read_bytes() == b"a SPACE\n"
    assert paths["a.txt"].read_bytes() == FILES["a.txt"]
    assert sorted((root / "tmp").iterdir()) == []
    as_json = run_cli("repair", "--root", root, "--json")
    assert as_json.code == 1
    report = as_json.json()
    assert report["ok"] is False and report["repaired"] == []
    assert [f["sha256"] for f in report["failed"]] == [sha(FILES["c d.txt"])]
    assert set(report["failed"][0]) == {"sha256", "reason"}


def test_cli_repository_scope_and_usage_errors(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    one = {"one.txt": b"one\n"}
    two = {"two.txt": b"two\n", "three.txt": b"three\n"}
    cli_sync(http_server, root, one, "one")
    cli_sync(http_server, root, two, "two")
    for data in (*one.values(), *two.values()):
        (root / "artifacts" / sha(data)[:2] / sha(data)[2:4] / sha(data)).unlink()
    result = run_cli("repair", "--root", root, "--repository", "two", "--json")
    assert result.code == 0, result
    assert result.json()["checked"] == 2
    assert {r["sha256"] for r in result.json()["repaired"]} == {sha(d) for d in two.values()}
    assert http_server.count("/one/one.txt") == 1
    unknown = run_cli("repair", "--root", root, "--repository", "nope")
    assert unknown.code == 2, unknown
    assert unknown.err == "triofetch: error: no repository named 'nope'\n"
    nowhere = run_cli("repair", "--root", tmp_path / "nothing")
    assert nowhere.code == 2, nowhere
    assert "no triofetch store at" in nowhere.err
    assert not (tmp_path / "nothing").exists()
