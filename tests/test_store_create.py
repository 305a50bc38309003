"""Making a new SQLite store: a maker killed at any moment leaves no database or a complete
one, and makers racing for the same new store all open it.

A maker killed between creating the database file and committing its schema left a
table-less ``triofetch.sqlite3`` (and its lock file) that every later open refused as
foreign (``NotAStore``), ``triofetch sync`` too, until the files were deleted by hand.  The
database is now made under a temp name (``<db>.creating``) and renamed into place.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

import triofetch
from tests._cli_helpers import run_cli
from triofetch import NotAStore, StoreNotFound
from triofetch._cli._common import check_new_root
from triofetch.store import DEFAULT_DATABASE_NAME as DB, SCHEMA_VERSION, open_store

SRC = str(Path(triofetch.__file__).resolve().parent.parent)


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """*script* in a new interpreter importing this triofetch."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": SRC + (os.pathsep + path if path else "")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def schema_version(path: Path) -> int:
    """The schema version *path* records, read with sqlite3 alone."""
    conn = sqlite3.connect(path)  # not read-only: it may have a WAL to recover
    try:
        return int(conn.execute("SELECT version FROM triofetch_schema").fetchone()[0])
    finally:
        conn.close()


# The maker kills itself (SIGKILL: nothing runs after it) at one step of making the store.
_KILLED_MAKER = """
    import os, signal, sys
    import trio
    from triofetch.store import _sqlite, open_store

    root, point = sys.argv[1], sys.argv[2]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_migrate, real_rename = _sqlite.migrate, os.rename

    def migrate(conn, *args):
        if point == "schema started":
            die()
        real_migrate(conn, *args)
        if point == "schema written":  # every table made, the transaction not committed
            die()

    def rename(*args, **kwargs):
        real_rename(*args, **kwargs)
        if point == "renamed":
            die()

    _sqlite.migrate = migrate
    os.rename = rename

    async def make():
        async with open_store(root=root):
            pass

    trio.run(make)
"""


@pytest.mark.parametrize("point", ["schema started", "schema written", "renamed"])
async def test_a_maker_killed_at_any_step_leaves_no_database_or_a_complete_one(
    tmp_path: Path, point: str
) -> None:
    root = tmp_path / "root"
    maker = await trio.to_thread.run_sync(run_python, _KILLED_MAKER, str(root), point)
    assert maker.returncode == -signal.SIGKILL, maker.stderr  # killed where it was meant to
    db = root / DB
    if point == "renamed":
        assert schema_version(db) == SCHEMA_VERSION  # complete, only not in WAL mode yet
        async with open_store(root=root, create=False) as store:
            assert await store.repositories() == []
    else:
        # no database: the store is not there (not "not a store"), for every kind of open
        assert not db.exists()
        for kwargs in ({"create": False}, {"readonly": True}):
            with pytest.raises(StoreNotFound):
                await open_store(root=root, **kwargs)  # type: ignore[arg-type]
        # `triofetch sync` makes the store there (it refused the root: "not a triofetch
        # database")
        manifest = tmp_path / "PULP_MANIFEST"
        manifest.write_text("")
        synced = await trio.to_thread.run_sync(
            lambda: run_cli("sync", manifest.as_uri(), "--root", root, "--repository", "s")
        )
        assert synced.code == 0, synced
    async with open_store(root=root) as store:  # made (or opened), and it works
        await store.create_repository("r")
    async with open_store(root=root, create=False) as store:
        assert "r" in await store.repositories()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert not (root / f"{DB}.creating").exists()  # the killed maker's temp file: removed


