"""The fault-injecting HTTP/1.1 server of :mod:`triofetch.testing`: :class:`FaultServer`.

The server runs in background threads (one accept thread, one thread per connection), so it
serves plain synchronous tests and Trio tests alike.  It listens on ``127.0.0.1`` on an
ephemeral port only.

Usage::

    with FaultServer() as server:
        server.add_file("/a.bin", b"data", faults=[Status(500), Truncate(2)])
        url = server.url("/a.bin")
        ...                      # 1st request: 500, 2nd: truncated body, then served normally
        assert server.count("/a.bin") == 3

Faults are consumed one per request to their path, in order; once exhausted the resource is
served normally.  Authentication checks (``require_basic_auth``/``require_bearer``) come
before faults and a refused request consumes no fault.  ``bytes_sent(path)`` counts only the
bytes of the resource's content written to sockets (not headers, chunk framing or the bodies
of error answers).

This module imports nothing but the standard library (no Trio, nothing of triofetch): it
must stay importable by any test, and cheap to import for the pytest plugin.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import os
import select
import socket
import struct
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import FunctionType, TracebackType
from typing import Any, cast
from urllib.parse import unquote, urlsplit

__all__ = [
    "BearerTokens",
    "Fault",
    "FaultServer",
    "Hang",
    "Redirect",
    "RequestRecord",
    "Reset",
    "Slow",
    "Status",
    "Truncate",
    "WrongBytes",
]

_PIECE = 64 * 1024
#: the size of a generated resource (``add_generator``): never reached
_ENDLESS = 1 << 62
_XOR_TABLE = bytes(b ^ 0xFF for b in range(256))


# --------------------------------------------------------------------------------------
# faults


@dataclass(frozen=True)
class Status:
    """Answer with this status code, these headers and this body instead of the resource."""

    code: int
    headers: Mapping[str, str] | None = None
    body: bytes = b""


@dataclass(frozen=True)
class Reset:
    """Send the headers and ``after_bytes`` of the body, then close with a TCP RST.

    With ``before_headers=True`` the connection is reset right after the request is read.
    """

    after_bytes: int = 0
    before_headers: bool = False

    def __post_init__(self) -> None:
        if self.after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")
        if self.before_headers and self.after_bytes:
            raise ValueError("before_headers=True sends no body: after_bytes must be 0")


@dataclass(frozen=True)
class Truncate:
    """Announce the full length but send only ``n`` body bytes, then close normally (FIN)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must be >= 0")


@dataclass(frozen=True)
class Slow:
    """Send the body in ``chunk``-byte pieces, sleeping ``delay`` seconds between pieces."""

    delay: float
    chunk: int = 1024

    def __post_init__(self) -> None:
        if self.delay < 0 or self.chunk <= 0:
            raise ValueError("delay must be >= 0 and chunk > 0")


@dataclass(frozen=True)
class WrongBytes:
    """Send a body of the right length but different content (every byte XOR 0xFF)."""


@dataclass(frozen=True)
class Redirect:
    """Redirect to ``location``; a location starting with "/" becomes a URL of this server."""

    location: str
    code: int = 302


@dataclass(frozen=True)
class Hang:
    """Read the request, send nothing for ``seconds`` (cut short by ``stop()``), then close."""

    seconds: float


Fault = Status | Reset | Truncate | Slow | WrongBytes | Redirect | Hang
"""One fault of a plan: the answer to one request instead of the resource served whole."""


# --------------------------------------------------------------------------------------
# records and resources


@dataclass(frozen=True)
class RequestRecord:
    """One request as received.

    ``path`` is the path of the request target without the query string (``query`` holds it),
    ``headers`` has lower-case names, ``time`` is ``time.monotonic()`` at arrival and
    ``connection`` numbers the TCP connection it came on (1, 2, ... per server).
    """

    method: str
    path: str
    headers: dict[str, str]
    time: float
    query: str = ""
    connection: int = 0


