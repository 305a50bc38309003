"""Issue 14, items 4 and 5: signals, pipes, faults of the command line and its smaller ones.

Real parts only: real signals to a real ``triofetch`` process, a real pipe whose reader goes
away, a real HTTP server on 127.0.0.1 whose Slow faults keep a sync busy, a real SQLite file
damaged page by page, a closed loopback port and a silent listener for PostgreSQL.  Each
case asserts the exit status, the single line on stderr, no traceback, no temp file, and
for the interrupted sync a store the project's own invariants find whole, then a re-sync
that completes.  The syncs that only fill a store for a case, the listings read back, and
the refusals that need no process of their own (a bad flag, a database damaged before it
opens, in JSON) run the same main() in process (tests/_cli_helpers.py, run_cli_in_process);
the commands signalled, piped or timed, and the damaged database "through the command",
run as processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from tests._cli_helpers import (
    cli_env,
    file_requests,
    manifest_of,
    publish,
    run_cli,
    run_cli_in_process,
    start_cli,
)
from tests._invariants import check_invariants
from triofetch import InvalidInput, StoreError, open_store, parse_pulp_manifest
from triofetch.__main__ import main
from triofetch._cli import _export
from triofetch._cli._startup import EXIT_INTERNAL, internal_error_line, stop_message
from triofetch.manifest import manifest_base_url
from triofetch.testing import FaultServer, PostgresServer, Slow


def temp_files(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def has_open(pid: int, path: Path) -> bool:
    """Whether process *pid* has *path* open (one of its descriptors, ``/proc/PID/fd``)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        names = list(fds.iterdir())
    except OSError:
        return False
    for fd in names:
        try:
            if os.readlink(fd) == os.path.realpath(path):
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """The process's output once it ended; a process still running after *timeout* seconds
    fails the test with the stacks of its threads (started with ``PYTHONFAULTHANDLER=1``,
    it prints them on SIGABRT), so that a hang says where it hangs."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        raise AssertionError(
            f"still running {timeout} s after the test's signal; where it was:\n{err[-8000:]}"
        ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def file_manifest(where: Path, count: int, size: int = 24) -> Path:
    """*count* small files under *where* and their PULP_MANIFEST (a file:// source)."""
    lines = []
    for i in range(count):
        path = f"d{i % 20}/f{i:05}.txt"
        data = f"file {i:05}\n".encode() * (size // 11 + 1)
        (where / path).parent.mkdir(parents=True, exist_ok=True)
        (where / path).write_bytes(data)
        lines.append(f"{path},{hashlib.sha256(data).hexdigest()},{len(data)}\n")
    (where / "PULP_MANIFEST").write_text("".join(lines))
    return where / "PULP_MANIFEST"


# -- SIGTERM is handled as SIGINT is ----------------------------------------------------------


async def test_sigterm_mid_sync_then_a_completing_resync(
    http_server: FaultServer, tmp_path: Path
) -> None:
    files = {f"d{i % 7}/f{i:03}.bin": os.urandom(4096) for i in range(160)}
    url = publish(http_server, files, faults={p: [Slow(0.02, 512)] for p in files})
    root = tmp_path / "root"
    args = ("sync", url, "--root", root, "--repository", "r", "--connections", "4")
    proc = start_cli(*args)
    try:
        while len(file_requests(http_server)) < 30:
            assert proc.poll() is None, proc.communicate()
            await trio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = await trio.to_thread.run_sync(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, (out, err)
    assert one_line(err) == f"triofetch: {stop_message(signal.SIGTERM)}"
    assert temp_files(root) == []

    # consistent: every unit complete or absent, the files intact, no version half-made
    universe = list(
        parse_pulp_manifest(
            manifest_of(files).splitlines(keepends=True), base_url=manifest_base_url(url)
        ).units()
    )
    async with open_store(root=root) as store:
        state = await check_invariants(store, universe, on_demand_ok=False)
        assert state and all(state.values())  # some committed before the signal, all whole
        assert len(state) < len(files)
        assert await store.latest_version("r") is None
        assert all(v.complete for v in await store.versions("r"))

    for path, data in files.items():  # no more slow answers
        http_server.add_file(f"/repo/{path}", data)
    result = await trio.to_thread.run_sync(lambda: run_cli(*args, "--json"))
    assert result.code == 0, result
    report = result.json()
    assert report["version"] == 1 and report["units"]["failed"] == 0
    assert report["units"]["existing"] == len(state)
    assert report["units"]["existing"] + report["units"]["new"] == len(files)


def test_sigterm_while_reading_the_store_ends_like_sigint(tmp_path: Path) -> None:
    """Every command honours SIGTERM: a gc waiting for a lease is cancelled, 143."""
    source = tmp_path / "src"
    manifest = file_manifest(source, 5)
    root = tmp_path / "root"
    assert run_cli_in_process("sync", manifest, "--root", root, "--repository", "r").code == 0
    # a writer's lease held by this test keeps gc waiting
    lease = root / "triofetch.sqlite3.lease"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_SH); print('held', flush=True); time.sleep(60)",
            str(lease),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
            proc = start_cli("gc", "--root", root, "--wait", "30")
            # well past start-up: gc opens the lease file only to wait for the lease
            wait_for(lambda: has_open(proc.pid, lease) or proc.poll() is not None)  # noqa: B023
            assert proc.poll() is None
            proc.send_signal(signum)
            out, err = finish(proc)
            assert proc.returncode == status, (out, err)
            assert one_line(err) == f"triofetch: {stop_message(signum)}"
            assert out == ""
    finally:
        holder.kill()
        holder.wait()
    assert run_cli_in_process("gc", "--root", root).code == 0


def test_a_signal_once_the_result_is_out_stops_nothing(tmp_path: Path) -> None:
    """A signal that comes once the command has printed its result (while it closes the
    store, or while Python exits) has nothing left to stop: the status is the command's own,
    stdout holds its one JSON value, stderr nothing.  (It was status 143 or 130 with a
    second JSON value, the "terminated" error, and a line saying to run it again; or the
    process died of the signal, with no line.)"""
    manifest = file_manifest(tmp_path / "src", 3)
    root = tmp_path / "root"
    assert run_cli("sync", manifest, "--root", root, "--repository", "r").code == 0
    for signum in (signal.SIGTERM, signal.SIGINT) * 2:
        proc = start_cli("versions", "--root", root, "--repository", "r", "--json")
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while lines[-1] not in ("]\n", ""):
            lines.append(proc.stdout.readline())
        proc.send_signal(signum)  # the result is out: the command is closing, or exiting
        out, err = finish(proc)
        assert (proc.returncode, err) == (0, ""), (signum, proc.returncode, out, err)
        assert [v["number"] for v in json.loads("".join(lines) + out)] == [1]


# -- a signal during start-up -----------------------------------------------------------------


def _entry_points() -> list[list[str]]:
    script = Path(sys.executable).parent / "triofetch"
    found = [[sys.executable, "-m", "triofetch"]]
    if script.exists():
        found.append([str(script)])
    return found


def _as_in_a_terminal() -> None:  # pragma: no cover - runs in the child
    # a test run in the background has SIGINT ignored, inherited by children: restore the
    # default so that Python installs its handler, as it does in a terminal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_LOST_IN_A_CALLBACK = """
import sys, weakref
from triofetch._cli import _startup
_startup.install()

class Thing:
    pass

def lose(signum):
    # a signal handled while Python runs a weakref callback (an import lock's, in the
    # wild): the handler's KeyboardInterrupt is one Python cannot raise
    thing = Thing()
    ref = weakref.ref(thing, lambda _: _startup.on_sigint(signum, None))
    del thing

if sys.argv[1] == "remembered":
    lose(2)
    print("received", _startup.state.received)
else:  # another exception there is reported as ever
    thing = Thing()
    ref = weakref.ref(thing, lambda _: 1 / 0)
    del thing
    print("received", _startup.state.received)
"""


@pytest.mark.parametrize("case", ["remembered", "other"])
def test_an_interrupt_lost_in_a_callback_during_start_up_prints_nothing(case: str) -> None:
    """A SIGINT handled while an import lock's weakref callback ran (the start-up signals
    test met it once in a clean-clone run): the start-up handler's KeyboardInterrupt cannot
    be raised there, and Python printed it with its traceback ("Exception ignored in:
    <function _get_module_lock.<locals>.cb ...>") before the stop's one line.  The signal is
    remembered (the command line's watcher cancels the command) and nothing is printed;
    any other exception Python cannot raise is still reported."""
    done = subprocess.run(
        [sys.executable, "-c", _LOST_IN_A_CALLBACK, case],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    if case == "remembered":
        assert done.stdout == "received 2\n"
        assert done.stderr == ""
    else:
        assert done.stdout == "received None\n"
        assert "Exception ignored" in done.stderr and "ZeroDivisionError" in done.stderr


def _before_our_first_line(err: str) -> bool:
    """A traceback of Python's start-up, before the first statement of ``triofetch.__main__``
    (``site``, runpy finding the module, the package's ``__init__`` that ``python -m``
    imports first, the console script's own imports): no program can take a signal there,
    a few milliseconds in all."""
    ours = [
        line
        for line in err.splitlines()
        if f"{os.sep}triofetch{os.sep}" in line and line.lstrip().startswith("File ")
    ]
    return "Traceback" in err and all(
        line.split('"')[1].endswith((f"triofetch{os.sep}__init__.py", "_version.py"))
        for line in ours
    )


@pytest.mark.slow
def test_signals_during_start_up_never_print_a_traceback(
    http_server: FaultServer, tmp_path: Path
) -> None:
    files = {"a.bin": b"a" * 4096}
    url = publish(http_server, files, faults={"a.bin": [Slow(1.0, 1)] * 100})
    rng = random.Random(14)
    outcomes: dict[str, int] = {}
    # 30 attempts at least, until 20 of them were handled (at most 60: on a loaded machine
    # more signals land before Python runs or during its own start-up)
    for attempt in range(60):
        if attempt >= 30 and outcomes.get("handled", 0) >= 20:
            break
        signum = (signal.SIGINT, signal.SIGTERM)[attempt % 2]
        command = _entry_points()[attempt % len(_entry_points())]
        root = tmp_path / f"root{attempt}"
        proc = subprocess.Popen(
            [*command, "sync", url, "--root", str(root), "--repository", "r"],
            env={**cli_env(), "PYTHONFAULTHANDLER": "1"},  # (stacks if it hangs: finish())
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_as_in_a_terminal,
        )
        time.sleep(rng.uniform(0, 0.2))
        proc.send_signal(signum)
        out, err = finish(proc)
        if proc.returncode == -signum and not err:
            kind = "killed before Python ran"  # the default action: no message, no traceback
        elif _before_our_first_line(err):
            kind = "in Python's own start-up"
        else:
            assert proc.returncode == 128 + signum, (attempt, proc.returncode, out, err)
            assert one_line(err) == f"triofetch: {stop_message(signum)}", err
            kind = "handled"
        outcomes[kind] = outcomes.get(kind, 0) + 1
        assert temp_files(root) == []
    assert outcomes.get("handled", 0) >= 20, outcomes


def test_the_entry_points_first_statement_takes_ctrl_c() -> None:
    """``triofetch.__main__`` began with ``from __future__ import annotations``: a real
    import of a module Python has not loaded at start-up (a spec search, a ``stat``),
    before the ``try`` that takes a Ctrl-C, so a SIGINT landing there printed a
    traceback (``test_signals_during_start_up_never_print_a_traceback`` hit it once in 30
    tries, now and then).  Its first statement is that ``try`` now."""
    import ast

    import triofetch.__main__ as entry

    tree = ast.parse(Path(entry.__file__).read_text())
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    first = body[0]
    assert isinstance(first, ast.Try), ast.dump(first)[:200]
    caught = [h.type for h in first.handlers]
    assert any(isinstance(t, ast.Name) and t.id == "KeyboardInterrupt" for t in caught)
    assert not any(
        isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in tree.body
    )


_LOST_SIGINT = """
import os, signal, sys, weakref
# SIGINT as in a terminal (a test run started in the background has it ignored, and its
# children inherit that: then no handler is installed and the signal does nothing)
signal.signal(signal.SIGINT, signal.default_int_handler)
from triofetch import __main__ as entry

def lose_a_sigint(ref):
    # SIGINT arrives while a weakref callback runs (as an import lock's does while the
    # command line is imported): its KeyboardInterrupt is raised here, printed and ignored
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(100_000):
        pass

install = entry._startup.install

def install_then_lose_a_sigint():
    install()
    class Thing:
        pass
    thing = Thing()
    keep = weakref.ref(thing, lose_a_sigint)
    del thing

entry._startup.install = install_then_lose_a_sigint
sys.exit(entry.main(sys.argv[1:]))
"""


def test_a_sigint_whose_keyboard_interrupt_was_lost_at_start_up_still_stops(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """A SIGINT during start-up whose KeyboardInterrupt Python ignored (raised inside a
    callback): the sync went on as if nothing had come, here for 100 s of slow responses
    (``test_signals_during_start_up_never_print_a_traceback`` hit it by chance, once in
    a while).  The signal is remembered; the command is cancelled as soon as it starts:
    status 130, our one line alone (Python's report of the ignored exception, a traceback,
    came before it: see the next test)."""
    url = publish(http_server, {"a.bin": b"a" * 4096}, faults={"a.bin": [Slow(1.0, 1)] * 100})
    root = tmp_path / "root"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOST_SIGINT, "sync", url, "--root", str(root), "--repository", "r"],
        env={**cli_env(), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = finish(proc, timeout=20)
    assert proc.returncode == 130, (proc.returncode, err)
    assert one_line(err) == f"triofetch: {stop_message(signal.SIGINT)}", err
    assert time.monotonic() - started < 10
    assert temp_files(root) == []


# -- a closed stdout ------------------------------------------------------------------------


LIST = [sys.executable, "-m", "triofetch", "list"]


@pytest.fixture
def listed_store(tmp_path: Path) -> Iterator[Path]:
    """A store whose version 1 lists 3,000 files (on demand: nothing downloaded)."""
    lines = [f"f{i:05}.txt,{'ab' * 32},{i}\n" for i in range(3000)]
    manifest = tmp_path / "PULP_MANIFEST"
    manifest.write_text("".join(lines))
    root = tmp_path / "root"
    result = run_cli_in_process(
        "sync", manifest, "--root", root, "--repository", "r", "--policy", "on_demand"
    )
    assert result.code == 0, result
    yield root


@pytest.mark.parametrize("json", [False, True])
def test_closed_stdout_ends_quietly(listed_store: Path, json: bool) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [*LIST, "--root", str(listed_store), "--repository", "r", *(["--json"] * json)],
            env=cli_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == 141


def test_list_into_head(listed_store: Path) -> None:
    shell = (
        f"{sys.executable} -m triofetch list --root {listed_store} --repository r | head -1; "
        'echo "status ${PIPESTATUS[0]}" >&2'
    )
    proc = subprocess.run(
        ["bash", "-c", shell], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert len(proc.stdout.splitlines()) == 1 and proc.stdout.endswith(
        "f00000.txt  (not downloaded)\n"
    )
    assert proc.stderr == "status 141\n"


def test_help_into_a_closed_pipe(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "triofetch", "sync", "--help"],
            env=cli_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


# -- an unexpected exception ----------------------------------------------------------------


def test_internal_error_line() -> None:
    assert internal_error_line(ValueError("bad thing")) == (
        "error: internal error: ValueError: bad thing (run with -vv for the traceback)"
    )
    assert internal_error_line(KeyError()) == (
        "error: internal error: KeyError (run with -vv for the traceback)"
    )
    group = ExceptionGroup("nursery", [RuntimeError("first line\nsecond line")])
    assert internal_error_line(group) == (
        "error: internal error: RuntimeError: first line ... (run with -vv for the traceback)"
    )


def test_internal_error_on_a_real_path(tmp_path: Path) -> None:
    """A record no triofetch writes (a version's creation time edited by hand) is a bug's
    path: one line and status 70; the traceback only with -vv."""
    import sqlite3

    manifest = file_manifest(tmp_path / "src", 3)
    root = tmp_path / "root"
    assert run_cli_in_process("sync", manifest, "--root", root, "--repository", "r").code == 0
    with sqlite3.connect(root / "triofetch.sqlite3") as db:
        db.execute("UPDATE repository_versions SET created = 'yesterday-ish'")
    db.close()
    result = run_cli("versions", "--root", root, "--repository", "r")
    assert result.code == EXIT_INTERNAL == 70, result
    assert one_line(result.err) == (
        "triofetch: error: internal error: ValueError: Invalid isoformat string: "
        "'yesterday-ish' (run with -vv for the traceback)"
    )
    verbose = run_cli("versions", "--root", root, "--repository", "r", "-vv")
    assert verbose.code == 70
    assert "Traceback" in verbose.err
    assert verbose.err.strip().splitlines()[-1] == one_line(result.err)


# -- a damaged database: status 2 for every command -------------------------------------------


_PAGE = 4096


def _commands(root: Path, manifest: Path, dest: Path) -> dict[str, list[str]]:
    base = ["--root", str(root)]
    return {
        "list": ["list", *base, "--repository", "r"],
        "versions": ["versions", *base, "--repository", "r"],
        "verify": ["verify", *base],
        "export": ["export", *base, "--repository", "r", str(dest)],
        "prune": ["prune", *base, "--repository", "r", "--keep", "1"],
        "gc": ["gc", *base],
        "repair": ["repair", *base],
        "sync": ["sync", str(manifest), *base, "--repository", "r"],
    }


def test_damaged_database_is_status_2_for_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each page of the database in turn overwritten: every command either does not read
    that page (0) or ends with one line and status 2, never 1 or a traceback."""
    manifest = file_manifest(tmp_path / "src", 60)
    root = tmp_path / "root"
    assert main(["sync", str(manifest), "--root", str(root), "--repository", "r"]) == 0
    database = root / "triofetch.sqlite3"
    good = database.read_bytes()
    assert len(good) % _PAGE == 0
    refused: dict[str, int] = {}
    for page in range(len(good) // _PAGE):
        damaged = bytearray(good)
        damaged[page * _PAGE : (page + 1) * _PAGE] = bytes([0x5A]) * _PAGE
        for name, argv in _commands(root, manifest, tmp_path / f"out{page}").items():
            database.write_bytes(damaged)
            capsys.readouterr()
            status = main(argv)
            err = capsys.readouterr().err
            assert status in (0, 2), (page, name, status, err)
            if status == 2:
                line = one_line(err)
                assert line.startswith("triofetch: error: "), line
                assert "damaged" in line or "malformed" in line or "not a triofetch" in line
                refused[name] = refused.get(name, 0) + 1
    assert set(refused) == set(_commands(root, manifest, tmp_path)), refused


def test_damaged_database_through_the_command(tmp_path: Path) -> None:
    manifest = file_manifest(tmp_path / "src", 10)
    root = tmp_path / "root"
    assert run_cli_in_process("sync", manifest, "--root", root, "--repository", "r").code == 0
    database = root / "triofetch.sqlite3"
    data = bytearray(database.read_bytes())
    data[_PAGE:] = bytes([0x5A]) * (len(data) - _PAGE)
    database.write_bytes(data)
    for name, argv in _commands(root, manifest, tmp_path / "out").items():
        result = run_cli(*argv)
        assert result.code == 2, (name, result)
        assert one_line(result.err).startswith("triofetch: error: "), (name, result)


def test_a_database_damaged_before_it_opens_is_store_damaged_in_json(tmp_path: Path) -> None:
    """A database file cut short (its first pages whole): SQLite refuses it while the
    store opens, and that error was the JSON kind ``store``, not ``store_damaged`` as when
    the damage is found later."""
    import json

    manifest = file_manifest(tmp_path / "src", 60)
    root = tmp_path / "root"
    assert run_cli_in_process("sync", manifest, "--root", root, "--repository", "r").code == 0
    database = root / "triofetch.sqlite3"
    whole = database.read_bytes()
    for name, argv in _commands(root, manifest, tmp_path / "out").items():
        database.write_bytes(whole[: 5 * _PAGE])
        for extra in ("-wal", "-shm"):
            (root / f"triofetch.sqlite3{extra}").unlink(missing_ok=True)
        result = run_cli_in_process(*argv, "--json")
        assert result.code == 2, (name, result)
        assert json.loads(result.out)["error"]["kind"] == "store_damaged", (name, result)
        assert "damaged" in one_line(result.err), (name, result)


# -- PostgreSQL that cannot be reached ------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", ["list", "versions", "verify", "gc", "sync"])
def test_unreachable_postgresql_fails_at_once_with_one_line(tmp_path: Path, command: str) -> None:
    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{_closed_port()}/store"
    argv = {
        "list": ["list", "--repository", "r"],
        "versions": ["versions", "--repository", "r"],
        "verify": ["verify"],
        "gc": ["gc"],
        "sync": ["sync", str(file_manifest(tmp_path / "src", 2)), "--repository", "r"],
    }[command]
    started = time.monotonic()
    result = run_cli(*argv, "--root", tmp_path / "root", "--db", url, timeout=20)
    elapsed = time.monotonic() - started
    assert result.code == 2, result
    line = one_line(result.err)
    assert "s3cret-pw" not in result.err and "someone" not in result.err
    assert "postgresql://***@127.0.0.1" in line and "Connection refused" in line
    # it says what happened: refused at once, not a timeout ("within 10 s" was read as one)
    assert "the connection was refused at once: no server is listening on that port" in line
    assert "within" not in line and "timed out" not in line, line
    assert elapsed < 8, elapsed  # refused: no waiting for the pool's timeout
    assert not (tmp_path / "root" / "triofetch.sqlite3").exists()


def test_refused_postgresql_in_json_says_refused(tmp_path: Path) -> None:
    """The --json error of a refused connection: kind ``store``, status 2, the same
    message as the line, refused and not timed out, no password."""
    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{_closed_port()}/store"
    result = run_cli("list", "--repository", "r", "--db", url, "--json", timeout=20)
    assert result.code == 2, result
    error = json.loads(result.out)["error"]
    assert error["kind"] == "store", error
    assert error["message"] == one_line(result.err).removeprefix("triofetch: error: ")
    assert "the connection was refused at once" in error["message"], error
    assert "within" not in error["message"] and "timed out" not in error["message"]
    assert "s3cret-pw" not in result.out + result.err


@pytest.fixture
def postgres_password_role(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """A role of the session's server that must give its password (scram-sha-256 from
    127.0.0.1: one line put first in pg_hba.conf, for this role only, taken out after)."""
    role, password = "tf_pw_role", "r1ght-pw-9"
    hba = postgres_server.data_dir / "pg_hba.conf"
    before = hba.read_text()
    postgres_server.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + before)
        postgres_server.execute("SELECT pg_reload_conf()")
        yield role, password
    finally:
        hba.write_text(before)
        postgres_server.execute("SELECT pg_reload_conf()")
        postgres_server.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.postgres
def test_wrong_postgresql_password_says_authentication_failed(
    postgres_server: PostgresServer, postgres_password_role: tuple[str, str], tmp_path: Path
) -> None:
    """A real server refusing a wrong password (and a missing one): status 2, kind
    ``store``, one line saying authentication failed — not that it timed out — and no
    password, the wrong one included."""
    role, password = postgres_password_role
    base = f"127.0.0.1:{postgres_server.port}/postgres"
    right = run_cli_in_process(
        "list", "--repository", "r", "--db", f"postgresql://{role}:{password}@{base}"
    )
    assert "no triofetch store" in right.err, right  # (the right password gets in)
    cases = {
        f"postgresql://{role}:wr0ng-pw-7@{base}": "the server refused the user name or password",
        f"postgresql://{role}@{base}": "the server asks for a password and none was given",
    }
    for url, said in cases.items():
        started = time.monotonic()
        result = run_cli(
            "list",
            "--repository",
            "r",
            "--db",
            url,
            "--json",
            env={"PGPASSFILE": str(tmp_path / "none")},
        )
        assert result.code == 2, result
        line = one_line(result.err)
        assert f"authentication failed: {said}" in line, line
        assert "within" not in line and "timed out" not in line, line
        assert "wr0ng-pw-7" not in result.out + result.err
        assert "postgresql://***@127.0.0.1" in line
        error = json.loads(result.out)["error"]
        assert error == {"kind": "store", "message": line.removeprefix("triofetch: error: ")}
        assert time.monotonic() - started < 8


def test_silent_postgresql_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    """A server that accepts the connection and never answers: given up after about
    --db-connect-timeout seconds, one line, no pool warnings, no password."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes the handshake; nobody ever answers
        port = listener.getsockname()[1]
        url = f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/store?sslmode=disable"
        started = time.monotonic()
        result = run_cli(
            "list", "--db", url, "--repository", "r", "--db-connect-timeout", "2", timeout=30
        )
        elapsed = time.monotonic() - started
    assert result.code == 2, result
    line = one_line(result.err)
    assert "s3cret-pw" not in result.err
    assert "timed out: the server did not answer within 2 s" in line, line
    assert elapsed < 8, elapsed


def test_connect_timeout_is_checked(tmp_path: Path) -> None:
    for bad in ("0", "-1", "soon", "inf"):
        result = run_cli_in_process("list", "--repository", "r", "--db-connect-timeout", bad)
        assert result.code == 2, result
        assert "argument --db-connect-timeout: expected a number of seconds" in result.err


async def test_open_store_connect_timeout() -> None:
    for bad in (0, -1, float("inf"), float("nan"), True, "10"):
        with pytest.raises(InvalidInput, match="connect_timeout"):
            open_store("postgresql://127.0.0.1/x", connect_timeout=bad)  # type: ignore[arg-type]
    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{_closed_port()}/store"
    started = trio.current_time()
    with pytest.raises(StoreError) as caught:
        await open_store(url, connect_timeout=1.5)
    assert trio.current_time() - started < 5
    message = str(caught.value)
    assert "s3cret-pw" not in message and "refused at once" in message, message
    assert "within" not in message, message  # (refused: no timeout was waited for)


@pytest.mark.postgres
async def test_open_store_connect_timeout_on_a_real_server(postgres_dsn: str) -> None:
    async with open_store(postgres_dsn, connect_timeout=2) as store:
        await store.create_repository("r")
        assert await store.latest_version("r") is None


# -- sync --mirror of an empty manifest -----------------------------------------------------


def test_mirror_of_an_empty_manifest_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    manifest = file_manifest(source, 3)
    root = tmp_path / "root"
    args = ("--root", root, "--repository", "r")
    assert run_cli_in_process("sync", manifest, *args).code == 0
    empty = tmp_path / "empty" / "PULP_MANIFEST"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    refused = run_cli("sync", empty, *args, "--mirror")
    assert refused.code == 2, refused
    assert "lists no file" in one_line(refused.err) and "--allow-empty" in refused.err
    versions = run_cli_in_process("versions", *args, "--json").json()
    assert [v["number"] for v in versions] == [1]  # nothing made, nothing written
    # without --mirror an empty manifest changes nothing: accepted as before
    assert run_cli("sync", empty, *args).code == 0
    allowed = run_cli("sync", empty, *args, "--mirror", "--allow-empty", "--json")
    assert allowed.code == 0, allowed
    assert allowed.json()["created"] and allowed.json()["version"] == 2
    assert run_cli_in_process("list", *args, "--json").json() == []


# -- export interrupted ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_of_2000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose repository r holds 2,000 small files (version 1), synced once for the
    module from ``file_manifest(..., 2000)``: each test exports a copy of it (copy_of)."""
    base = tmp_path_factory.mktemp("store-of-2000")
    root = base / "root"
    synced = run_cli_in_process("sync", file_manifest(base / "v1", 2000), "--root", root,
                                "--repository", "r")  # fmt: skip
    assert synced.code == 0, synced
    return root


def copy_of(root: Path, where: Path) -> Path:
    shutil.copytree(root, where)
    return where


def _signal_mid_export(
    args: tuple[str | Path, ...],
    signum: int,
    *,
    started: Callable[[], bool],
    finished: Callable[[], bool],
) -> tuple[subprocess.Popen[str], str, str] | None:
    """``triofetch export ARGS``, frozen (SIGSTOP) once *started* holds, then sent *signum*
    and let go on: the process and its output; None when it had *finished* before it was
    frozen (it is let run to its end)."""
    proc = start_cli("export", *args)
    wait_for(started)
    proc.send_signal(signal.SIGSTOP)  # frozen mid-export, to be sure
    if finished():  # pragma: no cover - finished before
        proc.send_signal(signal.SIGCONT)
        finish(proc)
        return None
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    out, err = finish(proc)
    return proc, out, err


def test_export_interrupted_says_how_far_it_got(store_of_2000: Path, tmp_path: Path) -> None:
    root = copy_of(store_of_2000, tmp_path / "root")
    for attempt in range(5):
        dest = tmp_path / f"export{attempt}"
        stopped = _signal_mid_export(
            ("--root", root, "--repository", "r", dest),
            signal.SIGINT,
            started=lambda: dest.exists() and any(dest.iterdir()),  # noqa: B023
            finished=lambda: (dest / "PULP_MANIFEST").exists(),  # noqa: B023
        )
        if stopped is not None:
            proc, out, err = stopped
            break
    else:  # pragma: no cover
        pytest.fail("the export always finished before it could be interrupted")
    assert proc.returncode == 130, (out, err)
    assert out == ""
    line = one_line(err)
    written = sum(1 for p in dest.rglob("*") if p.is_file())
    assert line == (
        f"triofetch: interrupted after {written} files of 'r' version 1 written to {dest}, "
        "no PULP_MANIFEST yet: run the export again to finish"
    )
    assert 0 < written < 2000
    assert not (dest / "PULP_MANIFEST").exists()
    assert not [p for p in dest.rglob(".tf-export-*")]
    again = run_cli("export", "--root", root, "--repository", "r", dest)
    assert again.code == 0, again
    assert again.out.startswith("exported 2000 files")
    assert len((dest / "PULP_MANIFEST").read_text().splitlines()) == 2000


def test_a_reexport_stopped_by_sigterm_leaves_no_old_manifest(
    store_of_2000: Path, tmp_path: Path
) -> None:
    """Exporting version 2 over an export of version 1, stopped by SIGTERM once it has
    replaced a file: no PULP_MANIFEST is left (the one of version 1 was, listing the old
    sha256 of the files replaced, while the command said there was none yet)."""
    root = copy_of(store_of_2000, tmp_path / "root")  # version 1
    args = ("--root", root, "--repository", "r")
    v2 = file_manifest(tmp_path / "v2", 2000, 48)
    assert run_cli_in_process("sync", v2, *args, "--mirror").code == 0
    first = "d0/f00000.txt"  # the first file exported
    new_first = (tmp_path / "v2" / first).read_bytes()
    new_line = f"{first},{hashlib.sha256(new_first).hexdigest()},{len(new_first)}"
    for attempt in range(5):
        dest = tmp_path / f"export{attempt}"
        assert run_cli_in_process("export", *args, "--version", "1", dest).code == 0
        old_ino = (dest / first).stat().st_ino
        manifest = dest / "PULP_MANIFEST"
        stopped = _signal_mid_export(
            (*args, dest),
            signal.SIGTERM,
            started=lambda: (dest / first).stat().st_ino != old_ino,  # noqa: B023
            finished=lambda: manifest.exists() and new_line in manifest.read_text(),  # noqa: B023
        )
        if stopped is not None:
            proc, out, err = stopped
            break
    else:  # pragma: no cover
        pytest.fail("the export always finished before it could be stopped")
    assert proc.returncode == 143, (out, err)
    assert "no PULP_MANIFEST yet: run the export again to finish" in one_line(err)
    assert (dest / first).read_bytes() == new_first
    assert not (dest / "PULP_MANIFEST").exists()
    assert not [p for p in dest.rglob(".tf-export-*")]
    again = run_cli("export", *args, dest)
    assert again.code == 0, again
    lines = (dest / "PULP_MANIFEST").read_text().splitlines()
    assert sorted(lines) == sorted((tmp_path / "v2" / "PULP_MANIFEST").read_text().splitlines())


def _walking_under(pid: int, dest: Path, prefix: str) -> bool:
    """Whether process *pid* holds a directory of *dest* named *prefix*... open: the sweep
    for killed exports' temp files opens each directory under DEST (the export itself
    writes elsewhere)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{dest}/{prefix}"):
            return True
    return False


def _frozen(pid: int) -> bool:
    """Whether process *pid* is stopped (``T`` in ``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().rpartition(")")[2].split()[0] in ("T", "t")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_export_interrupted_while_it_sweeps_a_large_dest(tmp_path: Path) -> None:
    """Ctrl-C while export walks a large DEST for the temp files of killed exports: the
    walk (a worker thread's) did not look at the signal, so the export went on to its end
    — every directory, then every file and the PULP_MANIFEST — and only then said
    ``interrupted``.  Now it stops in the walk: status 130, one line saying nothing was
    written, no file nor manifest, the temp files of the directories not reached yet left
    (removed by the next export), a live export's never touched.

    Frozen (SIGSTOP) while the process holds a directory of DEST open — the walk's own
    descriptor, read in /proc — so that the signal comes mid-walk, whatever the speed."""
    root = tmp_path / "root"
    synced = run_cli_in_process("sync", file_manifest(tmp_path / "src", 1), "--root", root,
                                "--repository", "r")  # fmt: skip
    assert synced.code == 0, synced
    # a DEST of 100 x 100 directories (on a tmpfs when there is one: quick to make)
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else None
    try:
        dest = (base or tmp_path) / "dest"
        tops = [dest / f"w{i:03}" for i in range(100)]
        for top in tops:
            for j in range(100):
                (top / f"{j:03}").mkdir(parents=True)
        name_it = "from triofetch._cli import _export; print(_export._temp_name())"
        dead_name = subprocess.run(  # named by a process that has ended
            [sys.executable, "-c", name_it], env=cli_env(), capture_output=True, text=True,
            timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        live = [tops[0] / "000" / _export._temp_name(), tops[-1] / _export._temp_name()]
        for path in live:  # this process's: alive
            path.write_bytes(b"being copied")
        for _attempt in range(5):
            for top in tops:
                (top / dead_name).write_bytes(b"left by a killed export")
            proc = start_cli("export", "--root", root, "--repository", "r", dest)
            deadline = time.monotonic() + 30
            while not _walking_under(proc.pid, dest, "w") and proc.poll() is None:
                assert time.monotonic() < deadline, "the export never walked DEST"
            proc.send_signal(signal.SIGSTOP)
            wait_for(lambda: proc.poll() is not None or _frozen(proc.pid))  # noqa: B023
            if proc.poll() is None and _walking_under(proc.pid, dest, "w"):
                break  # frozen mid-walk
            proc.send_signal(signal.SIGCONT)  # pragma: no cover - the walk was over
            finish(proc)  # pragma: no cover
        else:  # pragma: no cover
            pytest.fail("the export was never frozen while it walked DEST")
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        proc.send_signal(signal.SIGCONT)
        out, err = finish(proc)
        elapsed = time.monotonic() - started
        assert proc.returncode == 130, (out, err)
        left = [top for top in tops if (top / dead_name).exists()]
        assert len(left) > len(tops) // 2, (len(left), elapsed)  # the walk ended where it was
        assert elapsed < 5, elapsed
        assert out == ""
        assert one_line(err) == (
            f"triofetch: interrupted before writing anything to {dest} (it was looking for "
            "the temp files of killed exports in it, and removing them): run the export again"
        )
        assert not (dest / "PULP_MANIFEST").exists() and not (dest / "d0").exists()
        assert all(path.read_bytes() == b"being copied" for path in live)
        again = run_cli("export", "--root", root, "--repository", "r", dest)
        assert again.code == 0, again
        assert (dest / "PULP_MANIFEST").exists() and (dest / "d0" / "f00000.txt").exists()
        assert sorted(dest.rglob(".tf-export-*")) == sorted(live)
    finally:
        if base is not None:
            shutil.rmtree(base)


# -- the lazy public API that makes a short start-up possible ---------------------------------


def test_public_names_load_lazily() -> None:
    """``triofetch/__init__`` imports its public names (from ``triofetch._api``) only when
    one is first used: each is then the very object of its module, and the package alone
    imports none of Trio, the store or the downloader."""
    import triofetch
    from triofetch import _api

    public = {name for name in vars(_api) if not name.startswith("_")}
    assert public == set(triofetch.__all__) - {"__version__"}
    for name in triofetch.__all__:
        assert getattr(triofetch, name) is getattr(_api, name, triofetch.__version__), name
    with pytest.raises(AttributeError):
        triofetch.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
    probe = (
        "import sys, triofetch; "
        "print(sorted(set(sys.modules) & {'trio', 'triofetch._api', 'triofetch.store'}))"
    )
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert bare.stdout == "[]\n"
