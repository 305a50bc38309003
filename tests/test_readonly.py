"""Read commands never write, and never trust an empty store (issue 13, item 6).

The library: ``open_store(create=False)`` and ``open_store(readonly=True)`` on SQLite and on a
real PostgreSQL; ``StoreNotFound`` and ``NotAStore``; a read-only ``ArtifactStorage``;
``ArtifactStorage.verify(expected=...)`` both ways.  The command line, as subprocesses: every
command facing a missing, empty or foreign database; ``sync`` into a root that holds other
files; ``verify`` checking every recorded file and listing orphans; and ``list``,
``versions``, ``verify`` and ``export`` on a root that is a real read-only bind mount.  The
syncs that only fill a store for a case run the same main() in process
(tests/_cli_helpers.py, run_cli_in_process).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio

from tests._cli_helpers import Result, cli_env, publish, run_cli, run_cli_in_process
from triofetch import (
    ArtifactStorage,
    NotAStore,
    SchemaVersionError,
    StoreError,
    StoreNotFound,
)
from triofetch.errors import redact_url
from triofetch.store import SCHEMA_VERSION, ArtifactRecord, NewUnit, NewUnitArtifact, open_store
from triofetch.testing import FaultServer

FILES = {"a.txt": b"alpha\n", "dir/b.bin": b"b" * 3000, "c.txt": b"gamma\n"}
DB = "triofetch.sqlite3"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(result: Result, message: str) -> None:
    """Exit status 2 and exactly one line on stderr: ``triofetch: error: <message>``."""
    assert result.code == 2, result
    assert result.err == f"triofetch: error: {message}\n", result


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under *root*: its size and sha256 (directories as size -1)."""
    found: dict[str, tuple[int, str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            found[str(Path(dirpath, d).relative_to(root))] = (-1, "")
        for f in files:
            path = Path(dirpath, f)
            found[str(path.relative_to(root))] = (path.stat().st_size, sha(path.read_bytes()))
    return found


def synced_root(server: FaultServer, tmp_path: Path, files: dict[str, bytes] = FILES) -> Path:
    url = publish(server, files)
    root = tmp_path / "root"
    result = run_cli_in_process("sync", url, "--root", root, "--repository", "r")
    assert result.code == 0, result
    return root


def file_unit(name: str, data: bytes) -> NewUnit:
    rec = ArtifactRecord(sha(data), len(data))
    return NewUnit(
        "file", (name, rec.sha256), {"relative_path": name}, (NewUnitArtifact(name, rec),)
    )


# -- read-only roots ------------------------------------------------------------------------


@functools.cache
def _bind_mounts_work() -> bool:
    """Whether this process may make a private mount namespace with a read-only bind mount."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "dst")
        src.mkdir()
        dst.mkdir()
        probe = subprocess.run(
            [
                *("unshare", "-m", "sh", "-c", _MOUNT_RO + ' && ! touch "$2/x" 2>/dev/null'),
                *("sh", str(src), str(dst)),
            ],
            capture_output=True,
        )
        return probe.returncode == 0


#: in a private mount namespace (unshare -m: nothing is seen outside), $1 bind-mounted
#: read-only on $2
_MOUNT_RO = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2"'


#: runs a command as nobody (the fallback for a root user who may not mount)
_UNPRIVILEGED = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--")


def run_on_read_only_root(root: Path, *args: str | Path) -> Result:
    """``triofetch ARGS`` with *root* read-only; ``{root}`` in ARGS is where it is seen.

    A real read-only bind mount in a private mount namespace (``unshare -m``, ``mount
    --bind``, ``mount -o remount,bind,ro``): writes fail with EROFS, for root too.  Where
    mounting is not allowed the tree is made read-only with ``chmod -R a-w`` instead, and
    the command runs as an unprivileged user (``setpriv`` to nobody when the tests run as
    root, who would otherwise write anyway).
    """
    python = [sys.executable, "-m", "triofetch"]
    if _bind_mounts_work():
        seen = root.parent / f"{root.name}-ro"
        seen.mkdir(exist_ok=True)
        argv = [str(a).replace("{root}", str(seen)) for a in args]
        cmd = ["unshare", "-m", "sh", "-c", _MOUNT_RO + ' && shift 2 && exec "$@"', "sh"]
        cmd += [str(root), str(seen), *python, *argv]
    else:  # pragma: no cover - a sandbox without mount namespaces
        argv = [str(a).replace("{root}", str(root)) for a in args]
        for dirpath, _dirs, files in os.walk(root):
            for name in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                mode = os.stat(name).st_mode
                os.chmod(name, (mode & ~0o222) | 0o444 | (0o111 if name == dirpath else 0))
        cmd = [*(_UNPRIVILEGED if os.geteuid() == 0 else ()), *python, *argv]
    proc = subprocess.run(
        cmd, env=cli_env(), capture_output=True, text=True, encoding="utf-8", timeout=60
    )
    return Result(proc)


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    """A temp dir every user may enter (the setpriv fallback runs commands as nobody)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)
        for dirpath, _dirs, _files in os.walk(tmp):
            os.chmod(dirpath, 0o755)  # the fallback's chmod -R a-w, undone for the cleanup


def test_read_commands_on_a_read_only_bind_mount(
    http_server: FaultServer, world_readable_tmp: Path
) -> None:
    root = synced_root(http_server, world_readable_tmp)
    dest = world_readable_tmp / "out"
    dest.mkdir()
    os.chmod(dest, 0o777)
    before = snapshot(root)

    listed = run_on_read_only_root(root, "list", "--root", "{root}", "--repository", "r")
    assert listed.code == 0, listed
    assert sorted(line.split()[-1] for line in listed.out.splitlines()) == sorted(FILES)
    versions = run_on_read_only_root(root, "versions", "--root", "{root}", "--repository", "r")
    assert versions.code == 0, versions
    assert "complete" in versions.out
    verified = run_on_read_only_root(root, "verify", "--root", "{root}")
    assert verified.code == 0, verified
    assert verified.out == f"verified {len(FILES)} stored files: all intact\n"
    exported = run_on_read_only_root(root, "export", "--root", "{root}", "--repository", "r", dest)
    assert exported.code == 0, exported
    for path, data in FILES.items():
        assert (dest / path).read_bytes() == data
    # a command that writes says so in one line, without a traceback
    refused = run_on_read_only_root(root, "gc", "--root", "{root}")
    assert refused.code != 0 and "Traceback" not in refused.err, refused
    assert len(refused.err.splitlines()) == 1, refused
    assert snapshot(root) == before


def test_a_wal_left_by_a_killed_writer_is_read_on_a_read_only_mount(
    http_server: FaultServer, world_readable_tmp: Path
) -> None:
    """A read-only directory makes SQLite open the database as immutable, which would ignore
    the write-ahead log: commits a killed writer left there must still be seen."""
    if not _bind_mounts_work():  # pragma: no cover - the chmod fallback leaves -shm writable
        pytest.skip("needs a read-only bind mount")
    root = synced_root(http_server, world_readable_tmp)
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys, trio\n"
            "from triofetch import open_store\n"
            "async def main():\n"
            "    store = await open_store(root=sys.argv[1])\n"
            "    await store.create_repository('later')\n"
            "    os._exit(0)\n"
            "trio.run(main)\n",
            str(root),
        ],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 0, killed.stderr
    assert (root / f"{DB}-wal").stat().st_size > 0
    listed = run_on_read_only_root(root, "list", "--root", "{root}", "--repository", "later")
    assert listed.code == 0, listed  # the repository is there: not "no repository named"
    assert "has no version yet" in listed.err


