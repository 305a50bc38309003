"""Files recorded but not stored: fetched from the remote on request, streamed, then kept.

Owns the *flights* of the content app: one upstream download per file being fetched,
shared by every request for that file.  A flight runs in the app's own nursery (never in a
request's task, so a client that goes away cancels nothing for the others); it streams the
body through :meth:`Downloader.stream`, keeps its latest bytes in memory and has a writer
task write and hash them into a temp file in the storage's temp area (in worker threads,
while the next bytes arrive); the requests send from memory what has arrived, and a request
that falls behind the bytes in memory reads the temp file by offset (``os.pread`` in a
worker thread).  At the end of the body the size and digests the unit declares are
checked; then, for an ``on_demand`` unit, the file is adopted into the storage and attached
to its unit, with the other files validated meanwhile (:meth:`ArtifactStorage.adopt_many`,
then :meth:`Store.fill_artifacts`: the path of ``fill_missing``), and the flight ends; for a
``streamed`` unit (or a store opened read-only) the temp file is dropped instead.

What a client can take as complete is only ever validated bytes: a response never sends
its last byte before the flight has validated the whole file, so when validation fails (or
the upstream breaks off and another attempt starts over) every response that has begun is
aborted (the connection closed short of its length or of the last chunk), nothing is
stored, and the next request starts a new flight.  A flight that fails before any byte
arrived is a ``502`` with a short reason for every request waiting on it.  An HTTP/1.0
request for a file of no declared size waits for the validated whole before its response
starts (see ``_whole_first``): such a client reads a body without a length up to the
close, and a body cut short would look complete to it.

A temp file that cannot be written (a full disk...) does not fail the flight: the body is
served from memory all the same, validated, and not stored (see ``_Attempt._write``); only a
request that falls further behind than the bytes in memory is cut short then.

It must not parse URLs or headers of requests (the app does) nor answer stored files.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, Protocol

import trio

from .._groups import first_error
from ..downloader import Downloader
from ..errors import (
    DigestMismatch,
    DownloadError,
    SizeMismatch,
    StorageWriteError,
    StoreError,
    TriofetchError,
    describe_error,
    error_chain,
)
from ..storage import ArtifactStorage, FileToAdopt
from ..store import ArtifactRecord, MissingArtifact, Store, UnitKey
from ._http import CutShort

__all__ = [
    "Flight",
    "OnDemandFiles",
    "Refusal",
    "Responder",
    "UpstreamFailed",
    "ValidationFailed",
    "short_of_descriptors",
]

log = logging.getLogger("triofetch.serve")

#: bytes gathered from the upstream before they are written and offered to the requests:
#: the first 64 KiB at once (a small file's first bytes go out early), then doubling up to
#: 1 MiB (a large file is not written, and woken for, 64 KiB at a time)
_FLUSH = 64 * 1024
_FLUSH_MAX = 1024 * 1024
#: the latest bytes of an upstream body kept in memory for the requests (bytes not yet
#: written are kept too); a request further behind reads the temp file
_WINDOW = 2 * 1024 * 1024
#: the pieces a request reads and sends grow from the app's chunk size up to this many
_READ_GROWTH = 16
#: the most buffers one writev takes
_IOV_MAX = 1024
#: the units whose declared files one lookup of the store reads ahead, and how long (in
#: seconds) what was read is trusted
_AHEAD = 64
_AHEAD_TTL = 2.0
#: how many of the files it stored the app remembers (their tables' entries still say
#: "not stored": see OnDemandFiles.stored)
_KEPT_REMEMBERED = 4096
#: how long a stopping server waits for the files validated already to be stored
STORING_GRACE = 5.0
#: a request sends a piece of an unfinished body only once this many bytes wait (a small
#: file goes out whole, in one message, once validated)
_MIN_PIECE = 64 * 1024


class UpstreamFailed(CutShort):
    """A response already begun could not be completed with validated bytes: the request
    task raises it, and the server closes the connection short (the client sees an
    incomplete response, never a complete wrong one)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to send instead of the file (a ``502``, or a ``503`` when the server was
    short of file descriptors for it): nothing of it was sent yet."""

    status: int
    detail: str


class ValidationFailed(Exception):
    """The upstream's bytes are not the file the unit declares (size or digest): raised by
    the body consumer as something other than a :class:`DownloadError`, so that the
    downloader does not try again within the flight; the next request does."""

    def __init__(self, cause: DownloadError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Responder(Protocol):
    """What a flight's request needs of the app's exchange."""

    @property
    def head(self) -> bool: ...

    @property
    def http_version(self) -> str: ...

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def body(self, data: bytes, *, more: bool = False) -> None: ...

    async def error(self, status: int, detail: str = "") -> None: ...


class _Attempt:
    """One attempt at the upstream body: its temp file, its hashers and the window of its
    latest bytes in memory.

    The :class:`BodyConsumer` of :meth:`Downloader.stream`.  ``feed`` keeps each chunk in the
    window (what the requests send from) and gathers chunks into batches, which a writer
    task hashes and writes to the temp file in a worker thread while the next ones arrive
    (one batch written, one waiting: the upstream is read on meanwhile); ``finish`` waits
    for the last batch and checks the whole.  The window keeps at least the last
    ``_WINDOW`` bytes and every byte not yet written; a request that falls further behind
    reads the temp file.
    """

    def __init__(
        self, flight: Flight, storage: ArtifactStorage, url: str, writers: trio.Nursery
    ) -> None:
        self.flight = flight
        self.url = url
        self.path = str(storage.new_temp_path())
        self._temp_area = storage.temp_dir
        self.fd: int | None = None
        #: bytes received (what requests may send, all but the last before validation)
        self.size = 0
        #: bytes written to the file (the ones a request may read from it)
        self.written = 0
        #: bytes the writer has hashed (and written, unless the file could not be)
        self._through = 0
        #: why the temp file could not be written (a full disk...): the body is then only
        #: hashed, still sent from memory, and not stored (see _write)
        self.unstored: StoreError | None = None
        #: another attempt replaced this one: nothing more is written, and the file is
        #: emptied once the writer ends (see _writer)
        self._replaced = False
        #: removing the file failed (said once)
        self._unremovable = False
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_at = _FLUSH
        #: a whole small body, kept in memory: written to the storage when kept, never to
        #: a temp file
        self.data: bytes | None = None
        #: (offset, chunk) of the latest bytes received, oldest first
        self._window: collections.deque[tuple[int, bytes]] = collections.deque()
        self._window_size = 0
        #: bytes received when the requests were last woken
        self._announced = 0
        names = {"sha256", *flight.expected}
        self._hashers = {name: hashlib.new(name) for name in names}
        #: the writer's batches (the writer starts with the first batch, which creates the
        #: temp file: a small body has none)
        self._writers = writers
        self._batches: trio.MemorySendChannel[list[bytes]] | None = None
        self._write_error: BaseException | None = None
        self._writer_done = trio.Event()

    # -- BodyConsumer ------------------------------------------------------------------

    async def feed(self, chunk: bytes) -> None:
        if self._write_error is not None:
            raise self._write_error
        offset = self.size
        received = offset + len(chunk)
        declared = self.flight.size
        if declared is not None and received > declared:
            # (not counted: what requests may send never goes past the declared size)
            raise ValidationFailed(SizeMismatch(declared, received, url=self.url, exceeded=True))
        self.size = received
        if not chunk:
            return
        self._window.append((offset, chunk))
        self._window_size += len(chunk)
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= self._flush_at:
            self._flush_at = min(self._flush_at * 2, _FLUSH_MAX)
            await self._flush()
        if self.size - self._announced >= _MIN_PIECE:
            self._announced = self.size
            self.flight.notify()

    async def finish(self) -> _Attempt:
        if self._batches is None and self._pending_size <= _FLUSH:  # (nothing written)
            # a small body, whole: hashed here (at most 64 KiB), kept in memory
            pending = self._pending
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            self._pending, self._pending_size = [], 0
            for hasher in self._hashers.values():
                hasher.update(data)
            self.data = data
        else:
            await self._flush()
            self.abandon()
            await self._writer_done.wait()
            if self._write_error is not None:
                raise self._write_error
        declared = self.flight.size
        if declared is not None and self.size != declared:
            raise ValidationFailed(SizeMismatch(declared, self.size, url=self.url))
        for name, expected in self.flight.expected.items():
            actual = self._hashers[name].hexdigest()
            if actual != expected:
                raise ValidationFailed(DigestMismatch(name, expected, actual, url=self.url))
        return self

    # -- what the requests send ----------------------------------------------------------

    def read(self, offset: int, count: int) -> bytes | None:
        """Up to *count* received bytes from *offset*, from the window; None when they
        are no longer in it (they are in the file: read it)."""
        window = self._window
        if not window or offset < window[0][0]:
            return None
        pieces: list[bytes] = []
        for start, chunk in window:
            end = start + len(chunk)
            if end <= offset:
                continue
            begin = offset - start if offset > start else 0
            take = min(len(chunk) - begin, count)
            whole = begin == 0 and take == len(chunk)
            pieces.append(chunk if whole else chunk[begin : begin + take])
            count -= take
            offset += take
            if count <= 0:
                break
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    # -- the file ----------------------------------------------------------------------

    @property
    def digests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashers.items()}

    async def _flush(self) -> None:
        """Hand the gathered chunks to the writer (waits while it has a batch queued)."""
        if not self._pending:
            return
        chunks = self._pending
        self._pending, self._pending_size = [], 0
        if self._batches is None:
            self._batches, batches = trio.open_memory_channel[list[bytes]](1)
            self._writers.start_soon(self._writer, batches)
        await self._batches.send(chunks)

    async def _writer(self, batches: trio.MemoryReceiveChannel[list[bytes]]) -> None:
        """Write and hash the batches in order, each in a worker thread, until the channel
        is closed and drained."""
        try:
            async with batches:
                async for chunks in batches:
                    if self._write_error is None and not self._replaced:
                        await self._write_batch(chunks)
            if self._replaced and self.fd is not None:
                # No request reads a replaced attempt's file: its space is given back now,
                # not when the flight ends (the retry may need it).  (The flight, and so
                # the closing of this fd, waits for this task.)
                self.written = 0
                with contextlib.suppress(OSError):
                    await trio.to_thread.run_sync(
                        os.ftruncate, self.fd, 0, limiter=self.flight.limiter
                    )
        finally:
            self._writer_done.set()

    async def _write_batch(self, chunks: list[bytes]) -> None:
        try:
            stored = await trio.to_thread.run_sync(self._write, chunks, limiter=self.flight.limiter)
        except Exception as exc:
            self._write_error = exc
            return
        size = sum(map(len, chunks))
        self._through += size
        if stored:
            self.written += size
        elif self.unstored is not None:
            self.written = 0  # (the file was emptied: no request reads it any more)
        # the window lets go of processed bytes beyond its size
        window = self._window
        while window and self._window_size - len(window[0][1]) >= _WINDOW:
            start, chunk = window[0]
            if start + len(chunk) > self._through:
                break
            window.popleft()
            self._window_size -= len(chunk)

    def _write(self, chunks: list[bytes]) -> bool:
        """(worker thread) Hash *chunks* and append them to the temp file; False when they
        were not written.

        When the file cannot be written (a full disk, a read-only or failing file system,
        no permission), the body is served without being stored, like a caching proxy
        whose cache is full: :attr:`unstored` says why, the file is emptied (its space
        given back at once, although requests hold it open) and the next batches are only
        hashed — the requests send from memory, and validation happens all the same.
        """
        for chunk in chunks:
            for hasher in self._hashers.values():
                hasher.update(chunk)
        if self.unstored is not None:
            return False
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            views = [memoryview(c) for c in chunks if c]
            while views:
                done = os.writev(self.fd, views[:_IOV_MAX])
                while views and done >= len(views[0]):
                    done -= len(views[0])
                    views.pop(0)
                if views and done:
                    views[0] = views[0][done:]
        except OSError as exc:
            self.unstored = (
                StorageWriteError(exc, self._temp_area)
                if StorageWriteError.matches(exc)
                else StoreError(f"cannot write a temp file in {self._temp_area}: {exc}")
            )
            self.unstored.__cause__ = exc
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, 0)
            return False
        return True

    def forget(self) -> None:
        """Let go of the bytes in memory and of the file's (another attempt replaced this
        one): nothing more is written, and the writer empties the file once it ends."""
        self._window.clear()
        self._window_size = 0
        self._replaced = True

    def release(self) -> None:
        """Let go of the bytes held in memory (nothing reads them any more).  Not left to
        the garbage collector: a flight and its attempts refer to each other, and such a
        cycle is freed only by a full collection, which many large buffers and few objects
        seldom start (a server streaming large files held hundreds of MiB of windows of
        flights long ended)."""
        self._window.clear()
        self._window_size = 0
        self._pending, self._pending_size = [], 0
        self.data = None

    def abandon(self) -> None:
        """No more bytes come (another attempt, or the flight ended): the writer ends once
        it has written what it holds."""
        if self._batches is not None:
            self._batches.close()

    def close(self) -> None:
        """Close the file, in a thread of its own (closing a large file just written may
        take a while: never on the Trio loop)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            trio.lowlevel.start_thread_soon(partial(os.close, fd), _ignore, name="close")

    def remove(self) -> None:
        """Remove the temp file (requests that read it hold it open: they read on).  Never
        raises: a flight's cleanup must not fail (on a read-only file system, unlinking a
        file that was never created fails with EROFS)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # (it exists: say so, it holds space; once: a replaced attempt's file is
            # removed again when the flight ends)
            if self.fd is not None and not self._unremovable:
                self._unremovable = True
                log.warning("cannot remove the temp file %s: %s", self.path, exc)


@dataclass(eq=False)
class _Keep:
    """A validated file for the committer: adopt it, attach it to its unit."""

    unit_id: int
    relative_path: str
    #: the temp file, or the bytes of a small file
    source: str | bytes
    record: ArtifactRecord
    error: BaseException | None = None
    done: trio.Event = field(default_factory=trio.Event)


class Flight:
    """One upstream download of one file, shared by every request for it."""

    def __init__(
        self,
        key: UnitKey,
        unit_id: int,
        relative_path: str,
        size: int | None,
        sha256: str | None,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.key = key
        self.unit_id = unit_id
        self.relative_path = relative_path
        #: the size the unit declares (from the index, then its remote artifact)
        self.size = size
        #: the digests the bytes must have
        self.expected: dict[str, str] = {} if sha256 is None else {"sha256": sha256}
        self.limiter = limiter
        #: the attempt whose bytes the requests read (None before the first byte)
        self.attempt: _Attempt | None = None
        #: the whole file validated (what is sent may end); storing it may still go on
        self.done = False
        #: the file turned out to be stored already: serve it from the storage
        self.stored: ArtifactRecord | None = None
        self.error: BaseException | None = None
        #: every attempt's file (open until the flight ended and no request reads any)
        self.attempts: list[_Attempt] = []
        #: requests following the flight
        self.followers = 0
        self.ended = False
        self._changed = trio.Event()

    def close_files(self) -> None:
        """Close the attempts' files, and let go of their bytes in memory, once the flight
        ended and no request reads them."""
        if self.ended and self.followers == 0:
            for attempt in self.attempts:
                attempt.close()
                attempt.release()

    def notify(self) -> None:
        """Wake every request waiting for more bytes or the end."""
        event, self._changed = self._changed, trio.Event()
        event.set()

    async def changed(self) -> None:
        await self._changed.wait()


class OnDemandFiles:
    """The downloads of one content app's files not stored (``ContentApp.on_demand``): one
    *flight* per file being fetched, shared by every request for it (see the module
    :mod:`triofetch.serve` and ``docs/serve.rst``).  Made by :func:`make_app`; a program
    uses it to wait (:meth:`wait_idle`) or count (:attr:`in_flight`,
    :attr:`upstream_gets`).

    Args:
        store: the app's store; with ``store.readonly`` nothing is stored (every file is
            streamed).
        downloader: the :class:`~triofetch.Downloader` of the upstream requests, or None:
            one with the defaults, opened for the app's lifespan.
        limiter: bounds the worker threads writing and reading temp files.
        chunk_size: the most bytes sent in one body message.

    Attributes:
        upstream_gets (int): how many upstream bodies were requested (for tests and the
            access log).
    """

    def __init__(
        self,
        store: Store,
        *,
        downloader: Downloader | None = None,
        limiter: trio.CapacityLimiter,
        chunk_size: int,
    ) -> None:
        assert store.storage is not None
        self.store = store
        self.storage: ArtifactStorage = store.storage
        self._given = downloader
        self._downloader = downloader
        self._limiter = limiter
        self._chunk = chunk_size
        self._flights: dict[tuple[int, str], Flight] = {}
        self._nursery: trio.Nursery | None = None
        self._starting: trio.Event | None = None
        self.upstream_gets = 0
        self._ended = trio.Event()  # (set, and replaced, whenever a flight ends)
        #: validated files waiting for the committer
        self._keeping: list[_Keep] = []
        self._wake_committer = trio.Event()
        #: what the store declared of files read ahead, with when: (unit id, path) ->
        #: (time, declared)
        self._ahead: dict[tuple[int, str], tuple[float, MissingArtifact]] = {}
        #: set when the running lookup of the store ends
        self._looking: trio.Event | None = None
        #: when the latest flight of a file ended: (unit id, path) -> time (a lookup that
        #: began before then may have read the file as missing although it is stored now)
        self._ended_at: dict[tuple[int, str], float] = {}
        #: the files this app fetched and stored, the latest _KEPT_REMEMBERED: (unit id,
        #: path) -> (the unit's key, record) (see stored())
        self._kept: collections.OrderedDict[tuple[int, str], tuple[UnitKey, ArtifactRecord]] = (
            collections.OrderedDict()
        )

    @property
    def in_flight(self) -> int:
        """How many files are being fetched."""
        return len(self._flights)

    def stored(self, unit_id: int, relative_path: str, key: UnitKey) -> ArtifactRecord | None:
        """The record of a file of unit *unit_id* (of *key*) this app fetched and stored
        (among the latest ones), or None: the app answers it from the storage from then
        on, ``HEAD`` and ranges included, and lists it as stored.  (The key is compared:
        SQLite may give a removed unit's id to a new one.)"""
        kept = self._kept.get((unit_id, relative_path))
        return kept[1] if kept is not None and kept[0] == key else None

    async def finish_storing(self) -> None:
        """Wait (5 s at most, shielded) until the files validated already are stored: what
        a stopping server does before it lets go of its downloads."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + STORING_GRACE):
            while any(f.done for f in self._flights.values()):
                await self._ended.wait()

    async def wait_idle(self) -> None:
        """Wait until no file is being fetched (downloads go on after their clients left)."""
        while self._flights:
            await self._ended.wait()

    def remove_temp_files(self) -> None:
        """Remove the temp files of the downloads still running, now (blocking, no
        checkpoint; never raises).  For a program about to end its process without letting
        them finish (``triofetch serve`` stopping at once), which would otherwise leave
        them behind: the downloads are not stopped, so call it only on the way out."""
        for flight in list(self._flights.values()):
            for attempt in flight.attempts:
                attempt.remove()

    # -- the flights' nursery ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the flights (and the default downloader) for the duration of the block:
        the app's lifespan.  Leaving waits (5 s at most) for the files validated already
        to be stored, and cancels the downloads still running (their temp files are
        removed, nothing of them is stored)."""
        async with contextlib.AsyncExitStack() as stack:
            if self._given is None:
                self._downloader = await stack.enter_async_context(Downloader())
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(self._committer)
            self._nursery = nursery
            try:
                yield
            finally:
                await self.finish_storing()
                self._nursery = None
                nursery.cancel_scope.cancel()

    async def _ensure_running(self) -> trio.Nursery:
        """The flights' nursery; without a lifespan (an ASGI server that sends none), a
        system task holding one is started on first use."""
        while self._nursery is None:
            if self._starting is None:
                self._starting = trio.Event()
                trio.lowlevel.spawn_system_task(self._system_service, self._starting)
            await self._starting.wait()
        return self._nursery

    async def _system_service(self, started: trio.Event) -> None:
        try:
            async with self.running():
                started.set()
                await trio.sleep_forever()
        except BaseException as exc:  # a system task must not raise
            if not isinstance(exc, trio.Cancelled):
                log.error("the on-demand service stopped: %s", describe_error(exc))
        finally:
            started.set()

    # -- requests ------------------------------------------------------------------------

    async def serve(
        self,
        ex: Responder,
        key: UnitKey,
        unit_id: int,
        relative_path: str,
        size: int | None,
        sha256: str | None,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> ArtifactRecord | Refusal | Literal["finish"]:
        """Answer a request for a file not stored: join (or start) its flight and stream
        it.  Returns ``"finish"`` when every byte is sent but the empty last body message,
        a :class:`Refusal` to answer instead (a ``502``: nothing was sent), or the file's
        record when it turned out to be stored already (the caller serves it from the
        storage then) — the caller sends what completes a response outside its watch for
        a disconnected client (see ``ContentApp._stream``); raises
        :class:`UpstreamFailed` when a begun response cannot end with validated bytes."""
        where = (unit_id, relative_path)
        flight = self._flights.get(where)
        if flight is None:
            flight = Flight(key, unit_id, relative_path, size, sha256, self._limiter)
            self._flights[where] = flight  # (before any checkpoint: one flight per file)
            try:
                nursery = await self._ensure_running()
            except BaseException:
                del self._flights[where]
                raise
            nursery.start_soon(self._fly, flight)
        return await self._follow(ex, flight, extra_headers)

    async def _follow(
        self, ex: Responder, flight: Flight, extra_headers: list[tuple[bytes, bytes]]
    ) -> ArtifactRecord | Refusal | Literal["finish"]:
        flight.followers += 1
        try:
            return await self._answer(ex, flight, extra_headers)
        finally:
            flight.followers -= 1
            flight.close_files()

    async def _answer(
        self, ex: Responder, flight: Flight, extra_headers: list[tuple[bytes, bytes]]
    ) -> ArtifactRecord | Refusal | Literal["finish"]:
        # wait for the first bytes, the end, or a failure before answering anything
        while True:
            if flight.stored is not None:
                return flight.stored
            if flight.error is not None:  # nothing sent yet: a clean answer
                if short_of_descriptors(flight.error):  # (ours, not the upstream's)
                    return Refusal(503, "too many open files")
                return Refusal(502, _reason(flight.error))
            attempt = flight.attempt
            if attempt is not None and (
                flight.done or (attempt.size >= _MIN_PIECE and not _whole_first(ex, flight))
            ):
                break
            await flight.changed()
        size = flight.size if flight.size is not None else (attempt.size if flight.done else None)
        headers = list(extra_headers)
        if size is not None:
            headers.append((b"content-length", str(size).encode()))
        if "sha256" in flight.expected:
            headers.append((b"etag", f'"{flight.expected["sha256"]}"'.encode()))
        await ex.start(200, headers)
        if ex.head:
            return "finish"
        offset = 0
        piece = self._chunk
        while True:
            if flight.attempt is not attempt:  # the upstream started over
                raise UpstreamFailed(f"{flight.relative_path}: the upstream broke off")
            if flight.error is not None:  # (nothing more of bytes that failed)
                raise UpstreamFailed(f"{flight.relative_path}: {_reason(flight.error)}")
            # the last byte waits for the validation of the whole
            limit = attempt.size if flight.done else attempt.size - 1
            if offset < limit and (flight.done or limit - offset >= _MIN_PIECE):
                count = min(limit - offset, piece)
                piece = min(piece * 2, self._chunk * _READ_GROWTH)
                data = attempt.read(offset, count)
                if data is None:  # fallen behind the window: the bytes are in the file
                    fd = attempt.fd
                    if fd is None or attempt.written <= offset:
                        if attempt.unstored is not None:  # (its file was emptied)
                            raise UpstreamFailed(
                                f"{flight.relative_path}: the client fell behind the bytes "
                                "in memory, and the temp file could not be written"
                            )
                        raise UpstreamFailed(f"{flight.relative_path}: the upstream broke off")
                    data = await trio.to_thread.run_sync(
                        os.pread,
                        fd,
                        min(count, attempt.written - offset),
                        offset,
                        limiter=self._limiter,
                    )
                    # (read while the file was being emptied: not sent)
                    if flight.attempt is not attempt:
                        raise UpstreamFailed(f"{flight.relative_path}: the upstream broke off")
                    if attempt.unstored is not None:
                        raise UpstreamFailed(
                            f"{flight.relative_path}: the temp file could not be written"
                        )
                if not data:
                    raise UpstreamFailed(f"{flight.relative_path}: the temp file ended")
                offset += len(data)
                await ex.body(data, more=True)
                continue
            if flight.done:
                return "finish"
            await flight.changed()  # (a failure is seen at the top of the loop)

    # -- a flight ------------------------------------------------------------------------

    async def _fly(self, flight: Flight) -> None:
        key = (flight.unit_id, flight.relative_path)
        attempts = flight.attempts
        try:
            remote = await self._remote(flight)
            if remote is None:
                return  # stored meanwhile: flight.stored is set
            streamed = remote.streamed or self.store.readonly
            done = await self._fetch(flight, remote, attempts)
            # validated: the requests may send the last byte now; storing it goes on (a
            # request coming meanwhile still joins this flight)
            flight.done = True
            flight.notify()
            if done.unstored is not None:
                log.log(
                    logging.INFO if streamed else logging.WARNING,
                    "%s: fetched on demand but not stored: %s",
                    flight.relative_path,
                    describe_error(done.unstored),
                )
            elif not streamed:
                record = ArtifactRecord(done.digests["sha256"], done.size, done.digests)
                try:
                    await self._keep(flight, done.path if done.data is None else done.data, record)
                except Exception as exc:  # served whole; not kept: the next request fetches
                    log.warning(
                        "%s: fetched on demand but not stored: %s",
                        flight.relative_path,
                        describe_error(exc),
                    )
                else:
                    self._kept[key] = (flight.key, record)
                    while len(self._kept) > _KEPT_REMEMBERED:
                        self._kept.popitem(last=False)
                    log.info(
                        "%s: fetched on demand and stored (%d bytes)",
                        flight.relative_path,
                        done.size,
                    )
        except trio.Cancelled:
            flight.error = UpstreamFailed("the server is stopping")
            raise
        except Exception as exc:
            flight.error = exc
            log.warning(
                "%s: fetching on demand failed: %s", flight.relative_path, describe_error(exc)
            )
        finally:
            if not flight.done and flight.error is None:  # (no request waits for ever)
                flight.error = UpstreamFailed("the download ended without the file")
            if self._flights.get(key) is flight:
                del self._flights[key]
            self._ahead.pop(key, None)
            self._ended_at[key] = trio.current_time()
            ended, self._ended = self._ended, trio.Event()
            ended.set()
            flight.ended = True
            for attempt in attempts:
                attempt.remove()  # (an adopted file is no longer there: nothing happens)
            flight.close_files()
            flight.notify()

    async def _fetch(
        self, flight: Flight, remote: MissingArtifact, attempts: list[_Attempt]
    ) -> _Attempt:
        """The validated body (:meth:`_download`), with its attempts' writers in a nursery
        of their own.  What fails comes out plain, never in a group: a cancellation (the
        server stopping, which cancels the download and the writers alike) as
        ``trio.Cancelled``, else the download's own error."""
        try:
            async with trio.open_nursery() as writers:
                try:
                    return await self._download(flight, remote, attempts, writers)
                finally:
                    for attempt in attempts:
                        attempt.abandon()
        except BaseExceptionGroup as group:
            cancelled, others = group.split(trio.Cancelled)
            error = first_error(cancelled if cancelled is not None else group)
            if cancelled is None and others is not None and len(others.exceptions) > 1:
                raise  # (several failures at once: kept together)
            raise error from error.__cause__

    async def declared(self, unit_id: int, relative_path: str) -> MissingArtifact | None:
        """What the store records of a file not stored (its remote URLs, size, digests), or
        None when it is stored (or gone) after all; nothing is fetched.

        One query reads ahead the files of the next units too (a client fetching a
        repository asks for its files in order): a request for one of them within
        ``_AHEAD_TTL`` seconds takes what was read, without a query (at worst, a file
        stored meanwhile by another process is fetched once more: adopting and attaching
        it again changes nothing).  Lookups run one at a time; a request waits for the
        running one, which may bring its file.
        """
        key = (unit_id, relative_path)
        waited = False
        while True:
            hit = self._ahead.get(key)
            if hit is not None and trio.current_time() - hit[0] < _AHEAD_TTL:
                return hit[1]  # (dropped when its flight ends: then it may be stored)
            looking = self._looking
            if looking is None or waited:
                break
            await looking.wait()
            waited = True
        self._looking = looking = trio.Event()
        began = trio.current_time()
        try:
            missing = await self.store.missing_artifacts(after_id=unit_id - 1, limit=_AHEAD)
        finally:
            if self._looking is looking:
                self._looking = None
            looking.set()
        ended_at = self._ended_at
        found = None
        for item in missing:
            where = (item.unit_id, item.relative_path)
            if where == key:
                found = item
            elif where not in self._flights and ended_at.get(where, -math.inf) < began:
                # (neither being fetched, nor fetched since the lookup began: it may be
                # stored now)
                self._ahead[where] = (began, item)
        while len(self._ahead) > 4 * _AHEAD:  # (the oldest first)
            del self._ahead[next(iter(self._ahead))]
        if len(ended_at) > 4 * _AHEAD:  # (only the ends after a running lookup began count)
            oldest = trio.current_time() - 2 * _AHEAD_TTL
            for where in [w for w, t in ended_at.items() if t < oldest]:
                del ended_at[where]
        return found

    # -- keeping the validated files: adopted and attached in batches -------------------

    async def _keep(self, flight: Flight, source: str | bytes, record: ArtifactRecord) -> None:
        """Have the committer adopt the file (its temp file's path, or its bytes) and
        attach it to its unit; return once that is committed (raises what failed it)."""
        if self._nursery is None:
            raise UpstreamFailed("the server is stopping")
        item = _Keep(flight.unit_id, flight.relative_path, source, record)
        self._keeping.append(item)
        self._wake_committer.set()
        await item.done.wait()
        if item.error is not None:
            raise item.error

    async def _committer(self) -> None:
        """Adopt and attach the files validated meanwhile, a batch at a time: one storage
        sync (``syncfs``) and one commit for every file of the batch, instead of an fsync
        and a transaction each.  A started batch is shielded: it ends committed or failed,
        never half-done."""
        try:
            while True:
                await self._wake_committer.wait()
                self._wake_committer = trio.Event()
                batch, self._keeping = self._keeping, []
                if batch:
                    with trio.CancelScope(shield=True):
                        await self._commit_batch(batch)
        finally:
            for item in self._keeping:  # (stopping: never started)
                item.error = UpstreamFailed("the server is stopping")
                item.done.set()
            self._keeping = []

    async def _commit_batch(self, batch: list[_Keep]) -> None:
        try:
            # A writer's lease from the first file placed until the rows that refer to
            # them are committed: gc, which removes stored files without a row, waits
            # (without it, a gc running meanwhile deleted files whose rows then came).
            async with self.store.lease():
                await self._adopt_and_fill(batch)
        except Exception as exc:
            for item in batch:
                item.error = item.error or exc
        finally:
            for item in batch:
                item.done.set()

    async def _adopt_and_fill(self, batch: list[_Keep]) -> None:
        # every file of the batch in one worker thread (small ones written from memory)
        outcomes = await self.storage.adopt_many(
            [
                FileToAdopt(item.source, item.record.sha256, item.record.size, item.record.digests)
                for item in batch
            ],
            sync=False,
        )
        adopted: list[_Keep] = []
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):  # (this file only)
                item.error = outcome
            else:
                adopted.append(item)
        if adopted:
            fills: dict[int, dict[str, ArtifactRecord]] = {}
            for item in adopted:
                fills.setdefault(item.unit_id, {})[item.relative_path] = item.record
            try:
                await self.storage.sync()
                await self.store.fill_artifacts(fills)
            except Exception as exc:
                for item in adopted:
                    item.error = exc

    async def _remote(self, flight: Flight) -> MissingArtifact | None:
        """Where the file can be fetched (the unit's remote artifact), or None when it is
        stored after all (``flight.stored`` then says where)."""
        item = await self.declared(flight.unit_id, flight.relative_path)
        if item is not None:
            if not item.urls:
                raise LookupError("no remote URL was recorded for this file")
            if item.size is not None:
                flight.size = item.size if flight.size is None else flight.size
            for name, value in item.digests.items():
                flight.expected.setdefault(name, value)
            return item
        record = await self.find_stored(flight.key, flight.unit_id, flight.relative_path)
        if record is None:
            raise LookupError("the unit no longer holds this file")
        flight.stored = record
        return None

    async def find_stored(
        self, key: UnitKey, unit_id: int, relative_path: str
    ) -> ArtifactRecord | None:
        """The record of the file of unit *unit_id* (of *key*) as the store has it now
        (one query), or None: for a file :meth:`declared` no longer finds missing, stored
        since by this app or by another process (a sync, a fill)."""
        units = await self.store.find_units([key])
        info = units.get(key)
        if info is None or info.id != unit_id:
            return None
        return info.artifacts.get(relative_path)

    async def _download(
        self,
        flight: Flight,
        remote: MissingArtifact,
        attempts: list[_Attempt],
        writers: trio.Nursery,
    ) -> _Attempt:
        """The upstream body, from the first of the remote's URLs that serves it whole."""
        assert self._downloader is not None
        errors: list[BaseException] = []
        for url in remote.urls:

            def consumer(url: str = url) -> _Attempt:
                previous = flight.attempt
                attempt = _Attempt(flight, self.storage, url, writers)
                attempts.append(attempt)
                flight.attempt = attempt
                if previous is not None:
                    previous.abandon()
                    previous.forget()  # (no request sends more of it: see _answer)
                    previous.remove()  # (open until the flight ends: a request may read it)
                    flight.notify()  # the requests reading it stop
                self.upstream_gets += 1
                return attempt

            try:
                return await self._downloader.stream(url, consumer)
            except (DownloadError, OSError) as exc:
                errors.append(exc)
                log.info("%s: %s", flight.relative_path, describe_error(exc))
        raise errors[-1] if errors else LookupError("no remote URL")


def _whole_first(ex: Responder, flight: Flight) -> bool:
    """Whether the response must wait for the validated whole before it starts: a file of
    no declared size, asked over HTTP/1.0.  Without a length, such a client reads the body
    up to the connection's close (no chunked framing), so a response cut short would look
    complete to it; once validated, the file is sent with its length (from the temp file,
    as to a request that fell behind), or the failure is a ``502``."""
    return flight.size is None and ex.http_version == "1.0"


def short_of_descriptors(error: BaseException) -> bool:
    """Whether an ``EMFILE`` or ``ENFILE`` is behind *error*: the server's want of file
    descriptors (for the store's database, an upstream connection, a temp file), a
    moment's overload rather than a failure of what was asked for."""
    return any(StorageWriteError.out_of_descriptors(cause) for cause in error_chain(error))


def _ignore(_: object) -> None:
    """(the outcome of a thread whose result nobody waits for)"""


def _reason(error: BaseException) -> str:
    """A short reason for a 502 (never a credential: the errors redact their URLs)."""
    if isinstance(
        error, TriofetchError | StoreError | LookupError | UpstreamFailed | ValidationFailed
    ):
        text = str(error)
    else:
        text = type(error).__name__
    return "the upstream could not be fetched: " + text.splitlines()[0][:300]
