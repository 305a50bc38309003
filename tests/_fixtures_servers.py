"""Real HTTP servers that no one in this project wrote, started on 127.0.0.1 for the tests.

- ``nginx_server``: nginx (``/usr/sbin/nginx``, or on PATH) with a generated configuration:
  the static files of :mod:`tests.servers.data` with Content-Length, keep-alive with
  ``keepalive_requests 5``, redirects, 404s; HTTP and HTTPS.  Its access log names the
  connection of every request, which :meth:`RealServer.connections` counts.
- ``hypercorn_server``: hypercorn on Trio (h11) running :mod:`tests.servers.hypercorn_app`:
  chunked and Content-Length bodies, redirects, bodies cut mid-way; HTTP and HTTPS.
  ``hypercorn_server_quick_close`` is another one that closes idle connections after
  ``QUICK_CLOSE`` seconds (as nginx does for the files under ``/quick-close/``).
- ``stdlib_server``: Python's ``http.server`` (HTTP/1.0) running
  :mod:`tests.servers.stdlib_http`: static files, close-delimited bodies, bodies cut
  mid-way; HTTP and HTTPS.

Each is module-scoped: started once (in its own process group, after a readiness check that
asks it for a token of its own: a connection to another program on a reused port would not
answer it), and always stopped at the module's teardown (SIGTERM to its group, SIGKILL after
5 s).  The certificates come from ``tls_files``: a CA made by trustme for the run, a server
certificate for ``127.0.0.1`` and ``localhost``, and another CA the servers do not use.

Import the fixtures into a test module (``from tests._fixtures_servers import fixture_...``):
each is registered under its ``name`` (``tls_files``, ``nginx_server``...), so a test's
parameter of that name does not shadow the imported function.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import trustme

from tests.servers import data

REPO = Path(__file__).resolve().parent.parent
#: seconds a server has to become ready, and to stop
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: nginx closes a connection after this many requests (it says ``Connection: close``)
NGINX_KEEPALIVE_REQUESTS = 5
#: seconds after which ``hypercorn_server_quick_close`` and nginx's ``/quick-close/`` files
#: close an idle connection (the others keep one 30 s)
QUICK_CLOSE = 0.25


@dataclass(frozen=True)
class TLSFiles:
    """PEM files made for one test module."""

    ca: Path  #: the CA that signed the servers' certificate
    other_ca: Path  #: a CA that signed nothing the servers use
    cert: Path  #: the server certificate chain
    key: Path  #: its private key

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass
class RealServer:
    """A started server: its name, its ports by scheme and what it can tell about itself."""

    name: str
    ports: dict[str, int]
    #: whether it keeps connections alive (HTTP/1.1 persistent connections)
    keeps_alive: bool
    #: tag -> distinct connections of the requests with ``?tag=TAG`` (expected count given)
    _connections: Callable[[str, int], int] = field(repr=False)

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.ports[scheme]}{path}"

    def connections(self, tag: str, requests: int) -> int:
        """How many connections carried the *requests* requests tagged *tag*."""
        return self._connections(tag, requests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, context: ssl.SSLContext | None, timeout: float = 2.0) -> bytes:
    """GET *path* from 127.0.0.1:*port* with the standard library; the body if 200."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        content = response.read()
        if response.status != 200:
            raise OSError(f"GET {path}: status {response.status}")
        return content
    finally:
        conn.close()


def _wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    token: str,
    context: ssl.SSLContext | None,
    log: Path,
) -> None:
    """Until *port* answers ``/ready`` with *token*; raise if *proc* exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:  # (bounded: about 10 s of 50 ms tries)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {_tail(log)}")
        try:
            if _get(port, "/ready", context).decode() == token:
                return
            last = RuntimeError(f"port {port} answers with another token")
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} not ready in {START_TIMEOUT} s: {last!r}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop *proc* and its process group (its own session): SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
    # whatever is left of the group (nginx's worker, say), and the leader if still there
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def _process(
    argv: list[str], log: Path, stdout: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """*argv* running in its own session (stderr to *log*), stopped on the way out."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=err,
            cwd=REPO,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)


def _read_ports(proc: subprocess.Popen[bytes], log: Path) -> dict[str, int]:
    """The JSON line of ports the helper program prints once it listens."""
    stream: IO[bytes] | None = proc.stdout
    assert stream is not None
    deadline = time.monotonic() + START_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([stream], [], [], min(left, 0.5))
        if readable:
            line = stream.readline()
            if not line:
                break
            return {str(k): int(v) for k, v in json.loads(line).items()}
        if proc.poll() is not None:
            break
    raise RuntimeError(f"{proc.args!r} did not report its ports: {_tail(log)}")


def _tagged_clients(port: int) -> Callable[[str, int], int]:
    """Ask a helper program how many connections carried a tag's requests."""

    def count(tag: str, requests: int) -> int:
        return int(_get(port, f"/connections/{tag}", None))

    return count


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", name="tls_files")
def fixture_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        cert=directory / "server.pem",
        key=directory / "server.key",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    server.private_key_pem.write_to_path(str(files.key))
    with open(files.cert, "wb") as fh:
        for blob in server.cert_chain_pems:
            fh.write(blob.bytes())
    return files


