"""``triofetch serve`` as a process: the startup line with the real port, one access-log line
per request at ``-v``, a clean stop (status 0) on SIGTERM and SIGINT, and the errors that
stop it before it serves (no store, an unknown repository, a port taken, no hypercorn).  The
syncs that only fill a store for a case run the same main() in process (tests/_cli_helpers.py,
run_cli_in_process); serve always runs as a process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests._cli_helpers import cli_env, publish, run_cli, run_cli_in_process, start_cli
from triofetch import open_store
from triofetch.testing import FaultServer, Slow, check_store

FILES = {"a.txt": b"hello\n", "d/b.bin": os.urandom(5000)}
#: larger than what the loopback's socket buffers hold
LARGE = os.urandom(48 * 1024 * 1024)
STARTUP = re.compile(r"Serving (.+) at (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C to stop\)")


@pytest.fixture(scope="module")
def root(http_server_module: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("serve-cli") / "root"
    url = publish(http_server_module, {**FILES, "large.bin": LARGE}, prefix="/cli")
    result = run_cli_in_process("sync", url, "--root", where, "--repository", "r")
    assert result.code == 0, result
    return where


class Running:
    """A ``triofetch serve`` process and the stderr it has written so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.err = ""
        assert proc.stderr is not None
        self._fd = proc.stderr.fileno()
        os.set_blocking(self._fd, False)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.err)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not self._read(0)):
                raise AssertionError(f"not seen: {pattern.pattern!r} in {self.err!r}")
            self._read(left)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._fd], [], [], min(timeout, 0.5))
        if not ready:
            return False
        data = os.read(self._fd, 65536)
        self.err += data.decode("utf-8", "replace")
        return bool(data)

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(15)
        self._read(0)
        assert self.proc.stderr is not None
        self.err += self.proc.stderr.read() or ""
        return code


