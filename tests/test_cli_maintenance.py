"""``triofetch versions``, ``prune``, ``gc`` and ``sync --retain``, end to end (subprocesses).

The syncs that only fill a store for a case (and the version listings that check what
``sync --retain`` left) run the same main() in process (tests/_cli_helpers.py,
run_cli_in_process); the commands each case is about run as processes.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests._cli_helpers import (
    Result,
    cli_env,
    publish,
    run_cli,
    run_cli_in_process,
    start_cli,
)
from triofetch.testing import FaultServer

FILES = {"a.txt": b"alpha\n", "dir/b.bin": b"b" * 3000, "c.txt": b"gamma\n"}


def content(generation: int) -> dict[str, bytes]:
    """FILES with a.txt changed in each generation (and dir/b.bin from the third on)."""
    files = dict(FILES)
    files["a.txt"] = f"alpha {generation}\n".encode()
    if generation >= 3:
        files["dir/b.bin"] = b"B" * (3000 + generation)
    return files


def sync(
    server: FaultServer,
    root: Path,
    generation: int,
    *more: str,
    runner: Callable[..., Result] = run_cli,
) -> dict[str, object]:
    url = publish(server, content(generation), prefix=f"/gen{generation}")
    result = runner("sync", url, "--root", root, "--repository", "r", "--json", *more)
    assert result.code == 0, result
    report: dict[str, object] = result.json()
    return report


def versions(
    root: Path, repository: str = "r", *, runner: Callable[..., Result] = run_cli
) -> list[dict[str, object]]:
    result = runner("versions", "--root", root, "--repository", repository, "--json")
    assert result.code == 0, result
    rows: list[dict[str, object]] = result.json()
    return rows


def stored(root: Path) -> int:
    return sum(1 for p in (root / "artifacts").rglob("*") if p.is_file())


def test_versions_prune_gc(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for generation in (1, 2, 3):
        assert (
            sync(http_server, root, generation, runner=run_cli_in_process)["version"] == generation
        )
    rows = versions(root)
    assert [(r["number"], r["units"], r["complete"]) for r in rows] == [
        (1, 3, True),
        (2, 3, True),
        (3, 3, True),
    ]
    for r in rows:
        created = datetime.datetime.fromisoformat(str(r["created"]))
        assert created.tzinfo is not None
        assert abs(datetime.datetime.now(datetime.UTC) - created).total_seconds() < 120
    human = run_cli("versions", "--root", root, "--repository", "r")
    assert human.code == 0, human
    lines = human.out.splitlines()
    assert lines[0].split() == ["version", "created", "(UTC)", "units", "state"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert all(line.split()[-2:] == ["3", "complete"] for line in lines[1:])
    # 3 + 1 (a.txt v2) + 2 (a.txt, b.bin v3) files
    assert stored(root) == 6

    gc = run_cli("gc", "--root", root, "--json")
    assert gc.code == 0, gc
    assert gc.json() == {
        "versions": 0,
        "units": 0,
        "artifacts": 0,
        "files": 0,
        "bytes": 0,
        "temp_files": 0,
    }
    pruned = run_cli("prune", "--root", root, "--repository", "r", "--keep", "1", "--json")
    assert pruned.code == 0, pruned
    assert pruned.json() == {"repository": "r", "kept": [3], "deleted": [1, 2]}
    assert [r["number"] for r in versions(root)] == [3]
    assert stored(root) == 6  # prune removes versions, not files

    gc = run_cli("gc", "--root", root)
    assert gc.code == 0, gc
    # gone: a.txt of v1 and v2, b.bin of v1/v2 (units and files)
    assert gc.out.startswith("removed 0 incomplete versions, 3 units, 3 artifacts, 3 files ("), gc
    assert stored(root) == 3
    verify = run_cli("verify", "--root", root)
    assert verify.code == 0, verify
    listed = run_cli("list", "--root", root, "--repository", "r", "--json")
    assert sorted(row["relative_path"] for row in listed.json()) == sorted(FILES)
    assert run_cli("gc", "--root", root).out.strip() == "nothing to remove"

    again = run_cli("prune", "--root", root, "--repository", "r", "--keep", "2")
    assert again.code == 0, again
    assert again.out.strip() == "repository 'r': nothing to delete; kept 3"


def test_prune_names_runs_of_versions_by_their_ends(tmp_path: Path) -> None:
    """A prune of many versions printed every number on one line (16,971 bytes for 2,995
    versions); runs of three or more are now written as their ends."""
    import trio

    from triofetch.store import open_store

    root = tmp_path / "root"

    async def make() -> None:
        async with open_store(root=root) as store:
            for _ in range(9):
                await store.complete_version(await store.new_version("r"))

    trio.run(make)
    args = ("prune", "--root", root, "--repository", "r")
    pruned = run_cli_in_process(*args, "--keep", "3")
    assert pruned.code == 0, pruned
    assert pruned.out.strip() == (
        "repository 'r': deleted versions 1-6; kept 7-9 (run 'triofetch gc' to free their files)"
    )
    again = run_cli_in_process(*args, "--keep", "1", "--json")  # JSON: every number
    assert again.json() == {"repository": "r", "kept": [9], "deleted": [7, 8]}


def test_sync_retain(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for generation in (1, 2, 3):
        sync(http_server, root, generation, "--retain", "2")
    assert [r["number"] for r in versions(root, runner=run_cli_in_process)] == [2, 3]
    # a sync that changes nothing prunes too
    report = sync(http_server, root, 3, "--retain", "1")
    assert report["created"] is False and report["version"] == 3
    assert [r["number"] for r in versions(root, runner=run_cli_in_process)] == [3]
    bad = run_cli("sync", "file:///nowhere", "--root", root, "--repository", "r", "--retain", "0")
    assert bad.code == 2 and "--retain" in bad.err
    # -v says which versions went, runs of numbers as their ends (prune's own words)
    for generation in (4, 5, 6, 7):
        sync(http_server, root, generation, runner=run_cli_in_process)
    url = publish(http_server, content(8), prefix="/gen8")
    said = run_cli("sync", url, "--root", root, "--repository", "r", "--retain", "1", "-v")
    assert said.code == 0, said
    assert "pruned versions 3-7 of 'r'" in said.err, said


def test_unknown_repository_and_missing_store_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for command in (["versions"], ["prune", "--keep", "1"]):
        result = run_cli(*command, "--root", root, "--repository", "nope")
        assert result.code == 2, result
        assert "no triofetch store at" in result.err
    result = run_cli("gc", "--root", root)
    assert result.code == 2 and "no triofetch store at" in result.err, result
    assert not root.exists()  # nothing was made

    empty = tmp_path / "empty"
    url = (tmp_path / "PULP_MANIFEST").as_uri()
    (tmp_path / "PULP_MANIFEST").write_text("")
    assert run_cli_in_process("sync", url, "--root", empty, "--repository", "r").code == 0
    for command in (["versions"], ["prune", "--keep", "1"]):
        result = run_cli(*command, "--root", empty, "--repository", "nope")
        assert result.code == 2, result
        assert result.err.strip() == "triofetch: error: no repository named 'nope'"
    (only,) = versions(empty)  # an empty first version: where the (empty) content is
    assert (only["number"], only["units"], only["complete"]) == (1, 0, True)


_HOLDER = """
import sys, trio
from triofetch.store import open_store

