"""The floor: a minimal HTTP/1.1 client on Trio with no library, a measuring stick for triofetch.

    python benchmarks/floor_client.py JOB.json [--connections=16] [--transport=loop|thread|batched]

Not a peer like the others: it does only what the small-files workload needs, so its time
is what Trio itself costs there, and the gap to ``triofetch`` is triofetch's own (issue 16).
One task per connection takes files from one shared iterator; each sends
``GET path HTTP/1.1`` on its keep-alive connection (absolute-form to the proxy named by
``HTTP_PROXY``, if any), reads the head up to the blank line, takes ``Content-Length``
(nothing else: no chunked bodies, no redirects, no retries), reads the body, checks the
status, size and sha256 against the job, and writes the file to ``DIR/name`` (no temp file,
no rename, not atomic). ``--transport`` says where the file is hashed and written:

- ``loop``: on the Trio loop, with blocking calls (as the aiohttp client does);
- ``thread``: one ``trio.to_thread.run_sync`` per file;
- ``batched``: one worker thread drains a queue of files and hands each batch back to the
  loop in one call (triofetch's way for small files, ``downloader/_sinks.py``).

Exit status 1 on any wrong file or HTTP error. Prints one JSON line with the time spent on
the work itself, like the other clients.
"""

from __future__ import annotations

import time

_t0 = time.perf_counter()

import argparse  # noqa: E402 - the import time of the client is part of what we report
import collections  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import trio  # noqa: E402
from _client_report import cpu_seconds, print_work  # noqa: E402

_RECEIVE = 256 * 1024


def write_file(path: str, body: bytes, sha256: str) -> str:
    """Hash *body* and write it to *path*; the problem, or ""."""
    actual = hashlib.sha256(body).hexdigest()
    if actual != sha256:
        return f"sha256 {actual} != {sha256}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return ""


class Batched:
    """One worker thread drains a queue of (path, body, sha256, event, answer) and hands each
    batch back to the loop with one ``run_sync_soon``."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[str, bytes, str, trio.Event, list[str]]] = (
            collections.deque()
        )
        self._running = False
        self._lock = threading.Lock()
        self._token = trio.lowlevel.current_trio_token()

    async def write(self, path: str, body: bytes, sha256: str) -> str:
        done = trio.Event()
        answer: list[str] = []
        with self._lock:
            self._queue.append((path, body, sha256, done, answer))
            start = not self._running
            self._running = True
        if start:
            trio.lowlevel.start_thread_soon(self._drain, lambda _: None)
        await done.wait()
        return answer[0]

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                batch = list(self._queue)
                self._queue.clear()
            for path, body, sha256, _, answer in batch:
                try:
                    answer.append(write_file(path, body, sha256))
                except OSError as exc:
                    answer.append(str(exc))
            self._token.run_sync_soon(_wake, [item[3] for item in batch])


def _wake(events: list[trio.Event]) -> None:
    for event in events:
        event.set()


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: trio.socket.SocketType | None = None
        self.buf = b""

    async def request(self, target: str, host_header: str) -> tuple[int, bytes]:
        reused = self.sock is not None
        if self.sock is None:
            self.sock = trio.socket.socket()
            await self.sock.connect((self.host, self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        await self.sock.send(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode())
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            data = await self.sock.recv(_RECEIVE)
            if not data and reused and not buf:  # closed while idle: once more, anew
                self.sock.close()
                self.sock = None
                return await self.request(target, host_header)
            if not data:
                raise ConnectionError(f"{self.host}:{self.port} closed the connection")
            buf += data
        head, buf = buf[:end].decode("latin-1"), buf[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields["content-length"])
        while len(buf) < length:
            buf += await self._receive()
        body, self.buf = buf[:length], buf[length:]
        if fields.get("connection", "").lower() == "close":
            self.sock.close()
            self.sock = None
        return status, body

    async def _receive(self) -> bytes:
        assert self.sock is not None
        data = await self.sock.recv(_RECEIVE)
        if not data:
            raise ConnectionError(f"{self.host}:{self.port} closed the connection")
        return data


async def run(job: dict, connections: int, mode: str) -> tuple[int, list[str]]:
    out = job["out"]
    files: Iterator[list] = iter(job["files"])
    proxy = os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy")
    done = 0
    problems: list[str] = []
    batched = Batched() if mode == "batched" else None

    async def worker() -> None:
        nonlocal done
        conn: Connection | None = None
        for url, name, size, sha256 in files:
            parts = urlsplit(url)
            if conn is None:
                where = urlsplit(proxy) if proxy else parts
                conn = Connection(where.hostname or "", where.port or 80)
            status, body = await conn.request(url if proxy else parts.path, parts.netloc)
            path = os.path.join(out, name)
            if status != 200 or len(body) != size:
                problems.append(f"{url}: HTTP {status}, {len(body)} bytes (expected {size})")
                continue
            if mode == "loop":
                problem = write_file(path, body, sha256)
            elif batched is not None:
                problem = await batched.write(path, body, sha256)
            else:
                problem = await trio.to_thread.run_sync(write_file, path, body, sha256)
            if problem:
                problems.append(f"{url}: {problem}")
            else:
                done += 1

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker)
    return done, problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("job")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=0, help="(ignored: one per connection)")
    parser.add_argument("--digests", default="", help="(ignored: sha256 only)")
    parser.add_argument("--transport", default="loop", choices=["loop", "thread", "batched"])
    args = parser.parse_args()
    with open(args.job) as fh:
        job = json.load(fh)
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    done, problems = trio.run(run, job, args.connections, args.transport)
    for problem in problems[:10]:
        print(problem, file=sys.stderr)
    print_work(done, _t0, start_wall, start_cpu)
    return 0 if done == len(job["files"]) and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
