"""Timeouts of the trio transport without a cancel scope per request: the watchdog closes
the connection of an exchange past its deadline (``triofetch._watch``)."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import triofetch
from tests.rawserver import RawServer, Script
from triofetch._watch import Watchdog

BODY = b"watched bytes\n" * 50


def quiet(request: bytes) -> list[bytes]:
    """Answers ``/ok`` at once and never answers anything else (the connection stays open)."""
    if not request.startswith(b"GET /ok "):
        return []
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY]


def watchdog_tasks() -> list[trio.lowlevel.Task]:
    """The watchdog tasks alive now (they run in Trio's system nursery)."""
    found = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task.name == "triofetch watchdog":
            found.append(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


async def test_a_timed_out_exchange_loses_its_connection_and_the_next_one_works(
    raw: Callable[[Script], Awaitable[RawServer]], tmp_path: Path
) -> None:
    server = await raw(quiet)
    async with triofetch.Downloader(
        transport="trio", temp_dir=tmp_path, retries=0, connect_timeout=0.3
    ) as dl:
        assert len(watchdog_tasks()) == 1
        first = await dl.fetch(f"http://127.0.0.1:{server.port}/ok")
        start = trio.current_time()
        with (
            trio.fail_after(10),
            pytest.raises(triofetch.DownloadTimeout, match=r"connect_timeout=0\.3") as info,
        ):
            await dl.fetch(f"http://127.0.0.1:{server.port}/never")
        assert 0.25 < trio.current_time() - start < 3.0
        assert "/never" in str(info.value)
        idle = [conn for stack in dl._transport._idle.values() for conn in stack]  # type: ignore[union-attr]
        assert idle == []  # the one connection (reused for /never) is gone
        # the connection that timed out was closed, not put back in the pool: the next
        # fetch works (on a new connection)
        again = await dl.fetch(f"http://127.0.0.1:{server.port}/ok")
    assert first.size == again.size == len(BODY)
    assert server.connections == 2
    assert sorted(os.listdir(tmp_path)) == sorted([first.path.name, again.path.name])
    assert watchdog_tasks() == []


async def test_connecting_is_given_up_at_the_deadline(tmp_path: Path) -> None:
    """A listener whose backlog is full never completes a connection: the connect phase
    (before the watchdog has a connection to close) ends at the deadline too."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.socket()
        filler.connect(("127.0.0.1", port))  # takes the only place in the backlog
        fillers.append(filler)
        async with triofetch.Downloader(
            transport="trio", temp_dir=tmp_path, retries=0, connect_timeout=0.3
        ) as dl:
            start = trio.current_time()
            with (
                trio.fail_after(10),
                pytest.raises(triofetch.DownloadTimeout, match=r"connect_timeout=0\.3"),
            ):
                await dl.fetch(f"http://127.0.0.1:{port}/f")
            assert 0.25 < trio.current_time() - start < 3.0
    finally:
        for sock in fillers:
            sock.close()
        listener.close()
    assert os.listdir(tmp_path) == []


async def test_an_error_in_the_body_comes_back_as_it_was(tmp_path: Path) -> None:
    """The watchdog is a system task, not a nursery around the caller's body: the caller's
    own exception is not wrapped in a group."""

    class Mine(Exception):
        pass

    with pytest.raises(Mine) as info:
        async with triofetch.Downloader(transport="trio", temp_dir=tmp_path):
            raise Mine("from the body")
    assert type(info.value) is Mine
    assert watchdog_tasks() == []


def test_watchdog_expires_only_watches_past_their_deadline() -> None:
    closed: list[str] = []

    async def main() -> None:
        dog = Watchdog()
        dog.start()
        try:
            late = dog.watch(trio.current_time() + 10)
            early = dog.watch(trio.current_time() + 50)
            left = dog.watch(trio.current_time() + 1)
            with late, early:
                late.closer = functools.partial(closed.append, "late")
                early.closer = functools.partial(closed.append, "early")
                with left:
                    left.closer = functools.partial(closed.append, "left")
                # 'left' ended before its deadline: never expired
                early.deadline = trio.current_time() + 5  # moved earlier: the dog wakes sooner
                await trio.sleep(6)
                assert closed == ["early"]
                assert early.expired and not late.expired and not left.expired
                await trio.sleep(5)
                assert closed == ["early", "late"]
            assert not left.expired and closed == ["early", "late"]
        finally:
            await dog.aclose()
        assert watchdog_tasks() == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_an_expired_watch_swallows_errors_but_not_interrupts() -> None:
    async def main() -> None:
        dog = Watchdog()  # never started: expiry by hand
        watch = dog.watch(0.0)
        with watch:
            watch.expire()
            raise trio.ClosedResourceError("closed by the watchdog")
        assert watch.cancelled_caught

        other = dog.watch(0.0)
        with pytest.raises(KeyboardInterrupt), other:
            other.expire()
            raise KeyboardInterrupt
        assert not other.cancelled_caught

        fine = dog.watch(trio.current_time() + 60)
        with pytest.raises(ValueError), fine:
            raise ValueError("not expired: not ours to swallow")
        assert not fine.cancelled_caught
        await dog.aclose()

    trio.run(main)


def test_expire_all_expires_every_watch_at_once() -> None:
    """``expire_all`` (its owner closing) expires the watches in progress whatever their
    deadlines, and only those."""
    closed: list[str] = []

    async def main() -> None:
        dog = Watchdog()
        dog.start()
        try:
            one = dog.watch(trio.current_time() + 10)
            two = dog.watch(trio.current_time() + 50)
            done = dog.watch(trio.current_time() + 1)
            with done:
                pass
            with one, two:
                one.closer = functools.partial(closed.append, "one")
                two.closer = functools.partial(closed.append, "two")
                dog.expire_all()
                assert sorted(closed) == ["one", "two"]
                assert one.expired and two.expired and not done.expired
                raise trio.ClosedResourceError("closed by expire_all")  # swallowed
            assert dog.watches == set()
            await trio.sleep(60)
            assert sorted(closed) == ["one", "two"]  # (not expired twice)
        finally:
            await dog.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