def test_read_commands_write_nothing_on_a_writable_root(
    http_server: FaultServer, tmp_path: Path
) -> None:
    root = synced_root(http_server, tmp_path)
    os.unlink(root / f"{DB}.lock")
    os.unlink(root / f"{DB}.lease")
    db = (root / DB).read_bytes()
    for args in (
        ("list", "--repository", "r"),
        ("versions", "--repository", "r"),
        ("verify",),
        ("export", "--repository", "r", tmp_path / "out"),
    ):
        result = run_cli(*args, "--root", root)
        assert result.code == 0, result
    assert (root / DB).read_bytes() == db
    # no lock files; SQLite's own -wal/-shm are what any reader of a WAL database shares
    assert {p.name for p in root.iterdir()} <= {
        "artifacts",
        "tmp",
        DB,
        f"{DB}-wal",
        f"{DB}-shm",
    }


# -- missing, empty and foreign databases ---------------------------------------------------


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes (text) VALUES ('mine')")
    conn.commit()
    conn.close()


DATABASES = {
    "empty": lambda path: path.write_bytes(b""),
    "not sqlite": lambda path: path.write_bytes(b"just some text, not a database\n" * 200),
    "foreign sqlite": _foreign_sqlite,
}


def test_a_zero_byte_database_is_neither_recreated_by_list_nor_trusted_by_verify(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """The defect of issue 13: ``list`` wrote a new schema into a truncated database, and
    ``verify`` then said "all intact" about a store whose records were gone."""
    root = synced_root(http_server, tmp_path)
    with open(root / DB, "r+b") as f:
        f.truncate(0)
    for leftover in (f"{DB}-wal", f"{DB}-shm"):
        (root / leftover).unlink(missing_ok=True)
    message = f"{root}/{DB} is not a triofetch database"
    one_line(run_cli("list", "--root", root, "--repository", "r"), message)
    assert (root / DB).stat().st_size == 0
    one_line(run_cli("verify", "--root", root), message)
    one_line(run_cli("verify", "--root", root, "--json"), message)
    assert (root / DB).stat().st_size == 0


@pytest.mark.parametrize("kind", ["missing", *DATABASES])
@pytest.mark.parametrize("command", ["list", "versions", "verify", "export", "repair", "sync"])
def test_every_command_refuses_a_missing_empty_or_foreign_database(
    http_server: FaultServer, tmp_path: Path, kind: str, command: str
) -> None:
    root = tmp_path / "root"
    (root / "artifacts").mkdir(parents=True)  # a root that is not empty
    if kind != "missing":
        DATABASES[kind](root / DB)
    before = snapshot(root)
    args: list[str | Path] = {
        "list": ["list", "--repository", "r"],
        "versions": ["versions", "--repository", "r"],
        "verify": ["verify"],
        "export": ["export", "--repository", "r", tmp_path / "out"],
        "repair": ["repair"],
        "sync": ["sync", publish(http_server, FILES), "--repository", "r"],
    }[command]
    # in-process: the refusal comes before any work (the subprocess path is the same main())
    result = run_cli_in_process(*args, "--root", root)
    if kind == "missing":
        one_line(result, f"no triofetch store at {root}")
    else:
        one_line(result, f"{root}/{DB} is not a triofetch database")
    assert snapshot(root) == before
    assert not (tmp_path / "out").exists()


def test_sync_makes_a_store_only_in_an_empty_or_absent_root(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = publish(http_server, FILES)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("someone's files\n")
    one_line(
        run_cli("sync", url, "--root", busy, "--repository", "r"), f"no triofetch store at {busy}"
    )
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for root in (empty, tmp_path / "absent" / "root"):
        result = run_cli("sync", url, "--root", root, "--repository", "r")
        assert result.code == 0, result
        assert run_cli("verify", "--root", root).code == 0
    # a store whose database is lost: its files are not taken for a new store's
    (empty / DB).unlink()
    one_line(
        run_cli("sync", url, "--root", empty, "--repository", "r"), f"no triofetch store at {empty}"
    )
    assert not (empty / DB).exists()


def test_a_damaged_database_is_exit_status_2(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"f{i:03}.txt": f"file {i} ".encode() * 40 for i in range(300)}
    root = synced_root(http_server, tmp_path, files)
    size = (root / DB).stat().st_size
    with open(root / DB, "r+b") as f:  # every page but the first (the schema) is garbage
        f.seek(4096)
        f.write(b"\xa5" * (size - 4096))
    for args in (
        ("list", "--repository", "r"),
        ("verify",),
        ("export", "--repository", "r", tmp_path / "out"),
    ):
        result = run_cli(*args, "--root", root)
        assert result.code == 2, result
        assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err, result
        assert "malformed" in result.err or "not a triofetch database" in result.err, result


# -- verify, both ways ----------------------------------------------------------------------


def test_verify_checks_every_recorded_file_and_lists_orphans(
    http_server: FaultServer, tmp_path: Path
) -> None:
    root = synced_root(http_server, tmp_path)
    # version 2 no longer holds a.txt: its file is recorded, and only version 1 holds it
    rest = {p: d for p, d in FILES.items() if p != "a.txt"}
    url = publish(http_server, rest, prefix="/v2")
    again = run_cli_in_process("sync", url, "--root", root, "--repository", "r", "--mirror")
    assert again.code == 0, again
    digest = sha(FILES["a.txt"])
    gone = root / "artifacts" / digest[:2] / digest[2:4] / digest
    gone.unlink()  # a file only an old version holds: an error all the same (missed before)
    orphan_data = b"a file no record knows\n"
    orphan = root / "artifacts" / sha(orphan_data)[:2] / sha(orphan_data)[2:4] / sha(orphan_data)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(orphan_data)

    result = run_cli("verify", "--root", root)
    assert result.code == 1, result
    assert result.out == f"verified {len(FILES)} stored files: 1 corrupted or missing, 1 orphan\n"
    assert result.err.splitlines() == [
        f"triofetch: corrupted: {digest}: missing ({gone})",
        f"triofetch: orphan: {sha(orphan_data)} ({orphan}) — no record; 'triofetch gc' removes it",
    ]
    report = run_cli("verify", "--root", root, "--json")
    assert report.code == 1, report
    assert report.json() == {
        "checked": len(FILES),
        "ok": False,
        "corrupted": [{"sha256": digest, "path": str(gone), "reason": "missing"}],
        "orphans": [{"sha256": sha(orphan_data), "path": str(orphan)}],
        "removed_by_gc": 0,
    }
    # orphans alone are no error
    gone.parent.mkdir(parents=True, exist_ok=True)
    gone.write_bytes(FILES["a.txt"])
    alone = run_cli("verify", "--root", root, "--json")
    assert alone.code == 0, alone
    assert alone.json()["ok"] is True and len(alone.json()["orphans"]) == 1
    human = run_cli("verify", "--root", root)
    assert human.code == 0 and human.out.endswith(": all intact, 1 orphan\n"), human


async def test_storage_verify_expected_both_ways(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path)
    good = await storage.add_bytes(b"good")
    damaged = await storage.add_bytes(b"damaged")
    orphan = await storage.add_bytes(b"orphan")
    damaged.path.chmod(0o644)
    damaged.path.write_bytes(b"DAMAGED")
    missing = sha(b"missing")
    report = await storage.verify(expected={good.sha256: 4, damaged.sha256: 7, missing: 7})
    assert report.checked == 3 and not report.ok
    assert {c.sha256: c.reason for c in report.corrupted} == {
        damaged.sha256: f"sha256 is {sha(b'DAMAGED')}",
        missing: "missing",
    }
    assert report.orphans == (orphan.path,)
    with pytest.raises(ValueError):
        await storage.verify([good.sha256], expected={})


# -- the library ----------------------------------------------------------------------------


async def test_readonly_storage_makes_no_directory_and_refuses_writes(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()
    assert (await storage.verify(expected={})).checked == 0
    assert not await storage.exists(sha(b"x"))
    for write in (storage.add_bytes(b"x"), storage.cleanup_temp()):
        with pytest.raises(StoreError, match="read-only"):
            await write
    assert not (tmp_path / "nothing").exists()


async def test_sqlite_missing_store_is_store_not_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / DB}"
    for kwargs in ({"create": False}, {"readonly": True}, {"create": True, "readonly": True}):
        with pytest.raises(StoreNotFound) as caught:
            await open_store(url, root=tmp_path / "sub", **kwargs)  # type: ignore[arg-type]
        assert isinstance(caught.value, LookupError)
        assert caught.value.location == str(tmp_path / "sub" / DB)
    assert os.listdir(tmp_path) == []  # no directory, no lock file, no storage


@pytest.mark.parametrize("kind", list(DATABASES))
@pytest.mark.parametrize(("create", "readonly"), [(True, False), (False, False), (False, True)])
async def test_an_existing_file_that_is_not_a_store_is_never_made_one(
    tmp_path: Path, kind: str, create: bool, readonly: bool
) -> None:
    path = tmp_path / DB
    DATABASES[kind](path)
    before = path.read_bytes()
    with pytest.raises(NotAStore) as caught:
        await open_store(root=tmp_path, create=create, readonly=readonly)
    assert caught.value.location == str(path)
    assert str(caught.value).startswith(f"{path} is not a triofetch database (")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [DB]  # no lock file, no storage made beside it


async def test_readonly_store_reads_and_refuses_every_write(store_url: str, tmp_path: Path) -> None:
    async with open_store(store_url, root=tmp_path / "root") as store:
        assert not store.readonly
        version = await store.new_version("r")
        report = await store.commit_units([file_unit("a", b"a")], version=version)
        await store.complete_version(version)
        assert report.outcomes
    async with open_store(store_url, root=tmp_path / "root", readonly=True) as store:
        assert store.readonly and store.storage is not None and store.storage.readonly
        assert [u.key.natural_key[0] for u in await store.list_units("r", None)] == ["a"]
        latest = await store.latest_version("r")
        assert latest is not None
        for write in (
            store.create_repository("s"),
            store.new_version("r"),
            store.commit_units([file_unit("b", b"b")]),
            store.remove_from_version(latest, []),
            store.collect_garbage(),
        ):
            with pytest.raises(StoreError, match="the store was opened read-only"):
                await write
        with pytest.raises(StoreError, match="the store was opened read-only"):
            async with store.lease():
                pass
        backend = store._backend
        if store.dialect == "postgresql":
            setting = await trio.to_thread.run_sync(
                backend.run_read,
                lambda c: c.execute("SHOW default_transaction_read_only").fetchone()[0],
            )
            assert setting == "on"
            with pytest.raises(StoreError, match="read-only transaction"):
                await trio.to_thread.run_sync(
                    backend.run_read, lambda c: c.execute("DELETE FROM version_units")
                )
        else:
            with pytest.raises(StoreError, match=r"readonly|read-only"):
                await trio.to_thread.run_sync(
                    backend.run_read, lambda c: c.execute("DELETE FROM version_units")
                )
    async with open_store(store_url) as store:
        assert len(await store.list_units("r", None)) == 1


async def test_sqlite_readonly_makes_no_lock_file_and_no_checkpointer(tmp_path: Path) -> None:
    async with open_store(root=tmp_path) as store:
        await store.create_repository("r")
    for name in (f"{DB}.lock", f"{DB}.lease"):
        (tmp_path / name).unlink(missing_ok=True)
    async with open_store(root=tmp_path, readonly=True) as store:
        assert store._backend._checkpointer is None  # type: ignore[attr-defined]
        assert await store.repositories() == ["r"]
    assert not (tmp_path / f"{DB}.lock").exists()


def schema_version(url: str, set_to: int | None = None) -> int:
    """The schema version a store's database records (set first to *set_to*), read with the
    database's own driver: no triofetch code in the way."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite://") :]) as sconn:
            if set_to is not None:
                sconn.execute("UPDATE triofetch_schema SET version = ?", (set_to,))
            return int(sconn.execute("SELECT version FROM triofetch_schema").fetchone()[0])
    with psycopg.connect(url, autocommit=True) as pconn:
        if set_to is not None:
            pconn.execute("UPDATE triofetch_schema SET version = %s", (set_to,))
        row = pconn.execute("SELECT version FROM triofetch_schema").fetchone()
        assert row is not None
        return int(row[0])


async def test_readonly_never_migrates(store_url: str) -> None:
    async with open_store(store_url):
        pass
    schema_version(store_url, set_to=SCHEMA_VERSION - 1)
    with pytest.raises(StoreError, match="run a command that writes") as caught:
        await open_store(store_url, readonly=True)
    assert not isinstance(caught.value, SchemaVersionError)
    assert f"schema version {SCHEMA_VERSION - 1}" in str(caught.value)
    assert schema_version(store_url) == SCHEMA_VERSION - 1  # nothing was written
    schema_version(store_url, set_to=99)
    with pytest.raises(SchemaVersionError, match="newer triofetch"):
        await open_store(store_url, readonly=True)


@pytest.mark.postgres
async def test_postgresql_schema_only_in_a_database_of_its_own(postgres_dsn: str) -> None:
    for kwargs in ({"create": False}, {"readonly": True}):
        with pytest.raises(StoreNotFound) as caught:
            await open_store(postgres_dsn, **kwargs)  # type: ignore[arg-type]
        assert str(caught.value) == f"no triofetch store in database {redact_url(postgres_dsn)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)  # nothing was created
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(NotAStore, match="invoices"):
        await open_store(postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        names = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert names.fetchall() == [("invoices",)]
        conn.execute("DROP TABLE invoices")
    async with open_store(postgres_dsn) as store:  # an empty database: a store is made
        await store.create_repository("r")
    async with open_store(postgres_dsn, readonly=True) as store:
        assert await store.repositories() == ["r"]


@pytest.mark.postgres
def test_postgresql_read_commands_need_a_store(
    http_server: FaultServer, tmp_path: Path, postgres_dsn: str
) -> None:
    root = tmp_path / "root"
    where = redact_url(postgres_dsn)
    for args in (("list", "--repository", "r"), ("verify",), ("versions", "--repository", "r")):
        result = run_cli(*args, "--root", root, "--db", postgres_dsn)
        one_line(result, f"no triofetch store in database {where}")
    assert not root.exists()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    url = publish(http_server, FILES)
    refused = run_cli("sync", url, "--root", root, "--db", postgres_dsn, "--repository", "r")
    one_line(refused, f"{where} is not a triofetch database")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE invoices")
    made = run_cli("sync", url, "--root", root, "--db", postgres_dsn, "--repository", "r")
    assert made.code == 0, made
    listed = run_cli("list", "--root", root, "--db", postgres_dsn, "--repository", "r")
    assert listed.code == 0, listed
