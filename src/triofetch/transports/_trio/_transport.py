"""The ``trio`` transport: HTTP/1.1 on Trio sockets with a lean connection pool.

Why it exists: with the httpx transport, a small file costs several passes through httpcore's
connection pool (every request re-checks every connection, each check a ``poll()``
syscall) and through httpx's request and response models.  On thousands of small files that
bookkeeping, not HTTP bytes, is what the CPU does.  Here a request takes an idle connection
from a per-origin stack (one readability check), writes the request in one ``send``, and
reads the response with a strict parser of the slice of HTTP/1.1 a downloader needs
(``_wire.py``).

This module owns the connections per origin, building requests and the responses; the
bytes on one connection are ``_wire``'s, and following redirects is the shared loop of
``transports/_redirects.py``.  It never sleeps or retries (but it sends a request once more
on a new connection when a pooled one turns out to have been closed by the server).

What it does not do: proxies (use ``transport="httpx"``), HTTP/2, cookies.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from urllib.parse import quote, urlsplit

import trio

from ..._watch import Watch
from ...errors import ConnectionFailed, InvalidInput, InvalidURL, TruncatedBody
from .._base import (
    Response,
    TransportOptions,
    WatchableTransport,
    WatchedStream,
    describe_failure,
    make_ssl_context,
)
from .._redirects import follow_redirects
from ._wire import Head, PlainSocket, ProtocolError, Truncated, Wire, encode_headers, request_line

__all__ = ["TrioTransport"]

_KEEPALIVE = 30.0
_CHECK_AFTER = 1.0
_SAFE = "/:@!$&'()*+,;=%~-._"
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _Connection:
    """One keep-alive HTTP/1.1 connection."""

    __slots__ = ("closed", "idle_since", "origin", "reused", "socket", "wire")

    def __init__(
        self,
        origin: Origin,
        stream: trio.abc.Stream | PlainSocket,
        socket: trio.socket.SocketType | PlainSocket,
    ) -> None:
        self.origin = origin
        self.wire = Wire(stream)
        self.socket = socket
        self.idle_since = 0.0
        self.reused = False
        self.closed = False

    def close(self) -> None:
        """Close at once (no await: safe under cancellation)."""
        self.closed = True
        self.socket.close()


class _Closed(Exception):
    """The server closed the connection before answering."""


class _TrioResponse:
    __slots__ = ("_conn", "_head", "complete", "headers", "reason", "status_code", "url")

    def __init__(self, conn: _Connection, url: str, head: Head) -> None:
        self._conn = conn
        self._head = head
        self.url = url
        self.status_code = head.status
        self.reason = head.reason
        self.headers: Mapping[str, str] = head.headers
        self.complete = False

    @property
    def reusable(self) -> bool:
        return self.complete and self._head.keep_alive and not self._conn.wire.leftover

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        try:
            async with aclosing(self._conn.wire.body(self._head)) as body:
                async for chunk in body:
                    yield chunk
            self.complete = True
        except Truncated as exc:
            raise TruncatedBody(f"body cut short: {exc}", url=self.url) from exc
        except ProtocolError as exc:
            raise ConnectionFailed(f"invalid HTTP response: {exc}", url=self.url) from exc
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise ConnectionFailed(f"connection failed while reading: {exc}", url=self.url) from exc


def _target(parts: object) -> str:
    path = getattr(parts, "path", "") or "/"
    query = getattr(parts, "query", "")
    # most paths are already safe: quote() only those that are not
    target = quote(path, safe=_SAFE) if _NEEDS_QUOTING.search(path) else path
    if query:
        target += "?" + (quote(query, safe=_SAFE + "?") if _NEEDS_QUOTING.search(query) else query)
    return target


_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9/:@!$&'()*+,;=%~._?-]")
# A URL made only of characters that need no quoting, without user info, fragment or IPv6
# literal: split with one regex match (groups: scheme, netloc, path, query).
_SIMPLE_URL = re.compile(
    r"(https?)://([A-Za-z0-9.\-_~%!$&'()*+,;=:]+)"
    r"(/[A-Za-z0-9/:@!$&'()*+,;=%~._-]*)?"
    r"(?:\?([A-Za-z0-9/:@!$&'()*+,;=%~._?-]*))?\Z"
)


class _Stream(WatchedStream):
    """One exchange: ``async with transport.stream(url, headers) as response``.

    A class, not an ``asynccontextmanager`` generator (which costs a generator and two
    extra frames per request); it is also the ``Requester`` that the shared redirect loop
    (``transports/_redirects.py``) drives, one request per hop.
    """

    __slots__ = ("_headers", "_response", "_transport", "_url", "_watch")

    def __init__(
        self,
        transport: TrioTransport,
        url: str,
        headers: Mapping[str, str],
        watch: Watch | None,
    ) -> None:
        self._transport = transport
        self._url = url
        self._headers = headers
        self._watch = watch
        self._response: _TrioResponse | None = None

    async def __aenter__(self) -> Response:
        transport = self._transport
        response = await follow_redirects(self, self._url, self._headers, transport._max_redirects)
        self._response = response
        return response

    async def __aexit__(self, *exc_info: object) -> None:
        response, self._response = self._response, None
        if self._watch is not None:
            self._watch.closer = None
        if response is not None:
            self._transport._release(response._conn, response)

    def buffered_body(self) -> bytes | None:
        """The whole body, if it arrived with the head (a small file); else None.

        Spares the small download the machinery of :meth:`_TrioResponse.iter_bytes`.
        """
        response = self._response
        if response is None or response.complete:
            return None
        body = response._conn.wire.take_buffered(response._head)
        if body is not None:
            response.complete = True
        return body

    async def request(self, url: str, headers: Mapping[str, str]) -> _TrioResponse:
        """Send one GET (redirects are :func:`follow_redirects`'s business); the response,
        its connection held.  A pooled connection that the server had just closed is
        replaced by a new one, once."""
        transport = self._transport
        origin, target, host_header = transport._parse(url)
        try:
            request = request_line(target) + transport._header_block(host_header, headers)
        except ValueError as exc:  # a header that cannot be sent
            raise InvalidURL(f"cannot send this request: {exc}", url=url) from exc
        watch = self._watch
        for _ in range(2):
            if watch is not None:
                # (a redirect's connection went back to the pool: while connecting, the
                # watch must not close it under another exchange that took it)
                watch.closer = None
            conn = transport._take_idle(origin)
            if conn is None:
                conn = await transport._connect_watched(origin, url, watch)
            if watch is not None:
                watch.closer = conn.close
            try:
                wire = conn.wire
                await wire.stream.send_all(request)
                head = await wire.read_head()
                if head is None:
                    raise _Closed
                return _TrioResponse(conn, url, head)
            except _Closed:
                conn.close()
                if conn.reused and not (watch is not None and watch.expired):
                    # a keep-alive connection the server had just closed
                    continue
                raise ConnectionFailed(
                    "the server closed the connection without answering", url=url
                ) from None
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                conn.close()
                if conn.reused and not (watch is not None and watch.expired):
                    continue
                raise ConnectionFailed(f"connection failed: {exc}", url=url) from exc
            except ProtocolError as exc:
                conn.close()
                raise ConnectionFailed(f"invalid HTTP response: {exc}", url=url) from exc
            except BaseException:
                conn.close()
                raise
        raise ConnectionFailed("the server keeps closing connections", url=url)

    async def release(self, response: _TrioResponse) -> None:
        """(A redirect's response.)  Its connection back to the pool, or closed."""
        self._transport._release(response._conn, response)


class TrioTransport(WatchableTransport):
    """HTTP/1.1 over Trio sockets; one pool of keep-alive connections per origin.

    A :class:`~triofetch.transports._base.WatchableTransport`: :meth:`stream` takes a
    :class:`~triofetch._watch.Watch` for its timeout, and the exchange's connection is
    closed if it runs past the watch's deadline.
    """

    def __init__(self, options: TransportOptions) -> None:
        if options.proxy is not None:
            raise InvalidInput(
                "the 'trio' transport does not support proxies; use transport='httpx'"
            )
        self._options = options
        # redirects followed before TooManyRedirects (see _redirects.py)
        self._max_redirects = options.max_redirects
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[_Connection]] = {}
        # (scheme, netloc) -> (origin, Host header): parsed once per server
        self._origins: dict[tuple[str, str], tuple[Origin, str]] = {}
        self._max_idle = options.max_connections
        self._closed = False
        # (Host header, header items...) -> the encoded header lines: most requests of a
        # downloader send the same few headers
        self._blocks: dict[tuple[object, ...], bytes] = {}

    # -- the pool ----------------------------------------------------------------------

    def _take_idle(self, origin: Origin) -> _Connection | None:
        stack = self._idle.get(origin)
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            # readable while idle means the server closed it (or sent garbage): drop it
            idle = now - conn.idle_since
            # A connection idle for a while may have been closed by the server: check it
            # (a request on one closed since is retried once on a new connection anyway).
            if idle > _KEEPALIVE or (idle > _CHECK_AFTER and conn.socket.is_readable()):
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def _give_back(self, conn: _Connection) -> None:
        if self._closed or conn.closed:
            conn.close()
            return
        stack = self._idle.setdefault(conn.origin, [])
        if len(stack) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        stack.append(conn)

    async def _connect(self, origin: Origin, url: str) -> _Connection:
        scheme, host, port = origin
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ConnectionFailed(describe_failure(exc), url=url) from exc
        tcp.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        if scheme == "http":
            plain = PlainSocket(socket.socket(fileno=tcp.socket.detach()))
            return _Connection(origin, plain, plain)
        stream: trio.abc.Stream = tcp
        if scheme == "https":
            if self._ssl is None:
                self._ssl = make_ssl_context(self._options)
            tls = trio.SSLStream(tcp, self._ssl, server_hostname=host, https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                tcp.socket.close()
                cause = exc.__cause__ or exc
                raise ConnectionFailed(f"TLS handshake failed: {cause}", url=url) from exc
            except BaseException:
                tcp.socket.close()
                raise
            stream = tls
        return _Connection(origin, stream, tcp.socket)

    # -- requests ----------------------------------------------------------------------

    def stream(self, url: str, headers: Mapping[str, str], watch: Watch | None = None) -> _Stream:
        """``async with`` it for the response.  With a *watch*, the exchange (connecting
        included) ends with an error once the watch's deadline has passed."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        return _Stream(self, url, headers, watch)

    def _header_block(self, host_header: str, headers: Mapping[str, str]) -> bytes:
        key = (host_header, *headers.items())
        block = self._blocks.get(key)
        if block is None:
            lines = [("host", host_header)]
            lines += [(k, v) for k, v in headers.items() if k.lower() != "host"]
            block = encode_headers(lines)
            if len(self._blocks) >= 256:
                self._blocks.clear()
            self._blocks[key] = block
        return block

    def _release(self, conn: _Connection, response: _TrioResponse) -> None:
        if response.reusable:
            self._give_back(conn)
        else:
            conn.close()

    async def _connect_watched(self, origin: Origin, url: str, watch: Watch | None) -> _Connection:
        """A new connection; with a *watch*, given up at its deadline (there is no
        connection for the watchdog to close yet)."""
        if watch is None:
            return await self._connect(origin, url)
        with trio.move_on_at(watch.deadline):
            return await self._connect(origin, url)
        watch.expired = True
        raise ConnectionFailed("connecting timed out", url=url)

    def _parse(self, url: str) -> tuple[Origin, str, str]:
        simple = _SIMPLE_URL.match(url)
        if simple is not None:  # nothing to quote or decode: skip urlsplit
            scheme, netloc, path, query = simple.groups()
            known = self._origins.get((scheme, netloc))
            if known is not None:
                target = path or "/"
                return known[0], f"{target}?{query}" if query else target, known[1]
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise InvalidURL(f"malformed URL: {exc}", url=url) from None
        known = self._origins.get((parts.scheme, parts.netloc))
        if known is not None:
            return known[0], _target(parts), known[1]
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"malformed URL: {exc}", url=url) from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InvalidURL(f"unsupported URL scheme {scheme!r}", url=url)
        host = parts.hostname
        if not host:
            raise InvalidURL("the URL has no host", url=url)
        default = _DEFAULT_PORTS[scheme]
        port = port or default
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        origin = (scheme, host, port)
        if len(self._origins) < 1024:
            self._origins[(parts.scheme, parts.netloc)] = (origin, host_header)
        return origin, _target(parts), host_header

    async def aclose(self) -> None:
        self._closed = True
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()
        await trio.lowlevel.checkpoint()
