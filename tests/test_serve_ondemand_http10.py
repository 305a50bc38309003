"""An on-demand file of no declared size, asked over HTTP/1.0, over real HTTP (hypercorn).

An HTTP/1.1 client gets such a file chunked, so a response cut short (the upstream broke
off, or its bytes failed validation) lacks its last chunk: the client sees an error.  An
HTTP/1.0 client has no chunked framing: a body without a length is read up to the
connection's close, so a response cut short looked complete (``curl --http1.0``: exit 0,
200, the file's strong ETag, wrong or missing bytes; nginx proxies with HTTP/1.0 by
default).  Such a response now waits for the validated whole and sends it with its
``Content-Length``, or answers ``502``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

import triofetch
from tests.test_serve import Reply, parse_reply, raw
from tests.test_serve_ondemand import dechunk
from triofetch import DeclarativeArtifact, DeclarativeUnit, open_store
from triofetch.serve import ContentApp, make_app, serve_app
from triofetch.store import Store
from triofetch.testing import Fault, FaultServer, Reset, WrongBytes

#: larger than the window of bytes in memory (2 MiB): the late bytes are read from the
#: temp file
DATA = os.urandom(3_000_000)
SHA = hashlib.sha256(DATA).hexdigest()
NAME = "od.bin"


@dataclass
class Site:
    remote: FaultServer
    store: Store
    app: ContentApp
    port: int

    def plan(self, faults: list[Fault]) -> None:
        """The upstream serves the file chunked (no Content-Length), after *faults*."""
        self.remote.add_file(f"/up/{NAME}", DATA, content_length=False, faults=faults)

    async def settle(self) -> None:
        with trio.fail_after(10):
            await self.app.on_demand.wait_idle()


@pytest.fixture
async def site(http_server: FaultServer, tmp_path: Path) -> AsyncIterator[Site]:
    """``/r/od.bin``: recorded ``on_demand``, with its sha256 but no size."""
    http_server.add_file(f"/up/{NAME}", DATA, content_length=False)
    art = DeclarativeArtifact(http_server.url(f"/up/{NAME}"), NAME, {"sha256": SHA}, None)
    unit = DeclarativeUnit("file", (NAME, SHA), {"relative_path": NAME}, [art])
    async with open_store(None, root=tmp_path / "root") as store:
        async with triofetch.Downloader() as dl:
            report = await triofetch.ContentUnitCreator(store, dl, policy="on_demand").run(
                [unit], repository="r"
            )
        assert report.ok and report.artifacts_downloaded == 0
        async with triofetch.Downloader(retries=1, backoff=0.01) as upstream:
            app = make_app(store, refresh=0, downloader=upstream)
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(partial(serve_app, app, host="127.0.0.1", port=0))
                yield Site(http_server, store, app, int(urls[0].rsplit(":", 1)[1]))
                nursery.cancel_scope.cancel()


@dataclass
class Reply10:
    status: int
    headers: dict[str, str]
    body: bytes
    #: the connection was reset (the client saw an error)
    reset: bool


async def get10(port: int, target: str = f"/r/{NAME}") -> Reply10:
    """``GET target HTTP/1.0`` on a raw socket, read to EOF."""
    data = bytearray()
    reset = False
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {target} HTTP/1.0\r\n\r\n".encode())
            try:
                while chunk := await stream.receive_some(1 << 16):
                    data += chunk
            except trio.BrokenResourceError:
                reset = True
    reply = parse_reply(bytes(data))
    return Reply10(reply.status, reply.headers, reply.body, reset)


def taken_as_whole(reply: Reply10) -> bytes | None:
    """The bytes an HTTP/1.0 client takes as the whole file (None: it sees a failure)."""
    if reply.status != 200 or reply.reset:
        return None
    length = reply.headers.get("content-length")
    if length is not None and int(length) != len(reply.body):
        return None  # (short of its length: an error for the client)
    return reply.body


async def test_a_good_upstream_is_sent_whole_with_its_length(site: Site) -> None:
    reply = await get10(site.port)
    assert reply.status == 200 and not reply.reset
    assert reply.headers["content-length"] == str(len(DATA))
    assert reply.headers["etag"] == f'"{SHA}"'
    assert reply.body == DATA
    await site.settle()
    assert await site.store.missing_artifacts("r") == []  # stored meanwhile
    # ... and served from the storage afterwards, with its length
    again = await get10(site.port)
    assert again.status == 200 and again.body == DATA
    assert again.headers["content-length"] == str(len(DATA))


async def test_wrong_upstream_bytes_are_never_a_complete_200(site: Site) -> None:
    site.plan([WrongBytes()])
    reply = await get10(site.port)
    assert taken_as_whole(reply) in (None, DATA)
    assert reply.status == 502
    assert b"digest" in reply.body.lower() or b"sha256" in reply.body.lower()
    await site.settle()
    assert len(await site.store.missing_artifacts("r")) == 1  # nothing stored
    # the next request fetches again, and gets the file
    ok = await get10(site.port)
    assert ok.status == 200 and ok.body == DATA


async def test_an_upstream_reset_mid_body_is_never_a_short_200(site: Site) -> None:
    """The upstream resets after 1 MB; the downloader's retry brings the whole file:
    the HTTP/1.0 client gets it whole (it used to get the first attempt's bytes, cut at
    the close, as a 200)."""
    site.plan([Reset(after_bytes=1_000_000)])
    reply = await get10(site.port)
    assert taken_as_whole(reply) in (None, DATA)
    assert reply.status == 200 and reply.body == DATA
    assert reply.headers["content-length"] == str(len(DATA))
    assert site.remote.count(f"/up/{NAME}") == 2


async def test_upstream_resets_past_the_retries_are_a_502(site: Site) -> None:
    site.plan([Reset(after_bytes=1_000_000), Reset(after_bytes=1_000_000)])
    reply = await get10(site.port)
    assert taken_as_whole(reply) in (None, DATA)
    assert reply.status == 502
    await site.settle()
    assert len(await site.store.missing_artifacts("r")) == 1


async def test_http11_still_streams_chunked_before_validation(site: Site) -> None:
    """HTTP/1.1 is unchanged: chunked framing, no length, the bytes sent before the
    validation; a failure cuts the body before its last chunk."""
    site.plan([WrongBytes()])
    broken: Reply = await raw(site.port, f"/r/{NAME}")
    assert broken.status == 200
    assert "content-length" not in broken.headers
    assert broken.headers["transfer-encoding"] == "chunked"
    assert broken.body and not broken.body.endswith(b"0\r\n\r\n")  # (no last chunk)
    await site.settle()

    reply: Reply = await raw(site.port, f"/r/{NAME}")
    assert reply.status == 200
    assert "content-length" not in reply.headers
    assert reply.headers["transfer-encoding"] == "chunked"
    assert dechunk(reply.body) == DATA
