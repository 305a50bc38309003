"""``--json`` on every command, and the JSON error object of a fatal error (issue #19), end
to end as subprocesses: stdout holds exactly one JSON object, whatever happens.  The syncs
that only fill a store for a case, and the refusals before any work, run the same main() in
process (tests/_cli_helpers.py, run_cli_in_process)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests._cli_helpers import file_requests, publish, run_cli, run_cli_in_process, start_cli
from triofetch.testing import FaultServer, Slow

FILES = {"a.txt": b"alpha\n", "dir/b.bin": b"b" * 3000}


def one_object(text: str) -> dict[str, object]:
    """*text* is exactly one JSON object (and nothing else)."""
    value = json.loads(text)
    assert isinstance(value, dict), text
    return value


def error_of(text: str) -> tuple[str, str]:
    """The kind and message of the JSON error object that is all of *text*."""
    value = one_object(text)
    assert list(value) == ["error"], value
    error = value["error"]
    assert isinstance(error, dict) and sorted(error) == ["kind", "message"], value
    kind, message = error["kind"], error["message"]
    assert isinstance(kind, str) and isinstance(message, str), value
    return kind, message


@pytest.fixture
def root(http_server: FaultServer, tmp_path: Path) -> Path:
    url = publish(http_server, FILES)
    where = tmp_path / "root"
    # (the store of a case: the sync's main() in process; the commands tested run as processes)
    assert run_cli_in_process("sync", url, "--root", where, "--repository", "r", "-q").code == 0
    return where


# -- the results -------------------------------------------------------------------------


def test_export_json(root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    first = run_cli("export", "--root", root, "--repository", "r", dest, "--json")
    assert first.code == 0, first
    assert first.json() == {
        "repository": "r",
        "version": 1,
        "dest": str(dest),
        "written": 2,
        "linked": 2,
        "copied": 0,
        "unchanged": 0,
        "fetched": 0,
        "version_removed": False,
        "not_exported": [],
    }
    assert first.err == ""
    again = run_cli("export", "--root", root, "--repository", "r", dest, "--json")
    assert again.code == 0 and again.json()["unchanged"] == 2, again


def test_export_json_lists_what_was_not_exported(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES, prefix="/od")
    root = tmp_path / "root"
    synced = run_cli_in_process(
        "sync", url, "--root", root, "--repository", "r", "--policy", "on_demand"
    )
    assert synced.code == 0, synced
    result = run_cli("export", "--root", root, "--repository", "r", tmp_path / "out", "--json",
                     "--no-fetch")  # fmt: skip
    assert result.code == 1, result
    report = result.json()
    assert report["written"] == 0 and report["fetched"] == 0
    assert [item["relative_path"] for item in report["not_exported"]] == sorted(FILES)
    assert all("on-demand" in item["reason"] for item in report["not_exported"])
    assert "not exported: a.txt" in result.err  # the lines on stderr stay


def test_demo_json(tmp_path: Path) -> None:
    result = run_cli("demo", "--files", "20", "--json", cwd=tmp_path)
    assert result.code == 0, result
    report = result.json()
    assert report["files"] == 20 and report["version"] == 1
    assert report["downloaded"] == 20 and report["downloaded_again"] == 0
    assert report["identical"] is True and report["intact"] is True
    assert report["kept"] is None
    assert list(tmp_path.iterdir()) == []


def test_serve_json_prints_where_it_listens(root: Path) -> None:
    proc = start_cli("serve", "--root", root, "--listen", "127.0.0.1:0", "--json")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        started = json.loads(line)
        assert started["root"] == str(root) and started["repositories"] is None
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", started["url"]), started
        with urllib.request.urlopen(started["url"] + "r/a.txt", timeout=10) as response:
            assert response.read() == FILES["a.txt"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == ""  # nothing after the startup object
    assert "Serving" not in err  # the object says it


# -- fatal errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--repository", "r"],
        ["versions", "--repository", "r"],
        ["export", "--repository", "r", "DEST"],
        ["verify"],
        ["prune", "--repository", "r", "--keep", "1"],
        ["gc"],
        ["repair"],
        ["serve", "--listen", "127.0.0.1:0"],
    ],
)
def test_no_store_with_json(argv: list[str], tmp_path: Path) -> None:
    # in-process: the refusal comes before any work (the subprocess path is the same main())
    missing = tmp_path / "nothing"
    result = run_cli_in_process(*argv, "--root", missing, "--json", cwd=tmp_path)
    assert result.code == 2, result
    assert error_of(result.out) == ("store_not_found", f"no triofetch store at {missing}")
    assert result.err == f"triofetch: error: no triofetch store at {missing}\n"
    # without --json, stdout stays empty
    plain = run_cli_in_process(*argv, "--root", missing, cwd=tmp_path)
    assert plain.code == 2 and plain.out == ""


def test_usage_errors_with_json(tmp_path: Path) -> None:
    for argv in (
        ["list", "--json"],  # --repository missing
        ["sync", "x", "--repository", "r", "--json", "--connections", "0"],
        ["verify", "--json", "--bogus"],
        ["frobnicate", "--json"],
        ["verify", "--json", "-q", "-v"],
    ):
        result = run_cli_in_process(*argv, cwd=tmp_path)  # usage errors: before any I/O
        assert result.code == 2, (argv, result)
        kind, message = error_of(result.out)
        assert kind == "usage", (argv, result)
        assert message in result.err and result.err.startswith("usage: triofetch")
    assert list(tmp_path.iterdir()) == []


def test_command_errors_with_json(root: Path, http_server: FaultServer, tmp_path: Path) -> None:
    cases: list[tuple[list[str | Path], int, str]] = [
        (["list", "--root", root, "--repository", "nope"], 2, "repository_not_found"),
        (["list", "--root", root, "--repository", "r", "--version", "9"], 2, "version_not_found"),
        (["prune", "--root", root, "--repository", "nope", "--keep", "1"], 2,
         "repository_not_found"),
        (["sync", "ftp://127.0.0.1/PULP_MANIFEST", "--root", root, "--repository", "r"], 2,
         "usage"),
        (["sync", http_server.url("/missing/PULP_MANIFEST"), "--root", tmp_path / "new",
          "--repository", "r", "--retries", "0"], 2, "download"),
        (["sync", publish(http_server, {}, prefix="/bad", manifest=b"a,b\n"), "--root",
          tmp_path / "new", "--repository", "r"], 2, "manifest"),
        (["sync", root / "nothing-here", "--root", root, "--repository", "r"], 2, "usage"),
        (["sync", publish(http_server, {}, prefix="/empty"), "--root", root, "--repository",
          "r", "--mirror"], 2, "empty_manifest"),
    ]  # fmt: skip
    for argv, code, kind in cases:
        result = run_cli(*argv, "--json")
        assert result.code == code, (argv, result)
        found, message = error_of(result.out)
        assert found == kind, (argv, result)
        assert result.err.endswith(f"triofetch: error: {message}\n"), (argv, result)
    assert not (tmp_path / "new").exists()


def test_a_damaged_store_with_json(root: Path) -> None:
    (root / "triofetch.sqlite3").write_bytes(b"not a database" * 100)
    result = run_cli("verify", "--root", root, "--json")
    assert result.code == 2, result
    kind, message = error_of(result.out)
    assert kind == "not_a_store" and "is not a triofetch database" in message


def test_interrupted_with_json(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"f{i:03}.bin": os.urandom(2048) for i in range(80)}
    url = publish(http_server, files, faults={p: [Slow(0.02, 256)] for p in files})
    args = ("sync", url, "--root", tmp_path / "root", "--repository", "r", "--json")
    proc: subprocess.Popen[str] = start_cli(*args, "--connections", "2")
    try:
        deadline = time.monotonic() + 30
        while len(file_requests(http_server)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, (out, err)
    kind, message = error_of(out)
    assert kind == "terminated" and message.startswith("terminated (SIGTERM)")
    assert err == f"triofetch: {message}\n"
