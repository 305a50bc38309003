"""The thread that finishes small files (``_SmallFiles``), driven directly.

Real files and real worker threads; a gate (a ``threading.Event``) holds a batch open in the
thread so that the tests can queue files behind it and cancel their tasks at chosen
moments: while queued (never taken) and while their file is in the batch being finished.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, strategies as st

from triofetch.downloader import _sinks as _downloader
from triofetch.downloader._plan import FetchPlan as _Plan
from triofetch.downloader._sinks import _Sink, _SmallFiles


def plan(tmp: Path, body: bytes, destination: Path | None = None) -> _Plan:
    return _Plan(
        {"sha256": hashlib.sha256(body).hexdigest()},
        len(body),
        ("sha256",),
        {},
        str(tmp) + "/",
        None if destination is None else str(destination),
    )


class Gates:
    """Holds every batch in the thread until the test opens that batch's gate.

    ``after_work``: the run finishes its files first, then waits (the files exist, the run
    has not ended); otherwise it waits before touching any file.
    """

    def __init__(self) -> None:
        self.events = [threading.Event() for _ in range(16)]
        self.runs: list[list[str]] = []
        self.threads: list[int] = []
        self.after_work = False

    def open(self, run: int) -> None:
        self.events[run].set()


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch) -> Gates:
    g = Gates()
    real = _downloader._finish_all

    def gated(jobs: list[_downloader._Job]) -> None:
        run = len(g.runs)
        g.runs.append([Path(job.sink.path).name for job in jobs])
        g.threads.append(threading.get_ident())
        if g.after_work:
            real(jobs)
        assert g.events[run].wait(10), "the test never opened the gate"
        if not g.after_work:
            real(jobs)

    monkeypatch.setattr(_downloader, "_finish_all", gated)
    return g


async def wait_for(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - state changed by worker threads too
            await trio.sleep(0.002)


async def finish(small: _SmallFiles, tmp: Path, name: str, body: bytes, **kw: Any) -> None:
    sink = _Sink(str(tmp / name), plan(tmp, body, **kw), f"http://127.0.0.1/{name}")
    digests = await small.finish(sink, [body], len(body))
    assert digests == {"sha256": hashlib.sha256(body).hexdigest()}


async def cancellable(
    small: _SmallFiles, tmp: Path, name: str, body: bytes, scope: trio.CancelScope,
    seen: list[str], **kw: Any,
) -> None:  # fmt: skip
    """Like the downloader: on cancellation, discard the sink (a no-op while a run has it)."""
    sink = _Sink(str(tmp / name), plan(tmp, body, **kw), f"http://127.0.0.1/{name}")
    with scope:
        await small.finish(sink, [body], len(body))
    if scope.cancelled_caught:
        sink.discard()
        seen.append(f"{name} cancelled")
    else:
        seen.append(f"{name} finished")


def files(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


async def test_files_queued_during_a_batch_go_in_the_next_one_same_thread(
    tmp_path: Path, gates: Gates
) -> None:
    limiter = trio.CapacityLimiter(2)
    small = _SmallFiles(limiter)
    bodies = {f"f{i}": f"body {i}".encode() * (i + 1) for i in range(6)}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish, small, tmp_path, "f0", bodies["f0"])
        await wait_for(lambda: len(gates.runs) == 1)
        for i in range(1, 6):
            nursery.start_soon(finish, small, tmp_path, f"f{i}", bodies[f"f{i}"])
        await wait_for(lambda: len(small._queue) == 5)
        assert limiter.borrowed_tokens == 1  # one thread, holding one token
        gates.open(0)
        await wait_for(lambda: len(gates.runs) == 2)
        gates.open(1)
    await small.wait_idle()
    assert gates.runs[0] == ["f0"]
    assert sorted(gates.runs[1]) == ["f1", "f2", "f3", "f4", "f5"]
    assert len(gates.runs) == 2
    assert len(set(gates.threads)) == 1  # the second batch did not wait for a new thread
    for name, body in bodies.items():
        assert (tmp_path / name).read_bytes() == body
    assert not small._running and not small._queue and limiter.borrowed_tokens == 0


async def test_cancelled_while_queued_is_never_written(tmp_path: Path, gates: Gates) -> None:
    small = _SmallFiles(trio.CapacityLimiter(2))
    body = b"x" * 1000
    scope = trio.CancelScope()
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish, small, tmp_path, "lead", body)
        await wait_for(lambda: len(gates.runs) == 1)
        nursery.start_soon(cancellable, small, tmp_path, "queued", body, scope, seen)
        await wait_for(lambda: len(small._queue) == 1)
        scope.cancel()
        await wait_for(lambda: bool(seen))
        assert not small._queue  # out of the queue at once
        gates.open(0)
    await small.wait_idle()
    assert seen == ["queued cancelled"]
    assert gates.runs == [["lead"]]  # no batch for it
    assert files(tmp_path) == ["lead"]
    assert not small._running


@pytest.mark.parametrize("after_work", [False, True], ids=["before-write", "after-write"])
async def test_cancelled_while_its_file_is_in_a_running_batch(
    tmp_path: Path, gates: Gates, after_work: bool
) -> None:
    """A waiter cancelled while the batch holding its file is being finished waits for that
    batch, as ``trio.to_thread.run_sync`` waits for its thread, and gets its whole file: it
    never returns while the thread may still write a file it would then leave behind."""
    gates.after_work = after_work
    small = _SmallFiles(trio.CapacityLimiter(2))
    body = b"z" * 3000
    scope = trio.CancelScope()
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish, small, tmp_path, "lead", body)
        await wait_for(lambda: len(gates.runs) == 1)
        nursery.start_soon(finish, small, tmp_path, "c", body)
        await wait_for(lambda: len(small._queue) == 1)
        nursery.start_soon(cancellable, small, tmp_path, "b", body, scope, seen)
        await wait_for(lambda: len(small._queue) == 2)
        gates.open(0)  # the thread takes what was queued meanwhile: [c, b]
        await wait_for(lambda: len(gates.runs) == 2)
        assert gates.runs[1] == ["c", "b"]
        if after_work:
            await wait_for(lambda: (tmp_path / "b").exists())  # written, run not over
        scope.cancel()
        await trio.sleep(0.05)
        assert seen == []  # still waiting for the batch
        assert (tmp_path / "b").exists() == after_work
        gates.open(1)
    assert seen == ["b finished"]
    assert files(tmp_path) == ["b", "c", "lead"]
    assert (tmp_path / "b").read_bytes() == body
    await small.wait_idle()
    assert not small._running and not small._queue


async def test_a_file_queued_as_the_thread_ends_gets_a_new_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread found the queue empty and is ending; a file queued before the loop hears
    of it is not left behind: its task is woken to start the next thread."""
    small = _SmallFiles(trio.CapacityLimiter(2))
    ending = threading.Event()
    go_on = threading.Event()
    real = _SmallFiles._drained

    def drained(self: _SmallFiles, result: object) -> None:
        ending.set()
        assert go_on.wait(10)
        real(self, result)

    monkeypatch.setattr(_SmallFiles, "_drained", drained)
    with trio.fail_after(10):
        await _late_file(small, tmp_path, ending, go_on)
    await small.wait_idle()
    assert files(tmp_path) == ["first", "late"]
    assert not small._running and not small._queue