@pytest.fixture
def serving(root: Path) -> Iterator[tuple[Running, str]]:
    proc = start_cli("-v", "serve", "--root", root, "--listen", "127.0.0.1:0")
    running = Running(proc)
    try:
        found = running.wait_for(STARTUP)
        assert found.group(1) == str(root)
        assert int(found.group(3)) > 0  # the real port, not 0
        yield running, found.group(2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: bytes = response.read()
        return data


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_logs_and_stops_cleanly(serving: tuple[Running, str], signum: int) -> None:
    running, url = serving
    assert fetch(url + "r/a.txt") == FILES["a.txt"]
    assert fetch(url + "r/d/b.bin") == FILES["d/b.bin"]
    running.wait_for(re.compile(r'"GET /r/d/b\.bin" 200 5000 '))
    assert len(re.findall(r'triofetch\.serve INFO: 127\.0\.0\.1 "GET ', running.err)) == 2
    assert running.stop(signum) == 0, running.err
    assert f"triofetch: stopped ({signal.Signals(signum).name})" in running.err
    assert "Traceback" not in running.err


def test_without_v_no_access_log(root: Path) -> None:
    running = Running(start_cli("serve", "--root", root, "--listen", "127.0.0.1:0"))
    try:
        url = running.wait_for(STARTUP).group(2)
        assert fetch(url + "r/a.txt") == FILES["a.txt"]
        assert running.stop(signal.SIGTERM) == 0
        lines = running.err.strip().splitlines()
        assert len(lines) == 2, running.err  # the startup line and the stop line
    finally:
        if running.proc.poll() is None:
            running.proc.kill()


@pytest.mark.parametrize("quiet", [False, True])
def test_without_v_the_servers_errors_are_still_printed(
    root: Path, tmp_path: Path, quiet: bool
) -> None:
    """Without ``-v`` the server's warnings and errors are printed all the same (with
    ``-q``, its errors only), not the access log: a stored file found damaged was a 500
    (and one missing a 404) said nowhere, although the docs promise "its startup line,
    errors, and the stop line"."""
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    digest = hashlib.sha256(FILES["a.txt"]).hexdigest()
    stored = copy / "artifacts" / digest[:2] / digest[2:4] / digest
    os.chmod(stored, 0o644)
    stored.write_bytes(b"truncated")
    gone = hashlib.sha256(FILES["d/b.bin"]).hexdigest()
    (copy / "artifacts" / gone[:2] / gone[2:4] / gone).unlink()
    flags = ["-q"] if quiet else []
    running = Running(
        start_cli(*flags, "serve", "--root", copy, "--listen", "127.0.0.1:0", "--json")
    )
    try:
        # (the URL from --json's line on stdout: -q prints no startup line)
        assert running.proc.stdout is not None
        url = json.loads(running.proc.stdout.readline())["url"]
        with pytest.raises(urllib.error.HTTPError) as raised:
            fetch(url + "r/a.txt")
        assert raised.value.code == 500
        with pytest.raises(urllib.error.HTTPError) as raised:
            fetch(url + "r/d/b.bin")
        assert raised.value.code == 404
        running.wait_for(re.compile(r"triofetch\.serve ERROR: a\.txt: file \w+ damaged"))
        if not quiet:  # (-q: errors only)
            running.wait_for(
                re.compile(r"triofetch\.serve WARNING: d/b\.bin: .+ not in the storage")
            )
        assert running.stop(signal.SIGTERM) == 0
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
    assert "GET /r/" not in running.err  # (no access log)
    assert "Traceback" not in running.err
    lines = running.err.strip().splitlines()
    # (--json: no startup line; -q: no stop line)
    assert len(lines) == (1 if quiet else 3), running.err


def test_root_from_the_environment_and_repository_filter(root: Path) -> None:
    proc = start_cli(
        "serve", "--listen", "127.0.0.1:0", "--repository", "r", env={"TRIOFETCH_ROOT": str(root)}
    )
    running = Running(proc)
    try:
        url = running.wait_for(STARTUP).group(2)
        assert b'href="r/"' in fetch(url)
        assert running.stop(signal.SIGTERM) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_no_store(tmp_path: Path) -> None:
    result = run_cli("serve", "--root", tmp_path / "none", "--listen", "127.0.0.1:0")
    assert result.code == 2
    assert "no triofetch store at" in result.err


def test_unknown_repository(root: Path) -> None:
    result = run_cli("serve", "--root", root, "--listen", "127.0.0.1:0", "--repository", "x")
    assert result.code == 2
    assert "no repository named 'x'" in result.err


def test_a_port_taken(root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--root", root, "--listen", f"127.0.0.1:{port}")
    assert result.code == 2, result
    assert f"cannot listen on 127.0.0.1:{port}" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("listen", ["127.0.0.1:x", "::1:80", "127.0.0.1:70000", "host:"])
def test_bad_listen(root: Path, listen: str) -> None:
    result = run_cli("serve", "--root", root, "--listen", listen)
    assert result.code == 2
    assert "--listen" in result.err


def test_without_hypercorn(root: Path) -> None:
    code = (
        "import sys, runpy; sys.modules['hypercorn'] = None; "
        "runpy.run_module('triofetch', run_name='__main__', alter_sys=True)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--root", str(root)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pip install 'triofetch[serve]'" in proc.stderr


@pytest.mark.postgres
def test_a_postgresql_store(
    http_server_module: FaultServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """``--db``: the database in PostgreSQL, the files under ``--root``; the password is
    not printed."""
    root = tmp_path / "root"
    url = publish(http_server_module, FILES, prefix="/pg")
    result = run_cli_in_process(
        "sync", url, "--root", root, "--db", postgres_dsn, "--repository", "p"
    )
    assert result.code == 0, result
    proc = start_cli("serve", "--root", root, "--db", postgres_dsn, "--listen", "127.0.0.1:0")
    running = Running(proc)
    try:
        found = running.wait_for(STARTUP)
        assert f"(files under {root})" in found.group(1)
        base = found.group(2)
        assert fetch(base + "p/d/b.bin") == FILES["d/b.bin"]
        manifest = fetch(base + "p/PULP_MANIFEST").decode()
        assert manifest.splitlines()[0].startswith("a.txt,")
        assert running.stop(signal.SIGTERM) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("policy", ["on_demand", "streamed"])
def test_on_demand_and_streamed_files_through_the_command(
    http_server: FaultServer, tmp_path: Path, policy: str
) -> None:
    """``sync --policy on_demand`` then ``serve``: a file is fetched on its first request
    and stored (``triofetch verify`` then finds it); with ``streamed`` it is fetched on
    every request and never stored."""
    files = {"x/one.bin": os.urandom(70_000), "two.txt": b"two\n"}
    url = publish(http_server, files, prefix="/od")
    root = tmp_path / "root"
    synced = run_cli("sync", url, "--root", root, "--repository", "r", "--policy", policy)
    assert synced.code == 0, synced
    proc = start_cli("serve", "--root", root, "--listen", "127.0.0.1:0")
    running = Running(proc)
    try:
        base = running.wait_for(STARTUP).group(2)
        for _ in range(2):
            assert fetch(base + "r/x/one.bin") == files["x/one.bin"]
        stopped = running.stop(signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert stopped == 0, running.err
    gets = http_server.count("/od/x/one.bin")

    async def missing() -> list[str]:
        async with open_store(None, root=root, create=False) as store:
            return sorted(m.relative_path for m in await store.missing_artifacts("r"))

    if policy == "on_demand":
        assert gets == 1
        assert trio.run(missing) == ["two.txt"]
    else:
        assert gets == 2
        assert trio.run(missing) == ["two.txt", "x/one.bin"]


#: 20 MB, sent by the upstream at about 1.3 MB/s: still downloading when the server stops
SLOW_SIZE = 20 * 1024 * 1024


@pytest.fixture
def slow_store(http_server: FaultServer, tmp_path: Path) -> Path:
    """A store with a stored 20 MB file (``r/big.bin``) and a 20 MB on-demand one
    (``lazy/slow.bin``) whose upstream sends it slowly."""
    root = tmp_path / "root"
    stored = run_cli_in_process(
        "sync", publish(http_server, {"big.bin": os.urandom(SLOW_SIZE)}, prefix="/big"),
        "--root", root, "--repository", "r",
    )  # fmt: skip
    assert stored.code == 0, stored
    data = os.urandom(SLOW_SIZE)
    url = publish(http_server, {"slow.bin": data}, prefix="/slow")
    lazy = run_cli_in_process(
        "sync", url, "--root", root, "--repository", "lazy", "--policy", "on_demand"
    )
    assert lazy.code == 0, lazy
    http_server.add_file("/slow/slow.bin", data, faults=[Slow(0.05, 65536)] * 4)
    return root


def _temp_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())


@contextlib.contextmanager
def _stopping(root: Path) -> Iterator[tuple[Running, list[socket.socket]]]:
    """The server running, a client holding the stop (it asked for a stored file and reads
    no more) and another one downloading the on-demand file (its temp file being written)."""
    running = Running(start_cli("serve", "--root", root, "--listen", "127.0.0.1:0"))
    clients: list[socket.socket] = []
    try:
        port = int(running.wait_for(STARTUP).group(3))
        stuck = socket.socket()
        clients.append(stuck)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /r/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stuck.recv(100).startswith(b"HTTP/1.1 200")  # then never read again
        lazy = socket.create_connection(("127.0.0.1", port))
        clients.append(lazy)
        lazy.sendall(b"GET /lazy/slow.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while not _temp_files(root):  # the download is under way
            assert time.monotonic() < deadline, running.err
            time.sleep(0.05)
        yield running, clients
    finally:
        for client in clients:
            client.close()
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.wait(10)


def _clean(root: Path) -> list[str]:
    async def problems() -> list[str]:
        async with open_store(None, root=root, create=False) as store:
            return [problem.kind for problem in await check_store(store)]

    return trio.run(problems)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_the_stop_exits_at_once(slow_store: Path, signum: int) -> None:
    """A second signal while slow clients hold the stop: status 128 + it at once (not 0
    after the grace period), and no temp file of the download still running is left."""
    with _stopping(slow_store) as (running, _):
        running.proc.send_signal(signum)
        time.sleep(0.5)
        assert running.proc.poll() is None, running.err  # still stopping
        started = time.monotonic()
        code = running.stop(signum)
        took = time.monotonic() - started
    assert code == 128 + signum, running.err
    assert took < 2, took  # (the grace period: 3 s, and 2 more at most)
    assert "again: exiting at once" in running.err
    assert "Traceback" not in running.err
    assert _temp_files(slow_store) == []
    assert _clean(slow_store) == []


def test_a_stop_that_cuts_slow_clients_leaves_no_temp_file(slow_store: Path) -> None:
    """The grace period running out (a client that stops reading) ends the process while
    an on-demand download runs: its temp file is removed all the same."""
    with _stopping(slow_store) as (running, _):
        started = time.monotonic()
        assert running.stop(signal.SIGTERM) == 0, running.err
        took = time.monotonic() - started
    # (the client that stops reading does not hold the stop: 3 s for the requests in
    # flight, 2 more at most, and slack)
    assert took < 12, took
    assert "responses still being sent to slow clients were cut" in running.err
    assert _temp_files(slow_store) == []
    assert _clean(slow_store) == []
