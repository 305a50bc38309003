"""The content unit downloader: a nursery per unit; a unit is emitted only when complete.

Owns downloading the artifacts of declarative units into temp files, a unit at a time and
all or nothing per unit (:class:`UnitDownloader`, :func:`~triofetch.download_units` for
synchronous code), and the two pieces the content unit creator shares with it: the nursery
of one unit (``fetch_artifacts()``, not public) and the lazy, type-checked reading of an
input (:func:`aiter_units`).  It never touches the storage or the store: the temp files are the
receiver's.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import (
    AbstractAsyncContextManager,
    aclosing,
    asynccontextmanager,
    nullcontext,
    suppress,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self, TypeVarTuple, Unpack

import trio

from ._context import check_trio
from ._groups import collapse_single, first_error
from ._model import check_bool, check_int
from .declarative import DeclarativeArtifact, DeclarativeUnit
from .downloader import Downloader, DownloaderOptions, DownloadResult
from .errors import InvalidInput, TriofetchError, UnitFailed, WrongContext

__all__ = [
    "DownloadedUnit",
    "FailedUnit",
    "UnitDownloader",
    "UnitOutcome",
    "UnitStream",
    "aiter_units",
    "check_units_input",
    "download_units",
]

_Args = TypeVarTuple("_Args")


@dataclass(slots=True)
class DownloadedUnit:
    """A unit whose every artifact is downloaded and validated.

    ``results`` maps each relative path to its :class:`DownloadResult`; the temp files are
    the receiver's (move them, or call :meth:`discard`).
    """

    unit: DeclarativeUnit
    results: dict[str, DownloadResult] = field(default_factory=dict)
    #: always True (``if outcome.ok:`` narrows a :data:`UnitOutcome` to this type)
    ok: Literal[True] = True

    def discard(self) -> None:
        """Remove the temp files of this unit that are still there."""
        _discard(self.results.values())


@dataclass(slots=True)
class FailedUnit:
    """A unit that could not be downloaded; ``error.cause`` says why.  No temp file remains."""

    unit: DeclarativeUnit
    error: UnitFailed
    #: always False (``if not outcome.ok:`` narrows a :data:`UnitOutcome` to this type)
    ok: Literal[False] = False

    def discard(self) -> None:
        """Nothing to remove (present so every outcome can be discarded alike)."""


UnitOutcome = DownloadedUnit | FailedUnit


def _discard(results: Iterable[DownloadResult]) -> None:
    for result in results:
        with suppress(OSError):
            result.path.unlink(missing_ok=True)


def check_units_input(units: object) -> None:
    """Refuse, before anything starts, an input that is not an iterable of units (its items
    are checked as they are read: see :func:`aiter_units`)."""
    if isinstance(units, DeclarativeUnit):
        raise InvalidInput("expected an iterable of DeclarativeUnit, got one unit: pass [unit]")
    if not isinstance(units, Iterable | AsyncIterable) or isinstance(units, str | bytes):
        raise InvalidInput(
            f"expected an iterable of DeclarativeUnit (sync or async), got {type(units).__name__}"
        )


async def aiter_units(
    units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit],
) -> AsyncGenerator[DeclarativeUnit, None]:
    """Iterate a sync or async iterable of units lazily, checking each item's type (an
    async generator: close it, ``contextlib.aclosing``, when leaving it unfinished)."""
    if isinstance(units, AsyncIterable):
        async for unit in units:
            yield _checked(unit)
    else:
        # A checkpoint now and then (not per item: a loop iteration per unit would cost more
        # than the unit) keeps a long in-memory input cancellable.
        for count, unit in enumerate(units, 1):
            yield _checked(unit)
            if not count % 256:
                await trio.lowlevel.checkpoint()


def _checked(unit: object) -> DeclarativeUnit:
    if not isinstance(unit, DeclarativeUnit):
        raise InvalidInput(f"expected DeclarativeUnit items, got {type(unit).__name__}")
    return unit


class UnitStream:
    """The outcomes of :meth:`UnitDownloader.download`, in completion order."""

    def __init__(self, receive: trio.MemoryReceiveChannel[UnitOutcome], fail_fast: bool) -> None:
        self._receive = receive
        self._fail_fast = fail_fast

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> UnitOutcome:
        try:
            outcome = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        if self._fail_fast and isinstance(outcome, FailedUnit):
            await self.aclose()
            raise outcome.error
        return outcome

    async def aclose(self) -> None:
        """Stop receiving; outcomes not yet received have their temp files removed."""
        _drain(self._receive)
        await trio.lowlevel.checkpoint()


def _drain(receive: trio.MemoryReceiveChannel[UnitOutcome]) -> None:
    while True:
        try:
            receive.receive_nowait().discard()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    receive.close()


class UnitDownloader:
    """Downloads the artifacts of content units, a nursery per unit.

    ::

        async with triofetch.Downloader() as dl, triofetch.UnitDownloader(dl) as units:
            async for done in units.download(declarative_units):
                if done.ok:
                    ...  # done.results: {relative_path: DownloadResult}
                else:
                    print(done.error)

    Every artifact of a unit is fetched in parallel (under the downloader's limiters); a
    unit is emitted only once all of its files are downloaded and validated.  A failed
    artifact cancels its siblings, their temp files are removed, and the unit is emitted as
    a :class:`FailedUnit` while other units go on (with ``fail_fast=True`` the iteration
    raises :class:`UnitFailed` instead and everything else stops).

    Args:
        downloader: an open :class:`Downloader`.
        fail_fast: stop everything at the first failed unit.
        units_in_flight: units downloading at once (default: twice the downloader's
            connections); the input is read lazily, no further than that.
        buffer: completed units held for a slow consumer before downloads pause.
        temp_dir: temp area for the downloads (default: the downloader's).
    """

    def __init__(
        self,
        downloader: Downloader,
        *,
        fail_fast: bool = False,
        units_in_flight: int | None = None,
        buffer: int = 16,
        temp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(downloader, Downloader):
            raise InvalidInput(f"downloader must be a Downloader, got {downloader!r}")
        if units_in_flight is not None:
            check_int(units_in_flight, "units_in_flight", least=1)
        check_int(buffer, "buffer", least=0)
        self._downloader = downloader
        self._fail_fast = check_bool(fail_fast, "fail_fast")
        self._in_flight = units_in_flight or 2 * int(downloader.limiter.total_tokens)
        self._buffer = buffer
        self._temp_dir = temp_dir
        self._nursery: trio.Nursery | None = None
        self._cm: AbstractAsyncContextManager[None] | None = None
        self._streams: list[trio.MemoryReceiveChannel[UnitOutcome]] = []

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        try:
            with collapse_single():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        yield
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            for receive in self._streams:
                _drain(receive)
            self._streams.clear()

    async def __aenter__(self) -> Self:
        check_trio()
        if self._cm is not None:
            raise WrongContext("this UnitDownloader is already open")
        self._cm = self._running()
        await self._cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None
        cm, self._cm = self._cm, None
        return await cm.__aexit__(exc_type, exc, tb)

    def download(
        self, units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit]
    ) -> UnitStream:
        """Start downloading *units* (read lazily) and return the stream of outcomes."""
        if self._nursery is None:
            raise WrongContext("use the UnitDownloader inside 'async with'")
        check_units_input(units)
        if not self._downloader.is_open:
            raise WrongContext(
                "the UnitDownloader's Downloader is not open: download inside the "
                "Downloader's 'async with'"
            )
        send, receive = trio.open_memory_channel[UnitOutcome](self._buffer)
        self._streams.append(receive)
        self._nursery.start_soon(self._produce, units, send)
        return UnitStream(receive, self._fail_fast)

    async def _produce(
        self,
        units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit],
        send: trio.MemorySendChannel[UnitOutcome],
    ) -> None:
        with send:  # (not "async with": its checkpoint could swallow the error of the block)
            slots = trio.Semaphore(self._in_flight)
            async with trio.open_nursery() as nursery, aclosing(aiter_units(units)) as checked:
                async for unit in checked:
                    await slots.acquire()
                    nursery.start_soon(self._one, unit, send.clone(), slots, nursery)

    async def _one(
        self,
        unit: DeclarativeUnit,
        send: trio.MemorySendChannel[UnitOutcome],
        slots: trio.Semaphore,
        siblings: trio.Nursery,
    ) -> None:
        # The slot is held until the outcome is handed over, so that the input is read no
        # further ahead than units_in_flight + buffer.
        with send:
            try:
                outcome = await download_unit(self._downloader, unit, temp_dir=self._temp_dir)
                try:
                    await send.send(outcome)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    outcome.discard()
                    return
                except BaseException:
                    outcome.discard()
                    raise
            finally:
                slots.release()
            if self._fail_fast and not outcome.ok:
                siblings.cancel_scope.cancel()


_UNSCOPED = nullcontext()


async def fetch_artifacts(
    artifacts: Iterable[DeclarativeArtifact],
    fetch: Callable[[DeclarativeArtifact, *_Args], Awaitable[object]],
    *args: *_Args,
    scope: trio.CancelScope | None = None,
) -> BaseExceptionGroup[TriofetchError] | None:
    """The nursery of one unit: ``fetch(artifact, *args)`` for every artifact, all at once.

    Returns None when every fetch returned.  The first one to raise cancels its siblings
    (each cleans up after itself); when every error is a :class:`TriofetchError`, the unit
    failed and the group of them is returned, for the caller to record (its first error is
    the unit's cause).  Anything else, a cancellation from outside or a bug, propagates.

    With *scope*, the nursery runs inside that cancel scope, so that one unit can be
    cancelled from outside; the cancellation it catches is not an error of the unit.

    Both :func:`download_unit` and the content unit creator use it: one place says what a
    unit's failure is.
    """
    try:
        with _UNSCOPED if scope is None else scope:
            async with trio.open_nursery() as nursery:
                for artifact in artifacts:
                    nursery.start_soon(fetch, artifact, *args)
    except BaseExceptionGroup as group:
        errors, rest = group.split(TriofetchError)
        if rest is not None or errors is None:
            raise
        return errors
    return None


async def download_unit(
    downloader: Downloader,
    unit: DeclarativeUnit,
    *,
    temp_dir: str | os.PathLike[str] | None = None,
) -> UnitOutcome:
    """Download every artifact of *unit* in parallel (a nursery per unit).

    Returns a :class:`DownloadedUnit` when all succeed; when one fails, the others are
    cancelled, every temp file is removed and a :class:`FailedUnit` is returned.
    Cancellation propagates (after the temp files are removed).
    """
    results: dict[str, DownloadResult] = {}
    try:
        errors = await fetch_artifacts(
            unit.artifacts, _download_into, downloader, results, temp_dir
        )
    except BaseException:
        _discard(results.values())
        raise
    if errors is not None:
        _discard(results.values())
        return FailedUnit(unit, UnitFailed(unit.key, first_error(errors)))
    return DownloadedUnit(unit, results)


async def _download_into(
    artifact: DeclarativeArtifact,
    downloader: Downloader,
    results: dict[str, DownloadResult],
    temp_dir: str | os.PathLike[str] | None,
) -> None:
    results[artifact.relative_path] = await downloader.fetch(
        artifact.urls,
        expected_digests=artifact.digests,
        expected_size=artifact.size,
        temp_dir=temp_dir,
    )


def download_units(
    units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit],
    *,
    fail_fast: bool = False,
    buffer: int = 16,
    units_in_flight: int | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
    **downloader_options: Unpack[DownloaderOptions],
) -> Iterator[UnitOutcome]:
    """The content unit downloader for synchronous code: a plain ``for`` loop.

    ::

        for done in triofetch.download_units(units, connections=8, temp_dir="tmp"):
            ...

    Runs a Trio loop in a background thread with at most *buffer* completed units waiting
    for the caller.  Leaving the loop early (``break``, an exception, garbage collection of
    the generator) cancels everything in flight and removes every temp file the caller has
    not received; the files it yields are the caller's, in *temp_dir* (default: the system
    temp dir), to move or remove.  *temp_dir* and *downloader_options* are
    :class:`Downloader` keyword arguments (see :class:`~triofetch.downloader.DownloaderOptions`,
    which type checkers hold them to).
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        pass
    else:
        raise WrongContext("download_units() blocks; inside Trio use UnitDownloader")
    check_units_input(units)
    check_bool(fail_fast, "fail_fast")
    # Validate the options here, in the caller's thread, before anything starts.
    # (the files are handed to the caller, who may still hold some after the loop: never
    # the downloader's private directory, which goes when the downloader closes)
    if temp_dir is None:
        temp_dir = tempfile.gettempdir()
    downloader = Downloader(temp_dir=temp_dir, **downloader_options)
    return _SyncUnits(downloader, units, fail_fast, buffer, units_in_flight).run()


class _SyncUnits:
    def __init__(
        self,
        downloader: Downloader,
        units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit],
        fail_fast: bool,
        buffer: int,
        units_in_flight: int | None,
    ) -> None:
        self._downloader = downloader
        self._units = units
        self._fail_fast = fail_fast
        self._buffer = buffer
        self._in_flight = units_in_flight
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stream: UnitStream | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None

    async def _main(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        try:
            async with (
                self._downloader as dl,
                UnitDownloader(
                    dl,
                    fail_fast=self._fail_fast,
                    buffer=self._buffer,
                    units_in_flight=self._in_flight,
                ) as units,
            ):
                self._stream = units.download(self._units)
                self._ready.set()
                await self._stop.wait()
        finally:
            self._ready.set()

    def _thread(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def _set_stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    def run(self) -> Iterator[UnitOutcome]:
        thread = threading.Thread(target=self._thread, name="triofetch-units", daemon=True)
        thread.start()
        try:
            self._ready.wait()
            if self._stream is None:
                raise self._error or RuntimeError("the unit downloader did not start")
            stream = self._stream
            while True:
                try:
                    outcome = trio.from_thread.run(stream.__anext__, trio_token=self._token)
                except StopAsyncIteration:
                    return
                except trio.RunFinishedError:
                    if self._error is not None:
                        raise self._error from None
                    return
                yield outcome
        finally:
            if self._token is not None:
                with suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(self._set_stop, trio_token=self._token)
            thread.join()
            if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
                raise self._error
