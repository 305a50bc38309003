"""On-demand and streamed files through the content app (issue #18, items 3 and 4).

A store whose units were created ``on_demand`` (recorded with their remote URLs, nothing
downloaded) is served by the app on hypercorn over 127.0.0.1; the remote is a FaultServer.
The first request for a file fetches it, streams it while it arrives, checks size and
digests at the end, then stores it and attaches it to its unit; any number of concurrent
requests share one upstream GET; a failed validation aborts every begun response (no
client takes bad bytes as complete), stores nothing, and the next request tries again; a
client that goes away cancels nothing for the others; an upstream failure is a 502.  Units
created ``streamed`` are served from the remote on every request and never stored.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import triofetch
from tests.test_serve import Reply, raw
from triofetch import DeclarativeArtifact, DeclarativeUnit, open_store
from triofetch.serve import ContentApp, _ondemand, make_app, serve_app
from triofetch.store import MissingArtifact, Store
from triofetch.testing import Fault, FaultServer, Slow, Status, Truncate, WrongBytes, check_store

SMALL = b"a small file, fetched on demand\n"
BIG = os.urandom(600_000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Site:
    """The remote (a FaultServer), a store with repository ``r``, and the app serving it."""

    remote: FaultServer
    store: Store
    app: ContentApp
    port: int
    files: dict[str, bytes]

    def upstream(self, name: str) -> int:
        return self.remote.count(f"/up/{name}")

    async def get(self, name: str, method: str = "GET", **headers: str) -> Reply:
        return await raw(
            self.port, f"/r/{name}", method, {k.replace("_", "-"): v for k, v in headers.items()}
        )

    async def settle(self) -> None:
        """Wait until the app is done storing what it fetched (a response ends as soon as
        its bytes are validated; keeping the file follows)."""
        with trio.fail_after(10):
            await self.app.on_demand.wait_idle()

    async def missing(self) -> list[str]:
        """The files of ``r`` not stored, once the app has settled."""
        await self.settle()
        return sorted(m.relative_path for m in await self.store.missing_artifacts("r"))


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (no extensions, no trailers: as hypercorn sends it)."""
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += body[:size]
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def units_for(
    remote: FaultServer, files: dict[str, bytes], *, declare: bool = True
) -> list[DeclarativeUnit]:
    units = []
    for name, data in files.items():
        art = DeclarativeArtifact(
            remote.url(f"/up/{name}"),
            name,
            {"sha256": sha(data)} if declare else {},
            len(data) if declare else None,
        )
        key = (name, sha(data)) if declare else (name,)
        units.append(DeclarativeUnit("file", key, {"relative_path": name}, [art]))
    return units


@pytest.fixture
async def site(
    http_server: FaultServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Site]:
    """Files SMALL, BIG and an undeclared one (no size, no digest) recorded ``on_demand``
    (or ``streamed``, with ``@pytest.mark.parametrize('policy', ['streamed'])``)."""
    policy = getattr(request, "param", "on_demand")
    files = {"small.txt": SMALL, "dir/big.bin": BIG}
    for name, data in files.items():
        http_server.add_file(f"/up/{name}", data)
    http_server.add_file("/up/plain.txt", b"no size or digest declared\n")
    units = units_for(http_server, files)
    units += units_for(http_server, {"plain.txt": b"no size or digest declared\n"}, declare=False)
    async with open_store(None, root=tmp_path / "root") as store:
        async with triofetch.Downloader() as dl:
            report = await triofetch.ContentUnitCreator(store, dl, policy=policy).run(
                units, repository="r"
            )
        assert report.ok and report.artifacts_downloaded == 0
        app = make_app(store, refresh=0)
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, app, host="127.0.0.1", port=0))
            yield Site(http_server, store, app, int(urls[0].rsplit(":", 1)[1]), files)
            nursery.cancel_scope.cancel()


def plan(site: Site, name: str, faults: list[Fault]) -> None:
    """Serve *name* upstream again, after *faults*."""
    data = site.files.get(name, b"no size or digest declared\n")
    site.remote.add_file(f"/up/{name}", data, faults=faults)


async def test_first_request_fetches_streams_and_stores(site: Site) -> None:
    reply = await site.get("dir/big.bin")
    assert reply.status == 200 and reply.body == BIG
    assert reply.headers["content-length"] == str(len(BIG))
    assert reply.headers["etag"] == f'"{sha(BIG)}"'
    assert site.upstream("dir/big.bin") == 1
    assert await site.missing() == ["plain.txt", "small.txt"]
    # served from the storage from now on: no more upstream requests
    for _ in range(2):
        again = await site.get("dir/big.bin")
        assert again.status == 200 and again.body == BIG
        assert again.headers["accept-ranges"] == "bytes"  # (the stored file's answer)
    ranged = await site.get("dir/big.bin", Range="bytes=10-19")
    assert ranged.status == 206 and ranged.body == BIG[10:20]
    assert site.upstream("dir/big.bin") == 1
    await site.settle()
    assert await check_store(site.store) == []


