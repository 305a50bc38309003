"""Many downloads as outcomes: :meth:`Downloader.fetch_many` and its request and outcome types.

Owns running many fetches of one downloader at once, reading the requests lazily and no
further ahead than a bound, and handing each one's outcome (:class:`FetchSucceeded` or
:class:`FetchFailed`) over a memory channel in completion order; and the files of
downloads the caller was never handed, removed when the caller leaves the block early.
It knows the downloader only through :class:`_Fetcher` (``plan``, ``fetch_planned``,
``limiter``): it must not import ``_core`` (``_core`` imports it), nor make requests,
write or hash bytes, retry, or know units, the store or the storage.
"""

from __future__ import annotations

import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Self

import trio

from .._groups import collapse_single
from .._model import check_int
from .._urls import redact_url
from ..errors import InvalidInput, TriofetchError
from ._plan import FetchPlan
from ._result import DownloadResult

__all__ = [
    "FetchFailed",
    "FetchOutcome",
    "FetchOutcomes",
    "FetchRequest",
    "FetchSucceeded",
    "fetch_many",
]

#: outcomes completed but not yet received, held before the downloads wait for the caller
_BUFFER = 4


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """One download of :meth:`Downloader.fetch_many`: the arguments of one :meth:`fetch`.

    ``url`` and then ``mirrors`` are the URLs tried in turn (the first that works gives
    the file); the other fields are :meth:`Downloader.fetch`'s keyword arguments.
    """

    url: str
    _: KW_ONLY
    expected_digests: Mapping[str, str] | None = None
    expected_size: int | None = None
    mirrors: Sequence[str] = ()
    destination: str | os.PathLike[str] | None = None
    headers: Mapping[str, str] | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """``url`` followed by the ``mirrors``."""
        return (self.url, *self.mirrors)

    def __repr__(self) -> str:
        # (what a log line of an outcome shows: no password of a URL, no header's value)
        mirrors = self.mirrors
        if isinstance(mirrors, list | tuple):
            mirrors = type(mirrors)(_redacted(u) for u in mirrors)
        headers = self.headers
        if isinstance(headers, Mapping):
            headers = dict.fromkeys(headers, "***")
        return (
            f"FetchRequest(url={_redacted(self.url)!r}, "
            f"expected_digests={self.expected_digests!r}, "
            f"expected_size={self.expected_size!r}, mirrors={mirrors!r}, "
            f"destination={self.destination!r}, headers={headers!r})"
        )


def _redacted(url: object) -> object:
    return redact_url(url) if isinstance(url, str) else url


@dataclass(frozen=True, slots=True)
class FetchSucceeded:
    """A request downloaded and validated: ``result.path`` is the caller's file (its temp
    file, to move or remove, or the request's ``destination``)."""

    request: FetchRequest
    result: DownloadResult
    ok: Literal[True] = field(default=True, init=False)


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """A request that could not be downloaded: ``error`` says why (a
    :class:`DownloadError`, or another :class:`TriofetchError`).  No temp file remains."""

    request: FetchRequest
    error: TriofetchError
    ok: Literal[False] = field(default=False, init=False)


FetchOutcome = FetchSucceeded | FetchFailed


class _Fetcher(Protocol):
    """What :func:`fetch_many` needs of a :class:`Downloader`."""

    @property
    def limiter(self) -> trio.CapacityLimiter: ...

    def plan(
        self,
        *,
        expected_digests: Mapping[str, str] | None = None,
        expected_size: int | None = None,
        headers: Mapping[str, str] | None = None,
        destination: str | os.PathLike[str] | None = None,
    ) -> FetchPlan: ...

    async def fetch_planned(self, url: str | Sequence[str], plan: FetchPlan) -> DownloadResult: ...


@dataclass(frozen=True, slots=True)
class _Job:
    request: FetchRequest
    plan: FetchPlan


@dataclass(frozen=True, slots=True)
class _Checked:
    """The jobs of a collection of requests, every one checked before any download."""

    jobs: list[_Job]


_Requests = Iterable[FetchRequest | str] | AsyncIterable[FetchRequest | str]


