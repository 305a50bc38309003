"""End-to-end tests of the ``triofetch`` command: the installed package run as a subprocess
(``python -m triofetch``) against a real loopback HTTP server with fault injection.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests._cli_helpers import (
    TLSServer,
    file_requests,
    manifest_of,
    publish,
    run_cli,
    run_cli_in_process,
    self_signed_cert,
    start_cli,
)
from triofetch.__main__ import main
from triofetch.testing import FaultServer, Slow, Status, WrongBytes

FILES = {
    "a.txt": b"alpha\n",
    "dir/b.bin": os.urandom(3000),
    "dir/sub/c d.txt": b"a name with a space\n",
    "données/été #1?.txt": b"non-ASCII, '#' and '?'\n",
    "100%.txt": b"percent\n",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(root: Path, repository: str = "r", *more: str) -> list[dict[str, object]]:
    result = run_cli("list", "--root", root, "--repository", repository, "--json", *more)
    assert result.code == 0, result
    rows: list[dict[str, object]] = result.json()
    return rows


def temp_files(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


# -- the happy path, JSON, list, export, verify ------------------------------------------------


def test_sync_list_export_verify(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    root = tmp_path / "root"
    result = run_cli("sync", url, "--root", root, "--repository", "r", "--json")
    assert result.code == 0, result
    report = result.json()
    assert set(report) == {
        "repository",
        "version",
        "created",
        "units",
        "artifacts",
        "replaced",
        "failures",
        "seconds",
    }
    assert report["repository"] == "r"
    assert report["version"] == 1 and report["created"] is True
    assert report["units"] == {"total": 5, "new": 5, "existing": 0, "failed": 0, "replaced": 0}
    total = sum(len(d) for d in FILES.values())
    assert report["artifacts"] == {"downloaded": 5, "reused": 0, "repaired": 0, "bytes": total}
    assert report["replaced"] == []
    assert report["failures"] == []
    assert isinstance(report["seconds"], float)
    # relative paths were URL-encoded on the wire
    raw = {r.path for r in http_server.requests}
    assert "/repo/dir/sub/c%20d.txt" in raw
    assert "/repo/donn%C3%A9es/%C3%A9t%C3%A9%20%231%3F.txt" in raw
    assert "/repo/100%25.txt" in raw
    assert temp_files(root) == []

    # a second sync makes no file request (and no new version)
    http_server.reset_counters()
    again = run_cli("sync", url, "--root", root, "--repository", "r", "--json")
    assert again.code == 0, again
    # ... and says where the content is: the unchanged version 1
    assert again.json()["version"] == 1 and again.json()["created"] is False
    assert again.json()["units"] == {
        "total": 5,
        "new": 0,
        "existing": 5,
        "failed": 0,
        "replaced": 0,
    }
    assert again.json()["artifacts"]["downloaded"] == 0
    assert file_requests(http_server) == []
    assert http_server.count("/repo/PULP_MANIFEST") == 1

    rows = listing(root)
    assert rows == [
        {"relative_path": p, "sha256": sha(d), "size": len(d), "downloaded": True}
        for p, d in sorted(FILES.items())
    ]
    unknown = run_cli("list", "--root", root, "--repository", "other")
    assert unknown.code == 2 and "no repository named 'other'" in unknown.err

    dest = tmp_path / "export"
    exported = run_cli("export", "--root", root, "--repository", "r", dest)
    assert exported.code == 0, exported
    for path, data in FILES.items():
        assert (dest / path).read_bytes() == data
    stored = root / "artifacts" / sha(FILES["a.txt"])[:2] / sha(FILES["a.txt"])[2:4]
    assert (dest / "a.txt").stat().st_ino == (stored / sha(FILES["a.txt"])).stat().st_ino
    lines = sorted((dest / "PULP_MANIFEST").read_text(encoding="utf-8").splitlines())
    assert lines == sorted(manifest_of(FILES).decode().splitlines())
    no_version = run_cli("export", "--root", root, "--repository", "r", "--version", "7", dest)
    assert no_version.code == 2 and "has no version 7" in no_version.err

    verified = run_cli("verify", "--root", root)
    assert verified.code == 0, verified
    assert "verified 5 stored files: all intact" in verified.out
    # corrupt one stored file, then remove it: verify names it
    digest = sha(FILES["a.txt"])
    (stored / digest).chmod(0o644)
    (stored / digest).write_bytes(b"tampered")
    corrupted = run_cli("verify", "--root", root, "--json")
    assert corrupted.code == 1, corrupted
    assert corrupted.json()["checked"] == 5 and corrupted.json()["ok"] is False
    assert [c["sha256"] for c in corrupted.json()["corrupted"]] == [digest]
    assert f"corrupted: {digest}" in corrupted.err
    (stored / digest).unlink()
    missing = run_cli("verify", "--root", root)
    assert missing.code == 1 and f"corrupted: {digest}: missing" in missing.err


def test_plain_output_default_root_and_environment(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = publish(http_server, FILES)
    result = run_cli("sync", url, "--repository", "r", cwd=tmp_path)  # ./triofetch-data
    assert result.code == 0, result
    assert "\x1b[" not in result.out  # not a terminal: no bars, no colours
    assert "repository 'r': version 1 created" in result.out
    assert "files: 5 total, 5 new, 0 already present, 0 failed" in result.out
    assert result.err == ""
    root = tmp_path / "triofetch-data"
    assert (root / "triofetch.sqlite3").is_file()
    text = run_cli("list", "--repository", "r", env={"TRIOFETCH_ROOT": str(root)})
    assert text.code == 0, text
    assert "dir/sub/c d.txt" in text.out and sha(FILES["a.txt"]) in text.out


def test_file_url_and_local_path_sources(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "d").mkdir(parents=True)
    files = {"d/x y.txt": b"x", "é.txt": b"e"}
    for path, data in files.items():
        (site / path).write_bytes(data)
    (site / "PULP_MANIFEST").write_bytes(manifest_of(files, newline="\r\n"))  # CRLF
    root = tmp_path / "root"
    result = run_cli("sync", (site / "PULP_MANIFEST").as_uri(), "--root", root, "--repository", "r")
    assert result.code == 0, result
    result = run_cli("sync", site, "--root", root, "--repository", "s", "--json")
    assert result.code == 0, result
    assert result.json()["units"] == {
        "total": 2,
        "new": 0,
        "existing": 2,
        "failed": 0,
        "replaced": 0,
    }


# -- failures: exit 1 -----------------------------------------------------------------------


def test_failed_files_exit_1_and_the_rest_stays(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"ok{i}.txt": f"ok {i}".encode() for i in range(4)}
    files |= {"missing.txt": b"404", "corrupt.txt": b"wrong bytes", "short.txt": b"size"}
    manifest = manifest_of(files).replace(
        f"short.txt,{sha(b'size')},4".encode(), f"short.txt,{sha(b'size')},5".encode()
    )
    url = publish(
        http_server,
        files,
        manifest=manifest,
        faults={
            "missing.txt": [Status(404)],
            "corrupt.txt": [WrongBytes(), WrongBytes()],
            "ok0.txt": [Status(503)],  # succeeds on the retry
        },
    )
    root = tmp_path / "root"
    args = ("sync", url, "--root", root, "--repository", "r", "--retries", "1", "--json")
    result = run_cli(*args)
    assert result.code == 1, result
    report = result.json()
    assert report["version"] is None and report["created"] is False
    assert report["units"] == {"total": 7, "new": 4, "existing": 0, "failed": 3, "replaced": 0}
    failures = {f["relative_path"]: f for f in report["failures"]}
    assert set(failures) == {"missing.txt", "corrupt.txt", "short.txt"}
    assert "404" in failures["missing.txt"]["error"]
    assert failures["missing.txt"]["url"] == http_server.url("/repo/missing.txt")
    assert "sha256 mismatch" in failures["corrupt.txt"]["error"]
    assert "size mismatch" in failures["short.txt"]["error"]
    for path in failures:
        assert f"failed: {path}: " in result.err
    assert "Traceback" not in result.err
    # --retries 1: two attempts in all for a retryable failure; a 404 is not retried
    assert http_server.count("/repo/corrupt.txt") == 2
    assert http_server.count("/repo/ok0.txt") == 2
    assert http_server.count("/repo/missing.txt") == 1
    assert temp_files(root) == []

    # the four good files were committed and stay: fixing the source downloads only the rest
    http_server.add_file("/repo/missing.txt", b"404")
    http_server.add_file("/repo/PULP_MANIFEST", manifest_of(files))
    http_server.reset_counters()
    result = run_cli(*args)
    assert result.code == 0, result
    report = result.json()
    assert report["version"] == 1
    assert report["units"] == {"total": 7, "new": 3, "existing": 4, "failed": 0, "replaced": 0}
    refetched = ["/repo/corrupt.txt", "/repo/missing.txt", "/repo/short.txt"]
    assert sorted(file_requests(http_server)) == refetched


# -- bad input: exit 2, nothing downloaded, nothing written ------------------------------------

GOOD = f"good.txt,{sha(b'good')},4"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # every kind of bad line is covered in-process by tests/test_manifest.py
        (f"x.txt,{sha(b'x')},-1", "must not be negative"),
        (f"good.txt,{sha(b'other')},5", "listed twice with different contents"),
        (f"a/../../x.txt,{sha(b'x')},1", "'..' segment"),
    ],
)
def test_malformed_manifest_exit_2(
    http_server: FaultServer, tmp_path: Path, line: str, message: str
) -> None:
    manifest = f"{GOOD}\n\n{line}\n".encode()
    url = publish(http_server, {"good.txt": b"good"}, manifest=manifest)
    root = tmp_path / "root"
    result = run_cli("sync", url, "--root", root, "--repository", "r")
    assert result.code == 2, result
    assert message in result.err
    assert "PULP_MANIFEST:3:" in result.err  # names the line
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert file_requests(http_server) == []  # nothing downloaded
    assert not root.exists()  # nothing written


def test_unreachable_manifest_exit_2(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    missing = run_cli("sync", http_server.url("/nope/PULP_MANIFEST"), "--root", root,
                      "--repository", "r", "--retries", "0")  # fmt: skip
    assert missing.code == 2 and "cannot fetch the manifest" in missing.err, missing
    assert "404" in missing.err
    with FaultServer() as gone:
        closed = gone.url("/PULP_MANIFEST")
    refused = run_cli("sync", closed, "--root", root, "--repository", "r", "--retries", "0")
    assert refused.code == 2 and "cannot fetch the manifest" in refused.err, refused
    for result in (missing, refused):
        assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert not root.exists()


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # in-process: these stop before any I/O (the subprocess path is the same main())
    monkeypatch.chdir(tmp_path)
    cases = [
        (["sync", "http://127.0.0.1:9/PULP_MANIFEST"], "--repository"),
        (["sync", "x", "--repository", "r", "--connections", "0"], "expected an integer >= 1"),
        (["sync", "x", "--repository", "r", "--retries", "-1"], "expected an integer >= 0"),
        (["sync", "ftp://h/PULP_MANIFEST", "--repository", "r"], "unsupported source scheme"),
        (["sync", "no/such/path", "--repository", "r"], "unsupported source"),
        (["sync", "http://h/M", "--repository", "r", "--ca-cert", "no.pem"], "no such file"),
        (["sync", "http://h/M", "--repository", "r", "--policy", "lazy"], "invalid choice"),
        (["list", "--repository", "r"], "no triofetch store"),
        (["verify", "--root", str(tmp_path / "nothing")], "no triofetch store"),
        (["frobnicate"], "invalid choice"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert list(tmp_path.iterdir()) == []


# -- credentials and TLS --------------------------------------------------------------------


def test_credentials_in_the_url_are_basic_auth_and_never_shown(
    http_server: FaultServer, tmp_path: Path
) -> None:
    files = {"a.txt": b"a", "gone.txt": b"g"}
    url = publish(http_server, files, faults={"gone.txt": [Status(404)]})
    http_server.require_basic_auth("alice", "s3cr3t-pw")
    secret_url = url.replace("http://", "http://alice:s3cr3t-pw@")
    root = tmp_path / "root"
    result = run_cli("-vv", "sync", secret_url, "--root", root, "--repository", "r", "--json")
    assert result.code == 1, result  # gone.txt: 404
    assert "reading the manifest" in result.err  # -v logs to stderr
    assert "s3cr3t-pw" not in result.out + result.err
    assert "alice" not in result.out + result.err
    requests = [r for r in http_server.requests if r.path.startswith("/repo/")]
    assert {r.headers.get("authorization", "")[:6] for r in requests} == {"Basic "}
    assert http_server.count("/repo/a.txt") == 1
    with sqlite3.connect(root / "triofetch.sqlite3") as db:
        dump = "\n".join(db.iterdump())
    assert "s3cr3t-pw" not in dump
    wrong = run_cli("sync", url.replace("http://", "http://alice:nope@"), "--root", root,
                    "--repository", "r", "--retries", "0")  # fmt: skip
    assert wrong.code == 2 and "401" in wrong.err and "nope" not in wrong.err


def test_tls_trust_ca_cert_and_ssl_cert_file(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    server_pem, ca_pem = self_signed_cert(tmp_path)
    files = {"/r/a.txt": b"tls"}
    files["/r/PULP_MANIFEST"] = manifest_of({"a.txt": b"tls"})
    with TLSServer(files, server_pem).running() as server:
        url = server.url("/r/PULP_MANIFEST")
        root = tmp_path / "root"
        untrusted = run_cli("sync", url, "--root", root, "--repository", "r", "--retries", "0")
        assert untrusted.code == 2 and "CERTIFICATE_VERIFY_FAILED" in untrusted.err, untrusted
        trusted = run_cli("sync", url, "--root", root, "--repository", "r", "--ca-cert", ca_pem)
        assert trusted.code == 0, trusted
        env = {"SSL_CERT_FILE": str(ca_pem)}
        by_env = run_cli("sync", url, "--root", root, "--repository", "e", env=env)
        assert by_env.code == 0, by_env


# -- versions and policies ------------------------------------------------------------------


def test_v1_then_v2_with_and_without_mirror(http_server: FaultServer, tmp_path: Path) -> None:
    first = {"a.txt": b"a", "b.txt": b"b"}
    second = {"b.txt": b"b", "c.txt": b"c"}
    root = tmp_path / "root"
    url = publish(http_server, first)
    for name, flags in (("keep", []), ("mirror", ["--mirror"])):
        one = run_cli("sync", url, "--root", root, "--repository", name, "--json", *flags)
        assert one.code == 0 and one.json()["version"] == 1, one
    publish(http_server, second)
    for name, flags in (("keep", []), ("mirror", ["--mirror"])):
        two = run_cli("sync", url, "--root", root, "--repository", name, "--json", *flags)
        assert two.code == 0, two
        assert two.json()["version"] == 2
        assert two.json()["units"]["total"] == 2 and two.json()["units"]["failed"] == 0
    assert [r["relative_path"] for r in listing(root, "keep")] == ["a.txt", "b.txt", "c.txt"]
    assert [r["relative_path"] for r in listing(root, "mirror")] == ["b.txt", "c.txt"]
    old = listing(root, "mirror", "--version", "1")
    assert [r["relative_path"] for r in old] == ["a.txt", "b.txt"]


def test_on_demand_then_immediate_then_export(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    root = tmp_path / "root"
    lazy = run_cli("sync", url, "--root", root, "--repository", "r", "--policy", "on_demand",
                   "--json")  # fmt: skip
    assert lazy.code == 0, lazy
    assert lazy.json()["version"] == 1 and lazy.json()["artifacts"]["downloaded"] == 0
    assert file_requests(http_server) == []
    rows = listing(root)
    assert [r["downloaded"] for r in rows] == [False] * 5
    assert rows[0] == {
        "relative_path": "100%.txt",
        "sha256": sha(FILES["100%.txt"]),
        "size": len(FILES["100%.txt"]),
        "downloaded": False,
    }
    dest = tmp_path / "export"
    # without --no-fetch export would fetch them (tests/test_export.py)
    partial = run_cli("export", "--root", root, "--repository", "r", "--no-fetch", dest)
    assert partial.code == 1 and "not downloaded" in partial.err

    eager = run_cli("sync", url, "--root", root, "--repository", "r", "--json")
    assert eager.code == 0, eager
    assert eager.json()["artifacts"]["downloaded"] == 5
    assert eager.json()["units"]["failed"] == 0
    assert len(file_requests(http_server)) == 5

    # export never writes through a symbolic link inside DEST: it replaces the link
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    (dest / "a.txt").unlink(missing_ok=True)
    (dest / "a.txt").symlink_to(outside / "victim")
    shutil.rmtree(dest / "dir", ignore_errors=True)
    (dest / "dir").symlink_to(outside)
    result = run_cli("export", "--root", root, "--repository", "r", dest)
    assert result.code == 0, result
    assert (outside / "victim").read_bytes() == b"keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (dest / "a.txt").is_symlink() and (dest / "a.txt").read_bytes() == b"alpha\n"
    assert not (dest / "dir").is_symlink()
    for path, data in FILES.items():
        assert (dest / path).read_bytes() == data


# -- interruption and concurrency -----------------------------------------------------------


def test_sigint_then_a_completing_resync(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"d{i % 7}/f{i:03}.bin": os.urandom(4096) for i in range(160)}
    url = publish(http_server, files, faults={p: [Slow(0.02, 512)] for p in files})
    root = tmp_path / "root"
    args = ("sync", url, "--root", root, "--repository", "r", "--connections", "4")
    proc = start_cli(*args)
    try:
        deadline = time.monotonic() + 30
        while len(file_requests(http_server)) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert temp_files(root) == []

    for path, data in files.items():  # no more slow answers
        http_server.add_file(f"/repo/{path}", data)
    result = run_cli(*args, "--json")
    assert result.code == 0, result
    report = result.json()
    assert report["version"] == 1
    assert report["units"]["total"] == 160 and report["units"]["failed"] == 0
    assert report["units"]["existing"] >= 1  # committed before the interrupt, kept
    assert report["units"]["existing"] + report["units"]["new"] == 160
    assert run_cli("verify", "--root", root).code == 0


def test_a_database_that_cannot_be_reached_leaves_no_new_root(tmp_path: Path) -> None:
    """``sync --db`` to a PostgreSQL nobody listens on: status 2, one line, and the --root
    it had made for the store's files is gone again (it was left behind, empty); a root
    that was there before stays."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "PULP_MANIFEST").write_bytes(manifest_of({"a.txt": b"alpha\n"}))
    nowhere = "postgresql://u@127.0.0.1:1/x"  # (port 1: refused at once)
    for root in (tmp_path / "new" / "root", tmp_path):
        result = run_cli_in_process(
            "sync", source / "PULP_MANIFEST", "--root", root, "--repository", "r", "--db", nowhere
        )
        assert result.code == 2 and "cannot open the store" in result.err, result
    assert not (tmp_path / "new" / "root").exists()
    assert tmp_path.is_dir()


