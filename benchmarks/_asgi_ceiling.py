"""The ceiling under the content app: its HTTP server with nothing of the app in it.

    python benchmarks/_asgi_ceiling.py ROOT

Serves every file under *ROOT* of at most 1 MiB, read into memory at start, with hypercorn's
Trio worker configured exactly as ``triofetch serve`` configures it
(:func:`triofetch.serve.serve_app`), on 127.0.0.1 with a free port.  The ASGI application is
trivial: a ``GET`` of a file's path is answered with its bytes from memory (``Content-Length``
only), anything else with a 404 — no store, no index, no thread, no file read per request.
What ``triofetch serve`` reaches on many small files is measured beside what this reaches:
the per-request cost of the server itself (``bench_serve``'s small workload).

Prints ``Serving ROOT at http://127.0.0.1:PORT/ (Ctrl-C to stop)`` on stderr once it listens,
like ``triofetch serve``; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from triofetch.serve import serve_app

MOST = 1024 * 1024


def load(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size <= MOST:
            files["/" + path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def make_app(files: dict[str, bytes]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = files.get(scope["path"])
        status = 200 if body is not None else 404
        body = body if body is not None else b"not found\n"
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def main(root: Path) -> None:
    app = make_app(load(root))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

        async def stop() -> None:
            async for _ in signals:
                return

        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve_app(
                    app, port=0, shutdown_trigger=stop, task_status=task_status
                )
            )
            print(f"Serving {root} at {urls[0]}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: python benchmarks/_asgi_ceiling.py ROOT")
    trio.run(main, Path(sys.argv[1]))
