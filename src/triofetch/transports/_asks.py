"""The optional asks transport: an ``asks.Session`` behind the :class:`Transport` protocol.

asks 3.0.0 declares ``anyio~=3.0`` but only runs on anyio 4 with current Trio, so it is
installed with ``pip install --no-deps asks`` beside ``anyio>=4 h11 async_generator`` (the
``asks`` extra lists those).  See ``docs/transports.rst``.

asks sends the request and parses the status line and headers (its connection pool, TLS and
request building are used as they are).  Four of its defaults do not fit a downloader and are
replaced here:

- asks sends ``Connection: close`` and ``Accept-Encoding: gzip, deflate`` by default: this
  transport sends ``Connection: keep-alive`` and, unless the caller chose one,
  ``Accept-Encoding: identity``.
- asks' own redirect handling breaks on a streamed redirect that has a body (the body is left
  unread on the connection and the next response cannot be parsed): redirects are followed
  by the transports' shared loop (``_redirects.py``), with ``follow_redirects=False`` given
  to asks.
- asks' ``StreamBody`` iterator decompresses, raises ``anyio.EndOfStream`` at the end of a body
  delimited by the connection closing, and closes the connection instead of pooling it: the
  body is read here from the h11 connection asks opened, so bytes stay raw, truncation is
  detected by h11 and a fully read connection goes back to the pool.
- asks retries a failed connection once by default: this transport asks for no retry (the
  downloader retries).

This module owns that adaptation and nothing else: it must not sleep, retry, or follow
redirects itself.
"""

from __future__ import annotations

import select
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from .._urls import basic_authorization, redact_url, split_userinfo
from ..errors import ConnectionFailed, InvalidInput, InvalidURL, TruncatedBody
from ._base import Response, TransportOptions, describe_failure, make_ssl_context
from ._redirects import follow_redirects
from ._routing import ProxyRoutes, ascii_host as _ascii_host

__all__ = ["AsksTransport"]

try:
    import anyio
    import asks
    import asks.errors
    import asks.response_objects
    import h11
    from anyio.abc import SocketAttribute
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

_INSTALL_HINT = (
    "the asks transport needs the 'asks' package: "
    "pip install 'anyio>=4' 'h11>=0.14' 'async_generator>=1.10' && pip install --no-deps asks "
    "(asks 3.0.0 declares anyio~=3.0, which does not run on current Trio)"
)

#: bytes asked of the socket per read (asks reads 10 kB at a time)
_READ_SIZE = 1 << 17
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _connection_alive(sock: Any) -> bool:
    """Whether a pooled connection can carry another request.

    An idle keep-alive connection is readable only when the server closed it (or sent
    something it should not have): either way it must not be used again.
    """
    if not getattr(sock, "_active", False):
        return False
    raw = sock.extra(SocketAttribute.raw_socket, None)
    if raw is None:
        return False
    try:
        readable, _, _ = select.select([raw], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


async def _close_quietly(sock: Any) -> None:
    sock._active = False
    with (
        trio.CancelScope(shield=True),
        suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError),
    ):
        await sock.aclose()