@pytest.fixture(scope="module", name="www")
def fixture_www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A document root with ``files/`` holding the file of every size of tests.servers.data."""
    root = tmp_path_factory.mktemp("www")
    (root / "files").mkdir()
    data.write_files(str(root / "files"))
    return root


NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    log_format conn '$connection $request_uri';
    access_log {tmp}/access.log conn;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 30;
    keepalive_requests {keepalive_requests};
    default_type application/octet-stream;
    types {{ }}
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
        location /files/ {{ }}
        # the same files, on connections closed after {quick_close_ms} ms without a request
        location /quick-close/ {{ alias {root}/files/; keepalive_timeout {quick_close_ms}ms; }}
        location = /ready {{ return 200 "{token}"; }}
        # 301 and 302: absolute Location (nginx's default); 307 and 308: relative
        location ~ ^/redirect/301/(.*)$ {{ return 301 /$1; }}
        location ~ ^/redirect/302/(.*)$ {{ return 302 /$1; }}
        location ~ ^/redirect/307/(.*)$ {{ absolute_redirect off; return 307 /$1; }}
        location ~ ^/redirect/308/(.*)$ {{ absolute_redirect off; return 308 /$1; }}
        location / {{ return 404; }}
    }}
}}
"""


def _nginx_binary() -> str:
    found = shutil.which("nginx")
    for candidate in (found, "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("nginx is not installed (scripts/ensure-test-servers.sh installs it)")


def _nginx_connections(access_log: Path) -> Callable[[str, int], int]:
    def count(tag: str, requests: int) -> int:
        # nginx logs a request once it is done: wait (bounded) until all of them are there
        needle = f"tag={tag}"
        deadline = time.monotonic() + 5.0
        while True:
            lines = [
                line.split(" ", 1)[0]
                for line in access_log.read_text().splitlines()
                if line.endswith(needle) or f"{needle}&" in line
            ]
            if len(lines) >= requests or time.monotonic() > deadline:
                return len(set(lines))
            time.sleep(0.02)

    return count


@pytest.fixture(scope="module", name="nginx_server")
def fixture_nginx_server(
    tmp_path_factory: pytest.TempPathFactory, www: Path, tls_files: TLSFiles
) -> Iterator[RealServer]:
    binary = _nginx_binary()
    tmp = tmp_path_factory.mktemp("nginx")
    token = secrets.token_hex(8)
    last: Exception | None = None
    for _ in range(3):  # (another program may take a free port before nginx binds it)
        port, tls_port = free_port(), free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                user="user root;" if os.geteuid() == 0 else "",
                tmp=tmp,
                port=port,
                tls_port=tls_port,
                cert=tls_files.cert,
                key=tls_files.key,
                root=www,
                token=token,
                keepalive_requests=NGINX_KEEPALIVE_REQUESTS,
                quick_close_ms=round(QUICK_CLOSE * 1000),
            )
        )
        log = tmp / "stderr.log"
        with _process([binary, "-p", str(tmp), "-e", "stderr", "-c", str(conf)], log) as proc:
            try:
                _wait_ready(proc, port, token, None, log)
                _wait_ready(proc, tls_port, token, tls_files.client_context(), log)
            except RuntimeError as exc:
                last = exc
                continue
            yield RealServer(
                "nginx",
                {"http": port, "https": tls_port},
                keeps_alive=True,
                _connections=_nginx_connections(tmp / "access.log"),
            )
            return
    raise RuntimeError(f"nginx did not start: {last}")


@contextlib.contextmanager
def _hypercorn(tmp: Path, tls_files: TLSFiles, keep_alive: float) -> Iterator[RealServer]:
    token = secrets.token_hex(8)
    log = tmp / "stderr.log"
    argv = [
        sys.executable,
        "-m",
        "tests.servers.hypercorn_app",
        str(tls_files.cert),
        str(tls_files.key),
        token,
        str(keep_alive),
    ]
    with _process(argv, log, stdout=subprocess.PIPE) as proc:
        ports = _read_ports(proc, log)
        _wait_ready(proc, ports["http"], token, None, log)
        _wait_ready(proc, ports["https"], token, tls_files.client_context(), log)
        yield RealServer(
            "hypercorn", ports, keeps_alive=True, _connections=_tagged_clients(ports["http"])
        )


@pytest.fixture(scope="module", name="hypercorn_server")
def fixture_hypercorn_server(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[RealServer]:
    with _hypercorn(tmp_path_factory.mktemp("hypercorn"), tls_files, 30.0) as server:
        yield server


@pytest.fixture(scope="module", name="hypercorn_server_quick_close")
def fixture_hypercorn_server_quick_close(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[RealServer]:
    """hypercorn closing a connection after QUICK_CLOSE seconds without a request."""
    with _hypercorn(tmp_path_factory.mktemp("hypercorn"), tls_files, QUICK_CLOSE) as server:
        yield server


@pytest.fixture(scope="module", name="stdlib_server")
def fixture_stdlib_server(
    tmp_path_factory: pytest.TempPathFactory, www: Path, tls_files: TLSFiles
) -> Iterator[RealServer]:
    tmp = tmp_path_factory.mktemp("http.server")
    token = secrets.token_hex(8)
    log = tmp / "stderr.log"
    argv = [
        sys.executable,
        "-m",
        "tests.servers.stdlib_http",
        str(www),
        str(tls_files.cert),
        str(tls_files.key),
        token,
    ]
    with _process(argv, log, stdout=subprocess.PIPE) as proc:
        ports = _read_ports(proc, log)
        _wait_ready(proc, ports["http"], token, None, log)
        _wait_ready(proc, ports["https"], token, tls_files.client_context(), log)
        yield RealServer(
            "http.server", ports, keeps_alive=False, _connections=_tagged_clients(ports["http"])
        )
