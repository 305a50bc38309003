"""The :class:`Downloader`: its lifecycle, and the requests of one download.

Owns opening and closing a downloader (its transports, the watchdog of the ``trio``
transport's exchanges, the worker threads), the attempt of one download (the connection
limiters, credentials, one exchange with a transport under its time bounds — connect, read,
total, the lowest-speed rule, ``max_time`` — and the body read as it arrives) and
:meth:`Downloader.stream`.  The other modules each hold one concern it calls into:
``_plan`` (a fetch's arguments), ``_auth`` (credentials), ``_retry`` (attempts, waits and
limits), ``_sinks`` (writing and hashing), ``_result``, ``_closing`` (the fetches in
flight, and what ends them when the downloader closes).  None of them imports this module.
Redirects are the transports' (``transports/_redirects.py``).  It must not write files or
hash bytes itself (``_sinks`` does), nor know units, the store or the storage.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self, TypedDict, TypeVar

import trio

from .._context import check_trio
from .._digests import DEFAULT_ALGORITHM
from .._model import check_bool, check_int, check_number
from .._tempfiles import new_temp_name
from .._urls import redact_url
from .._watch import Watch, Watchdog
from ..errors import (
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    InvalidInput,
    InvalidURL,
    SizeMismatch,
    WrongContext,
)
from ..transports._base import (
    Response,
    Transport,
    TransportOptions,
    WatchableTransport,
    WatchedStream,
    make_ssl_context,
)
from ..transports._routing import ProxyRoutes
from ._auth import Credentials, TokenProvider, split_credentials
from ._closing import InFlight, closed_in_flight
from ._many import FetchOutcomes, _Requests, fetch_many
from ._plan import FetchPlan, Planner
from ._result import DownloadResult, with_attempts
from ._retry import (
    DEFAULT_MAX_RETRY_AFTER,
    FileClock,
    HostLimits,
    RateLimit,
    RetryPolicy,
    retry_after,
)
from ._sinks import _FLUSH_BYTES, _SMALL_BYTES, _LargeFiles, _Sink, _SmallFiles

__all__ = ["BodyConsumer", "Downloader", "DownloaderOptions"]

_log = logging.getLogger("triofetch.downloader")
#: one DEBUG line per HTTP request (see docs/downloader.rst, "Logging")
_http_log = logging.getLogger("triofetch.http")
_DEBUG = logging.DEBUG

_T_co = TypeVar("_T_co", covariant=True)

#: the lowest-speed rule's default: a body slower than this many bytes/s on average over
#: DEFAULT_SPEED_TIME seconds fails (see docs/downloader.rst, "Time bounds")
DEFAULT_SPEED_LIMIT = 1000
DEFAULT_SPEED_TIME = 30.0
#: redirects followed by default
DEFAULT_MAX_REDIRECTS = 10


class BodyConsumer(Protocol[_T_co]):
    """Takes a body as it arrives (see :meth:`~triofetch.Downloader.stream`)."""

    async def feed(self, chunk: bytes) -> None:
        """The next bytes of the body (raise to stop reading: the error propagates)."""
        ...

    async def finish(self) -> _T_co:
        """The body ended whole: the result of :meth:`~triofetch.Downloader.stream`."""
        ...


class _Received:
    """A body received whole, in memory, to be written and verified after the request."""

    __slots__ = ("chunks", "headers", "sink", "size", "url")

    def __init__(
        self, sink: _Sink, chunks: list[bytes], size: int, url: str, headers: dict[str, str]
    ) -> None:
        self.sink = sink
        self.chunks = chunks
        self.size = size
        self.url = url
        self.headers = headers


def _ended_by_close(error: BaseException) -> bool:
    """Whether *error*, raised by a request while the downloader closes, is that close's
    doing (its error is :func:`closed_in_flight`'s, not this one)."""
    return isinstance(error, Exception) and not isinstance(error, WrongContext)


def _grown(size: int, chunk: bytes, expected_size: int | None, url: str) -> int:
    """The body's size with *chunk*; raises as soon as it grows past *expected_size*."""
    size += len(chunk)
    if expected_size is not None and size > expected_size:
        raise SizeMismatch(expected_size, size, url=url, exceeded=True)
    return size


def _scheme_problem(url: str) -> str:
    """Why *url* (neither http, https nor file) cannot be fetched."""
    scheme, colon, _ = url.partition(":")
    # RFC 3986: a letter, then letters, digits, "+", "-" or "."
    valid = scheme.isascii() and scheme[:1].isalpha()
    if colon and valid and all(c.isalnum() or c in "+-." for c in scheme):
        return f"unsupported URL scheme {scheme.lower()!r} (http, https or file)"
    return "not an absolute URL: it must start with http://, https:// or file://"


def _auto_transport(proxy: str | None, trust_env: bool) -> tuple[Literal["trio", "httpx"], str]:
    """``transport="auto"``: the trio transport when it can honour the proxy configuration
    (none, or ``http://`` proxies only), else httpx (a SOCKS or ``https://`` proxy); and why,
    for the log (no proxy URL in it).  A proxy URL that cannot be parsed raises
    :class:`InvalidInput` (neither transport could use it)."""
    routes = ProxyRoutes(proxy, trust_env)
    other = sorted({p.scheme for p in routes.proxies if p.scheme != "http"})
    if other:
        schemes = ", ".join(f"{scheme}://" for scheme in other)
        return "httpx", f"a {schemes} proxy, which only the httpx transport can use"
    if routes:
        return "trio", "http:// proxies, which the trio transport uses"
    return "trio", "no proxy"


def _transport_name(transport: str | Transport) -> str:
    return transport if isinstance(transport, str) else type(transport).__name__


def _log_request(
    url: str, status: int | None, size: int, start: float, error: BaseException | None
) -> None:
    """The DEBUG line of one request that ended: its URL (credentials redacted), status,
    body bytes and time; or the error that ended it.  Called only when DEBUG is enabled."""
    elapsed = trio.current_time() - start
    shown = "-" if status is None else status
    if error is None:
        _http_log.debug("GET %s -> %s, %d bytes, %.3f s", redact_url(url), shown, size, elapsed)
    elif isinstance(error, DownloadError):
        # (its message names no credential: URLs in errors are redacted)
        _http_log.debug(
            "GET %s -> %s, failed after %.3f s: %s", redact_url(url), shown, elapsed, error.message
        )


def _temp_path(directory: str | None) -> str:
    """A new temp file name in *directory* (a string ending with a separator)."""
    if directory is None:  # (a plan of the private directory, after the downloader closed)
        raise WrongContext("use the Downloader inside 'async with' (it is not open)")
    return directory + new_temp_name()


def _remove_tree(directory: str) -> None:
    """Remove a private temp directory and whatever is still in it (a worker thread)."""
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:  # (never raised from aclose: the downloads are done)
        _log.warning("could not remove the temp directory %s: %s", directory, exc)


def _raise_for_status(response: Response) -> None:
    """HTTPStatusError for an answer other than 2xx (with its Retry-After, if any)."""
    if not 200 <= response.status_code < 300:
        raise HTTPStatusError(
            response.status_code,
            url=response.url,
            reason=response.reason,
            retry_after=retry_after(response.headers.get("retry-after")),
        )


class DownloaderOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Downloader` but ``temp_dir``, for the functions that
    make a downloader for their caller (:func:`triofetch.fetch`,
    :func:`triofetch.download_units`): a misspelt option is a type error there, as it is on
    :class:`Downloader` itself.  Each means what the :class:`Downloader` parameter of the
    same name means (``tests/test_typing.py`` keeps the two lists equal)."""

    connections: int
    per_host: int | None
    retries: int
    mismatch_retries: int
    backoff: float
    backoff_max: float
    max_retry_after: float
    connect_timeout: float | None
    read_timeout: float | None
    total_timeout: float | None
    speed_limit: int | None
    speed_time: float
    max_time: float | None
    digests: Iterable[str]
    headers: Mapping[str, str] | None
    auth: tuple[str, str] | None
    token_provider: TokenProvider | None
    rate_limit: float | None
    proxy: str | None
    verify: bool | str | os.PathLike[str] | ssl.SSLContext
    cert: str | tuple[str, str] | None
    trust_env: bool
    max_redirects: int
    transport: Literal["httpx", "trio", "auto", "asks"] | Transport
    threads: int | trio.CapacityLimiter | None


class Downloader:
    """Downloads many files at once inside the caller's Trio run.

    Use it as an async context manager; start fetches in your own nurseries::

        async with triofetch.Downloader(connections=16) as dl:
            async with trio.open_nursery() as nursery:
                for url in urls:
                    nursery.start_soon(dl.fetch, url)

    Every fetch streams to a temp file, computes its digests while the bytes stream by,
    validates size and digests, and returns a :class:`DownloadResult`.  On failure the temp
    file is removed and a :class:`DownloadError` subclass is raised that names the URL.

    Args:
        connections: requests in flight at once, in total.
        per_host: requests in flight at once to one host (scheme, host and port);
            defaults to ``connections``.
        retries: further attempts on each URL after the first one, for retryable failures
            (connection errors, timeouts, 429, 5xx, truncated bodies, size or digest
            mismatches); when they are spent, the next mirror URL is tried.  A ``file://``
            URL is never retried.
        mismatch_retries: of those, how many may follow a size or digest mismatch on one
            URL (default 1: a CDN may serve a transiently broken copy once, but the same
            wrong bytes again and again are no better for the waiting).
        backoff: the first retry waits about this many seconds, each next one twice as long
            (with jitter), capped at ``backoff_max``.  A ``Retry-After`` header is honoured
            instead; a longer one than ``max_retry_after`` seconds waits ``max_retry_after``
            (0: ``Retry-After`` is not honoured, the usual backoff applies).
        connect_timeout: seconds to get the response headers.
        read_timeout: seconds without any body byte before giving up.
        total_timeout: seconds for a whole exchange with the server (request to last body
            byte), or None.
        speed_limit, speed_time: the lowest-speed rule: an attempt whose body arrives at
            fewer than ``speed_limit`` bytes/s on average over ``speed_time`` seconds fails
            with :class:`DownloadTimeout` (retried).  0 or None turns the rule off.
        max_time: seconds for one file, from its first request to its last body byte,
            retries and their waits included, or None (no limit):
            :class:`DownloadTimeout`, not retried.
        temp_dir: an existing directory where temp files are written; files left there are
            the caller's.  Default: a private directory the downloader makes in the system
            temp dir when it is entered and removes, with everything still in it, when it
            closes — so a result's file survives the downloader only when the caller moved
            it out (``destination=``, :meth:`DownloadResult.move_to`).  Not a directory:
            :class:`InvalidInput`.
        digests: algorithms computed for every download (sha256 is always computed).
        headers: headers sent with every request.
        auth: ``(user, password)`` for HTTP basic auth on every request (credentials in a
            URL take precedence for that URL).
        token_provider: an async callable returning a bearer token; awaited once when no
            token is known yet or when a 401 says it expired, while every other download that
            needs it waits for that single refresh.
        rate_limit: requests per second shared by all downloads, or None.
        proxy, verify, cert, trust_env, max_redirects: see :class:`TransportOptions`.
            Proxies are chosen by httpx's rules on every transport (``proxy=`` for every
            request; else, with ``trust_env``, ``HTTP_PROXY``, ``HTTPS_PROXY``,
            ``ALL_PROXY`` and ``NO_PROXY``).
        transport: ``"auto"`` (default: ``"trio"`` whenever it can honour the proxy
            configuration, which is any but a SOCKS or ``https://`` proxy, else
            ``"httpx"``), ``"trio"`` (HTTP/1.1 on Trio sockets with its own parser: the
            fastest; http:// proxies), ``"httpx"``, ``"asks"`` (no proxies), or a
            :class:`Transport` instance, used for http and https URLs; ``file://`` URLs are
            always read locally.  :attr:`transport_name` tells which one was chosen.
        threads: worker threads for hashing and file writes (a ``CapacityLimiter`` or a
            number); default: twice the CPU count, at least 4.
    """

    def __init__(
        self,
        *,
        connections: int = 16,
        per_host: int | None = None,
        retries: int = 3,
        mismatch_retries: int = 1,
        backoff: float = 0.25,
        backoff_max: float = 30.0,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        connect_timeout: float | None = 30.0,
        read_timeout: float | None = 60.0,
        total_timeout: float | None = None,
        speed_limit: int | None = DEFAULT_SPEED_LIMIT,
        speed_time: float = DEFAULT_SPEED_TIME,
        max_time: float | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        digests: Iterable[str] = (DEFAULT_ALGORITHM,),
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        token_provider: TokenProvider | None = None,
        rate_limit: float | None = None,
        proxy: str | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        trust_env: bool = True,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        transport: Literal["httpx", "trio", "auto", "asks"] | Transport = "auto",
        threads: int | trio.CapacityLimiter | None = None,
    ) -> None:
        check_int(connections, "connections", least=1)
        check_bool(trust_env, "trust_env")
        if per_host is not None:
            check_int(per_host, "per_host", least=1)
        check_int(max_redirects, "max_redirects", least=0)
        if threads is not None and not isinstance(threads, trio.CapacityLimiter):
            check_int(threads, "threads", least=1)
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("total_timeout", total_timeout),
            ("rate_limit", rate_limit),
        ):
            check_number(value, name, positive=True, allow_none=True)
        if speed_limit is not None:
            check_int(speed_limit, "speed_limit", least=0)
        check_number(speed_time, "speed_time", positive=True)
        if not isinstance(verify, bool | str | os.PathLike | ssl.SSLContext):
            raise InvalidInput(
                "verify must be True, False, the path of a CA bundle or directory, or an "
                f"ssl.SSLContext, got {verify!r}"
            )
        if cert is not None and not (
            isinstance(cert, str | os.PathLike)
            or (
                isinstance(cert, tuple)
                and len(cert) == 2
                and all(isinstance(part, str | os.PathLike) for part in cert)
            )
        ):
            raise InvalidInput(
                f"cert must be a PEM file or a (certfile, keyfile) pair of paths, got {cert!r}"
            )
        if proxy is not None and not isinstance(proxy, str):
            raise InvalidInput(f"proxy must be a proxy URL (a str), got {type(proxy).__name__}")
        if isinstance(transport, Transport) and (
            proxy is not None
            or cert is not None
            or verify is not True
            or max_redirects != DEFAULT_MAX_REDIRECTS
        ):
            # (the transport was made with its own options: these would be ignored, and a
            # proxy ignored means requests going straight to their origins)
            raise InvalidInput(
                "proxy, verify, cert and max_redirects are options of the transport: give "
                "them to the Transport passed as transport= (its TransportOptions), not to "
                "the Downloader"
            )
        #: the fetches in flight, and what ends them when the downloader closes (see
        #: _closing.py: no cancel scope per fetch)
        self._flight = InFlight()
        self._retry = RetryPolicy(
            sleep_until=self._flight.sleep_until,
            retries=retries,
            backoff=backoff,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            max_time=max_time,
            mismatch_retries=mismatch_retries,
        )
        self._credentials = Credentials(auth, token_provider, self._flight.interruptible)
        self._planner = Planner(digests=digests, headers=headers, temp_dir=temp_dir)
        #: the directory of temp files without a temp_dir of their own (ending with a
        #: separator): the one given, or the private one made by __aenter__
        self._temp_dir: str | None = self._planner.temp_dir
        #: whether _temp_dir is private: made when entered, removed when closed
        self._private_temp = temp_dir is None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        #: bytes per second below which a body fails (0: no lowest-speed rule)
        self._speed_limit = speed_limit or 0
        self._speed_time = float(speed_time)
        self._rate = RateLimit(rate_limit, self._flight.sleep_until) if rate_limit else None
        self._limiter = trio.CapacityLimiter(connections)
        self._host_limiters = (
            HostLimits(per_host) if per_host is not None and per_host < connections else None
        )
        if isinstance(threads, trio.CapacityLimiter):
            self._threads = threads
        else:
            self._threads = trio.CapacityLimiter(threads or max(4, 2 * (os.cpu_count() or 1)))
        self._small = _SmallFiles(self._threads)
        self._large = _LargeFiles(self._threads)
        self._options = TransportOptions(
            max_connections=connections,
            verify=verify,  # type: ignore[arg-type]
            cert=cert,
            proxy=proxy,
            trust_env=trust_env,
            max_redirects=max_redirects,
        )
        if cert is not None or not isinstance(verify, bool | ssl.SSLContext):
            # CA and certificate files are loaded now: a bad one is a bad argument, not a
            # failed download (the transports take the context as it is)
            context = make_ssl_context(self._options)
            self._options = replace(self._options, verify=context, cert=None)
        if transport not in ("httpx", "trio", "auto", "asks") and not isinstance(
            transport, Transport
        ):
            raise InvalidInput(
                f"unknown transport {transport!r}: 'httpx', 'trio', 'auto', 'asks' or a Transport"
            )
        if transport == "auto":
            transport, why = _auto_transport(proxy, trust_env)
            _log.debug("transport %r (transport='auto': %s)", transport, why)
        else:
            _log.debug("transport %r (as asked)", _transport_name(transport))
        self._transport_choice = transport
        self._transport: Transport | None = None
        self._file_transport: Transport | None = None
        #: the transport, when it takes watches (see WatchableTransport), and the watchdog
        #: that times out its exchanges (see _watch.py)
        self._watching: tuple[WatchableTransport, Watchdog] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        check_trio()
        if self._transport is not None:
            raise WrongContext("this Downloader is already open")
        # (the transports are imported when first used: httpx and asks are slow to import)
        from ..transports import FileTransport

        choice = self._transport_choice
        transport: Transport
        if choice == "httpx":
            from ..transports import HttpxTransport

            transport = HttpxTransport(self._options)
        elif choice == "trio":
            from ..transports import TrioTransport

            transport = TrioTransport(self._options)
        elif choice == "asks":
            from ..transports import AsksTransport

            transport = AsksTransport(self._options)
        else:  # a Transport (checked in __init__)
            assert isinstance(choice, Transport)
            transport = choice
        if self._private_temp:
            made = tempfile.mkdtemp(prefix=f"triofetch-{os.getpid()}-")
            self._temp_dir = made + os.sep
            _log.debug("private temp directory %s", made)
        self._transport = transport
        self._flight.reopen()
        self._file_transport = FileTransport()
        if isinstance(transport, WatchableTransport):
            watchdog = Watchdog()
            watchdog.start()
            self._watching = (transport, watchdog)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection.  Called by ``async with``.

        A fetch or stream still in flight in another task is cancelled first (removing
        its temp file) and raises :class:`WrongContext` there; ``aclose`` waits for it to
        end, so that no download outlives the downloader."""
        transport, self._transport = self._transport, None
        watching, self._watching = self._watching, None
        flight = self._flight
        with trio.CancelScope(shield=True):
            # (a fetch in flight sees the closed transport at its next step, and is ended
            # where it waits: see _closing.py)
            flight.interrupt()
            if watching is not None:
                watching[1].expire_all()
            await flight.wait_landed()
            await self._small.wait_idle()  # (a cancelled fetch's file may be in the thread)
            if watching is not None:
                await watching[1].aclose()
            if transport is not None:
                await transport.aclose()
            if self._private_temp and self._temp_dir is not None:
                private, self._temp_dir = self._temp_dir, None
                await trio.to_thread.run_sync(_remove_tree, private)

    @property
    def temp_dir(self) -> Path | None:
        """Where temp files go when a fetch names no ``temp_dir`` (the ``temp_dir`` given,
        or the private directory of an open downloader; None before it is entered and
        after it closed)."""
        return None if self._temp_dir is None else Path(self._temp_dir)

    @property
    def transport_name(self) -> str:
        """The name of the transport of http and https URLs (``"trio"``, ``"httpx"``,
        ``"asks"``, or the class name of a :class:`Transport` given); with
        ``transport="auto"``, it says which one was chosen here."""
        return _transport_name(self._transport_choice)

    @property
    def token_refreshes(self) -> int:
        """How many times the token provider was awaited."""
        return self._credentials.refreshes

    @property
    def is_open(self) -> bool:
        """Whether the downloader is open, inside its ``async with`` (it fetches only then)."""
        return self._transport is not None

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """The limiter bounding requests in flight (shared with callers that want it)."""
        return self._limiter

    # -- public API --------------------------------------------------------------------

    def plan(
        self,
        *,
        expected_digests: Mapping[str, str] | None = None,
        expected_size: int | None = None,
        digests: Iterable[str] | None = None,
        headers: Mapping[str, str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        destination: str | os.PathLike[str] | None = None,
    ) -> FetchPlan:
        """Validate the arguments of a fetch, before any I/O, for :meth:`fetch_planned`.

        Takes the keyword arguments of :meth:`fetch`; raises :class:`InvalidInput`
        subclasses.
        """
        return self._planner.plan(
            expected_digests, expected_size, digests, headers, temp_dir, destination
        )

    async def fetch(
        self,
        url: str | Sequence[str],
        *,
        expected_digests: Mapping[str, str] | None = None,
        expected_size: int | None = None,
        digests: Iterable[str] | None = None,
        headers: Mapping[str, str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        destination: str | os.PathLike[str] | None = None,
    ) -> DownloadResult:
        """Download one file (from *url*, or from the first of several mirror URLs that works).

        Args:
            url: a URL, or a sequence of mirror URLs serving the same bytes: when every
                attempt on one fails, the next one is tried.
            expected_digests: ``{algorithm: hexdigest}`` the bytes must match.
            expected_size: the exact size the body must have; reading stops as soon as the
                body grows past it.
            digests: further algorithms to compute.
            headers: extra request headers for this fetch.
            temp_dir: an existing directory for the temp file (default: the downloader's).
            destination: where the file goes once validated: it is moved there (replacing
                any file of that name) in a worker thread, atomically — a reader of
                *destination* sees the old file or the complete new one, never a part —
                and ``result.path`` is *destination*.  Its directory must exist.  On any
                failure the destination is left as it was.

        Returns:
            a :class:`DownloadResult`; the caller owns its file (the temp file, or
            *destination*).

        Raises:
            InvalidInput: bad arguments (unknown algorithm, malformed digest...), before any
                I/O.
            DownloadError: the last attempt's error (``HTTPStatusError``, ``DigestMismatch``,
                ``SizeMismatch``, ``TransportError``, ``DestinationError``...), with every
                attempt's error in ``attempts``.  A temp file that cannot be written (a full
                disk...) is a ``TempFileError``, raised at once: no retry, no mirror.
        """
        plan = self._planner.plan(
            expected_digests, expected_size, digests, headers, temp_dir, destination
        )
        # (the retries called from here, not through fetch_planned: one coroutine less
        # for every resumption of the download's task)
        urls = self._urls(url)
        with self._flight:  # (counted while in flight: see _closing.py)
            return await self._retry.run(urls, self._attempt, plan, with_attempts)

    async def fetch_planned(self, url: str | Sequence[str], plan: FetchPlan) -> DownloadResult:
        """Like :meth:`fetch`, with arguments already validated by :meth:`plan`."""
        urls = self._urls(url)
        with self._flight:  # (counted while in flight: see _closing.py)
            return await self._retry.run(urls, self._attempt, plan, with_attempts)

    def _urls(self, url: str | Sequence[str]) -> tuple[str, ...]:
        """*url* as mirror URLs, checked; the downloader must be open."""
        if self._transport is None:
            raise WrongContext("use the Downloader inside 'async with' (it is not open)")
        if isinstance(url, str):  # (the usual case: no generator to check one URL)
            if url:
                return (url,)
        else:
            try:
                urls = tuple(url)
            except TypeError:  # (a path, a number: not URLs)
                urls = ()
            if urls and all(isinstance(u, str) and u for u in urls):
                return urls
        raise InvalidInput(f"expected a URL or a non-empty sequence of URLs, got {url!r}")

    # -- a body streamed to a consumer ---------------------------------------------------

    async def stream(
        self,
        url: str,
        consumer: Callable[[], BodyConsumer[_T_co]],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> _T_co:
        """Fetch *url* and hand its body to a consumer as it arrives; nothing is written.

        For an index parsed while it streams (a repository's manifest): the bytes are
        neither kept nor written to disk, so the memory used is the consumer's.  Each
        attempt makes a fresh :class:`~triofetch.downloader.BodyConsumer` with
        ``consumer()``; its ``feed`` gets every chunk, its ``finish`` the end of a whole
        body, and what ``finish`` returns is returned.  The limiters, credentials, timeouts
        and retries of :meth:`fetch` apply (a failed attempt's consumer is dropped); an error
        the consumer raises (a body too large, a malformed index) is not retried: it
        propagates as it is.

        Raises:
            InvalidInput: bad headers.
            DownloadError: the last attempt's error, as for :meth:`fetch`.
        """
        if self._transport is None:
            raise WrongContext("use the Downloader inside 'async with' (it is not open)")
        merged = self._planner.merged_headers(headers)
        with self._flight:  # (counted while in flight: see _closing.py)
            return await self._retry.run((url,), self._stream_attempt, (merged, consumer), None)

    async def _stream_attempt(
        self,
        url: str,
        arg: tuple[Mapping[str, str], Callable[[], BodyConsumer[_T_co]]],
        clock: FileClock | None,
    ) -> _T_co:
        """One attempt of :meth:`stream`: a fresh consumer, the request under the limiters,
        with credentials."""
        headers, make_consumer = arg
        consumer = make_consumer()
        url, basic = split_credentials(url) if "@" in url else (url, None)
        transport = self._transport_for(url)
        host_limiter = self._host_limiters.limiter(url) if self._host_limiters is not None else None
        async with contextlib.AsyncExitStack() as held:
            with self._flight.interruptible():  # (aclose ends the wait for a token)
                if host_limiter is not None:
                    await held.enter_async_context(host_limiter)
                await held.enter_async_context(self._limiter)
            await self._credentials.exchange(
                headers, basic, self._stream_exchange, transport, url, consumer, clock
            )
        if self._transport is None:  # (the downloader closed meanwhile)
            raise closed_in_flight()
        return await consumer.finish()

    async def _stream_exchange(
        self,
        headers: Mapping[str, str],
        may_refresh: bool,
        transport: Transport,
        url: str,
        consumer: BodyConsumer[object],
        clock: FileClock | None,
    ) -> Literal[True] | None:
        """One request of :meth:`stream`, its body fed to *consumer*; None when a 401 asks
        for a fresh bearer token.  The time bounds are :meth:`fetch`'s (see
        :meth:`_receive` for the lowest-speed rule)."""
        if self._rate is not None:
            await self._rate.wait()
        if self._transport is None:  # (the downloader closed meanwhile)
            raise closed_in_flight()
        start = trio.current_time()
        hard = start + self._total_timeout if self._total_timeout else math.inf
        if clock is not None:
            hard = min(hard, clock.start(start))
        read_timeout = self._read_timeout or math.inf
        phase = "connect"
        deadline = min(hard, start + (self._connect_timeout or math.inf))
        debug = _http_log.isEnabledFor(_DEBUG)  # (once per request: see "Logging")
        status: int | None = None
        counted = size = 0
        final = url
        scope = trio.CancelScope(deadline=deadline)
        scopes = self._flight.scopes
        scopes.add(scope)  # (the downloader's aclose cancels it)
        try:
            with scope:
                async with transport.stream(url, headers) as response:
                    status, final = response.status_code, response.url
                    if status == 401 and may_refresh:
                        if debug:
                            _log_request(final, status, 0, start, None)
                        return None
                    _raise_for_status(response)
                    phase = "read"
                    since = trio.current_time()
                    scope.deadline = min(hard, since + read_timeout)
                    speed_at = since + self._speed_time if self._speed_limit else math.inf
                    async with contextlib.aclosing(response.iter_bytes()) as chunks:
                        async for chunk in chunks:
                            await consumer.feed(chunk)
                            size += len(chunk)
                            now = trio.current_time()
                            scope.deadline = min(hard, now + read_timeout)
                            if now >= speed_at:
                                speed_at, since, counted = self._next_window(
                                    size, counted, now, since, url
                                )
                phase = "done"
            if phase != "done":  # the scope's deadline passed
                if clock is not None and clock.over():
                    raise clock.error(url)
                raise DownloadTimeout(self._timeout_message(phase, start, hard), url=url)
        except BaseException as exc:
            if debug:
                _log_request(final, status, size, start, exc)
            if self._flight.closing and _ended_by_close(exc):
                raise closed_in_flight() from exc  # (aclose ended it: not a failure to retry)
            raise
        finally:
            scopes.discard(scope)
        if debug:
            _log_request(final, status, size, start, None)
        return True

    # -- one attempt -------------------------------------------------------------------

    def _transport_for(self, url: str) -> Transport:
        """The transport of *url*'s scheme (http, https or file), else :class:`InvalidURL`."""
        scheme = url.partition(":")[0].lower()
        if scheme == "file":
            transport = self._file_transport
        elif scheme in ("http", "https"):
            transport = self._transport
        else:
            raise InvalidURL(_scheme_problem(url), url=url)
        if self._transport is None:  # (closed by aclose between two attempts)
            raise closed_in_flight()
        assert transport is not None
        return transport

    async def _attempt(
        self, url: str, plan: FetchPlan, clock: FileClock | None = None
    ) -> DownloadResult:
        """One attempt: the request under the limiters, then (a body received whole) the
        file finished.  One coroutine for both, not two nested: a task's every resumption
        passes through each coroutine it is awaiting in."""
        url, basic = split_credentials(url) if "@" in url else (url, None)
        transport = self._transport_for(url)
        host_limiter = self._host_limiters.limiter(url) if self._host_limiters is not None else None
        if host_limiter is not None:
            try:
                host_limiter.acquire_nowait()
            except trio.WouldBlock:
                with self._flight.interruptible():  # (aclose ends the wait)
                    await host_limiter.acquire()
        limiter = self._limiter
        got: DownloadResult | _Received
        try:
            # A free token is taken without a schedule point (the request ahead has
            # several); waiting, when there is no free token or others wait already, is as
            # usual.
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                with self._flight.interruptible():  # (aclose ends the wait: see _closing.py)
                    await limiter.acquire()
            try:
                if basic is None and self._credentials.anonymous:
                    # the usual case: no credentials (straight to the exchange)
                    exchanged = await self._exchange(
                        plan.headers, False, transport, url, plan, clock
                    )
                    if exchanged is None:  # pragma: no cover - only when a refresh may help
                        raise AssertionError("unreachable")
                    got = exchanged
                else:
                    got = await self._credentials.exchange(
                        plan.headers, basic, self._exchange, transport, url, plan, clock
                    )
            finally:
                limiter.release()
        finally:
            if host_limiter is not None:
                host_limiter.release()
        if isinstance(got, _Received):
            # the request is over (connection and token released): finish the file
            return await self._finish(got)
        return got

    async def _finish(self, got: _Received) -> DownloadResult:
        """Write, verify and place a body received whole (a worker thread does the work)."""
        sink = got.sink
        try:
            if self._transport is None:  # (the downloader closed meanwhile)
                raise closed_in_flight()
            if got.size > _SMALL_BYTES:
                digests = await self._large.finish(sink, got.chunks, got.size)
            else:
                digests = await self._small.finish(sink, got.chunks, got.size)
            if self._transport is None and not sink.placed:
                # (it closed while a thread finished the file: the file would be left in,
                # or removed with, the downloader's temp directory)
                raise closed_in_flight()
        except BaseException:
            sink.discard()
            raise
        return DownloadResult(
            url=got.url,
            path=sink.path,
            size=got.size,
            digests=digests,
            headers=got.headers,
        )

    async def _exchange(
        self,
        headers: Mapping[str, str],
        may_refresh: bool,
        transport: Transport,
        url: str,
        plan: FetchPlan,
        clock: FileClock | None,
    ) -> DownloadResult | _Received | None:
        """One request.  Returns None when a 401 asks for a fresh bearer token, and a body
        received whole (not yet written: see :meth:`_finish`) as :class:`_Received`."""
        if self._rate is not None:
            await self._rate.wait()
        if self._transport is None:  # (the downloader closed meanwhile)
            raise closed_in_flight()
        start = trio.current_time()
        hard = start + self._total_timeout if self._total_timeout else math.inf
        if clock is not None:  # max_time: the file's deadline (set by its first request)
            hard = min(hard, clock.start(start))
        phase = "connect"
        sink: _Sink | None = None
        deadline = min(hard, start + (self._connect_timeout or math.inf))
        scope: trio.CancelScope | Watch
        stream: AbstractAsyncContextManager[Response]
        watched: WatchedStream | None = None
        cancellable: trio.CancelScope | None = None
        watching = self._watching
        if watching is not None and transport is watching[0]:
            # the transport takes a watch: no cancel scope per request (see _watch.py)
            scope = watching[1].watch(deadline)
            stream = watched = watching[0].stream(url, headers, scope)
        else:
            scope = cancellable = trio.CancelScope(deadline=deadline)
            stream = transport.stream(url, headers)
            self._flight.scopes.add(cancellable)  # (the downloader's aclose cancels it)
        # One DEBUG line per request, when it ends (its bytes known then): the check is made
        # once here, nothing is formatted unless it holds (see docs, "Logging").
        debug = _http_log.isEnabledFor(_DEBUG)
        status: int | None = None
        final = url
        try:
            with scope:
                async with stream as response:
                    if debug:
                        status, final = response.status_code, response.url
                    if response.status_code == 401 and may_refresh:
                        if debug:
                            _log_request(final, status, 0, start, None)
                        return None
                    _raise_for_status(response)
                    phase = "read"
                    sink = _Sink(_temp_path(plan.temp_dir or self._temp_dir), plan, response.url)
                    result = self._whole(response, plan, sink, watched) or await self._receive(
                        response, plan, sink, scope, hard
                    )
                # leaving the stream is a checkpoint: the file is only ours once past it
                phase = "done"
            if scope.cancelled_caught and phase != "done":
                if clock is not None and clock.over():
                    raise clock.error(url)
                raise DownloadTimeout(self._timeout_message(phase, start, hard), url=url)
            if phase != "done":  # pragma: no cover - the scope only ends these ways
                raise AssertionError("download ended without a result")
            if debug:
                _log_request(final, status, result.size, start, None)
            return result
        except BaseException as exc:
            if sink is not None:
                sink.discard()
            if debug:
                _log_request(final, status, 0, start, exc)
            if self._flight.closing and _ended_by_close(exc):
                # ended by the downloader's aclose (the watch's closed connection, the
                # scope's cancellation, or an error racing with them): not a failure to retry
                raise closed_in_flight() from exc
            raise
        finally:
            if cancellable is not None:
                self._flight.scopes.discard(cancellable)

    def _timeout_message(self, phase: str, start: float, hard: float) -> str:
        if trio.current_time() >= hard:
            return f"no complete response within total_timeout={self._total_timeout}s"
        if phase == "connect":
            return f"no response within connect_timeout={self._connect_timeout}s"
        return f"no data for read_timeout={self._read_timeout}s"

    def _next_window(
        self, size: int, counted: int, now: float, since: float, url: str
    ) -> tuple[float, float, int]:
        """The lowest-speed rule, at the first chunk past the end of a window: the body had
        *counted* bytes at *since*, and has *size* now.  Raises :class:`DownloadTimeout`
        when fewer than ``speed_limit`` bytes/s came on average; else the next window
        (when it ends, when it began, the bytes received then) begins now."""
        elapsed = now - since
        if size - counted < self._speed_limit * elapsed:
            raise DownloadTimeout(
                f"slower than {self._speed_limit} bytes/s for {self._speed_time:g} s "
                f"(speed_limit, speed_time): {size - counted} bytes in {elapsed:.1f} s",
                url=url,
            )
        return now + self._speed_time, now, size

    def _whole(
        self, response: Response, plan: FetchPlan, sink: _Sink, watched: WatchedStream | None
    ) -> _Received | None:
        """The body, if the response holds it whole already (a watched stream's small
        bodies): nothing to read, no read deadline to set, no coroutine to run.  Raises
        :class:`SizeMismatch` early for an announced size that is not the expected one."""
        expected_size = plan.expected_size
        headers = response.headers
        if expected_size is not None:
            announced = headers.get("content-length")
            if (
                announced is not None
                and announced.isascii()
                and announced.isdigit()
                and int(announced) != expected_size
                and "content-encoding" not in headers
            ):
                raise SizeMismatch(expected_size, int(announced), url=response.url)
        whole = watched.buffered_body() if watched is not None else None
        if whole is None:
            return None
        size = _grown(0, whole, expected_size, response.url)
        return _Received(sink, [whole], size, response.url, dict(headers))

    async def _receive(
        self,
        response: Response,
        plan: FetchPlan,
        sink: _Sink,
        scope: trio.CancelScope | Watch,
        hard: float,
    ) -> DownloadResult | _Received:
        """Read a body that did not arrive whole with the response (see :meth:`_whole`)."""
        url = response.url
        expected_size = plan.expected_size
        headers = response.headers
        read_timeout = self._read_timeout or math.inf
        # The read deadline moves with each chunk, but only when it would move by more than
        # 1% of read_timeout: moving a deadline re-registers it with the run loop, and a
        # small body's chunks arrive in quick succession.
        slack = read_timeout / 100
        moved = trio.current_time()
        scope.deadline = min(hard, moved + read_timeout)
        # The lowest-speed rule: when a chunk arrives past the end of the current window
        # (speed_time seconds or more since it began at `since`, with `counted` bytes
        # received then), the window's bytes are checked (see _next_window).  Per chunk it
        # costs one comparison with the time read already.
        since = moved
        speed_at = since + self._speed_time if self._speed_limit else math.inf
        counted = 0
        pending: list[bytes] = []
        buffered = 0
        size = 0
        async with contextlib.aclosing(response.iter_bytes()) as chunks:
            async for chunk in chunks:
                size = _grown(size, chunk, expected_size, url)
                pending.append(chunk)
                buffered += len(chunk)
                now = trio.current_time()
                if now - moved > slack:
                    moved = now
                    scope.deadline = min(hard, now + read_timeout)
                if now >= speed_at:
                    speed_at, since, counted = self._next_window(size, counted, now, since, url)
                if buffered >= _FLUSH_BYTES:
                    break
            else:  # the whole body, in memory: finished once the request is over
                return _Received(sink, pending, size, url, dict(headers))
            async with self._large.writing(sink) as put:
                await put(pending)
                size = await self._receive_large(
                    chunks, put, size, plan, scope, hard, url, (speed_at, since, counted)
                )
        # a large body: its last batch is written, and the file verified and placed, here
        digests = await self._large.finish(sink, [], size)
        if self._transport is None and not sink.placed:  # (see _finish)
            raise closed_in_flight()
        return DownloadResult(
            url=url,
            path=sink.path,
            size=size,
            digests=digests,
            headers=dict(headers),
        )

    async def _receive_large(
        self,
        chunks: AsyncIterator[bytes],
        put: Callable[[list[bytes]], Awaitable[None]],
        size: int,
        plan: FetchPlan,
        scope: trio.CancelScope | Watch,
        hard: float,
        url: str,
        window: tuple[float, float, int],
    ) -> int:
        """Receive the rest of a large body, handing it to the threads that write and hash
        it (``put``) batch by batch while the next batches arrive (see ``_LargeFiles``).
        *window* is the lowest-speed rule's current window (see :meth:`_receive`).  Returns
        the body's size."""
        expected_size = plan.expected_size
        read_timeout = self._read_timeout or math.inf
        speed_at, since, counted = window
        pending: list[bytes] = []
        buffered = 0
        async for chunk in chunks:
            size = _grown(size, chunk, expected_size, url)
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= _FLUSH_BYTES:
                await put(pending)
                pending, buffered = [], 0
            now = trio.current_time()
            scope.deadline = min(hard, now + read_timeout)
            if now >= speed_at:
                speed_at, since, counted = self._next_window(size, counted, now, since, url)
        if pending:
            await put(pending)
        return size

    # -- many downloads as outcomes (see _many.py) -------------------------------------

    def fetch_many(
        self, requests: _Requests, *, in_flight: int | None = None
    ) -> AbstractAsyncContextManager[FetchOutcomes]:
        """Download many files, each request's outcome handed in completion order::

            async with dl.fetch_many(requests) as outcomes:
                async for outcome in outcomes:
                    if outcome.ok:
                        ...  # outcome.result: a DownloadResult, its file the caller's
                    else:
                        ...  # outcome.error: a DownloadError (or another TriofetchError)

        Args:
            requests: URLs or :class:`FetchRequest` items, an iterable or async iterable.  A
                collection (list, tuple...) is checked whole when this is called, before
                anything starts (:class:`InvalidInput`); any other iterable is read lazily,
                no further than the downloads in flight allow, and an invalid request read
                from it raises :class:`InvalidInput` out of the block (as leaving it early).
            in_flight: downloads started at once (default: twice ``connections``); each
                still runs under the downloader's limits.

        A failed download is a :class:`FetchFailed` outcome and never stops the others; an
        exception that is not a :class:`TriofetchError` (a bug) propagates out of the block.
        Leaving the block early (``break``, an exception, a cancellation) cancels what still
        runs, and removes the file of every download completed but not handed to the caller
        — its destination file too, when it had a ``destination``.
        """
        if self._transport is None:
            raise WrongContext("use the Downloader inside 'async with' (it is not open)")
        return fetch_many(self, requests, in_flight=in_flight)