def _make_session_class() -> type[Any]:
    class _Session(asks.Session):  # type: ignore[misc]
        """asks' Session with a pool that drops dead connections and keeps at most N idle."""

        def __init__(self, *, max_idle: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._max_idle = max_idle

        async def _grab_connection(self, url: str) -> Any:
            parts = urlsplit(url)
            host_loc = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            while True:
                sock = self._checkout_connection(host_loc)
                if sock is None:
                    break
                if _connection_alive(sock):
                    return sock
                await _close_quietly(sock)
            return await self._make_connection(host_loc)

        async def return_to_pool(self, sock: Any) -> None:
            if not sock._active:
                return
            self._conn_pool.appendleft(sock)
            while len(self._conn_pool) > self._max_idle:
                await _close_quietly(self._conn_pool.pop())

    return _Session


class _Target:
    """A URL checked for what asks can fetch, split into what the request needs."""

    __slots__ = ("authorization", "host_header", "origin", "request_url", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"cannot fetch this URL: {exc}", url=url) from exc
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InvalidURL(
                f"the asks transport fetches http:// and https:// URLs, not {scheme or 'this'}",
                url=url,
            )
        host = parts.hostname
        if not host:
            raise InvalidURL("cannot fetch this URL: it has no host", url=url)
        if any(c in url for c in "\r\n\t\x00 "):
            raise InvalidURL("cannot fetch this URL: it contains whitespace", url=url)
        try:
            ascii_host = _ascii_host(host)
        except ValueError as exc:
            raise InvalidURL(f"cannot fetch this URL: bad host name: {exc}", url=url) from exc
        if ":" in ascii_host:  # an IPv6 literal
            ascii_host = f"[{ascii_host}]"
        netloc = ascii_host if port is None else f"{ascii_host}:{port}"
        self.host_header = ascii_host if port is None or port == _DEFAULT_PORTS[scheme] else netloc
        path = parts.path or "/"
        self.request_url = urlunsplit((scheme, netloc, path, parts.query, ""))
        self.origin = (scheme, ascii_host.strip("[]"), port or _DEFAULT_PORTS[scheme])
        self.authorization: str | None = None
        userinfo = split_userinfo(url)[1]
        if userinfo is not None:
            self.authorization = basic_authorization(*userinfo)


class _AsksResponse:
    """One response; its body is read from the h11 connection asks parsed the headers on."""

    __slots__ = ("_complete", "_response", "_session", "headers", "reason", "status_code", "url")

    def __init__(self, response: Any, url: str, session: Any) -> None:
        self._response = response
        self._session = session
        self._complete = False
        self.status_code: int = response.status_code
        self.reason: str = response.reason_phrase or ""
        self.url = url
        headers: dict[str, str] = {}
        for name, value in response.headers.items():
            text = ", ".join(value) if isinstance(value, list) else str(value)
            headers[name.lower()] = text
        self.headers: Mapping[str, str] = headers

    @property
    def _stream(self) -> Any:
        body = self._response.body
        return body if isinstance(body, asks.response_objects.StreamBody) else None

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        stream = self._stream
        if stream is None:
            # asks read a body-less response itself (and pooled its connection)
            self._complete = True
            if self._response.body:
                yield bytes(self._response.body)
            return
        connection = stream.h11_connection
        sock = stream.sock
        received = 0
        while True:
            eof = False
            try:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await sock.receive(_READ_SIZE)
                    except anyio.EndOfStream:
                        data = b""
                        eof = True
                    connection.receive_data(data)
                    event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                if eof:
                    raise TruncatedBody(self._truncated(received), url=self.url) from exc
                raise ConnectionFailed(f"invalid HTTP response body: {exc}", url=self.url) from exc
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise ConnectionFailed(describe_failure(exc), url=self.url) from exc
            if event is h11.NEED_DATA:
                continue
            if isinstance(event, h11.Data):
                received += len(event.data)
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._complete = True
                return
            else:  # pragma: no cover - h11 sends nothing else inside a body
                raise ConnectionFailed(f"unexpected HTTP event {event!r}", url=self.url)

    def _truncated(self, received: int) -> str:
        length = self.headers.get("content-length")
        if length is not None:
            return f"body ended after {received} of {length} bytes"
        return f"body ended after {received} bytes, before its last chunk"

    async def release(self) -> None:
        """Pool the connection if the body was read to its end, else close it."""
        stream = self._stream
        if stream is None:
            return
        connection = stream.h11_connection
        sock = stream.sock
        if (
            self._complete
            and connection.our_state is h11.DONE
            and connection.their_state is h11.DONE
            and sock._active
        ):
            await self._session.return_to_pool(sock)
        else:
            await _close_quietly(sock)


class AsksTransport:
    """Fetches ``http://`` and ``https://`` URLs with one shared ``asks.Session``.

    Raises:
        InvalidInput: asks is not installed, or a proxy was asked for (asks has no proxy
            support).
    """

    def __init__(self, options: TransportOptions) -> None:
        if _IMPORT_ERROR is not None:
            raise InvalidInput(_INSTALL_HINT) from _IMPORT_ERROR
        if options.proxy is not None:
            raise InvalidInput(
                f"the asks transport cannot use a proxy ({redact_url(options.proxy)}): asks "
                "has no proxy support; use the trio or httpx transport"
            )
        self._options = options
        session_class = _make_session_class()
        self._session = session_class(
            max_idle=options.max_connections,
            connections=options.max_connections,
            ssl_context=make_ssl_context(options),
        )
        self._closed = False

    def _check_proxy_environment(self, target: _Target) -> None:
        """InvalidURL when the environment sends *target* through a proxy (by httpx's
        rules, read at each request): asks cannot, and must not connect directly."""
        if not self._options.trust_env:
            return
        scheme, host, port = target.origin
        try:
            proxy = ProxyRoutes(None, True).proxy_for(scheme, host, port)
        except InvalidInput as exc:
            raise InvalidURL(f"the environment's proxy settings: {exc}", url=target.url) from None
        if proxy is None:
            return
        raise InvalidURL(
            f"the environment sends {scheme}:// URLs through the proxy {proxy.shown} and the "
            "asks transport cannot use proxies; use the httpx or trio transport, or "
            "trust_env=False to connect directly",
            url=target.url,
        )

    async def request(self, url: str, headers: Mapping[str, str]) -> _AsksResponse:
        """One GET, without following redirects (the shared loop of ``_redirects.py`` calls
        it once per hop); the response, its body unread."""
        target = _Target(url)
        self._check_proxy_environment(target)
        request_headers = {
            "Host": target.host_header,
            "Connection": "keep-alive",
            "Accept-Encoding": "identity",
        }
        if target.authorization is not None:
            request_headers["Authorization"] = target.authorization
        lower = {name.lower(): name for name in request_headers}
        for name, value in headers.items():
            if name.lower() in ("host", "connection"):
                continue
            request_headers.pop(lower.get(name.lower(), name), None)
            request_headers[name] = value
        try:
            response = await self._session.request(
                "GET",
                target.request_url,
                headers=request_headers,
                stream=True,
                follow_redirects=False,
                retries=0,
            )
        except asks.errors.BadHttpResponse as exc:
            cause = exc.__cause__ or exc
            raise ConnectionFailed(
                f"connection failed: invalid or missing HTTP response ({cause})", url=target.url
            ) from exc
        except h11.LocalProtocolError as exc:
            raise InvalidURL(f"cannot send this request: {exc}", url=target.url) from exc
        except UnicodeDecodeError as exc:  # (asks decodes every header as UTF-8)
            raise ConnectionFailed(
                f"connection failed: a response header that is not UTF-8 ({exc})", url=target.url
            ) from exc
        except (
            OSError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
            anyio.ClosedResourceError,
            asks.errors.AsksException,
            h11.RemoteProtocolError,
        ) as exc:
            raise ConnectionFailed(describe_failure(exc), url=target.url) from exc
        return _AsksResponse(response, target.url, self._session)

    async def release(self, response: _AsksResponse) -> None:
        """Pool the connection of *response* if its body was read to its end, else close it."""
        await response.release()

    @asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Response]:
        """GET *url*, following redirects; yields the final response."""
        if self._closed:
            raise ConnectionFailed("the transport is closed", url=url)
        response = await follow_redirects(self, url, headers, self._options.max_redirects)
        try:
            yield response
        finally:
            await response.release()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._session.close()
