"""A raw loopback HTTP server that says exactly what each test scripts (including what a
polite server never would), as a fixture: ``server = await raw(script)``.

A script gets each request's head and returns the byte strings to send for it; ``b"<close>"``
closes the connection, a number waits that many seconds, and an empty list sends nothing
(the connection stays open, the client waits).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import pytest
import trio

Script = Callable[[bytes], list[bytes]] | Callable[[bytes], list[bytes | float]]


class RawServer:
    """Answers every request on a connection with the next bytes the script gives."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        #: connections open now (the client has not closed them)
        self.open = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.open += 1
        # (a client closing a connection with bytes it never read resets it: that ends the
        # connection here, not the test)
        try:
            with contextlib.suppress(trio.BrokenResourceError):
                await self._converse(stream)
        finally:
            self.open -= 1

    async def _converse(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                request, _, buf = buf.partition(b"\r\n\r\n")
                self.requests.append(request)
                for piece in self.script(request):
                    if isinstance(piece, float | int):
                        await trio.sleep(piece)
                    elif piece == b"<close>":
                        return
                    else:
                        await stream.send_all(piece)


@pytest.fixture
async def raw(nursery: trio.Nursery) -> AsyncIterator[Callable[[Script], RawServer]]:
    async def start(script: Script) -> RawServer:
        server = RawServer(script)
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        return server

    yield start  # type: ignore[misc]
