"""The library's options as flags of the commands that download (#19, point 5), end to end.

``--header``/``--header-file``, the bearer token (``--bearer-token-file`` or
``$TRIOFETCH_BEARER_TOKEN``), ``--client-cert``/``--client-key``, ``--rate-limit`` and
``--proxy`` on ``sync``, ``repair``, ``export`` (its on-demand files) and ``serve`` (its
upstream), each run as a subprocess.  A secret is refused on the command line (a credentials
header, a proxy password) and never printed, even at ``-vvv``.  The syncs that only fill a
store for repair and export, and the refusals of bad --rate-limit values (before any work),
run the same main() in process (tests/_cli_helpers.py, run_cli_in_process).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trustme

from tests._cli_helpers import (
    Result,
    TLSServer,
    manifest_of,
    publish,
    run_cli,
    run_cli_in_process,
    self_signed_cert,
    start_cli,
)
from tests._fixtures_proxy import (
    Tinyproxy,
    fixture_tinyproxy,  # noqa: F401  (a fixture)
)
from tests.test_serve_cli import STARTUP, Running, fetch
from triofetch.testing import FaultServer

TOKEN = "tok-7f3e9a1c5b2d-secret"
FILES = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(5000)}


def _sync(url: str, root: Path, *more: str | Path, env: dict[str, str] | None = None) -> Result:
    return run_cli("sync", url, "--root", root, "--repository", "r", *more, env=env)


def _token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


# -- headers --------------------------------------------------------------------------------


def test_headers_are_sent_with_every_request(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    result = _sync(
        url, tmp_path / "root", "--header", "X-Mirror: one", "--header", "Accept-Language:fr"
    )
    assert result.code == 0, result
    seen = [r for r in http_server.requests if r.path.startswith("/repo/")]
    assert len(seen) == 3  # the manifest and two files
    for request in seen:
        assert request.headers["x-mirror"] == "one"
        assert request.headers["accept-language"] == "fr"


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        ("X-Mirror one", "'X-Mirror ...'"),
        (": value", "' ...'"),
        ("Bad Name: x", "'Bad ...'"),
        (f"Authorization Bearer {TOKEN}", "'Authorization ...'"),
    ],
)
def test_a_malformed_header_is_a_usage_error_naming_it(
    tmp_path: Path, header: str, shown: str
) -> None:
    """Named by its first word only: what follows could be a secret."""
    result = _sync("http://127.0.0.1:9/PULP_MANIFEST", tmp_path / "root", "--header", header)
    assert result.code == 2, result
    assert f"triofetch: error: --header: malformed header {shown}: expected 'Name: value'" in (
        result.err
    )
    assert TOKEN not in result.err


@pytest.mark.parametrize("name", ["Authorization", "proxy-authorization", "Cookie"])
def test_a_credentials_header_is_refused_on_the_command_line(tmp_path: Path, name: str) -> None:
    result = _sync(
        "http://127.0.0.1:9/PULP_MANIFEST",
        tmp_path / "root",
        "--json",
        "--header",
        f"{name}: Bearer {TOKEN}",
    )
    assert result.code == 2, result
    assert "--bearer-token-file" in result.err
    assert "TRIOFETCH_BEARER_TOKEN" in result.err
    assert "--header-file" in result.err
    assert TOKEN not in result.out + result.err
    assert result.json()["error"]["kind"] == "usage"


def test_a_header_file_may_carry_credentials(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    http_server.require_bearer({TOKEN})
    headers = tmp_path / "headers"
    headers.write_text(f"# for the mirror\n\nAuthorization: Bearer {TOKEN}\nCookie: s=1\n")
    result = _sync(url, tmp_path / "root", "-vvv", "--header-file", headers)
    assert result.code == 0, result
    assert TOKEN not in result.out + result.err
    assert all(r.headers["cookie"] == "s=1" for r in http_server.requests)
    bad = tmp_path / "bad"
    bad.write_text(f"Authorization Bearer {TOKEN}\n")
    refused = _sync(url, tmp_path / "root", "--header-file", bad)
    assert refused.code == 2, refused
    assert f"--header-file {bad}, line 1: malformed header 'Authorization ...'" in refused.err
    assert TOKEN not in refused.out + refused.err


# -- the bearer token -----------------------------------------------------------------------


def test_a_bearer_token_from_a_file_or_the_environment_never_printed(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = publish(http_server, FILES)
    http_server.require_bearer({TOKEN})
    refused = _sync(url, tmp_path / "none")
    assert refused.code == 2, refused  # the manifest: 401

    from_file = _sync(url, tmp_path / "one", "-vvv", "--bearer-token-file", _token_file(tmp_path))
    assert from_file.code == 0, from_file
    from_env = _sync(url, tmp_path / "two", "-vvv", env={"TRIOFETCH_BEARER_TOKEN": TOKEN})
    assert from_env.code == 0, from_env
    for result in (from_file, from_env):
        assert "GET" in result.err  # -vvv logged the requests ...
        assert TOKEN not in result.out + result.err  # ... and not the token
    sent = [r.headers.get("authorization") for r in http_server.requests]
    assert sent.count(f"Bearer {TOKEN}") == 6  # the manifest and two files, twice


def test_a_missing_or_empty_token_file_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for file, words in ((tmp_path / "nope", "cannot read"), (empty, "holds no token")):
        result = _sync(
            "http://127.0.0.1:9/PULP_MANIFEST", tmp_path / "r", "--bearer-token-file", file
        )
        assert result.code == 2, result
        assert f"--bearer-token-file: {words}" in result.err or words in result.err


def test_a_token_and_credentials_in_the_source_are_refused_in_the_commands_words(
    tmp_path: Path,
) -> None:
    """The library's "give either auth (basic) or token_provider (bearer)" came out,
    naming arguments a command-line user never gave."""
    result = _sync(
        "http://user:pw@127.0.0.1:9/PULP_MANIFEST",
        tmp_path / "r",
        "--bearer-token-file",
        _token_file(tmp_path),
    )
    assert result.code == 2, result
    line = result.err.strip()
    assert "--bearer-token-file" in line and "SOURCE" in line, line
    assert "token_provider" not in line and "pw" not in line and TOKEN not in line, line
    assert not (tmp_path / "r").exists()


def test_repair_and_export_use_the_token(http_server: FaultServer, tmp_path: Path) -> None:
    """repair downloads a deleted file again, export fetches on-demand files: both with the
    token and the headers."""
    url = publish(http_server, FILES)
    http_server.require_bearer({TOKEN})
    env = {"TRIOFETCH_BEARER_TOKEN": TOKEN}
    root = tmp_path / "root"
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r", env=env).code == 0
    stored = [p for p in (root / "artifacts").rglob("*") if p.is_file()]
    assert stored
    stored[0].chmod(0o600)
    stored[0].unlink()
    refused = run_cli("repair", "--root", root)
    assert refused.code == 1, refused
    repaired = run_cli("repair", "--root", root, "--header", "X-Why: repair", env=env)
    assert repaired.code == 0, repaired
    assert http_server.requests[-1].headers["x-why"] == "repair"

    lazy = tmp_path / "lazy"
    on_demand = ("--repository", "r", "--policy", "on_demand")
    assert run_cli_in_process("sync", url, "--root", lazy, *on_demand, env=env).code == 0
    token = _token_file(tmp_path)
    exported = run_cli(
        "export", "--root", lazy, "--repository", "r", tmp_path / "out",
        "--bearer-token-file", token, "-vvv",
    )  # fmt: skip
    assert exported.code == 0, exported
    assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == FILES["sub/b.bin"]
    assert TOKEN not in exported.out + exported.err


def test_serve_fetches_on_demand_files_with_the_token(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = publish(http_server, FILES)
    http_server.require_bearer({TOKEN})
    root = tmp_path / "root"
    env = {"TRIOFETCH_BEARER_TOKEN": TOKEN}
    assert _sync(url, root, "--policy", "on_demand", env=env).code == 0
    proc = start_cli(
        "-vvv", "serve", "--root", root, "--listen", "127.0.0.1:0",
        "--bearer-token-file", _token_file(tmp_path), "--header", "X-From: serve",
    )  # fmt: skip
    running = Running(proc)
    try:
        base = running.wait_for(STARTUP).group(2)
        assert fetch(base + "r/sub/b.bin") == FILES["sub/b.bin"]
        assert running.stop(signal.SIGTERM) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    last = http_server.requests[-1]
    assert last.path == "/repo/sub/b.bin"
    assert last.headers["x-from"] == "serve"
    assert last.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in running.err


# -- TLS client certificates ----------------------------------------------------------------


def test_a_client_certificate(tmp_path: Path) -> None:
    authority = trustme.CA()
    client_ca = tmp_path / "client-ca.pem"
    authority.cert_pem.write_to_path(str(client_ca))
    client = authority.issue_cert("triofetch-client")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(key))
    both = tmp_path / "both.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    server_pem, ca_pem = self_signed_cert(tmp_path)
    files = {"/repo/a.txt": b"alpha\n", "/repo/PULP_MANIFEST": manifest_of({"a.txt": b"alpha\n"})}
    with TLSServer(files, server_pem, client_ca=client_ca).running() as server:
        url = server.url("/repo/PULP_MANIFEST")
        trust = ("--ca-cert", ca_pem)
        # (no retries: a refused handshake is refused again)
        without = _sync(url, tmp_path / "r0", *trust, "--retries", "0")
        assert without.code == 2, without  # no handshake without a certificate
        with_key = _sync(url, tmp_path / "r1", *trust, "--client-cert", cert, "--client-key", key)
        assert with_key.code == 0, with_key
        one_file = _sync(url, tmp_path / "r2", *trust, "--client-cert", both)
        assert one_file.code == 0, one_file

    missing = _sync(url, tmp_path / "r3", "--client-cert", tmp_path / "nope.pem")
    assert missing.code == 2, missing
    assert "--client-cert: no such file or directory" in missing.err
    alone = _sync(url, tmp_path / "r4", "--client-key", key)
    assert alone.code == 2, alone
    assert "--client-key needs --client-cert" in alone.err


# -- rate limit -----------------------------------------------------------------------------


def test_the_rate_limit_spaces_the_requests(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"f{i}": b"x%d" % i for i in range(5)}
    url = publish(http_server, files)
    result = _sync(url, tmp_path / "root", "--rate-limit", "5")
    assert result.code == 0, result
    times = sorted(r.time for r in http_server.requests)
    assert len(times) == 6
    assert times[-1] - times[0] >= 5 * 0.2 * 0.9  # 6 requests, one every 0.2 s
    for bad in ("0", "-1", "x", "inf"):
        refused = run_cli_in_process(
            "sync", url, "--root", tmp_path / "root", "--repository", "r", "--rate-limit", bad
        )
        assert refused.code == 2, refused
        assert "--rate-limit" in refused.err


# -- proxy ----------------------------------------------------------------------------------


def test_the_proxy_flag_overrides_the_environment(
    http_server: FaultServer, tmp_path: Path, tinyproxy: Tinyproxy
) -> None:
    url = publish(http_server, FILES)
    # the environment names a proxy nobody listens on: --proxy wins over it
    env = {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    env |= {"NO_PROXY": "", "no_proxy": ""}
    broken = _sync(url, tmp_path / "r0", "--retries", "0", env=env)  # (refused again)
    assert broken.code == 2, broken
    result = _sync(url, tmp_path / "r1", "--proxy", tinyproxy.url(), env=env)
    assert result.code == 0, result
    port = url.split(":")[2].split("/")[0]
    assert f"GET http://127.0.0.1:{port}/repo/a.txt HTTP/1.1" in tinyproxy.requests()


def test_a_proxy_the_trio_transport_cannot_use_is_refused_in_the_flags_words(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """``--transport trio --proxy socks5://...``: refused (status 2, nothing made), and the
    advice is the flag, ``--transport httpx``; it was the library's keyword,
    ``transport='httpx'``."""
    url = publish(http_server, FILES)
    root = tmp_path / "root"
    result = _sync(url, root, "--transport", "trio", "--proxy", "socks5://127.0.0.1:9")
    assert result.code == 2, result
    assert result.err.strip().endswith("not socks5://; use --transport httpx"), result
    assert len(result.err.strip().splitlines()) == 1, result
    assert not root.exists()


def test_a_proxy_password_is_refused_on_the_command_line(tmp_path: Path) -> None:
    result = _sync(
        "http://127.0.0.1:9/PULP_MANIFEST",
        tmp_path / "root",
        "--proxy",
        f"http://user:{TOKEN}@127.0.0.1:3128",
    )
    assert result.code == 2, result
    assert "--proxy: a password is not taken on the command line" in result.err
    assert TOKEN not in result.out + result.err
    bad = _sync("http://127.0.0.1:9/PULP_MANIFEST", tmp_path / "root", "--proxy", "ftp://x")
    assert bad.code == 2, bad
    assert "--proxy: invalid proxy URL" in bad.err


@pytest.mark.parametrize(
    "db",
    [
        "postgresql://u:PWsecret@[::1:1/x",  # libpq quoted the whole URI
        "postgresql://u:PWsecret%zz@127.0.0.1:1/x",  # libpq quoted the token
        "host=127.0.0.1 password=PWsecret",  # a keyword string, echoed as it was
    ],
)
def test_a_db_password_is_never_printed_even_when_libpq_quotes_it(db: str) -> None:
    """The PostgreSQL driver's own message may quote the connection string, or the part
    of it it could not read: the password came out beside the redacted URL."""
    for args in (("list", "--repository", "r"), ("list", "--repository", "r", "--json")):
        result = run_cli(*args, "--db", db)
        assert result.code == 2, result
        assert "PWsecret" not in result.out + result.err, result
