"""Too many open files (``EMFILE``) in the middle of a run: stopped cleanly, as a full disk.

A file descriptor is a resource of the whole process: once a write under the root fails
for want of one, the next ones fail the same way.  The run used to end with a bare
OSError (the storage's sync), or with the units failing one by one (their temp files), or
not at all, depending on which open came first.  Real parts only: the run in a process of
its own under a real ``RLIMIT_NOFILE`` (``ulimit -n``), a real HTTP server on 127.0.0.1,
SQLite; then the same run with the limit lifted completes.
"""

from __future__ import annotations

import errno
import json
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import triofetch
from tests._cli_helpers import Result, cli_env, manifest_of, publish, run_cli_in_process
from tests._invariants import check_invariants
from tests.test_disk_full import (
    content,
    one_error_line,
    resync_completed,
    sha,
    stopped_run,
)
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import UnitKey, open_store
from triofetch.testing import FaultServer, Slow

KB = 1000

# -- the command line ---------------------------------------------------------------------------

_STOPPED = re.compile(
    r"too many open files under (?P<dir>\S+): (?P<stored>\d+) files stored, "
    r"(?P<committed>\d+) committed(?P<db>; committing failed too \(.+\), rolled back: the store "
    r"is consistent)?; raise the open-file limit \(ulimit -n\) or use fewer --connections, "
    r"then run the command again"
)


def run_cli_limited(*args: str | Path, open_files: int) -> Result:
    """``python -m triofetch ARGS`` under ``ulimit -n OPEN_FILES`` (its soft limit)."""

    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    proc = subprocess.run(
        [sys.executable, "-m", "triofetch", *map(str, args)],
        env=cli_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        preexec_fn=limit,
    )
    return Result(proc)


# 120 files in 8 directories: 64 connections want far more descriptors than 20
FILES = {f"d{i % 8}/f{i:03d}.bin": content(f"f{i}", 20 * KB) for i in range(120)}


