"""The transport protocol, its optional extension, and the TLS context of its options.

A transport opens one URL with a GET request and hands back a :class:`Response` whose body
is read as an async iterator of ``bytes`` chunks.  It follows redirects itself (the trio and
asks transports with the one loop of :mod:`._redirects`, httpx with its own client) and
reports the final URL.  Failures are reported as triofetch errors:

- connecting, sending or receiving failed → :class:`~triofetch.ConnectionFailed`
- the body ended before its announced length → :class:`~triofetch.TruncatedBody`
- the URL cannot be fetched at all → :class:`~triofetch.InvalidURL`
- too many redirects → :class:`~triofetch.TooManyRedirects`

Timeouts, retries, limits, authentication and validation are the downloader's business, not
the transport's: a transport is given ready-made headers and never sleeps or retries.  This
module owns the protocol's declaration (required and optional parts) and turning
:class:`TransportOptions` into an ``ssl.SSLContext``; it must not open connections.
"""

from __future__ import annotations

import os
import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._model import check_int
from .._urls import redact_url
from ..errors import InvalidInput, error_chain

if TYPE_CHECKING:  # (the watch's module imports Trio: not needed to declare the protocol)
    from .._watch import Watch

__all__ = [
    "Response",
    "Transport",
    "TransportOptions",
    "WatchableTransport",
    "WatchedStream",
    "describe_failure",
    "make_ssl_context",
]


@dataclass(frozen=True)
class TransportOptions:
    """Settings shared by every request of one downloader.

    Attributes:
        max_connections: connections kept in the pool (the downloader's total limit).
        verify: verify TLS certificates: ``True`` (the system's / ``SSL_CERT_FILE`` /
            ``SSL_CERT_DIR`` trust), a path to a CA bundle, an ``ssl.SSLContext``, or
            ``False`` (only when the caller says so explicitly).
        cert: a client certificate: path to a PEM file, or (certfile, keyfile).
        proxy: a proxy URL for every request, or None (environment proxies are honoured when
            ``trust_env`` is true).
        trust_env: read proxies and CA settings from the environment.
        max_redirects: redirects followed before :class:`~triofetch.TooManyRedirects`.
    """

    max_connections: int = 16
    verify: bool | str | Path | ssl.SSLContext = True
    cert: str | Path | tuple[str | Path, str | Path] | None = None
    proxy: str | None = None
    trust_env: bool = True
    max_redirects: int = 10

    def __post_init__(self) -> None:
        check_int(self.max_connections, "max_connections", least=1)
        check_int(self.max_redirects, "max_redirects", least=0)

    def __repr__(self) -> str:
        # (the proxy URL's user info is a secret: redacted, as in every message)
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.proxy is not None:
            shown["proxy"] = redact_url(self.proxy)
        return f"TransportOptions({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class Response(Protocol):
    """An open response: status, final URL, headers (lower-case names) and body chunks."""

    @property
    def status_code(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        """The body's bytes as they arrive, undecoded (no content decoding)."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Opens URLs.  One transport instance serves every request of one downloader.

    These two methods are all a transport needs (``isinstance(t, Transport)`` checks for
    them).  Each exchange runs under a ``trio.CancelScope`` with its deadline, and each body
    is read with :meth:`Response.iter_bytes`.  (triofetch's own ``trio`` transport implements
    a private extension instead, whose timeouts close the connection and whose small
    bodies arrive whole with the response head.)
    """

    def stream(self, url: str, headers: Mapping[str, str]) -> AbstractAsyncContextManager[Response]:
        """Send a GET for *url* and yield the response; closes it on exit."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class WatchedStream(AbstractAsyncContextManager[Response], Protocol):
    """The ``async with`` of a :class:`WatchableTransport`'s exchange."""

    def buffered_body(self) -> bytes | None:
        """The whole body, if it arrived with the response head (a small file), taken
        from the response so that :meth:`Response.iter_bytes` is not needed; else None.
        Only valid inside the ``async with``."""
        ...


class WatchableTransport(ABC):
    """The optional extension of :class:`Transport`: cheaper timeouts and whole bodies.

    Its :meth:`stream` takes a :class:`~triofetch._watch.Watch` instead of running under
    a cancel scope: the exchange tells the watch how to close its connection (``closer``),
    and the downloader's watchdog closes it once the deadline has passed, which the watch
    turns into a timeout.  That suits a transport whose every wait is on its connection's
    socket.  Its stream object also hands over a body that arrived whole with the response
    head (:meth:`WatchedStream.buffered_body`).

    A transport opts in by subclassing this class (a runtime check of a protocol could only
    see that a ``stream`` method exists, not that it takes a watch); the downloader gives
    every other transport the defaults described in :class:`Transport`.  The built-in
    ``trio`` transport is the one that does: a watch belongs to the downloader's private
    watchdog, so this extension is for triofetch's own transports.
    """

    @abstractmethod
    def stream(
        self, url: str, headers: Mapping[str, str], watch: Watch | None = None
    ) -> WatchedStream:
        """Like :meth:`Transport.stream`; with a *watch*, the exchange (connecting
        included) ends with an error once the watch's deadline has passed."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection."""


def make_ssl_context(options: TransportOptions) -> ssl.SSLContext:
    """The TLS context of *options*: verification on unless ``verify=False`` was given.

    A ``verify`` or ``cert`` file that is missing or cannot be loaded raises
    :class:`~triofetch.InvalidInput` naming the option and the file.

    ``verify=True`` trusts the system's CA store, which OpenSSL lets ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` override; a path trusts that CA bundle (file) or hashed directory.
    """
    verify = options.verify
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is True:
        context = ssl.create_default_context()
    elif verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        where = Path(verify)
        try:
            if where.is_dir():
                context = ssl.create_default_context(capath=str(where))
            else:
                context = ssl.create_default_context(cafile=str(where))
        except (OSError, ssl.SSLError) as exc:
            raise _unusable("verify", (where,), exc) from None
    if options.cert is not None:
        files = options.cert if isinstance(options.cert, tuple) else (options.cert,)
        try:
            context.load_cert_chain(*map(str, files))
        except (OSError, ssl.SSLError) as exc:
            raise _unusable("cert", files, exc) from None
    return context


def _unusable(option: str, files: tuple[str | Path, ...], exc: BaseException) -> InvalidInput:
    """The error for a ``verify`` or ``cert`` option whose files cannot be loaded."""
    for path in files:
        if not os.path.exists(path):
            return InvalidInput(f"{option}: no such file or directory: {os.fspath(path)!r}")
    names = ", ".join(repr(os.fspath(path)) for path in files)
    return InvalidInput(f"{option}: cannot load {names}: {exc}")


def describe_failure(exc: BaseException) -> str:
    """The most telling message in *exc*'s chain (httpx wraps TLS and socket errors)."""
    texts: list[str] = []
    for error in error_chain(exc)[:5]:
        text = str(error).strip()
        if text and text not in texts:
            texts.append(text)
    return f"connection failed: {texts[-1] if texts else type(exc).__name__}"