async def _late_file(
    small: _SmallFiles, tmp_path: Path, ending: threading.Event, go_on: threading.Event
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish, small, tmp_path, "first", b"1" * 100)
        await wait_for(ending.is_set)  # the thread has drained the queue, not yet ended
        ending.clear()
        nursery.start_soon(finish, small, tmp_path, "late", b"2" * 200)
        await wait_for(lambda: len(small._queue) == 1 and small._queue[0].parked)
        go_on.set()


async def test_the_thread_waits_for_a_threads_token(tmp_path: Path, gates: Gates) -> None:
    """The finishing thread holds one of the downloader's ``threads`` tokens; with none free
    it starts once one is given back."""
    limiter = trio.CapacityLimiter(1)
    holder = object()
    limiter.acquire_on_behalf_of_nowait(holder)
    small = _SmallFiles(limiter)
    gates.open(0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish, small, tmp_path, "f", b"f" * 500)
            await trio.sleep(0.05)
            assert gates.runs == [] and small._running  # waiting for the token
            limiter.release_on_behalf_of(holder)
    await small.wait_idle()
    assert gates.runs == [["f"]] and files(tmp_path) == ["f"]
    assert limiter.borrowed_tokens == 0


@given(
    cancels=st.lists(st.sampled_from([None, 0, 1, 2, 5]), min_size=1, max_size=40),
    pause=st.sampled_from([0.0, 0.0005, 0.002]),
)
def test_random_cancellations_leave_every_file_right_or_gone(
    tmp_path_factory: pytest.TempPathFactory, cancels: list[int | None], pause: float
) -> None:
    """Many files at once, some of their tasks cancelled after a random number of schedule
    points (while queued, while their batch is in the thread, or after): every task that was
    not cancelled gets its file whole; a task that raised Cancelled left no file, already
    when it raised (whether the thread had taken its file or not); nothing is left queued."""
    tmp = tmp_path_factory.mktemp("small")
    real = _downloader._finish_all

    def slow(jobs: list[_downloader._Job]) -> None:  # a slower disk: more overlap
        real(jobs)
        time.sleep(pause)

    async def main() -> dict[str, str]:
        small = _SmallFiles(trio.CapacityLimiter(2))
        outcome: dict[str, str] = {}

        async def one(i: int, cancel_after: int | None) -> None:
            name = f"f{i}"
            body = f"body {i} ".encode() * (50 + i)
            sink = _Sink(str(tmp / name), plan(tmp, body), f"http://127.0.0.1/{name}")
            with trio.CancelScope() as scope:
                if cancel_after is not None:
                    scope.deadline = trio.current_time() + cancel_after * 0.0005
                try:
                    digests = await small.finish(sink, [body], len(body))
                except BaseException:
                    sink.discard()
                    raise
                assert digests["sha256"] == hashlib.sha256(body).hexdigest()
                assert (tmp / name).read_bytes() == body
                outcome[name] = "finished"
            if scope.cancelled_caught:
                outcome[name] = "cancelled"

        async with trio.open_nursery() as nursery:
            for i, cancel_after in enumerate(cancels):
                nursery.start_soon(one, i, cancel_after)
        # every task has returned: no file may still be in the thread's hands
        on_disk = {p.name for p in tmp.iterdir()}
        assert on_disk == {name for name, how in outcome.items() if how == "finished"}
        await small.wait_idle()
        assert not small._queue and not small._running
        return outcome

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_downloader, "_finish_all", slow)
        outcome = trio.run(main)
    assert len(outcome) == len(cancels)
    on_disk = {p.name for p in tmp.iterdir()}
    assert on_disk == {name for name, how in outcome.items() if how == "finished"}
