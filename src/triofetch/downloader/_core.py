"""The concurrent downloader (and the code the synchronous :func:`fetch` shares with it)."""

from __future__ import annotations

import collections
import contextlib
import email.utils
import errno
import functools
import math
import os
import random
import shutil
import ssl
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar
from urllib.parse import urlsplit

import trio

from .._digests import (
    DEFAULT_ALGORITHM,
    MultiHasher,
    hash_constructor,
    normalize_digests,
    resolve_algorithms,
    update_all,
)
from .._groups import collapse_single
from .._tempfiles import new_temp_name
from .._urls import basic_authorization, split_userinfo
from .._version import __version__
from .._watch import Watch, Watchdog
from ..errors import (
    DestinationError,
    DigestMismatch,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    InvalidInput,
    InvalidURL,
    SizeMismatch,
)
from ..transports._base import Response, Transport, TransportOptions, make_ssl_context

__all__ = ["BodyConsumer", "DownloadResult", "Downloader", "TokenProvider"]

#: An async callable returning a fresh bearer token.
TokenProvider = Callable[[], Awaitable[str]]

_T_co = TypeVar("_T_co", covariant=True)


class BodyConsumer(Protocol[_T_co]):
    """Takes a body as it arrives (see :meth:`Downloader.stream`)."""

    async def feed(self, chunk: bytes) -> None:
        """The next bytes of the body (raise to stop reading: the error propagates)."""
        ...

    async def finish(self) -> _T_co:
        """The body ended whole: the result of :meth:`Downloader.stream`."""
        ...


# Bodies are buffered in memory up to this many bytes and then handed to a worker thread,
# which hashes them and writes them to the temp file in one go.  A small file is finished by
# the thread that drains the small-files queue (create + write + hash + close + place).
_FLUSH_BYTES = 1 << 20
# Batches of a large body that may wait for the worker thread hashing and writing them.
_PIPELINE_DEPTH = 2
# Most buffers one writev() takes.
_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16
# Bodies up to this size are finished by the small-files thread (see _SmallFiles).
_SMALL_BYTES = 256 * 1024

#: the lowest-speed rule's default: a body slower than this many bytes/s on average over
#: DEFAULT_SPEED_TIME seconds fails (see docs/downloader.rst, "Time bounds")
DEFAULT_SPEED_LIMIT = 1000
DEFAULT_SPEED_TIME = 30.0
#: the longest ``Retry-After`` honoured by default (seconds)
DEFAULT_MAX_RETRY_AFTER = 60.0
#: a download's hashers are split between two threads only if two cores are free for them
#: (the cores this process may run on, where the system says)
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class DownloadResult:
    """A downloaded and validated file, waiting in the temp area (or at its destination).

    The caller owns ``path``: move it where it belongs (see :class:`ArtifactStorage`) or
    remove it — unless the fetch was given a ``destination``, which ``path`` then is.

    Immutable (assigning an attribute raises ``dataclasses.FrozenInstanceError``); equal to
    another result with the same attributes.

    Attributes:
        url: the final URL, after redirects (credentials redacted).
        size: the number of bytes.
        digests: hex digests by algorithm name; always has ``sha256``, every algorithm of
            ``expected_digests`` and every algorithm asked for.
        headers: the response headers (lower-case names).
        attempts: how many attempts it took (1 when the first one succeeded).
    """

    __slots__ = ("_path", "_path_text", "attempts", "digests", "headers", "size", "url")

    url: str
    size: int
    digests: Mapping[str, str]
    headers: Mapping[str, str]
    attempts: int
    _path: Path | None
    _path_text: str

    def __init__(
        self,
        url: str,
        path: str | os.PathLike[str],
        size: int,
        digests: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        attempts: int = 1,
    ) -> None:
        setter = object.__setattr__
        setter(self, "url", url)
        setter(self, "_path", path if isinstance(path, Path) else None)
        setter(self, "_path_text", os.fspath(path))
        setter(self, "size", size)
        setter(self, "digests", digests)
        setter(self, "headers", {} if headers is None else headers)
        setter(self, "attempts", attempts)

    @property
    def path(self) -> Path:
        """The file: the temp file holding the bytes, or the fetch's ``destination``.

        Made on first use: on Python 3.11 a ``Path`` costs several microseconds, which a
        caller that never looks at it need not pay for every file.
        """
        path = self._path
        if path is None:
            path = Path(self._path_text)
            object.__setattr__(self, "_path", path)
        return path

    @property
    def sha256(self) -> str:
        """The sha256 hex digest of the bytes."""
        return self.digests["sha256"]

    def _fields(self) -> tuple[object, ...]:
        return (self.url, self._path_text, self.size, self.digests, self.headers, self.attempts)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, DownloadResult)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # (its digests and headers are dicts)

    def __repr__(self) -> str:
        return (
            f"DownloadResult(url={self.url!r}, path={self.path!r}, size={self.size!r}, "
            f"digests={self.digests!r}, headers={self.headers!r}, attempts={self.attempts!r})"
        )


class _Plan:
    """What one fetch must check, validated before any I/O (never changed afterwards)."""

    __slots__ = (
        "algorithms",
        "destination",
        "expected_digests",
        "expected_size",
        "headers",
        "temp_dir",
    )

    def __init__(
        self,
        expected_digests: dict[str, str],
        expected_size: int | None,
        algorithms: tuple[str, ...],
        headers: dict[str, str],
        temp_dir: str,
        destination: str | None = None,
    ) -> None:
        self.expected_digests = expected_digests
        self.expected_size = expected_size
        self.algorithms = algorithms
        self.headers = headers
        #: the temp directory, as a string ending with a separator (a file name is appended)
        self.temp_dir = temp_dir
        #: where the validated file goes, or None: the caller gets the temp file
        self.destination = destination


