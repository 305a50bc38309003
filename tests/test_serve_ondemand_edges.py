"""On-demand serving at its edges: an upstream body longer than declared, the server stopping
mid-download, a store lookup racing a flight that stores its file.

``OnDemandFiles`` is driven directly, with a scripted upstream (a stand-in for the
``Downloader`` feeding its consumer chosen chunks) and a responder that records what a
request was sent, and through the app on hypercorn with a FaultServer upstream.  Each of
these found a defect of the memory window, the writer task or the read-ahead lookups when
they were new (they fail on the code before the fixes).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import triofetch
from tests.test_serve_ondemand import Site, site, units_for  # noqa: F401 (fixture)
from triofetch import open_store
from triofetch.serve import _ondemand
from triofetch.serve._ondemand import OnDemandFiles, Refusal, UpstreamFailed
from triofetch.store import Store
from triofetch.testing import FaultServer, Slow


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- a harness: OnDemandFiles with a scripted upstream ----------------------------------


class ScriptedDownloader:
    """Feeds the consumer the given chunks, one by one (a pause after each), then whatever
    *after* does (default: finish)."""

    def __init__(self, chunks: list[bytes], pause: float = 0.02, hang: bool = False) -> None:
        self.chunks = chunks
        self.pause = pause
        self.hang = hang

    async def stream(self, url: str, consumer: Callable[[], Any]) -> Any:
        c = consumer()
        for chunk in self.chunks:
            await c.feed(chunk)
            await trio.sleep(self.pause)
        if self.hang:
            await trio.sleep_forever()
        return await c.finish()


@dataclass
class FakeResponder:
    """A :class:`~triofetch.serve._ondemand.Responder` that records what it was sent."""

    head: bool = False
    http_version: str = "1.1"
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    sent: bytearray = field(default_factory=bytearray)
    #: set once the first bytes of the body were sent
    sending: trio.Event = field(default_factory=trio.Event)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, headers

    async def body(self, data: bytes, *, more: bool = False) -> None:
        self.sent += data
        if data:
            self.sending.set()
        await trio.lowlevel.checkpoint()

    async def error(self, status: int, detail: str = "") -> None:
        self.status = status


@dataclass
class Harness:
    store: Store
    unit_id: int
    key: Any
    name: str
    declared_size: int
    declared_sha: str


async def _store_with(
    http_server: FaultServer, tmp_path: Path, name: str, data: bytes
) -> AsyncIterator[Harness]:
    http_server.add_file(f"/up/{name}", data)
    async with open_store(None, root=tmp_path / "root") as store:
        async with triofetch.Downloader() as dl:
            report = await triofetch.ContentUnitCreator(store, dl, policy="on_demand").run(
                units_for(http_server, {name: data}), repository="r"
            )
        assert report.ok
        (missing,) = await store.missing_artifacts("r")
        yield Harness(store, missing.unit_id, missing.key, name, len(data), sha(data))


@pytest.fixture
async def harness(http_server: FaultServer, tmp_path: Path) -> AsyncIterator[Harness]:
    data = bytes(range(256)) * (200_000 // 256) + b"x" * (200_000 % 256)
    assert len(data) == 200_000
    async for h in _store_with(http_server, tmp_path, "f.bin", data):
        yield h


def files_for(h: Harness, downloader: Any) -> OnDemandFiles:
    return OnDemandFiles(
        h.store, downloader=downloader, limiter=trio.CapacityLimiter(8), chunk_size=16 * 1024
    )


async def _serve(files: OnDemandFiles, h: Harness, ex: FakeResponder) -> object:
    try:
        return await files.serve(ex, h.key, h.unit_id, h.name, h.declared_size, h.declared_sha, [])
    except UpstreamFailed as exc:
        return exc


# -- 1. a body longer than declared: the last byte is sent before validation -------------


async def test_an_upstream_body_longer_than_declared_is_never_sent_complete(
    harness: Harness,
) -> None:
    """The unit declares 200 000 bytes; the upstream sends those 200 000 (in 4 chunks)
    and then more.  ``feed`` raises ValidationFailed (size exceeded) but bumps
    ``attempt.size`` first (without putting the chunk in the window): a request's limit
    (``attempt.size - 1``) is then past the declared size, so it sends every declared
    byte from the window -- a complete response (Content-Length bytes) of unvalidated
    bytes -- before it notices the failure."""
    h = harness
    good = bytes(range(256)) * (200_000 // 256) + b"x" * (200_000 % 256)
    chunks = [good[i : i + 50_000] for i in range(0, 200_000, 50_000)] + [b"y" * 200_000]
    files = files_for(h, ScriptedDownloader(chunks))
    ex = FakeResponder()
    with trio.fail_after(10):
        async with files.running():
            outcome = await _serve(files, h, ex)
            await files.wait_idle()
    assert ex.status == 200
    assert dict(ex.headers)[b"content-length"] == b"200000"
    assert isinstance(outcome, UpstreamFailed)
    # the invariant: a response whose body fails validation never gets its last byte
    assert len(ex.sent) < h.declared_size, (
        f"sent {len(ex.sent)} of {h.declared_size} bytes: a complete response although "
        "the upstream body failed validation (size exceeded)"
    )
    assert await h.store.missing_artifacts("r") != []


async def test_over_http_a_body_longer_than_declared_is_never_complete(site: Site) -> None:  # noqa: F811
    """The same through the app and a real upstream: the upstream's file grew (the
    declared bytes, a pause, then more).  The client must never see a complete response."""
    from tests.test_serve_ondemand import BIG

    site.remote.add_file("/up/dir/big.bin", BIG + b"z" * 300_000, faults=[Slow(0.3, len(BIG))])
    reply = await site.get("dir/big.bin")
    assert reply.status == 200 and int(reply.headers["content-length"]) == len(BIG)
    assert len(reply.body) < len(BIG), "a complete response of a body that failed validation"


# -- 2. the server stopping while a writer task runs: requests hang -----------------------


async def test_stopping_mid_download_ends_the_requests(harness: Harness) -> None:
    """The server stops while a large body is being fetched (its writer task started).
    The writers' nursery then raises a group of two Cancelled (the download's and the
    writer's): ``collapse_single`` leaves a group of two as it is, ``_fly``'s ``except
    trio.Cancelled`` misses it, ``flight.error`` stays None -- and a request following
    the flight waits for a change that never comes."""
    h = harness
    good = bytes(range(256)) * 400
    files = files_for(h, ScriptedDownloader([good[:80_000], good[80_000:]], hang=True))
    ex = FakeResponder()
    outcome: list[object] = []
    flights: list[_ondemand.Flight] = []
    answered = trio.Event()

    async def request() -> None:
        outcome.append(await _serve(files, h, ex))
        answered.set()

    async with trio.open_nursery() as outer:
        async with files.running():
            outer.start_soon(request)
            with trio.fail_after(5):
                await ex.sending.wait()
            flights.extend(files._flights.values())
        # the app stopped (its lifespan ended): the request must end, not wait forever
        with trio.move_on_after(3) as waited:
            await answered.wait()
        if waited.cancelled_caught:
            outer.cancel_scope.cancel()
    (flight,) = flights
    assert flight.ended
    assert outcome, (
        "the request still waits on a flight that ended (server stopped); "
        f"flight.error={flight.error!r}, done={flight.done}"
    )
    assert isinstance(outcome[0], UpstreamFailed | Refusal)


# -- 3. read-ahead: a lookup racing a flight caches a file this process just stored --------


async def test_a_file_stored_here_is_not_read_ahead_as_missing_again(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """A lookup of the store (for unit A) runs while the flight of B -- taken from what an
    earlier lookup read ahead -- fetches B, stores it and ends (its entry dropped).  The
    lookup's rows, read before B was stored, then put B back in ``_ahead`` as missing, and
    the next request for B within ``_AHEAD_TTL`` fetches it from the upstream again,
    although this very process stored it (the docstring allows that only for a file
    "stored meanwhile by another process")."""
    a_data, b_data = b"file a\n", b"file b\n"
    for name, data in (("a.txt", a_data), ("b.txt", b_data)):
        http_server.add_file(f"/up/{name}", data)
    async with open_store(None, root=tmp_path / "root") as store:
        async with triofetch.Downloader() as dl:
            report = await triofetch.ContentUnitCreator(store, dl, policy="on_demand").run(
                units_for(http_server, {"a.txt": a_data, "b.txt": b_data}), repository="r"
            )
        assert report.ok
        a, b = sorted(await store.missing_artifacts("r"), key=lambda m: m.unit_id)
        assert (a.relative_path, b.relative_path) == ("a.txt", "b.txt")

        class OneFile:
            async def stream(self, url: str, consumer: Callable[[], Any]) -> Any:
                c = consumer()
                await c.feed(b_data)
                return await c.finish()

        files = OnDemandFiles(
            store, downloader=OneFile(), limiter=trio.CapacityLimiter(8), chunk_size=16384
        )
        lookup = store.missing_artifacts
        slow = False

        async def slow_lookup(*args: Any, **kwargs: Any) -> Any:
            rows = await lookup(*args, **kwargs)
            if slow:
                await trio.sleep(0.5)  # (the rows were read before B was stored)
            return rows

        store.missing_artifacts = slow_lookup  # type: ignore[method-assign]
        with trio.fail_after(10):
            async with files.running():
                assert await files.declared(a.unit_id, "a.txt") is not None  # B read ahead
                slow = True
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(files.declared, a.unit_id, "a.txt")  # a slow lookup
                    await trio.sleep(0.05)
                    first = FakeResponder()
                    await files.serve(first, b.key, b.unit_id, "b.txt", None, None, [])
                    await files.wait_idle()
                    assert bytes(first.sent) == b_data and files.upstream_gets == 1
                assert [m.relative_path for m in await lookup("r")] == ["a.txt"]  # B stored
                second = FakeResponder()
                outcome = await files.serve(second, b.key, b.unit_id, "b.txt", None, None, [])
                await files.wait_idle()
        # B is stored: the second request should be answered from the storage
        assert files.upstream_gets == 1, "B fetched again from the upstream"
        assert not isinstance(outcome, str), outcome


# -- 4. gc while a file fetched on demand is stored --------------------------------------------


async def test_gc_never_runs_between_storing_a_file_and_recording_it(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """The app placed a fetched file in the storage, then recorded it, without a writer's
    lease: a gc in between (it removes stored files without a row) deleted the file, and
    the row that came next pointed at nothing.  A gc tried at that very moment now finds
    the lease held and gives up, and the store stays whole."""
    data = b"kept on demand\n" * 100
    async for h in _store_with(http_server, tmp_path, "kept.bin", data):
        await _gc_while_storing(h, data)


async def _gc_while_storing(h: Harness, data: bytes) -> None:
    from triofetch.errors import StoreBusy
    from triofetch.testing import check_store

    fill = h.store.fill_artifacts
    tried: list[str] = []

    async def gc_then_fill(*args: Any, **kwargs: Any) -> Any:
        # (the file is placed, its row not yet written: the moment a gc must not run)
        try:
            report = await h.store.collect_garbage(wait=0)
        except StoreBusy:
            tried.append("busy")
        else:
            tried.append(f"ran: {report}")
        return await fill(*args, **kwargs)

    h.store.fill_artifacts = gc_then_fill  # type: ignore[method-assign]

    class Upstream:
        async def stream(self, url: str, consumer: Callable[[], Any]) -> Any:
            c = consumer()
            await c.feed(data)
            return await c.finish()

    files = files_for(h, Upstream())
    with trio.fail_after(10):
        async with files.running():
            await _serve(files, h, FakeResponder())
            await files.wait_idle()
    assert tried == ["busy"]
    assert await check_store(h.store) == []
    assert await h.store.missing_artifacts("r") == []
