"""Closing a downloader under its fetches: the fetches in flight, and what interrupts them.

A downloader's fetches run in its caller's tasks, so its ``aclose`` may come while some are
in flight (started in a nursery outside its ``async with``, or another task closing it).  It
must end them — each raises :class:`WrongContext` in its own task, its temp file removed —
and wait until they have, so that none goes on (or writes into a removed directory) after
the downloader closed.  And it must do so without a cancel scope per fetch: entering and
leaving one is a noticeable share of a small download (see ``_watch.py``, which spares the
``trio`` transport's requests theirs for that reason).  So a fetch that is never
interrupted pays an increment and a decrement, and the interruption uses what is there:

* a fetch counts itself in :attr:`InFlight.count`; once :meth:`InFlight.interrupt` was
  called, the last one to end (:meth:`InFlight.landed`) wakes :meth:`InFlight.wait_landed`;
* a request is ended by what it has anyway: the cancel scope of its time bounds, which the
  downloader registers in :attr:`InFlight.scopes` (a set add and discard), or its ``Watch``
  (the downloader has its watchdog expire every watch: the connection is closed);
* a wait outside a request (a retry's back-off, a rate-limit slot, a limiter with no free
  token, a token refresh) runs in :meth:`InFlight.interruptible`, a cancel scope for the
  wait alone (a fetch that does not wait pays nothing), registered in :attr:`scopes`; an
  interrupted wait raises :class:`WrongContext`.

What is past a request and not a wait for others (the worker thread finishing a file) is
not interrupted: it ends soon, and the fetch then sees the downloader closing, removes its
file and raises.  This module knows nothing of HTTP, transports, files or retries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio

from ..errors import WrongContext

__all__ = ["InFlight", "closed_in_flight"]


def closed_in_flight() -> WrongContext:
    """The error of a fetch that its downloader's ``aclose`` ended."""
    return WrongContext(
        "the Downloader was closed while this download was in flight (it was cancelled "
        "and its temp file removed)"
    )


class InFlight:
    """The fetches in flight of one downloader, and the cancel scopes that end them."""

    __slots__ = ("_landed", "closing", "count", "scopes")

    def __init__(self) -> None:
        #: fetches and streams in flight (each adds one while it runs)
        self.count = 0
        #: :meth:`interrupt` was called: a fetch ending calls :meth:`landed`
        self.closing = False
        #: the cancel scopes that :meth:`interrupt` cancels (requests' and waits')
        self.scopes: set[trio.CancelScope] = set()
        self._landed: trio.Event | None = None

    def reopen(self) -> None:
        """The downloader is open (again): nothing is being closed."""
        self.closing = False

    def interrupt(self) -> None:
        """Cancel every registered scope; scopes registered from now on start cancelled."""
        self.closing = True
        for scope in list(self.scopes):
            scope.cancel()

    def __enter__(self) -> None:
        """``with flight:`` around a fetch counts it in :attr:`count` while it runs (no
        object made: a plain block, the same one for every fetch)."""
        self.count += 1

    def __exit__(self, *exc_info: object) -> None:
        self.count -= 1
        if self.closing:
            self.landed()

    def landed(self) -> None:
        """(Called as a fetch ends, once :attr:`closing`; it has left :attr:`count`.)"""
        if not self.count and self._landed is not None:
            self._landed.set()
            self._landed = None

    async def wait_landed(self) -> None:
        """Wait until no fetch is in flight (after :meth:`interrupt`; two tasks closing the
        downloader at once both wait)."""
        while self.count:
            if self._landed is None:
                self._landed = trio.Event()
            await self._landed.wait()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """``with flight.interruptible(): await ...``: a wait that :meth:`interrupt` ends,
        raising :class:`WrongContext` (a wait that ended first ends as it is)."""
        scope = trio.CancelScope()
        if self.closing:
            scope.cancel()
        self.scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self.scopes.discard(scope)
        if scope.cancelled_caught:
            raise closed_in_flight()

    async def sleep_until(self, deadline: float) -> None:
        """:func:`trio.sleep_until`, ended (with :class:`WrongContext`) by :meth:`interrupt`."""
        with self.interruptible():
            await trio.sleep_until(deadline)
