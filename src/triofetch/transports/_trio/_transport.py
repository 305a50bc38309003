"""The ``trio`` transport: HTTP/1.1 on Trio sockets with a lean connection pool.

Why it exists: with the httpx transport, a small file costs several passes through httpcore's
connection pool (every request re-checks every connection, each check a ``poll()``
syscall) and through httpx's request and response models.  On thousands of small files that
bookkeeping, not HTTP bytes, is what the CPU does.  Here a request takes an idle connection
from a per-origin stack (one readability check), writes the request in one ``send``, and
reads the response with a strict parser of the slice of HTTP/1.1 a downloader needs
(``_wire.py``).

This module owns the connections per origin, building requests and the responses, and
how an origin is reached (a :class:`_Route`, made once per origin): straight, through an
HTTP proxy (absolute-form requests for ``http://`` URLs, on connections to the proxy shared
by every origin), or through a ``CONNECT`` tunnel for ``https://`` URLs (TLS to the origin
inside it).  Which proxy, if any, and the IDNA form of host names are ``_routing``'s; the
bytes on one connection are ``_wire``'s, and following redirects is the shared loop of
``transports/_redirects.py``.  It never sleeps or retries (but it sends a request once more
on a new connection when a pooled one turns out to have been closed by the server).

What it does not do: SOCKS or HTTPS proxies (refused when configured: use
``transport="httpx"``), HTTP/2, cookies.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from urllib.parse import SplitResult, quote, urlsplit

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
from .._routing import Proxy, ProxyRoutes, ascii_host
from ._wire import Head, PlainSocket, ProtocolError, Truncated, Wire, encode_headers, request_line

__all__ = ["TrioTransport"]

_KEEPALIVE = 30.0
_SAFE = "/:@!$&'()*+,;=%~-._"
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: what a pooled connection can serve: ``(scheme, host, port)`` for a direct one,
#: ``("proxy", proxy)`` for one to an HTTP proxy (absolute-form requests, any origin),
#: ``("tunnel", proxy, host, port)`` for a CONNECT tunnel to one origin
PoolKey = tuple[object, ...]


class _Route:
    """How the requests to one origin go out; made once per origin (see ``_parse``)."""

    __slots__ = ("authority", "host", "host_header", "key", "port", "prefix", "proxy", "scheme")

    def __init__(
        self, scheme: str, host: str, port: int, host_header: str, proxy: Proxy | None
    ) -> None:
        self.scheme = scheme
        self.host = host  #: ASCII (IDNA), for DNS, SNI and the certificate check
        self.port = port
        self.host_header = host_header
        #: ``host:port`` (IPv6 in brackets): a CONNECT request's target
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.proxy = proxy
        #: before the path of an absolute-form request (plain http through a proxy), else ""
        self.prefix = f"http://{host_header}" if proxy is not None and scheme == "http" else ""
        self.key: PoolKey
        if proxy is None:
            self.key = (scheme, host, port)
        elif self.prefix:
            self.key = ("proxy", proxy)
        else:
            self.key = ("tunnel", proxy, host, port)


class _Connection:
    """One keep-alive HTTP/1.1 connection."""

    __slots__ = ("closed", "idle_since", "key", "reused", "socket", "wire")

    def __init__(
        self,
        key: PoolKey,
        stream: trio.abc.Stream | PlainSocket,
        socket: trio.socket.SocketType | PlainSocket,
    ) -> None:
        self.key = key
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


def _proxy_refused(route: _Route, head: Head, url: str) -> ConnectionFailed:
    """The error for a proxy's refusal (a 407, or a CONNECT answered other than 2xx)."""
    proxy = route.proxy
    assert proxy is not None
    what = f"the request for {route.authority}" if route.prefix else f"CONNECT {route.authority}"
    answer = f"HTTP {head.status}" + (f" {head.reason}" if head.reason else "")
    hint = ""
    if head.status == 407 or (head.status == 401 and proxy.authorization and not route.prefix):
        hint = (
            " (proxy authentication failed: check the user and password of the proxy URL)"
            if proxy.authorization
            else " (the proxy asks for authentication: give user:password in the proxy URL)"
        )
    return ConnectionFailed(f"the proxy {proxy.shown} refused {what}: {answer}{hint}", url=url)


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
        route, target = transport._parse(url)
        try:
            request = request_line(target) + transport._header_block(route, headers)
        except ValueError as exc:  # a header that cannot be sent
            raise InvalidURL(f"cannot send this request: {exc}", url=url) from exc
        watch = self._watch
        for attempt in range(2):
            if watch is not None:
                # (a redirect's connection went back to the pool: while connecting, the
                # watch must not close it under another exchange that took it)
                watch.closer = None
            # (once a pooled connection turned out closed, the others may be too: the
            # second attempt is on a new one)
            conn = transport._take_idle(route.key) if not attempt else None
            if conn is None:
                conn = await transport._connect_watched(route, url, watch)
            if watch is not None:
                watch.closer = conn.close
            try:
                wire = conn.wire
                await wire.stream.send_all(request)
                head = await wire.read_head()
                if head is None:
                    raise _Closed
                if head.status == 407 and route.prefix:
                    raise _proxy_refused(route, head, url)
                return _TrioResponse(conn, url, head)
            except ConnectionFailed:  # (the proxy's 407: an OSError, but not to be retried)
                conn.close()
                raise
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

    Its timeouts close the connection of an exchange that runs past its deadline instead
    of cancelling a scope: it implements the downloader's private extension of
    :class:`~triofetch.Transport`, whose ``stream`` takes the downloader's watch of the
    deadline.
    """

    def __init__(self, options: TransportOptions) -> None:
        routes = ProxyRoutes(options.proxy, options.trust_env)
        for proxy in routes.proxies:
            if proxy.scheme != "http":
                raise InvalidInput(
                    f"the 'trio' transport cannot use the proxy {proxy.shown}: it speaks to "
                    f"http:// proxies only, not {proxy.scheme}://; use transport='httpx'"
                )
        #: None when every request goes straight to its origin
        self._routes = routes if routes else None
        self._options = options
        # redirects followed before TooManyRedirects (see _redirects.py)
        self._max_redirects = options.max_redirects
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[PoolKey, list[_Connection]] = {}
        # every idle connection, the longest idle first: at most max_connections of them
        # in all, whatever the number of origins (see _give_back)
        self._idle_order: dict[_Connection, None] = {}
        # (scheme, netloc) -> its route: parsed (and its proxy chosen) once per server
        self._origins: dict[tuple[str, str], _Route] = {}
        self._max_idle = options.max_connections
        self._closed = False
        # (route, header items...) -> the encoded header lines: most requests of a
        # downloader send the same few headers
        self._blocks: dict[tuple[object, ...], bytes] = {}

    # -- the pool ----------------------------------------------------------------------

    def _take_idle(self, key: PoolKey) -> _Connection | None:
        stack = self._idle.get(key)
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            del self._idle_order[conn]
            if not stack:
                del self._idle[key]
            # Readable while idle means the server closed it, or sent bytes no request asked
            # for (which the next request would take for its response): drop it.  Checked
            # on every reuse (one failing recv), however short the idle time: unasked bytes
            # come at once, after a response that ended.
            if now - conn.idle_since > _KEEPALIVE or conn.socket.is_readable():
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def _give_back(self, conn: _Connection) -> None:
        if self._closed or conn.closed:
            conn.close()
            return
        stack = self._idle.setdefault(conn.key, [])
        if len(stack) >= self._max_idle:
            conn.close()
            return
        now = conn.idle_since = time.monotonic()
        stack.append(conn)
        order = self._idle_order
        order[conn] = None
        # At most max_connections idle connections in all, none idle for longer than the
        # keep-alive: the longest idle go.  (Per origin only, a long-lived downloader kept
        # every origin's for ever: one that visited 300 origins held 1,200 sockets.)
        while order:
            oldest = next(iter(order))
            if len(order) <= self._max_idle and now - oldest.idle_since <= _KEEPALIVE:
                break
            del order[oldest]
            others = self._idle[oldest.key]
            others.remove(oldest)
            if not others:
                del self._idle[oldest.key]
            oldest.close()

    async def _connect(self, route: _Route, url: str) -> _Connection:
        proxy = route.proxy
        host, port = (route.host, route.port) if proxy is None else (proxy.host, proxy.port)
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            through = "" if proxy is None else f" (to the proxy {proxy.shown})"
            raise ConnectionFailed(describe_failure(exc) + through, url=url) from exc
        tcp.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        if route.scheme == "http":  # straight to the origin, or absolute-form to the proxy
            plain = PlainSocket(socket.socket(fileno=tcp.socket.detach()))
            return _Connection(route.key, plain, plain)
        try:
            if proxy is not None:
                await self._tunnel(tcp, route, url)
            if self._ssl is None:
                self._ssl = make_ssl_context(self._options)
            tls = trio.SSLStream(tcp, self._ssl, server_hostname=route.host, https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                cause = exc.__cause__ or exc
                raise ConnectionFailed(f"TLS handshake failed: {cause}", url=url) from exc
        except BaseException:
            tcp.socket.close()
            raise
        return _Connection(route.key, tls, tcp.socket)

    async def _tunnel(self, tcp: trio.SocketStream, route: _Route, url: str) -> None:
        """Ask the proxy on *tcp* for a tunnel to *route*'s origin (``CONNECT``); raises
        :class:`ConnectionFailed` naming the proxy unless it answers 2xx."""
        proxy = route.proxy
        assert proxy is not None
        lines = [("Host", route.authority)]
        if proxy.authorization is not None:
            lines.append(("Proxy-Authorization", proxy.authorization))
        request = b"CONNECT %s HTTP/1.1\r\n%s" % (route.authority.encode(), encode_headers(lines))
        wire = Wire(tcp)
        try:
            await tcp.send_all(request)
            head = await wire.read_head()
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectionFailed(
                f"connection to the proxy {proxy.shown} failed: {exc}", url=url
            ) from exc
        except ProtocolError as exc:
            raise ConnectionFailed(
                f"invalid answer from the proxy {proxy.shown} to CONNECT: {exc}", url=url
            ) from exc
        if head is None:
            raise ConnectionFailed(
                f"the proxy {proxy.shown} closed the connection without answering CONNECT",
                url=url,
            )
        if not 200 <= head.status < 300:
            raise _proxy_refused(route, head, url)
        if wire.leftover:  # (the origin speaks only after our TLS hello)
            raise ConnectionFailed(
                f"the proxy {proxy.shown} sent bytes after its answer to CONNECT", url=url
            )

    # -- requests ----------------------------------------------------------------------

    def stream(self, url: str, headers: Mapping[str, str], watch: Watch | None = None) -> _Stream:
        """``async with`` it for the response.  With a *watch*, the exchange (connecting
        included) ends with an error once the watch's deadline has passed."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        return _Stream(self, url, headers, watch)

    def _header_block(self, route: _Route, headers: Mapping[str, str]) -> bytes:
        key = (route, *headers.items())
        block = self._blocks.get(key)
        if block is None:
            lines = [("host", route.host_header)]
            own = {"host"}
            proxy = route.proxy
            if route.prefix and proxy is not None and proxy.authorization is not None:
                lines.append(("proxy-authorization", proxy.authorization))
                own.add("proxy-authorization")
            lines += [(k, v) for k, v in headers.items() if k.lower() not in own]
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

    async def _connect_watched(self, route: _Route, url: str, watch: Watch | None) -> _Connection:
        """A new connection (through the proxy's tunnel, if any); with a *watch*, given up
        at its deadline (there is no connection for the watchdog to close yet)."""
        if watch is None:
            return await self._connect(route, url)
        with trio.move_on_at(watch.deadline) as scope:
            # (an expiry before the deadline — see Watchdog.expire_all — ends the connecting
            # too; request() sets the connection's closer at once when it is made)
            watch.closer = scope.cancel
            return await self._connect(route, url)
        watch.expired = True
        raise ConnectionFailed("connecting timed out", url=url)

    def _parse(self, url: str) -> tuple[_Route, str]:
        """*url*'s route and request target (absolute-form through an HTTP proxy)."""
        simple = _SIMPLE_URL.match(url)
        if simple is not None:  # nothing to quote or decode: skip urlsplit
            scheme, netloc, path, query = simple.groups()
            route = self._origins.get((scheme, netloc))
            if route is not None:
                target = path or "/"
                if query:
                    target = f"{target}?{query}"
                return route, route.prefix + target if route.prefix else target
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise InvalidURL(f"malformed URL: {exc}", url=url) from None
        route = self._origins.get((parts.scheme, parts.netloc))
        if route is None:
            route = self._route(parts.scheme, parts.netloc, parts, url)
        try:
            target = _target(parts)
        except UnicodeEncodeError as exc:  # (a lone surrogate: no UTF-8 for it)
            raise InvalidURL(f"malformed URL: {exc}", url=url) from None
        return route, route.prefix + target if route.prefix else target

    def _route(self, scheme: str, netloc: str, parts: SplitResult, url: str) -> _Route:
        """The route of a server not seen yet (kept for the next requests)."""
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"malformed URL: {exc}", url=url) from None
        scheme = scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InvalidURL(f"unsupported URL scheme {scheme!r}", url=url)
        if not parts.hostname:
            raise InvalidURL("the URL has no host", url=url)
        try:
            host = ascii_host(parts.hostname)
        except ValueError as exc:
            raise InvalidURL(f"malformed URL: {exc}", url=url) from None
        default = _DEFAULT_PORTS[scheme]
        port = port or default
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        routes = self._routes
        proxy = routes.proxy_for(scheme, host, port) if routes is not None else None
        route = _Route(scheme, host, port, host_header, proxy)
        if len(self._origins) < 1024:
            self._origins[(parts.scheme, netloc)] = route
        return route

    async def aclose(self) -> None:
        self._closed = True
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()
        self._idle_order.clear()
        await trio.lowlevel.checkpoint()
