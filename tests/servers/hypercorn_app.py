"""An ASGI app served by hypercorn on Trio (h11 frames every response): ``python -m`` this.

Usage: ``python -m tests.servers.hypercorn_app CERTFILE KEYFILE TOKEN [KEEP_ALIVE]``
(KEEP_ALIVE: seconds an idle connection is kept, hypercorn's default 5).  It listens on two
free ports of 127.0.0.1, TLS (the certificate and key given) and plain, and prints them as one
JSON line (``{"https": port, "http": port}``) once they accept connections; then it serves
until killed.

Routes (sizes are those of :mod:`tests.servers.data`):

- ``/ready``: the TOKEN (the fixture checks it is talking to this very server);
- ``/chunked/SIZE``: the body of SIZE bytes without a Content-Length, so h11 sends it
  chunked, in pieces of varied sizes (1 byte to 64 KiB);
- ``/fixed/SIZE``: the same body with a Content-Length;
- ``/redirect/CODE/PATH...``: status CODE with ``Location: /PATH...`` (relative);
- ``/cut-chunked/SIZE``, ``/cut-fixed/SIZE``: half of the body, chunked or under a
  Content-Length of SIZE, then the app fails: hypercorn drops the connection mid-body;
- ``/connections/TAG``: how many distinct client connections (address and port) made the
  requests carrying ``?tag=TAG`` so far;
- anything else: 404.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import trio

from tests.servers.data import body

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: the piece sizes of chunked bodies, in turn
PIECES = (1, 65536, 4093, 16384, 7, 30000)

#: tag -> the client (address, port) pairs of its requests
CLIENTS: defaultdict[str, set[tuple[str, int]]] = defaultdict(set)

TOKEN = b""


class Cut(Exception):
    """Raised by the app mid-body: hypercorn gives up on the response."""


async def respond(send: Send, status: int, data: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def send_pieces(send: Send, data: bytes, *, more: bool) -> None:
    """Send *data* as several body messages of varied sizes (h11: one chunk each)."""
    offset = 0
    turn = 0
    while offset < len(data):
        piece = data[offset : offset + PIECES[turn % len(PIECES)]]
        offset += len(piece)
        turn += 1
        last = offset >= len(data) and not more
        await send({"type": "http.response.body", "body": piece, "more_body": not last})
    if not data and not more:
        await send({"type": "http.response.body", "body": b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode("ascii"))
    for tag in query.get("tag", []):
        client = scope.get("client")
        if client:
            CLIENTS[tag].add((str(client[0]), int(client[1])))
    parts = scope["path"].strip("/").split("/")
    octets = [(b"content-type", b"application/octet-stream")]
    try:
        if parts == ["ready"]:
            await respond(send, 200, TOKEN, [(b"content-length", b"%d" % len(TOKEN))])
        elif len(parts) == 2 and parts[0] == "chunked":
            await send({"type": "http.response.start", "status": 200, "headers": octets})
            await send_pieces(send, body(int(parts[1])), more=False)
        elif len(parts) == 2 and parts[0] == "fixed":
            data = body(int(parts[1]))
            await respond(send, 200, data, [*octets, (b"content-length", b"%d" % len(data))])
        elif len(parts) >= 3 and parts[0] == "redirect":
            location = ("/" + "/".join(parts[2:])).encode()
            await respond(send, int(parts[1]), b"moved\n", [(b"location", location)])
        elif len(parts) == 2 and parts[0] in ("cut-chunked", "cut-fixed"):
            size = int(parts[1])
            data = body(size)
            headers = list(octets)
            if parts[0] == "cut-fixed":
                headers.append((b"content-length", b"%d" % size))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send_pieces(send, data[: size // 2], more=True)
            raise Cut(f"cut after {size // 2} of {size} bytes")
        elif len(parts) == 2 and parts[0] == "connections":
            count = b"%d" % len(CLIENTS.get(parts[1], ()))
            await respond(send, 200, count, [(b"content-length", b"%d" % len(count))])
        else:
            await respond(send, 404, b"not found\n", [(b"content-length", b"10")])
    except Cut:
        raise
    except ValueError:
        await respond(send, 400, b"bad request\n", [(b"content-length", b"12")])


async def main(certfile: str, keyfile: str, keep_alive: float) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]  # TLS (a certificate is configured)
    config.insecure_bind = ["127.0.0.1:0"]
    config.certfile = certfile
    config.keyfile = keyfile
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.graceful_timeout = 0.5
    config.keep_alive_timeout = keep_alive
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, app, config)
        ports = {url.split("://")[0]: int(url.rsplit(":", 1)[1]) for url in binds}
        print(json.dumps(ports), flush=True)


if __name__ == "__main__":
    certfile, keyfile, token = sys.argv[1:4]
    TOKEN = token.encode()
    trio.run(main, certfile, keyfile, float(sys.argv[4]) if len(sys.argv) > 4 else 5.0)