async def main():
    async with open_store(root=sys.argv[1]) as store, store.lease():
        print("held", flush=True)
        await trio.sleep(600)

trio.run(main)
"""


def test_gc_gives_up_while_a_writer_runs(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    sync(http_server, root, 1, runner=run_cli_in_process)
    sync(http_server, root, 2, runner=run_cli_in_process)
    run_cli_in_process("prune", "--root", root, "--repository", "r", "--keep", "1")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = run_cli("gc", "--root", root, "--wait", "0.5", "--json")
        assert result.code == 1, result
        # with --json, the one JSON error object (#19), and the line on stderr as ever
        error = result.json()["error"]
        assert error["kind"] == "busy" and error["message"] in result.err
        assert "a sync (or another writer) is still running" in result.err
        assert "removed nothing" in result.err
        assert stored(root) == 4
    finally:
        holder.kill()
        holder.wait()
    result = run_cli("gc", "--root", root, "--wait", "5", "--json")
    assert result.code == 0, result
    assert result.json()["units"] == 1 and stored(root) == 3


def _files_with_first_sha256(count: int, tag: str) -> tuple[str, dict[str, bytes]]:
    """*count* small files of their own content, one of which has a sha256 below every
    other's (the first file verify hashes); its path is returned too."""
    files = {f"{tag}/f{i}.txt": f"{tag} {i}\n".encode() for i in range(count)}
    n = 0
    while not hashlib.sha256(data := f"first {n}\n".encode()).hexdigest().startswith("000"):
        n += 1
    files[f"{tag}/first.txt"] = data
    return f"{tag}/first.txt", files


def test_verify_while_prune_and_gc_remove_a_version_reports_no_damage(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """verify takes no lock: files that prune and gc removed with their records after it
    read the records are not 'corrupted: missing' (it reported each, status 1, with the
    store intact).  The first file verify hashes is made a FIFO, so that verify waits on it
    while prune and gc remove version 1; then it is given its bytes."""
    root = tmp_path / "root"
    old = {f"old/f{i}.txt": f"old {i}\n".encode() for i in range(600)}
    first, new = _files_with_first_sha256(10, "new")
    for prefix, files in (("/old", old), ("/new", new)):
        url = publish(http_server, files, prefix=prefix)
        result = run_cli_in_process("sync", url, "--root", root, "--repository", "r", "--mirror")
        assert result.code == 0, result
    sha = hashlib.sha256(new[first]).hexdigest()
    stored_file = root / "artifacts" / sha[:2] / sha[2:4] / sha
    os.chmod(stored_file.parent, 0o755)
    stored_file.unlink()
    os.mkfifo(stored_file)
    verify = start_cli("verify", "--root", root, "--json")
    try:
        deadline = time.monotonic() + 60
        while True:  # (opening a FIFO to write fails until a reader has it open)
            try:
                fifo = os.open(stored_file, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                assert exc.errno == errno.ENXIO and time.monotonic() < deadline
                assert verify.poll() is None, verify.communicate()
                time.sleep(0.01)
        pruned = run_cli_in_process("prune", "--root", root, "--repository", "r", "--keep", "1")
        assert pruned.code == 0, pruned
        collected = run_cli_in_process("gc", "--root", root, "--json")
        assert collected.code == 0 and collected.json()["files"] == 600, collected
        os.write(fifo, new[first])
        os.close(fifo)
        out, err = verify.communicate(timeout=60)
    finally:
        verify.kill()
        verify.wait()
    assert verify.returncode == 0, (out, err)
    report = json.loads(out)
    assert report["ok"] is True and report["corrupted"] == [], report
    assert report["checked"] == 611
    # the files hashed after gc are the ones it took; those hashed before were intact
    assert 0 < report["removed_by_gc"] <= 600
    assert "corrupted" not in err
    assert f"{report['removed_by_gc']} stored files and their records went while the store " in err
    stored_file.unlink()
    stored_file.write_bytes(new[first])
    again = run_cli("verify", "--root", root, "--json")
    assert again.code == 0 and again.json()["removed_by_gc"] == 0, again
