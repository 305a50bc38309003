"""A transport of your own: the ``Transport`` and ``Response`` protocols, implemented.

``MemoryTransport`` answers every request from a dictionary of URLs and bodies, without a
network (handy in tests); a ``Downloader`` uses it like any transport, with its limits,
retries and validation.  Run it with ``python docs/examples/custom_transport.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field

import trio

import triofetch


# [start-transport]
@dataclass
class MemoryResponse:  # a triofetch.Response
    status_code: int  # the final response's status (any status: 404 is not an error)
    reason: str  # its reason phrase
    url: str  # the final URL, after redirects
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:  # raw bytes, never decoded
        for start in range(0, len(self.body), 1024):
            await trio.lowlevel.checkpoint()
            yield self.body[start : start + 1024]


@dataclass
class MemoryTransport:  # a triofetch.Transport
    files: Mapping[str, bytes]
    requests: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[MemoryResponse]:
        self.requests.append(url)
        await trio.lowlevel.checkpoint()
        body = self.files.get(url)
        if body is None:
            yield MemoryResponse(404, "Not Found", url, {"content-length": "0"})
        else:
            yield MemoryResponse(200, "OK", url, {"content-length": str(len(body))}, body)

    async def aclose(self) -> None:
        pass


# [end-transport]


async def fetch_from_memory() -> MemoryTransport:
    files = {"http://127.0.0.1:9/a.bin": b"a" * 5000, "http://127.0.0.1:9/b.bin": b"b" * 10}
    # [start-use]
    transport = MemoryTransport(files)
    async with (
        triofetch.Downloader(transport=transport) as dl,
        dl.fetch_many([*files, "http://127.0.0.1:9/c.bin"]) as outcomes,
    ):
        async for outcome in outcomes:
            if outcome.ok:
                data = await trio.Path(outcome.result.path).read_bytes()
                assert hashlib.sha256(data).hexdigest() == outcome.result.sha256
                print(outcome.request.url, "->", outcome.result.size, "bytes")
            else:
                print(outcome.request.url, "->", outcome.error)
    print(dl.transport_name, "transport,", len(transport.requests), "requests")
    # [end-use]
    return transport


def main() -> None:
    assert isinstance(MemoryTransport({}), triofetch.Transport)
    transport = trio.run(fetch_from_memory)
    assert sorted(transport.requests) == [
        "http://127.0.0.1:9/a.bin",
        "http://127.0.0.1:9/b.bin",
        "http://127.0.0.1:9/c.bin",
    ]


if __name__ == "__main__":
    main()
