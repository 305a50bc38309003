"""A real proxy (tinyproxy) and a recording origin server, on 127.0.0.1, for the proxy and
IDNA tests.

- :func:`start_tinyproxy`: tinyproxy (``/usr/bin/tinyproxy``, installed by
  ``scripts/ensure-test-servers.sh``) with a generated configuration: listening on
  127.0.0.1 only, allowing 127.0.0.1, optionally ``BasicAuth`` and a list of ``ConnectPort``
  (none: every port may be tunnelled to), logging every request it gets (``Request (file
  descriptor N): GET http://...``), run in the foreground in its own process group.  Ready
  once it serves its statistics page for a host name made of a token of its own (another
  program on a reused port would not), and always stopped on the way out (SIGTERM, SIGKILL
  after 5 s).
- :class:`RecordingServer`: Python's ``http.server`` (HTTP/1.1, keep-alive, threads) over
  plain TCP or TLS, that records every request it gets (request line, headers, the
  connection it came on) and the TLS server name (SNI) of every handshake; it serves
  ``/body/SIZE`` (the bytes of :func:`tests.servers.data.body`, with a Content-Length) and
  404 for anything else.  Started and stopped by the test's fixture (every connection
  closed, threads joined, bounded).

The fixtures ``tinyproxy`` (no authentication, any CONNECT port) and ``auth_tinyproxy``
(``BasicAuth`` :data:`USER` :data:`PASSWORD`) are module-scoped; import them into a test
module (``from tests._fixtures_proxy import fixture_tinyproxy``).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import secrets
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests._fixtures_servers import START_TIMEOUT, _process, _tail, free_port
from tests.servers import data

#: the credentials of ``auth_tinyproxy`` (the password is one no message may show)
USER = "proxyuser"
PASSWORD = "s3cret-proxy-Passw0rd"

TINYPROXY_CONF = """\
Port {port}
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 30
MaxClients 64
LogFile "{tmp}/tinyproxy.log"
LogLevel Connect
PidFile "{tmp}/tinyproxy.pid"
StatHost "{stathost}"
{extra}
"""


def tinyproxy_binary() -> str:
    found = shutil.which("tinyproxy")
    for candidate in (found, "/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("tinyproxy is not installed (scripts/ensure-test-servers.sh installs it)")


@dataclass(frozen=True)
class Tinyproxy:
    """A running tinyproxy: its port, its credentials (if it asks for some), its log."""

    port: int
    log: Path
    auth: tuple[str, str] | None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """``http://[user:password@]127.0.0.1:PORT`` (its own credentials unless told)."""
        if user is None and self.auth is not None:
            user, password = self.auth
        userinfo = "" if user is None else f"{user}:{password or ''}@"
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines it received so far (``GET http://...``, ``CONNECT host:port``),
        the readiness checks left out."""
        found = re.findall(r"Request \(file descriptor \d+\): (.*)", self.log.read_text())
        return [line.strip() for line in found if ".stats.invalid" not in line]


def _proxy_ready(port: int, stathost: str, auth: tuple[str, str] | None) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Proxy-Authorization"] = f"Basic {token}"
    try:
        conn.request("GET", f"http://{stathost}/", headers=headers)
        response = conn.getresponse()
        return response.status == 200 and b"tinyproxy" in response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def start_tinyproxy(
    tmp: Path,
    *,
    auth: tuple[str, str] | None = None,
    connect_ports: tuple[int, ...] = (),
) -> Iterator[Tinyproxy]:
    """tinyproxy on a free port of 127.0.0.1 (see the module's docstring), stopped on exit."""
    binary = tinyproxy_binary()
    stathost = f"tp-{secrets.token_hex(6)}.stats.invalid"
    extra = [f"BasicAuth {auth[0]} {auth[1]}"] if auth is not None else []
    extra += [f"ConnectPort {port}" for port in connect_ports]
    last: Exception | None = None
    for _ in range(3):  # (another program may take the free port before tinyproxy binds it)
        port = free_port()
        conf = tmp / "tinyproxy.conf"
        conf.write_text(
            TINYPROXY_CONF.format(port=port, tmp=tmp, stathost=stathost, extra="\n".join(extra))
        )
        (tmp / "tinyproxy.log").write_text("")
        log = tmp / "stderr.log"
        with _process([binary, "-d", "-c", str(conf)], log) as proc:
            deadline = time.monotonic() + START_TIMEOUT
            ready = False
            while time.monotonic() < deadline:  # (bounded: about 10 s of 50 ms tries)
                if proc.poll() is not None:
                    last = RuntimeError(f"tinyproxy exited ({proc.returncode}): {_tail(log)}")
                    break
                try:
                    ready = _proxy_ready(port, stathost, auth)
                except (OSError, http.client.HTTPException) as exc:
                    last = exc
                if ready:
                    break
                time.sleep(0.05)
            if not ready:
                continue
            yield Tinyproxy(port, tmp / "tinyproxy.log", auth)
            return
    raise RuntimeError(f"tinyproxy did not start: {last!r}")


@pytest.fixture(scope="module", name="tinyproxy")
def fixture_tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    """tinyproxy without authentication; any port may be tunnelled to."""
    with start_tinyproxy(tmp_path_factory.mktemp("tinyproxy")) as proxy:
        yield proxy


@pytest.fixture(scope="module", name="auth_tinyproxy")
def fixture_auth_tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    """tinyproxy asking for Basic authentication (:data:`USER`, :data:`PASSWORD`)."""
    with start_tinyproxy(tmp_path_factory.mktemp("tinyproxy"), auth=(USER, PASSWORD)) as proxy:
        yield proxy


# -- the recording origin -----------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the origin received it."""

    request_line: str
    headers: dict[str, str]  #: lower-case names
    connection: int  #: numbers the TCP connection it came on (1, 2, ...)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        self.timeout = 10.0  # (an idle keep-alive connection is closed after that)
        super().setup()
        owner = self.server.owner
        with owner.lock:
            owner.connections += 1
            self.number = owner.connections
            owner.live.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.owner.lock:
            self.server.owner.live.discard(self.connection)

    def do_GET(self) -> None:
        owner = self.server.owner
        headers = {name.lower(): value for name, value in self.headers.items()}
        with owner.lock:
            owner.seen.append(Seen(self.requestline, headers, self.number))
        match = re.fullmatch(r"/body/(\d+)(\?.*)?", self.path)
        if match is None:
            self._answer(404, b"not found\n")
        else:
            self._answer(200, data.body(int(match[1])))

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: RecordingServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # (HTTPServer.server_bind calls socket.getfqdn(): a DNS lookup)
        super(ThreadingHTTPServer, self).server_bind()
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        context = self.owner.tls
        if context is not None:  # the handshake happens in the connection's thread
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # (a client that refused the certificate, went away...)


class RecordingServer:
    """An HTTP/1.1 origin on 127.0.0.1 that records what it receives (see the module)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        #: the server names (SNI) clients sent in TLS handshakes (None: none sent)
        self.server_names: list[str | None] = []
        self.connections = 0
        self.live: set[socket.socket] = set()
        if tls is not None:
            tls.sni_callback = self._sni
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _sni(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
        with self.lock:
            self.server_names.append(name)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def stop(self) -> None:
        """Stop accepting, close every connection, join the accepting thread (bounded)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self.lock:
            live = list(self.live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)


@contextlib.contextmanager
def recording_server(tls: ssl.SSLContext | None = None) -> Iterator[RecordingServer]:
    server = RecordingServer(tls)
    try:
        yield server
    finally:
        server.stop()


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context with *cert* (a chain) and *key*."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context
