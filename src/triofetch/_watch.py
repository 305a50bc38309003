"""Timeouts for the ``trio`` transport's exchanges without a cancel scope per request.

Entering and leaving a ``trio.CancelScope`` with a deadline is not free (a cancel status
object, two deadline registrations, several context managers), and on a small download it is
a noticeable share of everything the Trio loop does for the file.  The exchanges of the
``trio`` transport are made only of waits on their connection's socket, so there is a
cheaper way to interrupt one: close its connection.  A :class:`Watch` records an exchange's
deadline and how to close its connection; one :class:`Watchdog` task per downloader sleeps
until the earliest deadline and closes the connections of the exchanges that are past
theirs.  The task waiting on that socket then gets an error, which the watch turns into
``cancelled_caught`` — the same interface as the cancel scope it stands in for.

This module owns deadlines and the closing of connections past them; it knows nothing of
HTTP, the transports or the downloader (a watch is told how to close a connection by
whoever holds one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType

import trio

__all__ = ["Watch", "Watchdog"]


class Watchdog:
    """Closes the connections of exchanges past their deadlines (one task, spawned by
    :meth:`start` and ended by :meth:`aclose`: it never outlives its downloader)."""

    def __init__(self) -> None:
        self.watches: set[Watch] = set()
        #: when the task wakes next (the earliest deadline it knows of)
        self.wake_at = math.inf
        self._sleep: trio.CancelScope | None = None
        self._outer = trio.CancelScope()
        self._done = trio.Event()
        self._started = False

    def start(self) -> None:
        """Start the task (a system task: an error in the caller's ``async with`` body does
        not come back wrapped in an exception group)."""
        self._started = True
        trio.lowlevel.spawn_system_task(self._run, name="triofetch watchdog")

    async def aclose(self) -> None:
        """Stop the task and wait until it has ended."""
        self._outer.cancel()
        if self._started:
            with trio.CancelScope(shield=True):
                await self._done.wait()

    def watch(self, deadline: float) -> Watch:
        """A new watch for an exchange that must end by *deadline* (enter it to start
        watching)."""
        return Watch(self, deadline)

    def expire_all(self) -> None:
        """Expire every watch now, whatever its deadline (their owner is closing: the
        exchanges end as if timed out, and the owner tells why)."""
        watches, self.watches = self.watches, set()
        for watch in watches:
            watch.expire()

    def rearm(self, deadline: float) -> None:
        """Wake at *deadline* (earlier than planned)."""
        self.wake_at = deadline
        if self._sleep is not None:
            self._sleep.deadline = deadline

    async def _run(self) -> None:
        try:
            with self._outer:
                while True:
                    with trio.CancelScope(deadline=self.wake_at) as self._sleep:
                        await trio.sleep_forever()
                    self._sleep = None
                    self._expire(trio.current_time())
        finally:
            self._sleep = None
            self._done.set()

    def _expire(self, now: float) -> None:
        earliest = math.inf
        for watch in list(self.watches):
            deadline = watch.deadline
            if deadline <= now:
                self.watches.discard(watch)
                watch.expire()
            elif deadline < earliest:
                earliest = deadline
        self.wake_at = earliest


class Watch:
    """The deadline of one exchange; used like a ``trio.CancelScope`` with a deadline.

    The transport sets :attr:`closer` while the exchange holds a connection (and clears it
    when the connection goes back to the pool).  Past the deadline, the watchdog calls it;
    the error that reaches ``with watch:`` from the closed connection is swallowed and
    :attr:`cancelled_caught` set, as a cancel scope would swallow its ``Cancelled``.
    Waits on anything but the connection are not interrupted.
    """

    __slots__ = ("_deadline", "_dog", "cancelled_caught", "closer", "expired")

    def __init__(self, dog: Watchdog, deadline: float) -> None:
        self._dog = dog
        self._deadline = deadline
        #: closes the connection the exchange holds now, or ends its connecting (set by
        #: the transport), or None
        self.closer: Callable[[], object] | None = None
        #: the deadline passed (the connection, if any, was closed)
        self.expired = False
        #: an error that the expiry caused was swallowed on leaving ``with watch:``
        self.cancelled_caught = False

    @property
    def deadline(self) -> float:
        """When the exchange times out (may be moved while it runs)."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = value
        if value < self._dog.wake_at:
            self._dog.rearm(value)

    def expire(self) -> None:
        """The deadline has passed: close the connection (its waiting task gets an error)."""
        self.expired = True
        closer, self.closer = self.closer, None
        if closer is not None:
            closer()

    def __enter__(self) -> Watch:
        dog = self._dog
        dog.watches.add(self)
        if self._deadline < dog.wake_at:
            dog.rearm(self._deadline)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._dog.watches.discard(self)
        self.closer = None
        # Past the deadline, any error (not a cancellation or an interrupt) came from the
        # closed connection, or raced with it: the exchange timed out.
        if self.expired and isinstance(exc, Exception):
            self.cancelled_caught = True
            return True
        return False