class _Tokens:
    """One bearer token shared by every download; refreshed once for all waiters."""

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider
        self._lock = trio.Lock()
        self.token: str | None = None
        self.generation = 0
        self.refreshes = 0

    async def current(self) -> tuple[str, int]:
        if self.token is None:
            await self.refresh(self.generation)
        assert self.token is not None
        return self.token, self.generation

    async def refresh(self, stale_generation: int) -> None:
        """Get a new token unless someone already replaced the *stale_generation* one."""
        async with self._lock:
            if self.token is not None and self.generation != stale_generation:
                return
            token = await self._provider()
            if not isinstance(token, str) or not token:
                raise InvalidInput(
                    f"the token provider returned {type(token).__name__}, expected a non-empty str"
                )
            self.token = token
            self.generation += 1
            self.refreshes += 1


def _grown(size: int, chunk: bytes, expected_size: int | None, url: str) -> int:
    """The body's size with *chunk*; raises as soon as it grows past *expected_size*."""
    size += len(chunk)
    if expected_size is not None and size > expected_size:
        raise SizeMismatch(expected_size, size, url=url, exceeded=True)
    return size


def _verify(plan: _Plan, size: int, digests: Mapping[str, str], url: str) -> None:
    """Raise if the body's size or digests are not the ones *plan* expects."""
    expected_size = plan.expected_size
    if expected_size is not None and size != expected_size:
        raise SizeMismatch(expected_size, size, url=url)
    for algorithm, expected in plan.expected_digests.items():
        if digests[algorithm] != expected:
            raise DigestMismatch(algorithm, expected, digests[algorithm], url=url)


def _place(temp: str, destination: str, url: str) -> None:
    """Move a validated temp file to *destination* (replacing it), atomically.

    Across filesystems, the bytes are first copied next to the destination under a temp
    name, then renamed over it: a reader of *destination* sees the old file or the new one.
    """
    try:
        os.replace(temp, destination)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise DestinationError(destination, exc, url=url) from exc
    staging = os.path.join(os.path.dirname(destination) or ".", new_temp_name())
    try:
        shutil.copyfile(temp, staging)
        os.replace(staging, destination)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise DestinationError(destination, exc, url=url) from exc
    os.unlink(temp)