@dataclass
class _Resource:
    size: int
    data: bytes | None  # None: generated
    byte: bytes
    headers: dict[str, str]
    content_length: bool
    faults: deque[Fault] = field(default_factory=deque)
    #: makes the content's pieces for each request (``add_generator``), or None
    make: Callable[[], Iterable[bytes]] | None = None

    def pieces(self, limit: int, piece: int) -> Iterator[bytes | memoryview]:
        """The first ``limit`` bytes of the content, in pieces of at most ``piece`` bytes."""
        if self.make is not None:
            left = limit
            for made in self.make():
                view = memoryview(made)
                for start in range(0, len(view), piece):
                    if left <= 0:
                        return
                    part = view[start : start + min(piece, left)]
                    left -= len(part)
                    yield part
            return
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, limit, piece):
                yield view[start : min(start + piece, limit)]
            return
        block = self.byte * piece
        for start in range(0, limit, piece):
            n = min(piece, limit - start)
            yield block if n == piece else block[:n]


# --------------------------------------------------------------------------------------
# the HTTP machinery


class _HTTPServer(HTTPServer):
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        # process_request is overridden (a thread per connection, numbered): the handler
        # class given here is never called by socketserver itself
        super().__init__(("127.0.0.1", 0), cast(Any, _Handler))

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a possibly slow DNS lookup.
        super(HTTPServer, self).server_bind()
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._spawn_connection(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away, a reset, a timeout...
            return
        self.owner.errors.append(exc)  # type: ignore[arg-type]
        traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def __init__(
        self, request: socket.socket, client_address: Any, server: _HTTPServer, number: int
    ) -> None:
        self.connection_number = number
        super().__init__(request, client_address, server)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.owner.idle_timeout)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:
        owner = self.server.owner
        owner._enter_request()
        try:
            self._dispatch(owner)
        except OSError:
            self.close_connection = True
        finally:
            owner._leave_request()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- helpers -------------------------------------------------------------------

    def _dispatch(self, owner: FaultServer) -> None:
        split = urlsplit(self.path)
        route = split.path or "/"
        owner._record(
            RequestRecord(
                method=self.command,
                path=route,
                headers={k.lower(): v for k, v in self.headers.items()},
                time=time.monotonic(),
                query=split.query,
                connection=self.connection_number,
            )
        )
        self._discard_request_body()
        if not self._authorized(owner, route):
            return
        key, resource, fault = owner._lookup(route)
        if resource is None:
            self._simple(404, b"not found\n")
            return
        self._serve(owner, key, resource, fault)

    def _discard_request_body(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # not parsed: do not reuse the connection
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
            self.close_connection = True
        while length > 0:
            data = self.rfile.read(min(length, _PIECE))
            if not data:
                self.close_connection = True
                return
            length -= len(data)

    def _authorized(self, owner: FaultServer, route: str) -> bool:
        auth = self.headers.get("Authorization", "")
        basic, bearer = owner._auth_for(route)
        if basic is not None:
            user, password = basic
            ok = False
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    decoded = ""
                ok = decoded == f"{user}:{password}"
            if not ok:
                self._simple(
                    401, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="faultserver"'}
                )
                return False
        if bearer is not None:
            scheme, _, value = auth.partition(" ")
            token = value.strip()
            ok = False
            if scheme.lower() == "bearer" and token:
                ok = bool(bearer(token)) if callable(bearer) else token in bearer
            if not ok:
                self._simple(
                    401, b"unauthorized\n", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                )
                return False
        return True

    def _head(self, code: int, headers: Mapping[str, str]) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _simple(self, code: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        merged = _merge(
            {"Content-Type": "text/plain", "Content-Length": str(len(body))}, headers or {}
        )
        self._head(code, merged)
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _serve(
        self, owner: FaultServer, key: str, resource: _Resource, fault: Fault | None
    ) -> None:
        if isinstance(fault, Status):
            self._simple(fault.code, fault.body, fault.headers)
            return
        if isinstance(fault, Redirect):
            location = fault.location
            if location.startswith("/"):
                location = owner.url(location)
            self._simple(fault.code, b"", {"Location": location})
            return
        if isinstance(fault, Hang):
            owner._stopping.wait(max(0.0, fault.seconds))
            self.close_connection = True
            return
        if isinstance(fault, Reset) and fault.before_headers:
            self._reset()
            return

        limit = resource.size
        if isinstance(fault, Truncate):
            limit = min(fault.n, resource.size)
        elif isinstance(fault, Reset):
            limit = min(fault.after_bytes, resource.size)
        defaults = {"Content-Type": "application/octet-stream"}
        if resource.content_length:
            defaults["Content-Length"] = str(resource.size)
        else:
            defaults["Transfer-Encoding"] = "chunked"
        self._head(200, _merge(defaults, resource.headers))

        complete = True
        if self.command != "HEAD":
            complete = self._send_body(owner, key, resource, limit, fault)
        if not complete:
            self.close_connection = True
            return
        if isinstance(fault, Reset):
            self._reset()
        elif isinstance(fault, Truncate):
            self.close_connection = True

    def _send_body(
        self, owner: FaultServer, key: str, resource: _Resource, limit: int, fault: Fault | None
    ) -> bool:
        """Send ``limit`` content bytes; False if the client went away or the server stops."""
        sock = self.connection
        chunked = not resource.content_length
        slow = fault if isinstance(fault, Slow) else None
        piece_size = slow.chunk if slow is not None else _PIECE
        first = True
        for piece in resource.pieces(limit, piece_size):
            if owner._stopping.is_set():
                return False
            if (
                slow is not None
                and not first
                and (owner._stopping.wait(slow.delay) or _peer_closed(sock))
            ):
                return False
            first = False
            if isinstance(fault, WrongBytes):
                piece = bytes(piece).translate(_XOR_TABLE)
            if chunked:
                sock.sendall(b"%x\r\n" % len(piece))
            view = memoryview(piece)
            while view:
                # Count before sending (then correct), so that a client which has received
                # the whole body never sees a smaller count than what it received.
                owner._add_sent(key, len(view))
                try:
                    n = sock.send(view)
                except BaseException:
                    owner._add_sent(key, -len(view))
                    raise
                owner._add_sent(key, n - len(view))
                view = view[n:]
            if chunked:
                sock.sendall(b"\r\n")
        if chunked and limit == resource.size and not isinstance(fault, Reset | Truncate):
            sock.sendall(b"0\r\n\r\n")
        return True

    def _reset(self) -> None:
        """Close the connection abruptly: SO_LINGER 0 makes close() send a RST."""
        self.close_connection = True
        sock = self.connection
        _wait_unsent(sock, 1.0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            fd = sock.detach()  # the socket object (and rfile/wfile) no longer own the fd
        except OSError:
            return
        if fd >= 0:
            os.close(fd)


def _merge(defaults: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``defaults`` updated by ``extra``, header names compared case-insensitively."""
    out = dict(defaults)
    for name, value in extra.items():
        for old in [k for k in out if k.lower() == name.lower()]:
            del out[old]
        out[name] = value
    return out


def _peer_closed(sock: socket.socket) -> bool:
    """True if the client closed its side (EOF or reset pending on the socket)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _wait_unsent(sock: socket.socket, timeout: float) -> None:
    """Wait (bounded) until the kernel has sent what we wrote, so a RST does not discard it."""
    try:
        import fcntl
        import termios

        request = termios.TIOCOUTQ
    except (ImportError, AttributeError):
        time.sleep(0.01)
        return
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(sock.fileno(), request, buf)
        except (OSError, ValueError):
            return
        if struct.unpack("i", bytes(buf))[0] == 0:
            return
        time.sleep(0.002)


# --------------------------------------------------------------------------------------
# the public server


BearerTokens = set[str] | frozenset[str] | Callable[[str], bool]
"""The bearer tokens :meth:`FaultServer.require_bearer` accepts: a set, or a predicate."""


class FaultServer:
    """An HTTP/1.1 server on 127.0.0.1 (ephemeral port) with per-path fault injection.

    Use it as a context manager (``with FaultServer() as server:``) or call :meth:`start`
    and :meth:`stop`.  It answers from background threads, so a Trio test, a synchronous
    test and a subprocess can all download from it.  Serve content with :meth:`add_file`,
    :meth:`add_generated` or :meth:`add_generator`, each with a plan of faults (see
    :data:`Fault`) consumed one per request to its path; observe what clients did with
    :meth:`count`, :attr:`requests` and :meth:`bytes_sent`.

    Args:
        idle_timeout: seconds a connection may stay silent (idle keep-alive, or a client
            that stops reading) before the server closes it.
        stop_timeout: bound on how long :meth:`stop` waits for the server's threads.

    Attributes:
        idle_timeout (float): the *idle_timeout* given.
        stop_timeout (float): the *stop_timeout* given.
        errors (list[BaseException]): unexpected (non-network) exceptions raised while
            handling requests.
    """

    def __init__(self, *, idle_timeout: float = 30.0, stop_timeout: float = 5.0) -> None:
        self.idle_timeout = idle_timeout
        self.stop_timeout = stop_timeout
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._resources: dict[str, _Resource] = {}
        self._sent: dict[str, int] = {}
        self._requests: list[RequestRecord] = []
        self._in_flight = 0
        self._connections = itertools.count(1)
        self._accepted = 0
        self._live: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._basic: tuple[str, str, frozenset[str] | None] | None = None
        self._bearer: BearerTokens | None = None
        self._bearer_paths: frozenset[str] | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FaultServer:
        """Bind and start serving in background threads; returns the server."""
        if self._httpd is not None:
            raise RuntimeError("FaultServer already started")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"faultserver-accept-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every live connection, join threads (bounded). Idempotent."""
        httpd = self._httpd
        if httpd is None or self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        deadline = time.monotonic() + self.stop_timeout
        httpd.shutdown()  # returns once serve_forever has exited (poll interval 0.01 s)
        httpd.server_close()
        with self._lock:
            live = list(self._live.values())
        for sock, _ in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        threads = [t for _, t in live]
        if self._thread is not None:
            threads.append(self._thread)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultServer:
        """Start the server (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server (see :meth:`stop`)."""
        self.stop()

    # -- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on (``RuntimeError`` before :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("FaultServer not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The URL of *path* on this server (*path* must start with ``/``)."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        return self.base_url + path

    # -- resources -----------------------------------------------------------------

    def add_file(
        self,
        path: str,
        data: bytes,
        *,
        faults: Iterable[Fault] = (),
        headers: Mapping[str, str] | None = None,
        content_length: bool = True,
    ) -> None:
        """Serve ``data`` at ``path`` (replacing what was there), after the given faults."""
        data = bytes(data)
        self._add(
            path,
            _Resource(len(data), data, b"", dict(headers or {}), content_length, deque(faults)),
        )

    def add_generated(
        self,
        path: str,
        size: int,
        *,
        byte: bytes = b"x",
        faults: Iterable[Fault] = (),
        headers: Mapping[str, str] | None = None,
        content_length: bool = True,
    ) -> None:
        """Serve ``size`` copies of ``byte``, generated while sending (never held in memory)."""
        if size < 0 or len(byte) != 1:
            raise ValueError("size must be >= 0 and byte a single byte")
        self._add(
            path,
            _Resource(size, None, bytes(byte), dict(headers or {}), content_length, deque(faults)),
        )

    def add_generator(
        self,
        path: str,
        make: Callable[[], Iterable[bytes]],
        *,
        faults: Iterable[Fault] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Serve what ``make()`` yields, made anew for each request while sending, with no
        ``Content-Length`` (chunked): an endless iterable makes an endless body, which the
        server sends until the client goes away or ``stop()`` is called.  ``bytes_sent``
        counts it as for any resource."""
        self._add(
            path,
            _Resource(_ENDLESS, None, b"", dict(headers or {}), False, deque(faults), make=make),
        )

    def add_faults(self, path: str, faults: Iterable[Fault]) -> None:
        """Append faults to the queue of an existing path."""
        with self._lock:
            self._resources[path].faults.extend(faults)

    def remove(self, path: str) -> None:
        """Stop serving ``path`` (it answers 404 again)."""
        with self._lock:
            self._resources.pop(path, None)

    def _add(self, path: str, resource: _Resource) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        for fault in resource.faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"not a fault: {fault!r}")
        with self._lock:
            self._resources[path] = resource

    # -- authentication ------------------------------------------------------------

    def require_basic_auth(
        self, user: str, password: str, *, paths: Iterable[str] | None = None
    ) -> None:
        """Answer 401 (``WWW-Authenticate: Basic``) unless these credentials are sent.

        ``paths=None`` protects every path; a new call replaces the previous requirement.
        """
        with self._lock:
            self._basic = (user, password, None if paths is None else frozenset(paths))

    def require_bearer(
        self, valid_tokens: BearerTokens, *, paths: Iterable[str] | None = None
    ) -> None:
        """Answer 401 (``WWW-Authenticate: Bearer error="invalid_token"``) unless
        ``Authorization: Bearer <t>`` with ``t`` in ``valid_tokens`` (or
        ``valid_tokens(t)`` true when it is a callable).  ``paths=None``: every path.
        """
        with self._lock:
            self._bearer = valid_tokens if callable(valid_tokens) else set(valid_tokens)
            self._bearer_paths = None if paths is None else frozenset(paths)

    def set_valid_tokens(self, valid_tokens: BearerTokens) -> None:
        """Replace the accepted bearer tokens (takes effect for the next request)."""
        with self._lock:
            self._bearer = valid_tokens if callable(valid_tokens) else set(valid_tokens)

    def clear_auth(self) -> None:
        """Remove every authentication requirement."""
        with self._lock:
            self._basic = None
            self._bearer = None
            self._bearer_paths = None

    # -- observation ---------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str) -> int:
        """How many requests were received for ``path`` (query string ignored)."""
        with self._lock:
            return sum(1 for r in self._requests if r.path == path or unquote(r.path) == path)

    def bytes_sent(self, path: str) -> int:
        """Content bytes of ``path`` actually written to sockets so far.

        Exact once the answer is complete (a client that has read a whole body sees it
        counted); while a write is in progress it may run ahead by the piece being written.
        """
        with self._lock:
            return self._sent.get(path, 0)

    @property
    def connections_accepted(self) -> int:
        """How many TCP connections the server accepted."""
        with self._lock:
            return self._accepted

    @property
    def live_connections(self) -> int:
        """How many TCP connections are open right now."""
        with self._lock:
            return len(self._live)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
            return True

    def reset_counters(self) -> None:
        """Forget recorded requests and sent byte counts (resources and faults stay)."""
        with self._lock:
            self._requests.clear()
            self._sent.clear()
            self._accepted = 0

    # -- used by the handler threads -----------------------------------------------

    def _spawn_connection(self, request: socket.socket, client_address: Any) -> None:
        httpd = self._httpd
        assert httpd is not None
        number = next(self._connections)
        thread = threading.Thread(
            target=self._run_connection,
            args=(httpd, request, client_address, number),
            name=f"faultserver-conn-{number}",
            daemon=True,
        )
        with self._lock:
            self._accepted += 1
            self._live[number] = (request, thread)
        thread.start()

    def _run_connection(
        self, httpd: _HTTPServer, request: socket.socket, client_address: Any, number: int
    ) -> None:
        try:
            if not self._stopping.is_set():
                _Handler(request, client_address, httpd, number)
        except Exception:
            httpd.handle_error(request, client_address)
        finally:
            httpd.shutdown_request(request)
            with self._lock:
                self._live.pop(number, None)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _lookup(self, route: str) -> tuple[str, _Resource | None, Fault | None]:
        with self._lock:
            key = route
            resource = self._resources.get(key)
            if resource is None:
                key = unquote(route)
                resource = self._resources.get(key)
            if resource is None:
                return key, None, None
            fault = resource.faults.popleft() if resource.faults else None
            return key, resource, fault

    def _auth_for(
        self, route: str
    ) -> tuple[tuple[str, str] | None, set[str] | frozenset[str] | Callable[[str], bool] | None]:
        with self._lock:
            basic: tuple[str, str] | None = None
            if self._basic is not None:
                user, password, paths = self._basic
                if paths is None or route in paths or unquote(route) in paths:
                    basic = (user, password)
            bearer = self._bearer
            paths = self._bearer_paths
            if (
                bearer is not None
                and paths is not None
                and route not in paths
                and unquote(route) not in paths
            ):
                bearer = None
            return basic, bearer

    def _add_sent(self, key: str, n: int) -> None:
        with self._lock:
            self._sent[key] = self._sent.get(key, 0) + n

    def _enter_request(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _leave_request(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()


# The public home of every class and function above, for reprs, pickling and the docs.
for _name in __all__:
    if isinstance(globals()[_name], type | FunctionType):
        globals()[_name].__module__ = "triofetch.testing"
del _name
