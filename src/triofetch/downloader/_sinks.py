"""Writing and hashing bodies in worker threads: temp files, verification, placement.

Owns what happens to a body's bytes once they are received: the temp file of one attempt
(:class:`_Sink`), its hashers, the check of size and digests against the plan, the atomic
move to a destination, the thread that finishes small files in batches
(:class:`_SmallFiles`) and the threads that write and hash a large body batch by batch
while the loop receives the next (:class:`_LargeFiles`).  None of it is HTTP: this module
must not know transports, responses, timeouts, retries or credentials — the request side
(``_core``) hands it bytes.

The names keep their leading underscore: they are the downloader's internals, reached by
``_core`` and by the tests that drive the threads directly.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import trio

from .._digests import MultiHasher, hash_constructor, update_all
from .._groups import collapse_single, first_error, leaves
from ..errors import DigestMismatch, DownloadError, SizeMismatch, TempFileError
from ._plan import FetchPlan
from ._result import place_file

__all__ = [
    "_FLUSH_BYTES",
    "_SMALL_BYTES",
    "_LargeFiles",
    "_Sink",
    "_SmallFiles",
]

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
#: a download's hashers are split between two threads only if two cores are free for them
#: (the cores this process may run on, where the system says)
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _verify(plan: FetchPlan, size: int, digests: Mapping[str, str], url: str) -> None:
    """Raise if the body's size or digests are not the ones *plan* expects."""
    expected_size = plan.expected_size
    if expected_size is not None and size != expected_size:
        raise SizeMismatch(expected_size, size, url=url)
    for algorithm, expected in plan.expected_digests.items():
        if digests[algorithm] != expected:
            raise DigestMismatch(algorithm, expected, digests[algorithm], url=url)


class _Sink:
    """The temp file of one attempt and its hashers.  Methods run in worker threads."""

    __slots__ = ("_fd", "_hasher", "path", "placed", "plan", "url")

    def __init__(self, path: str, plan: FetchPlan, url: str) -> None:
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
        try:
            self._write_chunks(chunks)
        except OSError as exc:
            raise self._failed(exc) from exc

    def _failed(self, error: OSError) -> TempFileError:
        """The error of a failed write, create or close of the temp file."""
        return TempFileError(error, os.path.dirname(self.path) or ".", url=self.url)

    def _write_chunks(self, chunks: list[bytes]) -> None:
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
            place_file(self.path, destination, self.url)
            self.path = destination
            self.placed = True
        return digests

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)  # (where a network file system reports a failed write)
            except OSError as exc:
                raise self._failed(exc) from exc

    def discard(self) -> None:
        """Close and remove the temp file (safe to call from the Trio loop: two syscalls).
        Never raises: it runs while another error is on its way."""
        with contextlib.suppress(OSError, TempFileError):
            self.close()
        if not self.placed:
            # (any OSError: on a read-only file system, unlinking a file that was never
            # created fails with EROFS)
            with contextlib.suppress(OSError):
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
    was queued meanwhile, until the queue is empty.  The thread is not started anew for
    every batch: waking a sleeping thread and getting the GIL back from a busy loop costs
    more than a batch of small files, and the next batch would wait for its leading task's
    turn on the loop — time in which every task waits for the thread and the loop has
    nothing to do.

    Cancellation works as in :func:`trio.to_thread.run_sync`: a task cancelled while its
    file is still queued takes it out of the queue and raises at once (nothing was written);
    one cancelled after the thread took its file waits for that batch to come back and
    returns its result, so when :meth:`finish` returns or raises, the file is whole or was
    never written, never in between or still in the thread's hands.  :meth:`wait_idle`
    waits for the thread to end (the downloader's ``aclose``): no thread outlives the
    downloader.
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
    a round trip through the Trio scheduler (with a thread call per batch, the hashing
    threads of a download would sit idle while the scheduler got round to them), and it
    gives its ``threads`` token back whenever it runs dry, so feeders of other downloads
    always get their turn.
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


@contextlib.contextmanager
def _temp_file_error_first() -> Iterator[None]:
    """A writer thread's :class:`TempFileError` that came beside the body's own error:
    a thread cannot be interrupted, so a batch being written when the connection broke
    (or the body grew too large) still fails, and the nursery raises both.  The
    TempFileError is raised alone (no other attempt could write either); beside a
    cancellation, the cancellation goes on alone (the temp file is discarded all the same);
    beside anything else (a bug), the group stays as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        temp, rest = group.split(TempFileError)
        if temp is None or rest is None:
            raise
        cancelled, others = rest.split(trio.Cancelled)
        if cancelled is not None:
            if others is None:
                raise cancelled from None
            raise
        if not all(isinstance(exc, DownloadError) for exc in leaves(rest)):
            raise
        error = first_error(temp)
        raise error from error.__cause__


class _LargeFiles:
    """Large bodies, written and hashed batch by batch in worker threads.

    The body goes in batches (about :data:`_FLUSH_BYTES`) to consumer tasks that hash and
    write each one in a worker thread while the loop receives the next ones (at most
    ``_PIPELINE_DEPTH`` batches wait between them): the bytes stream at the pace of the
    slower of the two instead of the sum of both.  With several digests, one consumer
    writes and two hash, the hashers split in two groups of about equal cost, each consumer
    with its own thread and at its own pace (none waits for another's batch to end), so that
    one download can use two cores — if there are two for it beside the other large
    downloads hashing at the moment (more hashing threads than cores only cost switches and
    CPU).
    """

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter
        #: large bodies being hashed now
        self.hashing = 0

    @contextlib.asynccontextmanager
    async def writing(self, sink: _Sink) -> AsyncIterator[Callable[[list[bytes]], Awaitable[None]]]:
        """``async with large.writing(sink) as put``: ``await put(batch)`` hands a batch to
        the threads; leaving the block waits until every batch is hashed and written.  An
        error of a thread cancels the block and comes out of it."""
        self.hashing += 1
        try:
            hasher = sink.hasher
            # this body is counted in ``hashing``: split only with two cores to spare
            halves = hasher.halves() if 2 * self.hashing <= _CORES else None
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
            with collapse_single(), _temp_file_error_first():
                async with trio.open_nursery() as nursery:
                    for feeder in feeders:
                        nursery.start_soon(feeder.run, self._limiter)

                    async def put(batch: list[bytes]) -> None:
                        for feeder in feeders:
                            await feeder.put(batch)

                    try:
                        yield put
                    finally:
                        for feeder in feeders:
                            feeder.close()
        finally:
            self.hashing -= 1

    async def finish(self, sink: _Sink, chunks: list[bytes], size: int) -> dict[str, str]:
        """Write the last *chunks*, then verify the file and place it (in a worker thread)."""
        return await trio.to_thread.run_sync(sink.finish, chunks, size, limiter=self._limiter)