class _Sink:
    """The temp file of one attempt and its hashers.  Methods run in worker threads."""

    __slots__ = ("_fd", "_hasher", "path", "placed", "plan", "url")

    def __init__(self, path: str, plan: _Plan, url: str) -> None:
        self.path = path
        self.plan = plan
        self.url = url
        self._hasher: MultiHasher | None = None
        self._fd: int | None = None
        #: the file is at the plan's destination (no longer ours to remove)
        self.placed = False

    @property
    def hasher(self) -> MultiHasher:
        """The hashers, made on first use (for a small file: in the worker thread)."""
        hasher = self._hasher
        if hasher is None:
            hasher = self._hasher = MultiHasher(self.plan.algorithms)
        return hasher

    def write(self, chunks: list[bytes]) -> None:
        update = self.hasher.update
        for chunk in chunks:
            update(chunk)
        self._write_raw(chunks)

    def _write_raw(self, chunks: list[bytes]) -> None:
        fd = self._fd
        if fd is None:
            fd = self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        if len(chunks) > _IOV_MAX:
            chunks = [b"".join(chunks)]
        if len(chunks) == 1:
            view = memoryview(chunks[0])
            while view:
                view = view[os.write(fd, view) :]
            return
        # many chunks (a large body's batch): one writev, no joined copy of the batch
        total = sum(map(len, chunks))
        written = os.writev(fd, chunks)
        if written < total:  # pragma: no cover - a short write (signal, full disk...)
            rest = memoryview(b"".join(chunks))[written:]
            while rest:
                rest = rest[os.write(fd, rest) :]

    def finish(self, chunks: list[bytes], size: int) -> dict[str, str]:
        """Write the last *chunks*, close, verify the whole body, and move it where it goes.

        Raises the size or digest mismatch (the caller removes the temp file), or
        :class:`DestinationError`.
        """
        if self._fd is None and len(chunks) == 1 and self._hasher is None:
            # a body received whole (the common small file): hashed in one call per
            # algorithm and written in one call, without the streaming machinery
            body = chunks[0]
            digests = {
                name: hash_constructor(name)(body).hexdigest() for name in self.plan.algorithms
            }
            self._write_raw(chunks)
        else:
            if chunks or self._fd is None:
                self.write(chunks or [b""])
            digests = self.hasher.hexdigests()
        self.close()
        _verify(self.plan, size, digests, self.url)
        destination = self.plan.destination
        if destination is not None:
            _place(self.path, destination, self.url)
            self.path = destination
            self.placed = True
        return digests

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the temp file (safe to call from the Trio loop: two syscalls)."""
        self.close()
        if not self.placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class _Job:
    __slots__ = (
        "chunks",
        "digests",
        "error",
        "finished",
        "parked",
        "sink",
        "size",
        "task",
    )

    def __init__(
        self, sink: _Sink, chunks: list[bytes], size: int, task: trio.lowlevel.Task
    ) -> None:
        self.sink = sink
        self.chunks = chunks
        self.size = size
        self.digests: dict[str, str] = {}
        self.error: BaseException | None = None
        self.finished = False
        #: the task waiting for this job
        self.task = task
        #: that task is parked (to be rescheduled once, by whoever wakes it)
        self.parked = False


def _finish_all(jobs: list[_Job]) -> None:
    for job in jobs:
        try:
            job.digests = job.sink.finish(job.chunks, job.size)
        except Exception as exc:  # reported to the job's own task
            job.error = exc
        job.finished = True


class _SmallFiles:
    """Creates, writes and hashes small files in a worker thread that drains a queue.

    Creating a file can take a long time on a busy disk, so it never happens on the loop;
    but one worker-thread round trip per small file costs more loop time than the file
    itself.  So a task with a small file queues it and parks; one worker thread (holding a
    ``threads`` token) takes whatever is queued, finishes it, hands that batch back to the
    loop (one ``run_sync_soon`` call, which wakes the batch's tasks), and goes on with what
    was queued meanwhile, until the queue is empty.  Starting a thread for every batch cost
    more than the batch: waking a sleeping thread and getting the GIL from a busy loop took
    1.1-1.6 ms per batch, and the next batch waited for its leading task's turn on the loop
    (0.7 ms) — time in which every task waited for the thread and the loop had nothing to do.

    Cancellation works as in :func:`trio.to_thread.run_sync`: a task cancelled while its
    file is still queued takes it out of the queue and raises at once (nothing was written);
    one cancelled after the thread took its file waits for that batch to come back (a few
    milliseconds) and returns its result, so when :meth:`finish` returns or raises, the file
    is whole or was never written, never in between or still in the thread's hands.
    :meth:`wait_idle` waits for the thread to end (the downloader's ``aclose``): no thread
    outlives the downloader.
    """

    #: most files the thread takes before handing a batch back
    BATCH = 64

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter
        #: appended on the loop, taken by the thread (both atomic)
        self._queue: collections.deque[_Job] = collections.deque()
        #: a thread is draining the queue (or about to): set and cleared on the loop
        self._running = False
        self._idle: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    async def finish(self, sink: _Sink, chunks: list[bytes], size: int) -> dict[str, str]:
        job = _Job(sink, chunks, size, trio.lowlevel.current_task())
        self._queue.append(job)

        def abort(_: object) -> trio.lowlevel.Abort:
            try:  # never taken: nothing was written, the task raises Cancelled
                self._queue.remove(job)
            except ValueError:  # the thread has it: the task waits for its batch
                return trio.lowlevel.Abort.FAILED
            job.parked = False
            return trio.lowlevel.Abort.SUCCEEDED

        while not job.finished:
            if not self._running:  # nothing drains the queue: start a thread
                await self._start()
                continue
            job.parked = True
            await trio.lowlevel.wait_task_rescheduled(abort)
        if job.error is not None:
            raise job.error
        return job.digests

    async def _start(self) -> None:
        """Start the draining thread, with a ``threads`` token (shielded: if this task is
        cancelled meanwhile, its file is still queued, and others may be queued behind)."""
        self._running = True
        self._token = trio.lowlevel.current_trio_token()
        try:
            self._limiter.acquire_on_behalf_of_nowait(self)
        except trio.WouldBlock:
            with trio.CancelScope(shield=True):
                await self._limiter.acquire_on_behalf_of(self)
        trio.lowlevel.start_thread_soon(self._drain, self._drained, name="triofetch small files")

    def _drain(self) -> None:
        """(In the thread.)  Finish batches until the queue is empty."""
        queue, token, most = self._queue, self._token, self.BATCH
        assert token is not None
        while queue:
            jobs: list[_Job] = []
            try:
                while queue and len(jobs) < most:
                    jobs.append(queue.popleft())
                _finish_all(jobs)
            finally:
                for job in jobs:
                    if not job.finished:  # pragma: no cover - only if the thread failed
                        job.finished = True
                        job.error = RuntimeError("the small file was not finished")
                token.run_sync_soon(self._done, jobs)

    def _drained(self, result: object) -> None:
        """(In the thread, once it has drained the queue.)"""
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._stopped)

    def _done(self, jobs: list[_Job]) -> None:
        """(On the loop.)  Wake the tasks of a finished batch."""
        for job in jobs:
            if job.parked:  # (else it is running already: it sees job.finished)
                job.parked = False
                trio.lowlevel.reschedule(job.task)

    def _stopped(self) -> None:
        """(On the loop.)  The thread has ended; a file queued after its last look has its
        task woken to start the next one."""
        self._limiter.release_on_behalf_of(self)
        self._running = False
        for job in self._queue:
            if job.parked:
                job.parked = False
                trio.lowlevel.reschedule(job.task)
                return
        if self._idle is not None and not self._queue:
            self._idle.set()
            self._idle = None

    async def wait_idle(self) -> None:
        """Wait until no thread is finishing small files."""
        while self._running:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()


class _Feeder:
    """Feeds the batches of a large body, in order, to a worker thread (*fn* per batch).

    At most *depth* batches wait (a semaphore the thread releases as it finishes each one).
    A thread call does every batch that is there when it runs, and the ones that arrive
    meanwhile, and returns once there are none: the thread goes from batch to batch without
    a round trip through the Trio scheduler (with a thread call per batch the hashing
    threads of a download sat idle a quarter of the time), and it gives its ``threads``
    token back whenever it runs dry, so feeders of other downloads always get their turn.
    """

    def __init__(self, fn: Callable[[list[bytes]], object], depth: int) -> None:
        self._fn = fn
        # appended on the loop, popped in the thread (both atomic)
        self._batches: collections.deque[list[bytes]] = collections.deque()
        self._slots = trio.Semaphore(depth)
        self._more = trio.Event()
        self._closed = False
        self._release = functools.partial(
            trio.lowlevel.current_trio_token().run_sync_soon, self._slots.release
        )

    async def put(self, batch: list[bytes]) -> None:
        await self._slots.acquire()
        self._batches.append(batch)
        self._more.set()

    def close(self) -> None:
        """No more batches: :meth:`run` returns once those queued are done."""
        self._closed = True
        self._more.set()

    async def run(self, limiter: trio.CapacityLimiter) -> None:
        while True:
            if self._batches:
                await trio.to_thread.run_sync(self._drain, limiter=limiter)
                continue
            if self._closed:
                return
            self._more = trio.Event()
            await self._more.wait()

    def _drain(self) -> None:
        batches, fn, release = self._batches, self._fn, self._release
        while batches:
            fn(batches.popleft())
            release()


class _FileClock:
    """The deadline of one file under ``max_time``, set when its first request starts (a
    file waiting for a connection has not started yet)."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: when the file's time is up (inf until its first request)
        self.at = math.inf

    def start(self, now: float) -> float:
        """The deadline, starting the clock at *now* if this is the first request."""
        if self.at == math.inf:
            self.at = now + self.seconds
        return self.at

    def over(self) -> bool:
        return trio.current_time() >= self.at

    def error(self, url: str) -> DownloadTimeout:
        return DownloadTimeout(f"took longer than {self.seconds:g} s (max_time)", url=url)


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


def _scheme_problem(url: str) -> str:
    """Why *url* (neither http, https nor file) cannot be fetched."""
    scheme, colon, _ = url.partition(":")
    # RFC 3986: a letter, then letters, digits, "+", "-" or "."
    valid = scheme.isascii() and scheme[:1].isalpha()
    if colon and valid and all(c.isalnum() or c in "+-." for c in scheme):
        return f"unsupported URL scheme {scheme.lower()!r} (http, https or file)"
    return "not an absolute URL: it must start with http://, https:// or file://"


def _temp_directory(path: str | os.PathLike[str]) -> str:
    """A ``temp_dir`` argument, checked (one ``stat``), as :func:`_directory` gives it."""
    if not isinstance(path, str | os.PathLike):
        raise InvalidInput(f"temp_dir must be a path, got {path!r}")
    if not os.path.isdir(path):
        raise InvalidInput(f"temp_dir {os.fspath(path)!r} is not an existing directory")
    return _directory(path)


def _directory(path: str | os.PathLike[str]) -> str:
    """*path* as a string ending with a separator, to which a file name is appended."""
    text = os.fspath(path)
    return text if text.endswith(os.sep) else text + os.sep


def _split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without user info, and a Basic ``Authorization`` value when it had some."""
    try:
        bare, userinfo = split_userinfo(url)
    except ValueError as exc:
        raise InvalidURL(f"malformed URL: {exc}", url=url) from None
    return bare, (basic_authorization(*userinfo) if userinfo else None)


def _proxy_configured(proxy: str | None, trust_env: bool) -> bool:
    """Whether downloads may go through a proxy: *proxy* given, or (with *trust_env*) one
    named by the environment for http or https (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, in either case)."""
    if proxy is not None:
        return True
    if not trust_env:
        return False
    proxies = urllib.request.getproxies()
    return any(scheme in proxies for scheme in ("http", "https", "all"))


def _raise_for_status(response: Response) -> None:
    """HTTPStatusError for an answer other than 2xx (with its Retry-After, if any)."""
    if not 200 <= response.status_code < 300:
        raise HTTPStatusError(
            response.status_code,
            url=response.url,
            reason=response.reason,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _check_count(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInput(f"{name} must be an integer >= {least}, got {value!r}")


def _check_headers(headers: object) -> None:
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise InvalidInput(f"headers must be a mapping, got {type(headers).__name__}")
    for name, value in headers.items():  # (a value may be a secret: never in a message)
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidInput(
                f"headers must map strings to strings, but header {name!r} has a value "
                f"of type {type(value).__name__}"
            )


def _check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if (
        value is None
        or isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value > 0
        or math.isinf(value)
    ):
        raise InvalidInput(f"{name} must be a positive number, got {value!r}")


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
        retries: further attempts after the first one, for retryable failures (connection
            errors, timeouts, 429, 5xx, truncated bodies, size or digest mismatches).
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
        temp_dir: an existing directory where temp files are written (default: the system
            temp dir); :class:`InvalidInput` otherwise.
        digests: algorithms computed for every download (sha256 is always computed).
        headers: headers sent with every request.
        auth: ``(user, password)`` for HTTP basic auth on every request (credentials in a
            URL take precedence for that URL).
        token_provider: an async callable returning a bearer token; awaited once when no
            token is known yet or when a 401 says it expired, while every other download that
            needs it waits for that single refresh.
        rate_limit: requests per second shared by all downloads, or None.
        proxy, verify, cert, trust_env, max_redirects: see :class:`TransportOptions`.
        transport: ``"httpx"`` (default), ``"trio"`` (HTTP/1.1 on Trio sockets with its own
            parser: the fastest, no proxy support), ``"auto"`` (``"trio"`` unless a proxy
            is configured, by ``proxy=`` or, with ``trust_env``, by the environment: then
            ``"httpx"``; what the command line uses), ``"asks"``, or a :class:`Transport`
            instance, used for http and https URLs; ``file://`` URLs are always read locally.
        threads: worker threads for hashing and file writes (a ``CapacityLimiter`` or a
            number); default: twice the CPU count, at least 4.
    """

    def __init__(
        self,
        *,
        connections: int = 16,
        per_host: int | None = None,
        retries: int = 3,
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
        verify: bool | str | os.PathLike[str] | object = True,
        cert: str | tuple[str, str] | None = None,
        trust_env: bool = True,
        max_redirects: int = 10,
        transport: Literal["httpx", "trio", "auto", "asks"] | Transport = "httpx",
        threads: int | trio.CapacityLimiter | None = None,
    ) -> None:
        _check_count("connections", connections, 1)
        if per_host is not None:
            _check_count("per_host", per_host, 1)
        _check_count("retries", retries, 0)
        _check_count("max_redirects", max_redirects, 0)
        if threads is not None and not isinstance(threads, trio.CapacityLimiter):
            _check_count("threads", threads, 1)
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("total_timeout", total_timeout),
            ("rate_limit", rate_limit),
            ("max_time", max_time),
        ):
            _check_positive(name, value)
        if speed_limit is not None:
            _check_count("speed_limit", speed_limit, 0)
        _check_positive("speed_time", speed_time, allow_none=False)
        for name, value in (
            ("backoff", backoff),
            ("backoff_max", backoff_max),
            ("max_retry_after", max_retry_after),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise InvalidInput(f"{name} must be a number >= 0, got {value!r}")
        if auth is not None and token_provider is not None:
            raise InvalidInput("give either auth (basic) or token_provider (bearer), not both")
        if auth is not None and not (
            isinstance(auth, tuple | list)
            and len(auth) == 2
            and all(isinstance(part, str) for part in auth)
        ):
            raise InvalidInput("auth must be a (user, password) pair of strings")
        _check_headers(headers)
        self._algorithms = resolve_algorithms({}, digests, (DEFAULT_ALGORITHM,))
        # expected algorithm names -> the algorithms a fetch computes (see plan())
        self._algorithm_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._retries = retries
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        #: bytes per second below which a body fails (0: no lowest-speed rule)
        self._speed_limit = speed_limit or 0
        self._speed_time = float(speed_time)
        self._max_time = max_time
        self._temp_dir = (
            _temp_directory(temp_dir) if temp_dir is not None else _directory(tempfile.gettempdir())
        )
        #: a fetch's temp_dir arguments already checked -> as _directory gives them
        self._temp_dirs: dict[str, str] = {}
        self._headers = {"user-agent": f"triofetch/{__version__}", "accept-encoding": "identity"}
        self._headers.update({k.lower(): v for k, v in (headers or {}).items()})
        self._basic = basic_authorization(*auth) if auth is not None else None
        self._tokens = _Tokens(token_provider) if token_provider is not None else None
        self._interval = 1.0 / rate_limit if rate_limit else 0.0
        self._next_slot = -math.inf
        self._limiter = trio.CapacityLimiter(connections)
        self._per_host = per_host if per_host is not None and per_host < connections else None
        self._host_limiters: dict[str, trio.CapacityLimiter] = {}
        if isinstance(threads, trio.CapacityLimiter):
            self._threads = threads
        else:
            self._threads = trio.CapacityLimiter(threads or max(4, 2 * (os.cpu_count() or 1)))
        self._small = _SmallFiles(self._threads)
        #: large bodies being hashed now (see _pipeline)
        self._hashing = 0
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
            transport = "httpx" if _proxy_configured(proxy, trust_env) else "trio"
        self._transport_choice = transport
        self._transport: Transport | None = None
        self._file_transport: Transport | None = None
        #: times out the exchanges of a transport that takes watches (see _watch.py)
        self._watchdog: Watchdog | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._transport is not None:
            raise RuntimeError("this Downloader is already open")
        from ..transports._file import FileTransport

        choice = self._transport_choice
        if choice == "httpx":
            from ..transports._httpx import HttpxTransport

            self._transport = HttpxTransport(self._options)
        elif choice == "trio":
            from ..transports._trio import TrioTransport

            self._transport = TrioTransport(self._options)
        elif choice == "asks":
            from ..transports._asks import AsksTransport

            self._transport = AsksTransport(self._options)
        else:  # a Transport (checked in __init__)
            assert isinstance(choice, Transport)
            self._transport = choice
        self._file_transport = FileTransport()
        if getattr(self._transport, "watchable", False):
            self._watchdog = Watchdog()
            self._watchdog.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection.  Called by ``async with``."""
        transport, self._transport = self._transport, None
        watchdog, self._watchdog = self._watchdog, None
        with trio.CancelScope(shield=True):
            await self._small.wait_idle()  # (a cancelled fetch's file may be in the thread)
            if watchdog is not None:
                await watchdog.aclose()
            if transport is not None:
                await transport.aclose()

    @property
    def token_refreshes(self) -> int:
        """How many times the token provider was awaited."""
        return self._tokens.refreshes if self._tokens is not None else 0

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
    ) -> _Plan:
        """Validate the arguments of a fetch (raises :class:`InvalidInput` subclasses)."""
        expected = normalize_digests(expected_digests)
        if digests is None:  # the common case: the same few algorithm sets over and over
            names = tuple(expected)
            algorithms = self._algorithm_sets.get(names)
            if algorithms is None:
                algorithms = resolve_algorithms(expected, None, self._algorithms)
                if len(self._algorithm_sets) < 64:
                    self._algorithm_sets[names] = algorithms
        else:
            algorithms = resolve_algorithms(expected, digests, self._algorithms)
        if expected_size is not None and (
            isinstance(expected_size, bool)
            or not isinstance(expected_size, int)
            or expected_size < 0
        ):
            raise InvalidInput(f"expected_size must be an integer >= 0, got {expected_size!r}")
        merged = self._headers  # never changed in place: shared when nothing is added
        if headers:
            _check_headers(headers)
            merged = {**merged, **{k.lower(): v for k, v in headers.items()}}
        directory = self._temp_dir if temp_dir is None else self._checked_temp_dir(temp_dir)
        target: str | None = None
        if destination is not None:
            if not isinstance(destination, str | os.PathLike):
                raise InvalidInput(f"destination must be a path, got {destination!r}")
            target = os.fspath(destination)
            if not target or target.endswith(os.sep):
                raise InvalidInput(f"destination must name a file, got {target!r}")
        return _Plan(expected, expected_size, algorithms, merged, directory, target)

    def _checked_temp_dir(self, temp_dir: str | os.PathLike[str]) -> str:
        """A fetch's *temp_dir*, checked once per directory (a ``stat``), not per fetch."""
        # ("" for no path at all: never stored, as _temp_directory refuses it)
        key = os.fspath(temp_dir) if isinstance(temp_dir, str | os.PathLike) else ""
        directory = self._temp_dirs.get(key)
        if directory is None:
            directory = _temp_directory(temp_dir)
            if len(self._temp_dirs) < 64:
                self._temp_dirs[key] = directory
        return directory

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
                attempt's error in ``attempts``.
        """
        plan = self.plan(
            expected_digests=expected_digests,
            expected_size=expected_size,
            digests=digests,
            headers=headers,
            temp_dir=temp_dir,
            destination=destination,
        )
        return await self.fetch_planned(url, plan)

    async def fetch_planned(self, url: str | Sequence[str], plan: _Plan) -> DownloadResult:
        """Like :meth:`fetch`, with arguments already validated by :meth:`plan`."""
        if self._transport is None:
            raise RuntimeError("use the Downloader inside 'async with' (it is not open)")
        urls: tuple[str, ...]
        if isinstance(url, str):  # (the usual case: no generator to check one URL)
            urls, valid = (url,), bool(url)
        else:
            urls = tuple(url)
            valid = bool(urls) and all(isinstance(u, str) and u for u in urls)
        if not valid:
            raise InvalidInput(f"expected a URL or a non-empty sequence of URLs, got {url!r}")
        errors: list[DownloadError] = []
        clock = _FileClock(self._max_time) if self._max_time is not None else None
        for mirror in urls:
            for attempt in range(self._retries + 1):
                if attempt and not await self._wait_to_retry(attempt, errors, clock, mirror):
                    break
                try:
                    result = await self._attempt(mirror, plan, clock)
                except DownloadError as exc:
                    errors.append(exc)
                    if not exc.retryable or (clock is not None and clock.over()):
                        break
                else:
                    if errors:
                        result = _with_attempts(result, len(errors) + 1)
                    return result
            if clock is not None and clock.over():
                break  # (no time left for another mirror either)
        last = errors[-1]
        last.attempts = errors
        raise last

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
        attempt makes a fresh :class:`BodyConsumer` with ``consumer()``; its ``feed`` gets
        every chunk, its ``finish`` the end of a whole body, and what ``finish`` returns is
        returned.  The limiters, credentials, timeouts and retries of :meth:`fetch` apply
        (a failed attempt's consumer is dropped); an error the consumer raises (a body too
        large, a malformed index) is not retried: it propagates as it is.

        Raises:
            InvalidInput: bad headers.
            DownloadError: the last attempt's error, as for :meth:`fetch`.
        """
        if self._transport is None:
            raise RuntimeError("use the Downloader inside 'async with' (it is not open)")
        merged = self._headers
        if headers:
            _check_headers(headers)
            merged = {**merged, **{k.lower(): v for k, v in headers.items()}}
        errors: list[DownloadError] = []
        clock = _FileClock(self._max_time) if self._max_time is not None else None
        for attempt in range(self._retries + 1):
            if attempt and not await self._wait_to_retry(attempt, errors, clock, url):
                break
            try:
                return await self._stream_attempt(url, merged, consumer(), clock)
            except DownloadError as exc:
                errors.append(exc)
                if not exc.retryable or (clock is not None and clock.over()):
                    break
        last = errors[-1]
        last.attempts = errors
        raise last

    async def _stream_attempt(
        self,
        url: str,
        headers: Mapping[str, str],
        consumer: BodyConsumer[_T_co],
        clock: _FileClock | None,
    ) -> _T_co:
        """One attempt of :meth:`stream`: the request under the limiters, with credentials
        (a bearer token: once more with a fresh one after a 401)."""
        url, basic = _split_credentials(url) if "@" in url else (url, None)
        scheme = url.partition(":")[0].lower()
        if scheme not in ("file", "http", "https"):
            raise InvalidURL(_scheme_problem(url), url=url)
        transport = self._file_transport if scheme == "file" else self._transport
        assert transport is not None
        if basic is not None or self._basic is not None:
            headers = {**headers, "authorization": basic or self._basic or ""}
        host_limiter = self._host_limiter(url)
        async with contextlib.AsyncExitStack() as held:
            if host_limiter is not None:
                await held.enter_async_context(host_limiter)
            await held.enter_async_context(self._limiter)
            for auth_round in (0, 1):
                generation = -1
                if self._tokens is not None:
                    token, generation = await self._tokens.current()
                    headers = {**headers, "authorization": f"Bearer {token}"}
                await self._rate_wait()
                refresh = auth_round == 0 and generation >= 0
                if await self._stream_exchange(transport, url, headers, consumer, refresh, clock):
                    break
                assert self._tokens is not None
                await self._tokens.refresh(generation)
        return await consumer.finish()

    async def _stream_exchange(
        self,
        transport: Transport,
        url: str,
        headers: Mapping[str, str],
        consumer: BodyConsumer[object],
        may_refresh: bool,
        clock: _FileClock | None,
    ) -> bool:
        """One request of :meth:`stream`, its body fed to *consumer*; False when a 401 asks
        for a fresh bearer token.  The time bounds are :meth:`fetch`'s (see
        :meth:`_receive` for the lowest-speed rule)."""
        start = trio.current_time()
        hard = start + self._total_timeout if self._total_timeout else math.inf
        if clock is not None:
            hard = min(hard, clock.start(start))
        read_timeout = self._read_timeout or math.inf
        phase = "connect"
        deadline = min(hard, start + (self._connect_timeout or math.inf))
        with trio.CancelScope(deadline=deadline) as scope:
            async with transport.stream(url, headers) as response:
                if response.status_code == 401 and may_refresh:
                    return False
                _raise_for_status(response)
                phase = "read"
                since = trio.current_time()
                scope.deadline = min(hard, since + read_timeout)
                speed_at = since + self._speed_time if self._speed_limit else math.inf
                counted = size = 0
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
        return True

    # -- one attempt -------------------------------------------------------------------

    async def _wait_to_retry(
        self, retry: int, errors: list[DownloadError], clock: _FileClock | None, url: str
    ) -> bool:
        """Wait before retry number *retry*; False (a timeout appended to *errors*) when
        the file's ``max_time`` ran out meanwhile (the wait ends then)."""
        delay = self._delay(retry, errors[-1])
        if clock is None:
            await trio.sleep(delay)
            return True
        await trio.sleep_until(min(trio.current_time() + delay, clock.at))
        if clock.over():
            errors.append(clock.error(url))
            return False
        return True

    def _delay(self, retry: int, error: DownloadError) -> float:
        if (
            isinstance(error, HTTPStatusError)
            and error.retry_after is not None
            and self._max_retry_after
        ):
            # a longer wait than max_retry_after waits max_retry_after (see the docs)
            return min(error.retry_after, self._max_retry_after)
        ceiling = min(self._backoff_max, self._backoff * 2.0 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _host_limiter(self, url: str) -> trio.CapacityLimiter | None:
        if self._per_host is None:
            return None
        key = _origin(url)
        limiter = self._host_limiters.get(key)
        if limiter is None:
            limiter = self._host_limiters[key] = trio.CapacityLimiter(self._per_host)
        return limiter

    async def _rate_wait(self) -> None:
        if not self._interval:
            return
        now = trio.current_time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await trio.sleep_until(slot)

    async def _attempt(
        self, url: str, plan: _Plan, clock: _FileClock | None = None
    ) -> DownloadResult:
        """One attempt: the request under the limiters, then (a body received whole) the
        file finished.  One coroutine for both, not two nested: a task's every resumption
        passes through each coroutine it is awaiting in."""
        url, basic = _split_credentials(url) if "@" in url else (url, None)
        scheme = url.partition(":")[0].lower()
        if scheme == "file":
            transport = self._file_transport
        elif scheme in ("http", "https"):
            transport = self._transport
        else:
            raise InvalidURL(_scheme_problem(url), url=url)
        assert transport is not None
        host_limiter = self._host_limiter(url) if self._per_host is not None else None
        if host_limiter is not None:
            await host_limiter.acquire()
        limiter = self._limiter
        got: DownloadResult | _Received | None = None
        try:
            # A free token is taken without a schedule point (the request ahead has
            # several); waiting, when there is no free token or others wait already, is as
            # usual.
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                await limiter.acquire()
            try:
                if basic is None and self._basic is None and self._tokens is None:
                    # the usual case: no credentials (straight to the exchange)
                    if self._interval:
                        await self._rate_wait()
                    got = await self._exchange(
                        transport, url, plan.headers, plan, may_refresh=False, clock=clock
                    )
                else:
                    got = await self._authorized_exchange(transport, url, basic, plan, clock)
            finally:
                limiter.release()
        finally:
            if host_limiter is not None:
                host_limiter.release()
        if isinstance(got, _Received):
            # the request is over (connection and token released): finish the file
            return await self._finish(got, plan)
        if got is None:  # pragma: no cover - the exchange ends with a result or raises
            raise AssertionError("unreachable")
        return got

    async def _authorized_exchange(
        self,
        transport: Transport,
        url: str,
        basic: str | None,
        plan: _Plan,
        clock: _FileClock | None,
    ) -> DownloadResult | _Received | None:
        """The exchange with credentials (basic, or a bearer token: once more with a fresh
        token after a 401)."""
        got: DownloadResult | _Received | None = None
        headers = plan.headers
        if basic is not None or self._basic is not None:
            headers = {**headers, "authorization": basic or self._basic or ""}
        for auth_round in (0, 1):
            generation = -1
            if self._tokens is not None:
                token, generation = await self._tokens.current()
                headers = {**headers, "authorization": f"Bearer {token}"}
            await self._rate_wait()
            got = await self._exchange(
                transport,
                url,
                headers,
                plan,
                may_refresh=auth_round == 0 and generation >= 0,
                clock=clock,
            )
            if got is not None:
                break
            assert self._tokens is not None
            await self._tokens.refresh(generation)
        return got

    async def _finish(self, got: _Received, plan: _Plan) -> DownloadResult:
        """Write, verify and place a body received whole (a worker thread does the work)."""
        sink = got.sink
        try:
            if got.size > _SMALL_BYTES:
                digests = await trio.to_thread.run_sync(
                    sink.finish, got.chunks, got.size, limiter=self._threads
                )
            else:
                digests = await self._small.finish(sink, got.chunks, got.size)
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
        transport: Transport,
        url: str,
        headers: Mapping[str, str],
        plan: _Plan,
        *,
        may_refresh: bool,
        clock: _FileClock | None = None,
    ) -> DownloadResult | _Received | None:
        """One request.  Returns None when a 401 asks for a fresh bearer token, and a body
        received whole (not yet written: see :meth:`_finish`) as :class:`_Received`."""
        start = trio.current_time()
        hard = start + self._total_timeout if self._total_timeout else math.inf
        if clock is not None:  # max_time: the file's deadline (set by its first request)
            hard = min(hard, clock.start(start))
        phase = "connect"
        sink: _Sink | None = None
        deadline = min(hard, start + (self._connect_timeout or math.inf))
        scope: trio.CancelScope | Watch
        watchdog = self._watchdog
        if watchdog is not None and transport is self._transport:
            # the transport takes a watch: no cancel scope per request (see _watch.py)
            scope = Watch(watchdog, deadline)
            stream = transport.stream(url, headers, scope)  # type: ignore[call-arg]
        else:
            scope = trio.CancelScope(deadline=deadline)
            stream = transport.stream(url, headers)
        try:
            with scope:
                async with stream as response:
                    if response.status_code == 401 and may_refresh:
                        return None
                    _raise_for_status(response)
                    phase = "read"
                    sink = _Sink(plan.temp_dir + new_temp_name(), plan, response.url)
                    result = self._whole(response, plan, sink) or await self._receive(
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
            return result
        except BaseException:
            if sink is not None:
                sink.discard()
            raise

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

    def _whole(self, response: Response, plan: _Plan, sink: _Sink) -> _Received | None:
        """The body, if the response holds it whole already (the trio transport's small
        bodies): nothing to read, no read deadline to set, no coroutine to run.  Raises
        :class:`SizeMismatch` early for an announced size that is not the expected one."""
        expected_size = plan.expected_size
        headers = response.headers
        if expected_size is not None:
            announced = headers.get("content-length")
            if (
                announced is not None
                and announced.isdigit()
                and int(announced) != expected_size
                and "content-encoding" not in headers
            ):
                raise SizeMismatch(expected_size, int(announced), url=response.url)
        buffered_body: Callable[[], bytes | None] | None = getattr(response, "buffered_body", None)
        whole = buffered_body() if buffered_body is not None else None
        if whole is None:
            return None
        size = _grown(0, whole, expected_size, response.url)
        return _Received(sink, [whole], size, response.url, dict(headers))

    async def _receive(
        self,
        response: Response,
        plan: _Plan,
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
        # small body's chunks arrive within microseconds of each other.
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
            self._hashing += 1
            try:
                size = await self._pipeline(
                    chunks, pending, size, sink, plan, scope, hard, url, (speed_at, since, counted)
                )
            finally:
                self._hashing -= 1
        # a large body: its last batch is written, and the file verified and placed, here
        digests = await trio.to_thread.run_sync(sink.finish, [], size, limiter=self._threads)
        return DownloadResult(
            url=url,
            path=sink.path,
            size=size,
            digests=digests,
            headers=dict(headers),
        )

    async def _pipeline(
        self,
        chunks: AsyncIterator[bytes],
        first: list[bytes],
        size: int,
        sink: _Sink,
        plan: _Plan,
        scope: trio.CancelScope | Watch,
        hard: float,
        url: str,
        window: tuple[float, float, int],
    ) -> int:
        """Receive the rest of a large body while worker threads hash and write it.

        The body goes in batches (~1 MiB) to a consumer task that hashes and writes each one
        in a worker thread while the loop receives the next ones (at most
        ``_PIPELINE_DEPTH`` batches wait between them): the bytes stream at the pace of the
        slower of the two instead of the sum of both.  With several digests, one consumer
        writes and two hash, the hashers split in two groups of about equal cost, each
        consumer with its own thread and at its own pace (none waits for another's batch to
        end), so that one download can use two cores — if there are two for it beside the
        other large downloads hashing at the moment (more hashing threads than cores only
        cost switches and CPU).  *window* is the lowest-speed rule's current window (see
        :meth:`_receive`).  Returns the body's size.
        """
        expected_size = plan.expected_size
        hasher = sink.hasher
        # Splitting the hashers between two threads lets one download use two cores, when
        # there are two cores for it beside the other large downloads hashing now (this
        # one is counted in ``_hashing``).
        halves = hasher.halves() if 2 * self._hashing <= _CORES else None
        jobs: list[Callable[[list[bytes]], object]]
        if halves is None:
            jobs = [sink.write]
        else:
            jobs = [
                sink._write_raw,  # (other threads feed the hashers)
                functools.partial(update_all, halves[0]),
                functools.partial(update_all, halves[1]),
            ]
        feeders = [_Feeder(job, _PIPELINE_DEPTH) for job in jobs]
        read_timeout = self._read_timeout or math.inf
        speed_at, since, counted = window
        with collapse_single():
            async with trio.open_nursery() as nursery:
                for feeder in feeders:
                    nursery.start_soon(feeder.run, self._threads)

                async def put(batch: list[bytes]) -> None:
                    for feeder in feeders:
                        await feeder.put(batch)

                try:
                    await put(first)
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
                            speed_at, since, counted = self._next_window(
                                size, counted, now, since, url
                            )
                    if pending:
                        await put(pending)
                finally:
                    for feeder in feeders:
                        feeder.close()
        return size


def _with_attempts(result: DownloadResult, attempts: int) -> DownloadResult:
    return DownloadResult(
        url=result.url,
        path=result._path_text,
        size=result.size,
        digests=result.digests,
        headers=result.headers,
        attempts=attempts,
    )