class _Destinations:
    """The destinations of one ``fetch_many`` seen so far: no two requests may share one
    (the second would replace the first's file, which the caller may already hold)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def claim(self, destination: str | os.PathLike[str] | None) -> None:
        if destination is None:
            return
        key = os.path.normcase(os.path.abspath(os.fspath(destination)))
        if key in self._seen:
            raise InvalidInput(f"two requests share the destination {os.fspath(destination)!r}")
        self._seen.add(key)


def _job(fetcher: _Fetcher, item: object, destinations: _Destinations) -> _Job:
    """*item* (a URL or a :class:`FetchRequest`) checked and planned; :class:`InvalidInput`."""
    if isinstance(item, str):
        request = FetchRequest(item)
    elif isinstance(item, FetchRequest):
        request = item
    else:
        raise InvalidInput(f"expected a URL or a FetchRequest, got {type(item).__name__}")
    if not isinstance(request.url, str) or not request.url:
        raise InvalidInput(f"expected a non-empty URL, got {request.url!r}")
    if isinstance(request.mirrors, str | bytes) or not all(
        isinstance(u, str) and u for u in request.mirrors
    ):
        raise InvalidInput(f"mirrors must be a sequence of URLs, got {request.mirrors!r}")
    plan = fetcher.plan(
        expected_digests=request.expected_digests,
        expected_size=request.expected_size,
        headers=request.headers,
        destination=request.destination,
    )
    destinations.claim(request.destination)
    return _Job(request, plan)


def _discard(outcome: FetchOutcome) -> None:
    """Remove the file of an outcome the caller was never handed (temp file or destination)."""
    if outcome.ok:
        with suppress(OSError):
            Path(outcome.result.path).unlink(missing_ok=True)


class FetchOutcomes:
    """The outcomes of :meth:`Downloader.fetch_many`, in completion order (an async
    iterator; each outcome is handed once)."""

    def __init__(self, receive: trio.MemoryReceiveChannel[FetchOutcome]) -> None:
        self._receive = receive

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> FetchOutcome:
        # An outcome already waiting is taken without a yield to the scheduler (a
        # cancellation is still seen): the caller drains what completed while it worked,
        # instead of one task switch per outcome.
        try:
            outcome = self._receive.receive_nowait()
        except trio.WouldBlock:
            try:
                return await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
        except (trio.EndOfChannel, trio.ClosedResourceError):
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration from None
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            _discard(outcome)  # (never handed to the caller)
            raise
        return outcome


def _drain(receive: trio.MemoryReceiveChannel[FetchOutcome]) -> None:
    """Close *receive*, removing the files of the outcomes still waiting in it."""
    while True:
        try:
            _discard(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    receive.close()


def fetch_many(
    fetcher: _Fetcher,
    requests: _Requests,
    *,
    in_flight: int | None = None,
) -> AbstractAsyncContextManager[FetchOutcomes]:
    """See :meth:`Downloader.fetch_many`.

    A collection (list, tuple, set...) is checked whole here, before anything starts; any
    other iterable is read lazily and each request is checked when read.
    """
    if in_flight is not None:
        check_int(in_flight, "in_flight", least=1)
    if isinstance(requests, str | bytes):
        raise InvalidInput("expected an iterable of requests, got a single string")
    if not isinstance(requests, AsyncIterable | Iterable):
        raise InvalidInput(f"expected an iterable of requests, got {type(requests).__name__}")
    ahead = in_flight or 2 * int(fetcher.limiter.total_tokens)
    if isinstance(requests, Collection):
        destinations = _Destinations()
        checked = _Checked([_job(fetcher, item, destinations) for item in requests])
        return _running(fetcher, checked, ahead)
    return _running(fetcher, requests, ahead)


@asynccontextmanager
async def _running(
    fetcher: _Fetcher,
    source: _Checked | _Requests,
    ahead: int,
) -> AsyncIterator[FetchOutcomes]:
    send, receive = trio.open_memory_channel[FetchOutcome](_BUFFER)
    try:
        with collapse_single():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_produce, fetcher, source, send, ahead)
                try:
                    yield FetchOutcomes(receive)
                finally:
                    # (leaving early: what still runs is cancelled, and its temp file
                    # removed by the fetch itself)
                    nursery.cancel_scope.cancel()
    finally:
        _drain(receive)


async def _produce(
    fetcher: _Fetcher,
    source: _Checked | _Requests,
    send: trio.MemorySendChannel[FetchOutcome],
    ahead: int,
) -> None:
    """*ahead* workers, each running one download at a time and handing its outcome over
    before it takes the next: at most *ahead* downloads run, and the input is read no
    further than that (plus the one request waiting for a worker, and the channel's buffer)
    beyond what the caller received.  A worker per download would cost a task, a channel
    clone and a semaphore round per request."""
    with send:  # (closed without a checkpoint, where a cancellation would hide an error)
        async with trio.open_nursery() as nursery:
            if isinstance(source, _Checked):
                jobs = iter(source.jobs)  # (shared: next() runs between checkpoints)
                for _ in range(min(ahead, len(source.jobs))):
                    nursery.start_soon(_work, fetcher, jobs, send.clone())
                return
            job_send, job_receive = trio.open_memory_channel[_Job](0)
            with job_receive:
                for _ in range(ahead):
                    nursery.start_soon(_work, fetcher, job_receive.clone(), send.clone())
            with job_send:
                destinations = _Destinations()
                try:
                    if isinstance(source, AsyncIterable):
                        async for item in source:
                            await job_send.send(_job(fetcher, item, destinations))
                    else:
                        for item in source:  # (send is a checkpoint: a long input stays
                            # cancellable)
                            await job_send.send(_job(fetcher, item, destinations))
                except trio.BrokenResourceError:  # every worker stopped: the caller left
                    return


async def _work(
    fetcher: _Fetcher,
    jobs: Iterator[_Job] | trio.MemoryReceiveChannel[_Job],
    send: trio.MemorySendChannel[FetchOutcome],
) -> None:
    """Download jobs one after another, each outcome handed over before the next job."""
    with send:  # (closed without a checkpoint, where a cancellation would hide an error)
        if isinstance(jobs, trio.MemoryReceiveChannel):
            with jobs:
                async for job in jobs:
                    if not await _one(fetcher, job, send):
                        return
        else:
            for job in jobs:
                if not await _one(fetcher, job, send):
                    return


async def _one(fetcher: _Fetcher, job: _Job, send: trio.MemorySendChannel[FetchOutcome]) -> bool:
    """Download *job* and hand its outcome over; False when the caller is gone (the
    outcome's file removed)."""
    outcome: FetchOutcome
    try:
        result = await fetcher.fetch_planned(job.request.urls, job.plan)
    except TriofetchError as error:
        outcome = FetchFailed(job.request, error)
    else:
        outcome = FetchSucceeded(job.request, result)
    try:
        try:
            # (no yield when the buffer has room: the worker's next fetch checkpoints)
            send.send_nowait(outcome)
        except trio.WouldBlock:
            await send.send(outcome)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        _discard(outcome)
        return False
    except BaseException:  # (cancelled: the send did not happen)
        _discard(outcome)
        raise
    return True