# Forks a maker per root and kills it (SIGKILL) after a random delay of at most the time a
# store takes to make: some die before, some while, some after making it.
_KILL_LOOP = """
    import os, random, signal, sys, time
    import trio
    from triofetch.store import open_store

    async def make(root):
        async with open_store(root=root):
            pass

    base, count = sys.argv[1], int(sys.argv[2])
    trio.run(make, os.path.join(base, "warm-up"))  # every lazy import done
    start = time.perf_counter()
    trio.run(make, os.path.join(base, "timed"))
    took = time.perf_counter() - start
    rng = random.Random(20240613)
    for i in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                trio.run(make, os.path.join(base, str(i)))
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, 1.5 * took))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""


async def test_makers_killed_at_random_moments_leave_stores_that_open(tmp_path: Path) -> None:
    count = 40
    loop = await trio.to_thread.run_sync(run_python, _KILL_LOOP, str(tmp_path), str(count))
    assert loop.returncode == 0, loop.stderr
    incomplete, refused = [], []
    for i in range(count):
        root = tmp_path / str(i)
        db = root / DB
        if db.exists():
            with sqlite3.connect(db) as conn:  # not read-only: it may have a WAL to recover
                tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if "triofetch_schema" not in {name for (name,) in tables}:
                    incomplete.append(f"{i}: {sorted(os.listdir(root))}")
        try:
            async with open_store(root=root) as store:
                assert await store.repositories() == []
        except NotAStore as exc:
            refused.append(f"{i}: {exc}")
        else:
            assert schema_version(db) == SCHEMA_VERSION
            assert not (root / f"{DB}.creating").exists()
    assert (incomplete, refused) == ([], [])


# Makers in separate processes, released together, all making the same new store.
_RACING_MAKER = """
    import os, sys, time
    import trio
    from triofetch.store import open_store

    root, name, go = sys.argv[1:4]

    async def make():
        while not os.path.exists(go):
            await trio.sleep(0.001)
        async with open_store(root=root) as store:
            await store.create_repository(name)

    trio.run(make)
"""


async def test_processes_and_tasks_making_the_same_store_at_once_all_open_it(
    tmp_path: Path,
) -> None:
    root, go = tmp_path / "root", tmp_path / "go"
    names = [f"p{i}" for i in range(3)]
    results: list[subprocess.CompletedProcess[str]] = []

    async def process(name: str) -> None:
        results.append(
            await trio.to_thread.run_sync(run_python, _RACING_MAKER, str(root), name, str(go))
        )

    released = trio.Event()

    async def task(name: str) -> None:
        await released.wait()
        async with open_store(root=root) as store:
            await store.create_repository(name)

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(process, name)
        for name in ("t0", "t1"):
            nursery.start_soon(task, name)
        await trio.sleep(0.5)  # the interpreters started, waiting for the go
        go.touch()
        released.set()
    assert [r.returncode for r in results] == [0] * len(names), [r.stderr for r in results]
    async with open_store(root=root, create=False) as store:
        assert sorted(await store.repositories()) == sorted([*names, "t0", "t1"])
    assert not (root / f"{DB}.creating").exists()


async def test_a_leftover_temp_database_is_replaced_by_the_next_maker(tmp_path: Path) -> None:
    (tmp_path / f"{DB}.creating").write_bytes(b"half a database, left by a killed maker")
    (tmp_path / f"{DB}.lock").touch()
    check_new_root(tmp_path, None)  # a root holding only what a maker leaves: a new store
    async with open_store(root=tmp_path) as store:
        await store.create_repository("r")
    assert not (tmp_path / f"{DB}.creating").exists()
    assert schema_version(tmp_path / DB) == SCHEMA_VERSION


def _tableless(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda path: path.write_bytes(b""), id="empty"),
        pytest.param(_tableless, id="sqlite without tables"),
    ],
)
async def test_a_file_without_tables_beside_a_lock_file_is_still_refused(
    tmp_path: Path, make: object
) -> None:
    """A maker never leaves these now, so they are not taken for a store being made: a
    database truncated to nothing, or emptied, is not re-created as if it were new."""
    path = tmp_path / DB
    (tmp_path / f"{DB}.lock").touch()
    make(path)  # type: ignore[operator]
    before = path.read_bytes()
    for kwargs in ({"create": True}, {"create": False}, {"readonly": True}):
        with pytest.raises(NotAStore):
            await open_store(root=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert path.read_bytes() == before


def test_a_checkpointer_that_cannot_open_the_database_ends_quietly(tmp_path: Path) -> None:
    """The WAL checkpointer thread's own connection may fail to open (no file descriptor
    left: ``ulimit -n`` low); the thread died with an uncaught ``sqlite3.OperationalError``
    and printed its traceback on stderr.  It ends quietly now (the writers' autocheckpoint
    remains), and stopping it still works."""
    import threading

    from triofetch.store._sqlite import _Checkpointer

    died: list[threading.ExceptHookArgs] = []
    hook = threading.excepthook
    threading.excepthook = died.append
    try:
        checkpointer = _Checkpointer(tmp_path / "no such directory" / "triofetch.sqlite3")
        checkpointer.poke()
        checkpointer.stop()
    finally:
        threading.excepthook = hook
    assert [str(d.exc_value) for d in died] == []