def test_a_store_made_between_the_new_root_checks_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two syncs making one new root: the second looked for the database (not there yet),
    then listed the root after the first had made the database and the storage's
    directories, and refused it as someone else's directory ("no triofetch store at ROOT",
    status 2; seen once in the suite's test_two_syncs_on_one_root_at_once)."""
    from triofetch._cli import _common

    root = tmp_path / "root"
    (root / "artifacts").mkdir(parents=True)
    (root / "triofetch.sqlite3").write_bytes(b"")
    looked = []

    def not_yet(path: object) -> bool:  # the database appears just after this look
        looked.append(path)
        return False

    monkeypatch.setattr(_common.os.path, "lexists", not_yet)
    _common.check_new_root(root, None)  # no CLIError: the store is there now
    assert looked == [root / "triofetch.sqlite3"]
    (root / "triofetch.sqlite3").unlink()
    with pytest.raises(_common.CLIError, match="no triofetch store at"):
        _common.check_new_root(root, None)  # someone else's directory


def test_two_syncs_on_one_root_at_once(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"f{i:03}.txt": f"file {i}".encode() * 50 for i in range(150)}
    url = publish(http_server, files)
    root = tmp_path / "root"
    args = ("sync", url, "--root", root, "--repository", "r", "--json")
    procs = [start_cli(*args), start_cli(*args)]
    outcomes = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    for code, out, err in outcomes:
        assert "Traceback" not in err, err
        assert code == 0, (out, err)
        report = json.loads(out)
        assert report["units"]["failed"] == 0 and report["units"]["total"] == 150
    # one made a version, the other found it holding everything: one version, not two
    # identical ones (tests/test_version_races.py holds one of them to make sure they race)
    reports = [json.loads(o) for _, o, _ in outcomes]
    assert sorted(r["created"] for r in reports) == [False, True]
    assert len({r["version"] for r in reports}) == 1
    listed = run_cli("versions", "--root", root, "--repository", "r", "--json")
    assert [v["number"] for v in listed.json()] == [reports[0]["version"]], listed
    rows = listing(root)
    assert [r["relative_path"] for r in rows] == sorted(files)
    assert all(r["downloaded"] for r in rows)
    assert temp_files(root) == []
    assert run_cli("verify", "--root", root).code == 0