def test_sync_out_of_file_descriptors_stops_with_one_line_then_a_resync_completes(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """``triofetch sync --connections 64`` under ``ulimit -n 20`` (a few descriptors more
    than the command needs before its first download): status 1, one line naming the
    limit and what to do, ``open_files`` in JSON; no temp file, every unit in the store
    complete; with the limit lifted the same command completes.  (Each file's first
    answer comes slowly, 2 KB every 5 ms, so that the connections are open at once: sent
    at full speed, the downloads sometimes overlapped too little to meet the limit, and
    the sync completed, about once in six runs under load.)"""
    slowly = {path: [Slow(0.005, chunk=2048)] for path in FILES}
    url = publish(http_server, FILES, faults=slowly)
    root = tmp_path / "root"
    args = ("sync", url, "--root", root, "--repository", "r")
    result = run_cli_limited(*args, "--connections", "64", "--json", open_files=20)
    assert result.code == 1, result
    message = one_error_line(result.err)
    assert result.json() == {"error": {"kind": "open_files", "message": message}}
    _, committed, units = stopped_run(message, _STOPPED, root, None, FILES, http_server)

    http_server.reset_counters()
    again = subprocess.run(
        [sys.executable, "-m", "triofetch", *map(str, args)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again
    assert again.stderr == "", again
    resync_completed(again.stdout, root, None, units, http_server, committed)


@pytest.mark.parametrize("command", ["sync", "gc"])
def test_every_low_open_file_limit_says_to_raise_it(tmp_path: Path, command: str) -> None:
    """``triofetch sync`` of a local manifest into an existing store (or ``gc`` of it)
    under ``ulimit -n`` 6 and up, until it succeeds: every run that fails ends with one
    line telling to raise the open-file limit.  Before, a few limits said "cannot open the
    store: unable to open database file" (SQLite's words, kind ``store``), others ended
    with a bare "Too many open files" of a module being imported or of the temp directory
    (kind ``os_error``), and ``gc`` with one of its lease file."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "PULP_MANIFEST").write_bytes(manifest_of({"a.txt": b"alpha\n"}))
    root = tmp_path / "root"
    args = ("sync", source / "PULP_MANIFEST", "--root", root, "--repository", "r", "--json")
    assert run_cli_in_process(*args).code == 0
    if command == "gc":
        args = ("gc", "--root", root, "--json")
    failed: dict[int, str] = {}
    for limit in range(6, 40):
        result = run_cli_limited(*args, open_files=limit)
        if result.code == 0:
            break
        message = one_error_line(result.err)
        kind = result.json()["error"]["kind"]
        failed[limit] = kind
        assert "raise the open-file limit" in message and "ulimit -n" in message, (limit, result)
        assert (kind, result.code) in {("open_files", 1), ("store", 2), ("store", 1)}, (
            limit,
            result,
        )
    else:
        raise AssertionError(f"{command} failed under every limit up to 39")
    assert len(failed) >= 3 and "store" in failed.values(), failed


# -- the library ----------------------------------------------------------------------------

#: the source of the child processes' ``limit_leaving(spare)``: the lowest soft limit of
#: open files under which exactly *spare* more descriptors can be opened
_LIMIT_LEAVING = r"""
def limit_leaving(spare):
    # the lowest soft limit under which exactly `spare` more descriptors can be opened
    held = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:  # (the listing's own descriptor, closed since)
            continue
        held.add(int(name))
    free = fd = 0
    while True:  # (the limit is the next free descriptor once `spare` are counted)
        if fd not in held:
            if free == spare:
                return fd
            free += 1
        fd += 1
"""

#: ContentUnitCreator.run in a process of its own, with exactly ``spare`` more descriptors
#: allowed than it holds when the run starts; prints what the run raised, as JSON
_CHILD = r"""
import json, os, resource, sys
import trio
import triofetch
from triofetch import DeclarativeArtifact, DeclarativeUnit, StorageWriteError
from triofetch.storage import ArtifactStorage
from triofetch.store import open_store

{limit_leaving}

async def main(spec):
    units = [
        DeclarativeUnit(u["type"], tuple(u["key"]), u["fields"], [
            DeclarativeArtifact(a["url"], a["path"], {"sha256": a["sha256"]}, a["size"])
            for a in u["artifacts"]
        ])
        for u in spec["units"]
    ]
    # (one database connection, opened here: the run opens none of its own)
    async with (
        open_store(
            None,
            root=spec["root"],
            storage=ArtifactStorage(spec["root"], durable=spec.get("durable", True)),
            pool_size=1,
        ) as store,
        triofetch.Downloader(connections=12) as dl,
    ):
        creator = triofetch.ContentUnitCreator(store, dl, units_in_flight=1)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit_leaving(spec["spare"]), hard))
        try:
            report = await creator.run(units, repository="r")
        except StorageWriteError as exc:
            outcome = {
                "raised": "StorageWriteError",
                "errno": exc.errno,
                "too_many_open_files": exc.too_many_open_files,
                "path": exc.path,
                "message": str(exc),
                "cause_errno": getattr(exc.__cause__, "errno", None),
                "database_error": None if exc.database_error is None else str(exc.database_error),
                "units_new": exc.report.units_new,
                "units_failed": exc.report.units_failed,
                "version": exc.report.version,
            }
        except BaseException as exc:
            outcome = {"raised": type(exc).__name__, "message": repr(exc)}
        else:
            outcome = {
                "raised": None,
                "units_failed": report.units_failed,
                "failures": [str(f.error) for f in report.failures],
            }
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        outcome["temp_dir"] = str(store.storage.temp_dir)
        outcome["temp_files"] = sorted(os.listdir(store.storage.temp_dir))
        latest = await store.latest_version("r")
        outcome["latest"] = None if latest is None else latest.number
    print(json.dumps(outcome))

trio.run(main, json.loads(sys.argv[1]))
""".replace("{limit_leaving}", _LIMIT_LEAVING)


def _spec(unit: DeclarativeUnit) -> dict[str, object]:
    return {
        "type": unit.type,
        "key": list(unit.natural_key),
        "fields": dict(unit.fields),
        "artifacts": [
            {"url": a.urls[0], "path": a.relative_path, "sha256": a.sha256, "size": a.size}
            for a in unit.artifacts
        ],
    }


async def run_child(spec: dict[str, object]) -> dict[str, Any]:
    """Run ``_CHILD`` on *spec*; what it printed (what the run raised), as JSON."""
    child = await trio.run_process(
        [sys.executable, "-c", _CHILD, json.dumps(spec)],
        env=cli_env(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    outcome: dict[str, Any] = json.loads(child.stdout)
    return outcome


async def test_creator_run_out_of_file_descriptors_raises_storage_write_error_itself(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """The library, one unit at a time: five single-file units, then a unit of twelve files
    fetched at once, with three descriptors to spare.  The twelve connections take what
    is left (the rest wait to retry), so the temp files find none: the run raises
    StorageWriteError (EMFILE) itself, not a group and not a failure of that unit, after
    committing the five; no temp file; a run without the limit completes."""

    def artifact(name: str, size: int) -> DeclarativeArtifact:
        data = content(name, size)
        http_server.add_file(f"/lib/{name}", data)
        return DeclarativeArtifact(
            http_server.url(f"/lib/{name}"), name, {"sha256": sha(data)}, size
        )

    singles = []
    for i in range(5):
        art = artifact(f"single{i}", 20 * KB)
        singles.append(
            DeclarativeUnit(
                "file",
                (art.relative_path, art.sha256 or ""),
                {"relative_path": art.relative_path},
                [art],
            )
        )
    bundle = DeclarativeUnit(
        "bundle", ("twelve",), {}, [artifact(f"bundle/part{i:02d}", 20 * KB) for i in range(12)]
    )
    units = [*singles, bundle]
    root = tmp_path / "root"
    # (not durable: a durable commit opens the artifacts directory for its syncfs in a
    # worker thread while the next unit downloads, and that descriptor, taken at a moment
    # the machine's load decides, made a single's temp file run out before the twelve's)
    spec = {"root": str(root), "spare": 3, "durable": False, "units": [_spec(u) for u in units]}
    outcome = await run_child(spec)
    temp_dir = outcome["temp_dir"]
    assert outcome == {
        "raised": "StorageWriteError",
        "errno": errno.EMFILE,
        "too_many_open_files": True,
        "path": temp_dir,
        "message": f"too many open files under {temp_dir}",
        "cause_errno": errno.EMFILE,
        "database_error": None,
        "units_new": 5,  # committed before the stop
        "units_failed": 0,  # the unit stopped is absent, not failed
        "version": None,
        "temp_dir": temp_dir,
        "temp_files": [],
        "latest": None,  # no version: the run did not finish
    }, outcome

    async with open_store(None, root=root, create=False) as store:
        found = await check_invariants(store, units, on_demand_ok=False)
        assert set(found) == {UnitKey(u.type, u.natural_key) for u in singles}
        async with triofetch.Downloader(connections=12) as dl:
            report = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
        assert report.ok and report.created
        assert (report.units_existing, report.units_new) == (5, 1)
        found = await check_invariants(store, units, on_demand_ok=False)
        assert len(found) == len(units) and all(found.values())


async def test_creator_run_out_of_file_descriptors_for_its_sources_stops_too(
    tmp_path: Path,
) -> None:
    """The descriptor a download fails to get is that of its source (a ``file://`` file
    here; a socket alike), not its temp file: the run stops as well, with the same
    StorageWriteError (EMFILE), rather than failing every unit one by one ("cannot open
    file: Too many open files") and going on to the end."""
    source = tmp_path / "source"
    source.mkdir()
    units = []
    for i in range(6):
        data = content(f"src{i}", 5 * KB)
        (source / f"f{i}").write_bytes(data)
        art = DeclarativeArtifact((source / f"f{i}").as_uri(), f"f{i}", {"sha256": sha(data)})
        art = DeclarativeArtifact(art.urls[0], art.relative_path, {"sha256": sha(data)}, len(data))
        units.append(
            DeclarativeUnit(
                "file", (art.relative_path, sha(data)), {"relative_path": f"f{i}"}, [art]
            )
        )
    root = tmp_path / "root"
    spec = {"root": str(root), "spare": 1, "units": [_spec(u) for u in units]}
    outcome = await run_child(spec)
    assert outcome.get("raised") == "StorageWriteError", outcome
    assert (outcome["errno"], outcome["too_many_open_files"]) == (errno.EMFILE, True)
    assert (outcome["units_new"], outcome["units_failed"]) == (0, 0)
    assert (outcome["temp_files"], outcome["latest"]) == ([], None)


#: ArtifactStorage.verify and .check in a process of its own, with no descriptor to spare
#: once its files are stored; prints what each returned or raised, as JSON
_CHECK_CHILD = r"""
import json, os, resource, sys
import trio
from triofetch import StorageWriteError
from triofetch.storage import ArtifactStorage

{limit_leaving}

def outcome(call):
    try:
        result = call()
    except StorageWriteError as exc:
        return {"raised": "StorageWriteError", "too_many_open_files": exc.too_many_open_files,
                "path": exc.path}
    return {"returned": repr(result)}

async def main(root):
    storage = ArtifactStorage(root)
    digests = [(await storage.add_bytes(b"file %d" % i)).sha256 for i in range(20)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit_leaving(0), hard))
    try:
        try:
            report = await storage.verify()
            verified = {"returned": [c.reason for c in report.corrupted]}
        except StorageWriteError as exc:
            verified = {"raised": "StorageWriteError",
                        "too_many_open_files": exc.too_many_open_files, "path": exc.path}
        try:
            checked = {"returned": await storage.check(digests[0])}
        except StorageWriteError as exc:
            checked = {"raised": "StorageWriteError",
                       "too_many_open_files": exc.too_many_open_files, "path": exc.path}
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    again = await storage.verify()
    print(json.dumps({"verify": verified, "check": checked,
                      "again": [c.reason for c in again.corrupted], "checked": again.checked}))

trio.run(main, sys.argv[1])
""".replace("{limit_leaving}", _LIMIT_LEAVING)


async def test_verify_and_check_out_of_file_descriptors_stop_rather_than_call_files_corrupt(
    tmp_path: Path,
) -> None:
    """Hashing a stored file needs a descriptor: with none left (EMFILE), verify() and
    check() raise StorageWriteError (too_many_open_files), ungrouped, as a run does.  They
    reported every intact file as corrupt ('unreadable: [Errno 24] Too many open files'),
    so that ``triofetch verify`` said the store was damaged and ``triofetch repair``
    downloaded intact files again.  With the limit lifted, all is intact."""
    root = tmp_path / "root"
    child = await trio.run_process(
        [sys.executable, "-c", _CHECK_CHILD, str(root)],
        env=cli_env(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    stopped = {
        "raised": "StorageWriteError",
        "too_many_open_files": True,
        "path": str(root / "artifacts"),
    }
    assert json.loads(child.stdout) == {
        "verify": stopped,
        "check": stopped,
        "again": [],
        "checked": 20,
    }, child.stderr.decode()


#: open_store(readonly=...) in a process of its own with *spare* descriptors to spare;
#: prints the error it raised, or "opened"
_READ_CHILD = r"""
import os, resource, sys
import trio
from triofetch.store import open_store

{limit_leaving}

async def main(root, spare, readonly):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit_leaving(spare), hard))
    try:
        async with open_store(None, root=root, readonly=readonly, create=False) as store:
            await store.repositories()
    except Exception as exc:
        print(type(exc).__name__, exc)
    else:
        print("opened")

trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3] == "ro")
""".replace("{limit_leaving}", _LIMIT_LEAVING)


@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_a_store_opened_with_too_few_descriptors_says_so(tmp_path: Path, mode: str) -> None:
    """Opened read-only with no descriptor (or one, two) to spare, a store in a writable
    directory was refused as if its directory could not be written and its write-ahead
    log held commits ("cannot read ... read-only: its directory may not be written ...",
    what SQLite's bare "unable to open database file" means only there); opened for
    writing, it said SQLite's "unable to open database file" or a bare "Too many open
    files" of its lock file.  Both name the descriptors now.  With enough of them it
    opens."""
    root = tmp_path / "root"
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "PULP_MANIFEST").write_bytes(manifest_of({"a.txt": b"alpha\n"}))
    made = run_cli_in_process("sync", source / "PULP_MANIFEST", "--root", root, "--repository", "r")
    assert made.code == 0, made

    def read(spare: int) -> str:
        child = subprocess.run(
            [sys.executable, "-c", _READ_CHILD, str(root), str(spare), mode],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        return child.stdout.strip()

    for spare in (0, 2):
        said = read(spare)
        assert said.startswith("StoreError cannot open "), said
        assert "too many open files" in said and "ulimit -n" in said, said
        assert "may not be written" not in said, said
    assert read(16) == "opened"