async def test_undeclared_files_are_stored(site: Site, tmp_path: Path) -> None:
    """A file whose unit declares no size: a small one is sent whole once validated (its
    length known then); a large one is sent chunked while it arrives."""
    reply = await site.get("plain.txt")
    assert reply.status == 200 and "etag" not in reply.headers
    assert reply.body == b"no size or digest declared\n"
    assert reply.headers["content-length"] == str(len(reply.body))
    assert "plain.txt" not in await site.missing()
    stored = await site.get("plain.txt")
    assert stored.headers["etag"] == f'"{sha(stored.body)}"'
    assert site.upstream("plain.txt") == 1
    # a large one, in a repository of its own
    site.remote.add_file("/up/large-plain.bin", BIG, faults=[Slow(0.01, 64 * 1024)])
    units = units_for(site.remote, {"large-plain.bin": BIG}, declare=False)
    async with triofetch.Downloader() as dl:
        await triofetch.ContentUnitCreator(site.store, dl, policy="on_demand").run(
            units, repository="plain"
        )
    chunked = await raw(site.port, "/plain/large-plain.bin")
    assert chunked.status == 200 and chunked.headers.get("transfer-encoding") == "chunked"
    assert dechunk(chunked.body) == BIG
    await site.missing()  # (waits until the app stored it)
    assert await site.store.missing_artifacts("plain") == []