# -- the rest of the surface ----------------------------------------------------------------


def test_help_on_every_command_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    # in-process: argparse answers before anything else runs
    for command in ("sync", "list", "export", "verify", "demo"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"usage: triofetch {command}" in out and "--verbose" in out
    assert main(["--help"]) == 0
    assert "exit status: 0 done; 1 some files" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("triofetch ")


def test_demo(tmp_path: Path) -> None:
    demo = run_cli("demo", "--files", "60", cwd=tmp_path)
    assert demo.code == 0, demo
    assert "version 1 created: 60 new files" in demo.out
    assert "0 downloaded, no new version" in demo.out
    assert "identical to the source: yes" in demo.out
    assert "all intact" in demo.out
    assert list(tmp_path.iterdir()) == []  # everything happened in a temp dir


def test_demo_removes_its_temp_dir_itself(tmp_path: Path) -> None:
    """It was left to the TemporaryDirectory's finalizer, at exit: ``ResourceWarning:
    Implicitly cleaning up`` under ``python -X dev`` or ``-W error``."""
    demo = run_cli(
        "demo", "--files", "20", cwd=tmp_path, env={"PYTHONWARNINGS": "error::ResourceWarning"}
    )
    assert demo.code == 0, demo
    assert "ResourceWarning" not in demo.err and "Exception ignored" not in demo.err, demo


def test_demo_without_a_utf8_file_system_encoding(tmp_path: Path) -> None:
    """Under ``LC_ALL=C`` without UTF-8 mode (file system encoding ASCII) the demo ended in
    "internal error: UnicodeEncodeError" (status 70) writing its sample 'données/...'."""
    ascii_locale = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    demo = run_cli("demo", "--files", "20", cwd=tmp_path, env=ascii_locale)
    assert demo.code == 0, demo
    assert "identical to the source: yes" in demo.out and "all intact" in demo.out, demo


def test_a_non_ascii_source_url_without_a_utf8_locale(tmp_path: Path) -> None:
    """A ``file://`` URL with non-ASCII characters typed under ``LC_ALL=C`` without UTF-8
    mode reaches ``sys.argv`` with surrogate escapes (the bytes the locale could not
    decode): the sync ended in "internal error: UnicodeEncodeError ... surrogates not
    allowed" (status 70).  Those bytes are percent-escaped, as a URL carries them."""
    ascii_locale = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    source = tmp_path / "dépôt"
    source.mkdir()
    body = b"summer\n"
    (source / "été.txt").write_bytes(body)
    line = f"été.txt,{hashlib.sha256(body).hexdigest()},{len(body)}\n"
    (source / "PULP_MANIFEST").write_bytes(line.encode("utf-8"))
    url = f"file://{source}/PULP_MANIFEST"
    root = tmp_path / "root"
    result = run_cli("sync", url, "--root", root, "--repository", "r", env=ascii_locale)
    assert result.code == 0, result
    listed = run_cli("list", "--root", root, "--repository", "r", "--json")
    assert [row["relative_path"] for row in listed.json()] == ["été.txt"]


@pytest.mark.postgres
def test_sync_with_db_on_postgresql(
    http_server: FaultServer, tmp_path: Path, postgres_dsn: str
) -> None:
    url = publish(http_server, FILES)
    root = tmp_path / "root"
    base = ("--root", root, "--db", postgres_dsn)
    result = run_cli("sync", url, *base, "--repository", "r", "--json")
    assert result.code == 0, result
    assert result.json()["version"] == 1
    assert not (root / "triofetch.sqlite3").exists()
    rows = run_cli("list", *base, "--repository", "r", "--json")
    assert [r["relative_path"] for r in rows.json()] == sorted(FILES)
    http_server.reset_counters()
    again = run_cli("sync", url, *base, "--repository", "r", "--json")
    assert again.code == 0 and again.json()["units"]["existing"] == 5
    assert file_requests(http_server) == []
    assert run_cli("export", *base, "--repository", "r", tmp_path / "out").code == 0
    assert run_cli("verify", *base).code == 0