async def test_head_and_conditional_requests_fetch_nothing(site: Site) -> None:
    head = await site.get("small.txt", "HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(SMALL))
    assert head.headers["etag"] == f'"{sha(SMALL)}"'
    cached = await site.get("small.txt", If_None_Match=f'"{sha(SMALL)}"')
    assert cached.status == 304
    assert site.upstream("small.txt") == 0
    assert await site.missing() == ["dir/big.bin", "plain.txt", "small.txt"]


async def test_head_of_a_file_of_no_declared_size_has_no_length(site: Site) -> None:
    """``HEAD`` of a file whose unit declares no size cannot know its length without
    fetching it (which ``HEAD`` never does): it has no ``Content-Length`` (RFC 9110 9.3.2
    lets a server omit a header determined only while generating the content), as a
    ``GET`` streaming a large such file has none; once stored, its headers are ``GET``'s."""
    head = await site.get("plain.txt", "HEAD")
    assert head.status == 200 and head.body == b""
    assert "content-length" not in head.headers and "etag" not in head.headers
    assert site.upstream("plain.txt") == 0
    got = await site.get("plain.txt")
    assert got.headers["content-length"] == str(len(got.body))  # (known once fetched)
    await site.settle()
    stored = await site.get("plain.txt", "HEAD")
    again = await site.get("plain.txt")
    assert {k: v for k, v in stored.headers.items() if k != "date"} == {
        k: v for k, v in again.headers.items() if k != "date"
    }
    assert stored.headers["content-length"] == str(len(got.body))


async def test_once_stored_head_ranges_and_the_index_say_so(site: Site) -> None:
    """A file the app fetched and stored is answered as a stored file from then on, ``HEAD``
    first: it was answered from what the unit declares until some ``GET`` happened to look
    it up again — without ``Accept-Ranges`` (which a ``GET`` had), so a download manager
    probing with ``HEAD`` took it for a file that cannot be resumed — and the index page
    said ``not stored yet``."""
    got = await site.get("dir/big.bin")
    assert got.status == 200 and got.body == BIG
    await site.settle()
    head = await site.get("dir/big.bin", "HEAD")
    again = await site.get("dir/big.bin")
    assert head.status == again.status == 200 and head.body == b""
    assert {k: v for k, v in head.headers.items() if k != "date"} == {
        k: v for k, v in again.headers.items() if k != "date"
    }
    assert head.headers["accept-ranges"] == "bytes"
    listing = (await site.get("dir/")).body.decode()
    row = next(line for line in listing.splitlines() if "big.bin" in line)
    assert "not stored yet" not in row
    assert "not stored yet" in next(
        line for line in (await site.get("")).body.decode().splitlines() if "small.txt" in line
    )
    assert site.upstream("dir/big.bin") == 1


async def test_a_file_another_process_stored_is_answered_as_stored_by_head(
    site: Site, tmp_path: Path
) -> None:
    """Files stored by someone else (``fill_missing`` through a store of its own, as a
    ``triofetch export`` or another server would) after the app made the version's table:
    ``HEAD`` answers them as ``GET`` does, from the storage (``Accept-Ranges``), nothing
    fetched.  It answered from what the unit declares, as for a file not stored yet (no
    ``Accept-Ranges``), until some ``GET`` looked the file up again."""
    assert "not stored yet" in (await site.get("")).body.decode()  # (the table is made)
    async with open_store(None, root=tmp_path / "root") as other:
        async with triofetch.Downloader() as dl:
            report = await triofetch.ContentUnitCreator(other, dl).fill_missing("r")
        assert report.ok and report.artifacts_downloaded == 3
    fetched = {name: site.upstream(name) for name in ("small.txt", "dir/big.bin", "plain.txt")}
    for name in ("small.txt", "dir/big.bin", "plain.txt"):
        head = await site.get(name, "HEAD")
        got = await site.get(name)
        assert head.status == got.status == 200 and head.body == b"", name
        assert head.headers["accept-ranges"] == "bytes", name
        assert {k: v for k, v in head.headers.items() if k != "date"} == {
            k: v for k, v in got.headers.items() if k != "date"
        }, name
    # conditional requests too: a 304 with the stored file's headers
    cached = await site.get("dir/big.bin", If_None_Match=f'"{sha(BIG)}"')
    assert cached.status == 304 and cached.headers["accept-ranges"] == "bytes"
    assert {n: site.upstream(n) for n in fetched} == fetched  # (the app fetched nothing)


async def test_twenty_clients_share_one_upstream_get(site: Site) -> None:
    plan(site, "dir/big.bin", [Slow(0.02, 64 * 1024)])
    replies: list[Reply] = []

    async def client() -> None:
        replies.append(await site.get("dir/big.bin"))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(client)
    assert len(replies) == 20
    assert all(r.status == 200 and r.body == BIG for r in replies)
    assert site.upstream("dir/big.bin") == 1
    assert "dir/big.bin" not in await site.missing()


async def test_bytes_are_streamed_as_they_arrive(site: Site) -> None:
    """The client has the first bytes while the upstream body is still arriving."""
    plan(site, "dir/big.bin", [Slow(0.05, 32 * 1024)])  # about 1 s in all
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", site.port)
        async with stream:
            await stream.send_all(b"GET /r/dir/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 64 * 1024:
                got += await stream.receive_some(1 << 16)
            # well before the end: still being fetched, not stored yet
            assert site.app.on_demand.in_flight == 1
            missing = await site.store.missing_artifacts("r")
            assert "dir/big.bin" in {m.relative_path for m in missing}
            body = got.partition(b"\r\n\r\n")[2]
            assert BIG.startswith(body)
            while len(body) < len(BIG):
                body += await stream.receive_some(1 << 16)
            assert body == BIG


async def test_a_request_behind_the_memory_window_reads_the_temp_file(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests are sent the bytes from memory as they arrive; one that joins (or falls)
    further behind than the window kept in memory reads the temp file, and every request
    gets the whole body."""
    monkeypatch.setattr(_ondemand, "_WINDOW", 64 * 1024)
    offsets: list[int] = []
    pread = os.pread

    def counting(fd: int, count: int, offset: int) -> bytes:
        offsets.append(offset)
        return pread(fd, count, offset)

    monkeypatch.setattr(os, "pread", counting)
    plan(site, "dir/big.bin", [Slow(0.3, 256 * 1024)])  # 256 KiB, a pause, 256 KiB...
    replies: list[Reply] = []

    async def client(delay: float) -> None:
        await trio.sleep(delay)
        replies.append(await site.get("dir/big.bin"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client, 0)
            nursery.start_soon(client, 0.45)  # joins with 512 KiB received
    assert [r.body == BIG for r in replies] == [True, True]
    assert site.upstream("dir/big.bin") == 1
    # the late one read its start from the file (before, every request read the file past
    # its first 64 KiB, which came from memory: never from offset 0)
    assert 0 in offsets
    assert "dir/big.bin" not in await site.missing()


@pytest.mark.parametrize("trusted", [True, False])
async def test_one_lookup_of_the_store_serves_the_next_files(
    site: Site, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    """The lookup of a file's remote reads the next units' too: requests for the other
    files soon after make no query of their own (what was read ahead is trusted for
    ``_AHEAD_TTL`` seconds: with 0, each request makes its own)."""
    if not trusted:
        monkeypatch.setattr(_ondemand, "_AHEAD_TTL", 0.0)
    queries = 0
    lookup = site.store.missing_artifacts

    async def counting(*args: Any, **kwargs: Any) -> list[MissingArtifact]:
        nonlocal queries
        queries += 1
        return await lookup(*args, **kwargs)

    # (in the order of the units: a lookup reads ahead the units after its own)
    names = [m.relative_path for m in await site.store.missing_artifacts("r")]
    assert sorted(names) == ["dir/big.bin", "plain.txt", "small.txt"]
    monkeypatch.setattr(site.store, "missing_artifacts", counting)
    for name in names:
        reply = await site.get(name)
        assert reply.status == 200 and reply.body == site.files.get(name, reply.body)
    assert queries == (1 if trusted else len(names))
    assert [site.upstream(n) for n in names] == [1, 1, 1]
    monkeypatch.undo()
    assert await site.missing() == []


async def test_failed_validation_aborts_and_stores_nothing(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream sends other bytes of the right length: the response stops one byte
    short of its Content-Length and the connection closes; nothing is stored, no temp file
    is left; the next request fetches again and succeeds."""
    plan(site, "dir/big.bin", [WrongBytes()])
    with caplog.at_level(logging.DEBUG, logger="hypercorn.error"):
        reply = await site.get("dir/big.bin")
        await site.settle()
    assert reply.status == 200 and int(reply.headers["content-length"]) == len(BIG)
    assert len(reply.body) < len(BIG)  # never complete
    # the cut is the app's own doing (it logs why): one DEBUG line, not hypercorn's ERROR
    # "Error in ASGI Framework" with a traceback
    server = [r for r in caplog.records if r.name == "hypercorn.error"]
    assert [r for r in server if r.levelno >= logging.WARNING or r.exc_info] == []
    cuts = [r.getMessage() for r in server if "cut short" in r.getMessage()]
    assert len(cuts) == 1 and "dir/big.bin" in cuts[0], cuts
    assert await site.missing() == ["dir/big.bin", "plain.txt", "small.txt"]
    storage = site.store.storage
    assert storage is not None
    assert list(storage.temp_dir.iterdir()) == []
    good = await site.get("dir/big.bin")
    assert good.status == 200 and good.body == BIG
    assert site.upstream("dir/big.bin") == 2
    await site.settle()
    assert await check_store(site.store) == []


async def test_curl_fails_on_bad_bytes_then_succeeds(site: Site, tmp_path: Path) -> None:
    """curl, a client no one here wrote, never takes the bad bytes as a complete file."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed by these tests"
    plan(site, "small.txt", [WrongBytes()])
    out = tmp_path / "small.txt"
    cmd = [curl, "-fsS", "-o", str(out), f"http://127.0.0.1:{site.port}/r/small.txt"]
    bad = await trio.run_process(cmd, check=False, capture_stderr=True)
    # a 502 (the bytes all came before the check failed: nothing was sent) or a response
    # cut short: curl fails either way (22, or 18 for a partial file)
    assert bad.returncode in (18, 22, 56), (bad.returncode, bad.stderr)
    assert not out.exists() or out.read_bytes() != SMALL
    good = await trio.run_process(cmd, check=False, capture_stderr=True)
    assert good.returncode == 0, good.stderr
    assert out.read_bytes() == SMALL
    # a large file: the response has begun when the check fails, and is cut short
    plan(site, "dir/big.bin", [WrongBytes()])
    big = tmp_path / "big.bin"
    cmd = [curl, "-fsS", "-o", str(big), f"http://127.0.0.1:{site.port}/r/dir/big.bin"]
    cut = await trio.run_process(cmd, check=False, capture_stderr=True)
    assert cut.returncode in (18, 56), (cut.returncode, cut.stderr)
    assert big.stat().st_size < len(BIG)


async def test_a_client_going_away_cancels_nothing_for_the_others(site: Site) -> None:
    plan(site, "dir/big.bin", [Slow(0.03, 32 * 1024)])
    stayed: list[Reply] = []

    async def leaver() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", site.port)
        await stream.send_all(b"GET /r/dir/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.receive_some(1024)
        await stream.aclose()  # gone after the first bytes

    async def stayer() -> None:
        await trio.sleep(0.05)
        stayed.append(await site.get("dir/big.bin"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leaver)
        nursery.start_soon(stayer)
    assert stayed[0].status == 200 and stayed[0].body == BIG
    assert site.upstream("dir/big.bin") == 1
    assert "dir/big.bin" not in await site.missing()


async def test_upstream_failure_is_a_502(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    plan(site, "small.txt", [Status(404)] * 20)
    with caplog.at_level(logging.INFO, logger="triofetch.serve"):
        reply = await site.get("small.txt")
    assert reply.status == 502
    assert b"404" in reply.body and b"upstream" in reply.body
    assert any(
        "small.txt" in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records
    )
    assert await site.missing() == ["dir/big.bin", "plain.txt", "small.txt"]
    before = site.upstream("small.txt")
    assert (await site.get("small.txt")).status == 502  # tried again, not remembered
    assert site.upstream("small.txt") > before


async def test_a_broken_off_upstream_is_retried(site: Site) -> None:
    """The upstream body stops short once: the downloader tries again; a response that had
    begun is aborted (never complete with the wrong bytes), later ones get the file."""
    plan(site, "dir/big.bin", [Truncate(300_000)])
    first = await site.get("dir/big.bin")
    assert first.status == 200
    assert first.body == BIG or (len(first.body) < len(BIG) and BIG.startswith(first.body))
    second = await site.get("dir/big.bin")
    assert second.status == 200 and second.body == BIG
    assert site.upstream("dir/big.bin") == 2
    assert "dir/big.bin" not in await site.missing()


async def test_a_replaced_attempt_lets_go_of_its_bytes(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the upstream breaks off and the download starts over, the first attempt's
    bytes in memory are let go at once (not when the flight ends): a flight holds one
    window, however many retries."""
    held: list[int] = []
    forget = _ondemand._Attempt.forget

    def recording(attempt: _ondemand._Attempt) -> None:
        held.append(sum(len(chunk) for _, chunk in attempt._window))
        forget(attempt)
        assert not attempt._window and attempt._window_size == 0

    monkeypatch.setattr(_ondemand._Attempt, "forget", recording)
    plan(site, "dir/big.bin", [Truncate(300_000)])
    first = await site.get("dir/big.bin")
    assert first.status == 200 and BIG.startswith(first.body)
    await site.settle()
    assert site.upstream("dir/big.bin") == 2
    assert len(held) == 1 and held[0] > 0  # (the first attempt's bytes, let go)


@pytest.mark.parametrize("site", ["streamed"], indirect=True)
async def test_a_flight_lets_go_of_its_bytes_when_it_ends(site: Site) -> None:
    """The bytes a flight held in memory go when it ends, without waiting for the garbage
    collector (a flight and its attempts refer to each other).  They stayed until a full
    collection, which few objects and large buffers seldom start: a server streaming
    3 MB files to 8 clients grew to 300-400 MB of such windows (70 MB now)."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        for _ in range(5):
            reply = await site.get("dir/big.bin")
            assert reply.status == 200 and reply.body == BIG
            del reply
            await site.settle()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert site.upstream("dir/big.bin") == 5
    assert held < len(BIG), held  # (five flights of BIG each held all of it)


@pytest.mark.parametrize("site", ["streamed"], indirect=True)
async def test_streamed_units_are_never_stored(site: Site) -> None:
    for _ in range(2):
        reply = await site.get("small.txt")
        assert reply.status == 200 and reply.body == SMALL
    assert site.upstream("small.txt") == 2
    assert await site.missing() == ["dir/big.bin", "plain.txt", "small.txt"]
    storage = site.store.storage
    assert storage is not None
    assert list(storage.temp_dir.iterdir()) == []
    assert not storage.path_for(sha(SMALL)).exists()


async def test_without_a_lifespan_the_flights_run_in_a_system_task(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """An ASGI server that sends no lifespan events: the app starts its own service."""
    http_server.add_file("/up/small.txt", SMALL)
    async with open_store(None, root=tmp_path / "root") as store:
        async with triofetch.Downloader() as dl:
            await triofetch.ContentUnitCreator(store, dl, policy="on_demand").run(
                units_for(http_server, {"small.txt": SMALL}), repository="r"
            )
        app = make_app(store)
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            await trio.sleep_forever()
            raise AssertionError

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/r/small.txt", "headers": []}
        with trio.fail_after(10):
            await app(scope, receive, send)
        assert sent[0]["status"] == 200
        assert b"".join(m.get("body", b"") for m in sent[1:]) == SMALL  # type: ignore[misc]
        with trio.fail_after(10):
            await app.on_demand.wait_idle()
        assert await store.missing_artifacts("r") == []


async def test_the_processes_leave_nothing(site: Site) -> None:
    """After requests of every kind, the store is consistent and the temp area empty."""
    await site.get("small.txt")
    await site.get("plain.txt")
    plan(site, "dir/big.bin", [WrongBytes()])
    await site.get("dir/big.bin")
    await site.settle()
    assert await check_store(site.store) == []
