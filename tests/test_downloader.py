"""The concurrent Downloader against a real loopback HTTP server with fault injection.

Every behaviour runs on each transport (httpx, asks).  Every error path checks the error
type, its message and that no temp file is left behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import triofetch
from tests._fixtures_http import held_at_the_gate
from triofetch.testing import (
    FaultServer,
    Hang,
    Redirect,
    Reset,
    Slow,
    Status,
    Truncate,
    WrongBytes,
)

DATA = os.urandom(200_000)
SHA256 = hashlib.sha256(DATA).hexdigest()


def leftovers(temp_dir: Path) -> list[str]:
    return sorted(p.name for p in temp_dir.iterdir())


def downloader(transport: str, temp_dir: Path, **kw: object) -> triofetch.Downloader:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("read_timeout", 5.0)
    kw.setdefault("connect_timeout", 5.0)
    return triofetch.Downloader(transport=transport, temp_dir=temp_dir, **kw)  # type: ignore[arg-type]


async def test_success_computes_and_checks_digests(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, headers={"X-Extra": "yes"})
    expected = {"sha256": SHA256, "md5": hashlib.md5(DATA).hexdigest()}
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(
            http_server.url("/a.bin"),
            expected_digests=expected,
            expected_size=len(DATA),
            digests=["sha512"],
        )
    assert result.url == http_server.url("/a.bin")
    assert result.size == len(DATA)
    assert result.path.parent == temp_dir
    assert result.path.read_bytes() == DATA
    assert result.digests == {
        "sha256": SHA256,
        "md5": expected["md5"],
        "sha512": hashlib.sha512(DATA).hexdigest(),
    }
    assert result.sha256 == SHA256
    assert result.headers["x-extra"] == "yes"
    assert result.attempts == 1
    assert leftovers(temp_dir) == [result.path.name]


async def test_pulp_digests(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA)
    async with downloader(transport, temp_dir, digests=triofetch.PULP_ALGORITHMS) as dl:
        result = await dl.fetch(http_server.url("/a.bin"))
    assert set(result.digests) == {"sha224", "sha256", "sha384", "sha512"}
    assert result.digests["sha384"] == hashlib.sha384(DATA).hexdigest()


async def test_empty_body(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/empty", b"")
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(http_server.url("/empty"), expected_size=0)
    assert result.size == 0
    assert result.path.read_bytes() == b""
    assert result.sha256 == hashlib.sha256(b"").hexdigest()


async def test_chunked_body(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/c.bin", DATA, content_length=False)
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(http_server.url("/c.bin"), expected_digests={"sha256": SHA256})
    assert result.size == len(DATA)


async def test_500_then_success(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(500), Status(503)])
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(http_server.url("/a.bin"), expected_digests={"sha256": SHA256})
    assert result.attempts == 3
    assert http_server.count("/a.bin") == 3
    assert leftovers(temp_dir) == [result.path.name]


async def test_500_forever_carries_every_attempt(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(500)] * 10)
    async with downloader(transport, temp_dir, retries=2) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(http_server.url("/a.bin"))
    err = info.value
    assert err.status_code == 500
    assert len(err.attempts) == 3
    assert all(isinstance(a, triofetch.HTTPStatusError) for a in err.attempts)
    assert "HTTP 500" in str(err) and "after 3 attempts" in str(err)
    assert http_server.url("/a.bin") in str(err)
    assert http_server.count("/a.bin") == 3
    assert leftovers(temp_dir) == []


async def test_429_honours_retry_after(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(429, headers={"Retry-After": "1"})])
    async with downloader(transport, temp_dir, backoff=0.0) as dl:
        start = trio.current_time()
        result = await dl.fetch(http_server.url("/a.bin"))
        elapsed = trio.current_time() - start
    assert result.attempts == 2
    assert elapsed >= 0.95


async def test_404_is_not_retried(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    async with downloader(transport, temp_dir, retries=5) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(http_server.url("/missing.bin"))
    assert info.value.status_code == 404
    assert len(info.value.attempts) == 1
    assert "HTTP 404" in str(info.value)
    assert http_server.count("/missing.bin") == 1
    assert leftovers(temp_dir) == []


async def test_connection_reset_then_success(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Reset(after_bytes=1000)])
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(http_server.url("/a.bin"), expected_digests={"sha256": SHA256})
    assert result.attempts == 2
    assert leftovers(temp_dir) == [result.path.name]


async def test_connection_reset_forever(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Reset(after_bytes=1000)] * 3)
    async with downloader(transport, temp_dir, retries=2) as dl:
        with pytest.raises(triofetch.TransportError) as info:
            await dl.fetch(http_server.url("/a.bin"))
    assert len(info.value.attempts) == 3
    assert http_server.url("/a.bin") in str(info.value)
    assert leftovers(temp_dir) == []


async def test_connection_refused(transport: str, temp_dir: Path) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with downloader(transport, temp_dir, retries=1) as dl:
        with pytest.raises(triofetch.ConnectionFailed) as info:
            await dl.fetch(f"http://127.0.0.1:{port}/x")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert len(info.value.attempts) == 2
    assert leftovers(temp_dir) == []


async def test_truncated_body(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Truncate(5000)] * 2)
    async with downloader(transport, temp_dir, retries=1) as dl:
        with pytest.raises((triofetch.TruncatedBody, triofetch.SizeMismatch)) as info:
            await dl.fetch(http_server.url("/a.bin"))
    assert len(info.value.attempts) == 2
    assert leftovers(temp_dir) == []


async def test_truncated_then_success(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Truncate(5000)])
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(http_server.url("/a.bin"), expected_digests={"sha256": SHA256})
    assert result.attempts == 2


async def test_wrong_bytes_digest_mismatch(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[WrongBytes()] * 2)
    async with downloader(transport, temp_dir, retries=1) as dl:
        with pytest.raises(triofetch.DigestMismatch) as info:
            await dl.fetch(http_server.url("/a.bin"), expected_digests={"sha256": SHA256})
    err = info.value
    assert err.algorithm == "sha256"
    assert err.expected == SHA256
    assert err.actual != SHA256 and len(err.actual) == 64
    assert SHA256 in str(err) and err.actual in str(err)
    assert len(err.attempts) == 2
    assert leftovers(temp_dir) == []


async def test_wrong_bytes_then_right(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[WrongBytes()])
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(http_server.url("/a.bin"), expected_digests={"sha256": SHA256})
    assert result.attempts == 2 and result.sha256 == SHA256


async def test_size_mismatch_announced(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA)
    async with downloader(transport, temp_dir, retries=0) as dl:
        with pytest.raises(triofetch.SizeMismatch) as info:
            await dl.fetch(http_server.url("/a.bin"), expected_size=len(DATA) + 1)
    assert info.value.expected == len(DATA) + 1
    assert info.value.actual == len(DATA)
    assert f"expected {len(DATA) + 1} bytes, got {len(DATA)}" in str(info.value)
    assert leftovers(temp_dir) == []


async def test_huge_body_stops_reading_past_expected_size(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    big = 64 * 1024 * 1024
    http_server.add_file("/huge", b"x" * big, content_length=False)
    async with downloader(transport, temp_dir, retries=0) as dl:
        with pytest.raises(triofetch.SizeMismatch) as info:
            await dl.fetch(http_server.url("/huge"), expected_size=1000)
    assert info.value.exceeded
    assert "more than 1000" in str(info.value)
    await trio.sleep(0.2)
    assert http_server.bytes_sent("/huge") < big // 2
    assert leftovers(temp_dir) == []


async def test_huge_announced_body_is_not_read(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    size = 2 * 1024 * 1024 * 1024
    http_server.add_generated("/gen", size)
    async with downloader(transport, temp_dir, retries=0) as dl:
        with pytest.raises(triofetch.SizeMismatch):
            await dl.fetch(http_server.url("/gen"), expected_size=10)
    await trio.sleep(0.2)
    assert http_server.bytes_sent("/gen") < size // 100
    assert leftovers(temp_dir) == []


async def test_slow_body_read_timeout(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/slow", DATA, faults=[Slow(2.0, chunk=1000)] * 2)
    async with downloader(transport, temp_dir, retries=1, read_timeout=0.3) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch(http_server.url("/slow"))
    assert "read_timeout=0.3" in str(info.value)
    assert len(info.value.attempts) == 2
    assert leftovers(temp_dir) == []


async def test_slow_but_steady_body_is_fine(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    small = DATA[:20_000]
    http_server.add_file("/slow", small, faults=[Slow(0.05, chunk=2000)])
    async with downloader(transport, temp_dir, read_timeout=1.0) as dl:
        result = await dl.fetch(http_server.url("/slow"))
    assert result.size == len(small)
    assert result.attempts == 1


async def test_hang_connect_timeout(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/hang", DATA, faults=[Hang(5.0)] * 2)
    async with downloader(transport, temp_dir, retries=0, connect_timeout=0.3) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch(http_server.url("/hang"))
    assert "connect_timeout=0.3" in str(info.value)
    assert leftovers(temp_dir) == []


async def test_total_timeout(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/slow", DATA[:20_000], faults=[Slow(0.1, chunk=1000)])
    async with downloader(transport, temp_dir, retries=0, total_timeout=0.4) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch(http_server.url("/slow"))
    assert "total_timeout=0.4" in str(info.value)
    assert leftovers(temp_dir) == []


async def test_redirects(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/final.bin", DATA)
    http_server.add_file("/hop2", b"", faults=[Redirect("/final.bin", code=301)])
    http_server.add_file("/hop1", b"", faults=[Redirect("/hop2")])
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(http_server.url("/hop1"), expected_digests={"sha256": SHA256})
    assert result.url == http_server.url("/final.bin")


async def test_too_many_redirects(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/loop", b"", faults=[Redirect("/loop")] * 50)
    async with downloader(transport, temp_dir, max_redirects=3) as dl:
        with pytest.raises(triofetch.TooManyRedirects) as info:
            await dl.fetch(http_server.url("/loop"))
    assert len(info.value.attempts) == 1
    assert leftovers(temp_dir) == []


async def test_basic_auth(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA)
    http_server.require_basic_auth("alice", "s3cret!")
    async with downloader(transport, temp_dir, auth=("alice", "s3cret!")) as dl:
        result = await dl.fetch(http_server.url("/a.bin"))
    assert result.size == len(DATA)
    url = http_server.url("/a.bin").replace("http://", "http://alice:s3cret%21@")
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(url)
    assert result.size == len(DATA)
    assert "s3cret" not in result.url


async def test_basic_auth_wrong_password_never_leaks(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA)
    http_server.require_basic_auth("alice", "s3cret")
    url = http_server.url("/a.bin").replace("http://", "http://alice:WRONGPASS@")
    async with downloader(transport, temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(url)
    assert info.value.status_code == 401
    assert "WRONGPASS" not in str(info.value) and "WRONGPASS" not in repr(info.value)
    assert "WRONGPASS" not in info.value.url
    assert http_server.count("/a.bin") == 1
    assert leftovers(temp_dir) == []


async def test_bearer_token_refreshed_once_for_50_downloads(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    for i in range(50):
        http_server.add_file(f"/f{i}", DATA[: 1000 + i])
    http_server.require_bearer({"token-1"})
    issued: list[str] = []

    async def provider() -> str:
        await trio.sleep(0.05)  # a slow token endpoint: every download is waiting meanwhile
        issued.append(f"token-{len(issued) + 1}")
        return issued[-1]

    async with downloader(transport, temp_dir, token_provider=provider, connections=50) as dl:

        async def fetch_all() -> list[triofetch.DownloadResult]:
            results: list[triofetch.DownloadResult] = []

            async def one(i: int) -> None:
                results.append(await dl.fetch(http_server.url(f"/f{i}")))

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
            return results

        first = await fetch_all()
        assert issued == ["token-1"]
        http_server.set_valid_tokens({"token-2"})  # token-1 expires
        second = await fetch_all()
        assert issued == ["token-1", "token-2"]
        assert dl.token_refreshes == 2
    assert len(first) == len(second) == 50
    assert all(r.attempts == 1 for r in second)


async def test_bearer_token_rejected_after_refresh(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA)
    http_server.require_bearer(set())

    async def provider() -> str:
        return "never-valid"

    async with downloader(transport, temp_dir, token_provider=provider) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(http_server.url("/a.bin"))
    assert info.value.status_code == 401
    assert http_server.count("/a.bin") == 2  # once, then once more with a refreshed token


async def test_mirrors(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/good.bin", DATA)
    http_server.add_file("/bad.bin", DATA, faults=[Status(503)] * 5)
    urls = [http_server.url("/missing"), http_server.url("/bad.bin"), http_server.url("/good.bin")]
    async with downloader(transport, temp_dir, retries=1) as dl:
        result = await dl.fetch(urls, expected_digests={"sha256": SHA256})
    assert result.url == http_server.url("/good.bin")
    assert result.attempts == 4  # 404 once, 503 twice, then success
    assert http_server.count("/missing") == 1
    assert http_server.count("/bad.bin") == 2


async def test_mirrors_all_fail(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    urls = [http_server.url("/m1"), http_server.url("/m2")]
    async with downloader(transport, temp_dir) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(urls)
    assert [a.url for a in info.value.attempts] == urls
    assert leftovers(temp_dir) == []


async def test_cancelled_fetch_leaves_nothing(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/slow", DATA, faults=[Slow(0.05, chunk=4096)] * 10)
    http_server.add_file("/a.bin", DATA)
    async with downloader(transport, temp_dir, connections=4) as dl:
        with trio.move_on_after(0.3) as scope:
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(dl.fetch, http_server.url("/slow"))
        assert scope.cancelled_caught
        assert leftovers(temp_dir) == []
        # The pool is still healthy: more downloads than connections go through.
        results = []
        for _ in range(8):
            results.append(await dl.fetch(http_server.url("/a.bin")))
        assert all(r.sha256 == SHA256 for r in results)
        assert dl.limiter.borrowed_tokens == 0


@pytest.mark.parametrize("own_temp_dir", [True, False], ids=["temp_dir", "private"])
async def test_closing_the_downloader_ends_the_fetches_in_flight(
    http_server: FaultServer, transport: str, temp_dir: Path, own_temp_dir: bool
) -> None:
    """aclose() from another task (or leaving ``async with`` while fetches started in an
    outer nursery run) cancels the fetches in flight, which raise WrongContext, and waits
    for them: no download goes on (or writes into a removed directory) after the
    downloader closed, no AssertionError, no temp file left."""
    http_server.add_file("/slow", DATA, faults=[Slow(0.02, chunk=4096)] * 10)
    errors: list[BaseException] = []
    dl = (
        downloader(transport, temp_dir)
        if own_temp_dir
        else triofetch.Downloader(
            transport=transport,  # type: ignore[arg-type]
            backoff=0.01,
        )
    )

    async def one(task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await dl.fetch([http_server.url("/slow"), http_server.url("/slow")])
        except triofetch.WrongContext as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with dl:
                private = dl.temp_dir
                for _ in range(3):
                    await nursery.start(one)
                await trio.sleep(0.15)
                await dl.aclose()
                assert len(errors) == 3  # every fetch ended before aclose returned
            # a fetch started in an outer nursery, the block left while it runs
            async with dl:
                await nursery.start(one)
                await trio.sleep(0.15)
    assert len(errors) == 4
    assert all("closed while this download was in flight" in str(e) for e in errors)
    assert leftovers(temp_dir) == []
    assert private is not None and private.exists() == own_temp_dir
    assert dl.limiter.borrowed_tokens == 0


class _Counting:
    """A stream's body consumer: counts the bytes."""

    def __init__(self) -> None:
        self.size = 0

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)

    async def finish(self) -> int:
        return self.size


@pytest.mark.parametrize("way", ["fetch", "fetch_planned", "stream", "fetch_many", "mirrors"])
async def test_closing_the_downloader_ends_every_kind_of_fetch(
    http_server: FaultServer, transport: str, temp_dir: Path, tmp_path: Path, way: str
) -> None:
    """Each way of fetching ends with WrongContext when another task closes the downloader
    under it, at once (aclose does not wait for the slow bodies to arrive), with nothing
    left behind; a fetch with mirrors does not fall back to the next one (a file:// URL
    here), and none is retried."""
    http_server.add_file("/slow", DATA, faults=[Slow(0.05, chunk=2048)] * 10)
    local = tmp_path / "local.bin"
    local.write_bytes(DATA)
    slow = http_server.url("/slow")
    errors: list[BaseException] = []
    dl = downloader(transport, temp_dir)

    async def one(task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            if way == "fetch":
                await dl.fetch(slow)
            elif way == "fetch_planned":
                await dl.fetch_planned(slow, dl.plan(expected_size=len(DATA)))
            elif way == "stream":
                await dl.stream(slow, _Counting)
            elif way == "mirrors":
                await dl.fetch([slow, local.as_uri()])
            else:
                async with dl.fetch_many([slow, slow]) as outcomes:
                    async for outcome in outcomes:
                        assert isinstance(outcome, triofetch.FetchFailed)
                        errors.append(outcome.error)
                return
        except triofetch.WrongContext as exc:
            errors.append(exc)

    requests = 2 if way == "fetch_many" else 1
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, dl:
            await nursery.start(one)
            # closed once the server has every request (a fixed sleep was too short for
            # the asks transport on a loaded machine: closed before it had sent one)
            while http_server.count("/slow") < requests:  # noqa: ASYNC110 - a server thread counts
                await trio.sleep(0.01)
            await trio.sleep(0.05)  # (the bodies' first bytes on their way)
            started = trio.current_time()
            if way == "fetch":  # (two tasks closing it at once: both wait, neither hangs)
                nursery.start_soon(dl.aclose)
            await dl.aclose()
            assert trio.current_time() - started < 2  # (the body needs 5 s more)
            # ended before aclose returned (fetch_many's outcomes are handed over later)
            assert errors or way == "fetch_many"
    assert len(errors) == requests
    assert all(isinstance(e, triofetch.WrongContext) for e in errors)
    assert all("closed while this download was in flight" in str(e) for e in errors)
    assert http_server.count("/slow") == len(errors)  # no retry
    assert leftovers(temp_dir) == []
    assert dl.limiter.borrowed_tokens == 0


@pytest.mark.parametrize(
    "wait", ["backoff", "limiter", "per_host", "rate_limit", "token", "connect"]
)
async def test_closing_the_downloader_ends_the_waits_of_fetches_in_flight(
    http_server: FaultServer, transport: str, temp_dir: Path, wait: str
) -> None:
    """A fetch waiting outside a request when another task closes the downloader — for
    its next attempt, for a connection token (``connections``, ``per_host``), for its
    ``rate_limit`` slot, for a bearer token, for a connection to be made — ends at once
    with WrongContext, is not retried, and leaves nothing behind."""
    http_server.add_file("/a", DATA)
    http_server.add_file("/busy", DATA, faults=[Status(503)] * 10)
    http_server.add_file("/slow", DATA, faults=[Slow(0.05, chunk=2048)] * 10)
    options: dict[str, Any] = {
        "backoff": {"backoff": 30.0, "backoff_max": 30.0},
        "limiter": {"connections": 1},
        "per_host": {"per_host": 1},
        "rate_limit": {"rate_limit": 0.05},
        "token": {"token_provider": trio.sleep_forever},
        "connect": {"connect_timeout": 30.0},
    }[wait]
    dl = downloader(transport, temp_dir, **options)
    errors: list[BaseException] = []
    urls = [http_server.url("/a")]
    # (the only connection token of the host held by a fetch, to be ended too; the
    # downloader's by the caller, who may share it)
    before = [http_server.url("/slow")] if wait == "per_host" else []
    holder = object()
    listener = socket.socket()  # (a full backlog: a connection to it is never made)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    if wait == "backoff":
        urls = [http_server.url("/busy")]
    elif wait == "connect":
        urls = ["http://{}:{}/x".format(*listener.getsockname())]

    async def one(url: str, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await dl.fetch(url)
        except triofetch.WrongContext as exc:
            errors.append(exc)

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery, dl:
                if wait == "rate_limit":  # (the first request takes the slot of 20 s)
                    (await dl.fetch(http_server.url("/a"))).path.unlink()
                if wait == "limiter":
                    dl.limiter.acquire_on_behalf_of_nowait(holder)
                for url in before + urls:
                    await nursery.start(one, url)
                await trio.sleep(0.3)
                assert not errors
                started = trio.current_time()
                await dl.aclose()
                assert trio.current_time() - started < 2
                assert len(errors) == len(before) + 1  # ended before aclose returned
                if wait == "limiter":
                    dl.limiter.release_on_behalf_of(holder)
    finally:
        filler.close()
        listener.close()
    assert all("closed while this download was in flight" in str(e) for e in errors)
    assert http_server.count("/busy") == (1 if wait == "backoff" else 0)
    assert http_server.count("/a") == (1 if wait == "rate_limit" else 0)
    assert leftovers(temp_dir) == []
    assert dl.limiter.borrowed_tokens == 0


async def test_cancellations_while_small_files_are_finished(
    http_server: FaultServer, transport: str, temp_dir: Path, tmp_path: Path
) -> None:
    """Small files are finished in batches by a worker thread; tasks cancelled while their
    file is queued or in such a batch leave nothing behind once they have returned (a file
    the thread took is finished and returned), and the others complete intact."""
    small = {f"/s{i}": os.urandom(3000 + i) for i in range(60)}
    for path, data in small.items():
        http_server.add_file(path, data)
    out = tmp_path / "out"
    out.mkdir()
    done: dict[str, bytes] = {}

    async def one(dl: triofetch.Downloader, path: str, cancel_after: float) -> None:
        with trio.move_on_after(cancel_after):
            result = await dl.fetch(http_server.url(path), destination=out / path[1:])
            done[path] = result.path.read_bytes()

    async with downloader(transport, temp_dir, connections=8) as dl:
        for round_ in range(3):
            done.clear()
            async with trio.open_nursery() as nursery:
                for i, path in enumerate(small):
                    # a spread of deadlines: some before, some during, some after finishing
                    nursery.start_soon(one, dl, path, 0.0005 * ((i * 7 + round_) % 40))
            assert leftovers(temp_dir) == []
            for path, data in done.items():
                assert data == small[path]
            for name in os.listdir(out):  # a file at its destination is always whole
                assert (out / name).read_bytes() == small["/" + name]
        assert dl.limiter.borrowed_tokens == 0


async def test_connection_limits(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    for i in range(12):
        http_server.add_file(f"/s{i}", DATA[:8000], faults=[Slow(0.02, chunk=1000)])
    active = 0
    peak = 0

    async def watch(dl: triofetch.Downloader, url: str) -> None:
        nonlocal active, peak
        await dl.fetch(url)

    async with downloader(transport, temp_dir, connections=3) as dl:

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, dl.limiter.borrowed_tokens)
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            async with trio.open_nursery() as inner:
                for i in range(12):
                    inner.start_soon(watch, dl, http_server.url(f"/s{i}"))
            nursery.cancel_scope.cancel()
    assert peak == 3
    # the server never saw more than 3 requests at once
    times = sorted(r.time for r in http_server.requests)
    assert len(times) == 12


def closed_ports(count: int) -> list[int]:
    """*count* ports of 127.0.0.2 that nothing listens on (bound by no one a moment ago)."""
    ports: set[int] = set()
    while len(ports) < count:
        batch = []
        try:
            for _ in range(min(100, count - len(ports))):
                sock = socket.socket()
                batch.append(sock)
                sock.bind(("127.0.0.2", 0))
                ports.add(sock.getsockname()[1])
        finally:
            for sock in batch:
                sock.close()
    return sorted(ports)


async def test_per_host_limiters_of_idle_origins_are_let_go(
    http_server: FaultServer, temp_dir: Path
) -> None:
    """With ``per_host``, a long-lived downloader keeps the limiters of at most about 1,024
    origins no request uses; it kept one per origin ever visited (1.2 kB each, for ever).
    A limiter in use stays, so the limit holds across the dropping."""
    http_server.add_file("/slow", DATA[:4000], faults=[Slow(1.0, chunk=1000)])
    async with triofetch.Downloader(per_host=1, connections=4, retries=0, temp_dir=temp_dir) as dl:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dl.fetch, http_server.url("/slow"))
            await trio.testing.wait_all_tasks_blocked()
            held = dl._host_limiters.limiter(http_server.url("/slow"))
            assert held.borrowed_tokens == 1
            for port in closed_ports(1100):  # each fails at once
                with pytest.raises(triofetch.ConnectionFailed):
                    await dl.fetch(f"http://127.0.0.2:{port}/x")
            assert dl._host_limiters.limiter(http_server.url("/slow")) is held
            assert held.borrowed_tokens == 1
            nursery.cancel_scope.cancel()
        assert len(dl._host_limiters) <= 1024


async def test_per_host_limit(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    other = FaultServer()
    other.start()
    try:
        for srv in (http_server, other):
            for i in range(6):
                srv.add_file(f"/s{i}", DATA[:6000], faults=[Slow(0.03, chunk=1000)])
        concurrent = {http_server.base_url: 0, other.base_url: 0}
        peaks = dict(concurrent)
        async with downloader(transport, temp_dir, connections=10, per_host=2) as dl:

            async def one(srv: FaultServer, i: int) -> None:
                concurrent[srv.base_url] += 1
                try:
                    await dl.fetch(srv.url(f"/s{i}"))
                finally:
                    concurrent[srv.base_url] -= 1

            async def sample() -> None:
                while True:
                    for key, limiter in dl._host_limiters.items():
                        peaks[key.rstrip("/")] = max(peaks.get(key, 0), limiter.borrowed_tokens)
                    await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                async with trio.open_nursery() as inner:
                    for srv in (http_server, other):
                        for i in range(6):
                            inner.start_soon(one, srv, i)
                nursery.cancel_scope.cancel()
        assert peaks[http_server.base_url] == 2
        assert peaks[other.base_url] == 2
    finally:
        other.stop()


async def test_loop_stays_responsive_during_large_download(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    big = os.urandom(1 << 20) * 48
    http_server.add_file("/big", big)
    gaps: list[float] = []

    async with downloader(transport, temp_dir, digests=triofetch.PULP_ALGORITHMS) as dl:

        async def ticker() -> None:
            last = trio.current_time()
            while True:
                await trio.sleep(0.002)
                now = trio.current_time()
                gaps.append(now - last)
                last = now

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            result = await dl.fetch(http_server.url("/big"), expected_size=len(big))
            nursery.cancel_scope.cancel()
    assert result.digests["sha512"] == hashlib.sha512(big).hexdigest()
    # Hashing 48 MiB with four digests takes ~250 ms of CPU; done on the loop it would
    # starve the ticker.  In worker threads the ticker keeps running throughout.
    assert len(gaps) >= 20
    assert max(gaps) < 0.2


async def test_file_urls(tmp_path: Path, transport: str, temp_dir: Path) -> None:
    src = tmp_path / "dir with space" / "f#1.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    url = src.as_uri()
    async with downloader(transport, temp_dir) as dl:
        result = await dl.fetch(url, expected_digests={"sha256": SHA256}, expected_size=len(DATA))
        assert result.path.read_bytes() == DATA
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch((tmp_path / "nope").as_uri())
        assert info.value.status_code == 404
        with pytest.raises(triofetch.DigestMismatch):
            await dl.fetch(url, expected_digests={"sha256": "0" * 64})
    assert leftovers(temp_dir) == [result.path.name]


async def test_file_url_of_a_name_that_is_not_utf8(tmp_path: Path, temp_dir: Path) -> None:
    """``Path.as_uri()`` percent-escapes the name's bytes (``caf%E9.bin``, Latin-1): the URL
    names that file.  Its escapes were decoded as UTF-8 (``caf\ufffd.bin``): 404."""
    src = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.bin"))
    src.write_bytes(DATA)  # noqa: ASYNC240
    url = src.as_uri()
    assert url.endswith("/caf%E9.bin")
    async with downloader("trio", temp_dir) as dl:
        result = await dl.fetch(url, expected_digests={"sha256": SHA256})
    assert result.path.read_bytes() == DATA


def test_file_urls_without_a_utf8_file_system_encoding(tmp_path: Path) -> None:
    """Under ``LC_ALL=C`` without UTF-8 mode (file system encoding ASCII) a ``file://`` URL
    of a UTF-8 name (``données/été.bin``, what ``export`` writes) raised UnicodeEncodeError
    out of the download: ``triofetch sync`` of an exported tree ended in "internal error"."""
    import subprocess
    import sys

    src = tmp_path / "données" / "été.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    script = (
        "import sys, triofetch\n"
        "assert sys.getfilesystemencoding() == 'ascii', sys.getfilesystemencoding()\n"
        "r = triofetch.fetch(sys.argv[1], expected_digests={'sha256': sys.argv[2]})\n"
        "print(r.size)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHON"))}
    env |= {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    proc = subprocess.run(
        [sys.executable, "-c", script, src.as_uri(), SHA256],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(DATA))


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"expected_digests": {"sha999": "00"}}, triofetch.UnsupportedAlgorithm, "sha999"),
        ({"digests": ["nope"]}, triofetch.UnsupportedAlgorithm, "nope"),
        ({"expected_digests": {"sha256": "abc"}}, triofetch.InvalidDigest, "64 hex digits"),
        ({"expected_digests": {"sha256": "g" * 64}}, triofetch.InvalidDigest, "hexadecimal"),
        ({"expected_size": -1}, triofetch.InvalidInput, "expected_size"),
        ({"temp_dir": "/nonexistent/tmp"}, triofetch.InvalidInput, "'/nonexistent/tmp' is not"),
        ({"temp_dir": __file__}, triofetch.InvalidInput, "is not an existing directory"),
        ({"temp_dir": 3}, triofetch.InvalidInput, "temp_dir must be a path"),
    ],
)
async def test_bad_arguments_rejected_before_io(
    http_server: FaultServer,
    temp_dir: Path,
    kwargs: dict[str, object],
    error: type[Exception],
    text: str,
) -> None:
    http_server.add_file("/a.bin", DATA)
    async with downloader("httpx", temp_dir) as dl:
        with pytest.raises(error, match=text):
            await dl.fetch(http_server.url("/a.bin"), **kwargs)  # type: ignore[arg-type]
    assert http_server.count("/a.bin") == 0
    assert leftovers(temp_dir) == []


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("ftp://127.0.0.1/x", "unsupported URL scheme 'ftp'"),
        ("FTP://127.0.0.1/x", "unsupported URL scheme 'ftp'"),
        ("127.0.0.1/x", "not an absolute URL"),
        ("not a url", "not an absolute URL"),
        ("/srv/repo/x", "not an absolute URL"),
        ("c:/repo/x", "unsupported URL scheme 'c'"),
    ],
)
async def test_unsupported_scheme(temp_dir: Path, url: str, text: str) -> None:
    async with downloader("httpx", temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.InvalidURL, match=text) as info:
            await dl.fetch(url)
    assert info.value.url == url and info.value.attempts == [info.value]  # never retried
    assert leftovers(temp_dir) == []


def test_bad_downloader_options(tmp_path: Path) -> None:
    with pytest.raises(triofetch.InvalidInput, match="connections"):
        triofetch.Downloader(connections=0)
    with pytest.raises(triofetch.InvalidInput, match="is not an existing directory"):
        triofetch.Downloader(temp_dir=tmp_path / "missing")
    with pytest.raises(triofetch.InvalidInput, match="unknown transport 'curl'"):
        triofetch.Downloader(transport="curl")  # type: ignore[arg-type]
    with pytest.raises(triofetch.UnsupportedAlgorithm):
        triofetch.Downloader(digests=["whirlpool-ish"])
    with pytest.raises(triofetch.InvalidInput, match="not both"):

        async def provider() -> str:
            return "x"

        triofetch.Downloader(auth=("a", "b"), token_provider=provider)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"retries": True}, "retries must be an integer >= 0, got True"),
        ({"max_redirects": -1}, "max_redirects must be an integer >= 0, got -1"),
        ({"threads": 0}, "threads must be an integer >= 1, got 0"),
        ({"per_host": 2.5}, "per_host must be an integer >= 1"),
        ({"backoff": "1"}, "backoff must be a number >= 0, got '1'"),
        ({"backoff_max": -1}, "backoff_max must be a number >= 0"),
        ({"rate_limit": True}, "rate_limit must be a positive number"),
        ({"auth": ("user",)}, r"auth must be a \(user, password\) pair"),
        ({"auth": ("user", 5)}, r"auth must be a \(user, password\) pair"),
        ({"headers": [("x", "y")]}, "headers must be a mapping, got list"),
        ({"verify": "/nonexistent/ca.pem"}, "verify: no such file or directory"),
        ({"cert": ("/nonexistent/c.pem", "/nonexistent/k.pem")}, "cert: no such file"),
        # (these escaped as AttributeError, or were accepted and failed at the first fetch)
        ({"proxy": 5}, "proxy must be a proxy URL"),
        ({"token_provider": "tok"}, "token_provider must be an async callable"),
        # (these escaped as a bare TypeError from pathlib, ssl or a for loop, naming nothing)
        ({"verify": 5}, "verify must be True, False, the path of a CA bundle.*got 5"),
        ({"verify": None}, "verify must be .*got None"),
        ({"cert": 5}, r"cert must be a PEM file or a \(certfile, keyfile\) pair.*got 5"),
        ({"cert": ("a", "b", "c")}, r"cert must be .*got \('a', 'b', 'c'\)"),
        ({"digests": 5}, "digests must be algorithm names .*got 5"),
    ],
)
def test_bad_downloader_options_named(kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(triofetch.InvalidInput, match=text):
        triofetch.Downloader(**kwargs)


async def test_misuse_is_a_typed_error(tmp_path: Path) -> None:
    """A URL that is a path or a number, a sync token provider, a Downloader outside its
    ``async with``, and proxy/TLS options beside a Transport of one's own: each raised a
    bare TypeError or RuntimeError, or (the last) silently connected without the proxy."""
    from triofetch.transports import TransportOptions, TrioTransport

    async with triofetch.Downloader(temp_dir=tmp_path) as dl:
        for url in (tmp_path / "a", 5):
            with pytest.raises(triofetch.InvalidInput, match="expected a URL"):
                await dl.fetch(url)  # type: ignore[arg-type]
    closed = dl
    for use in (
        lambda: triofetch.Downloader().fetch("http://127.0.0.1:9/x"),
        lambda: closed.fetch("http://127.0.0.1:9/x"),
    ):
        with pytest.raises(triofetch.WrongContext, match="inside 'async with'"):
            await use()
    async with triofetch.Downloader(token_provider=lambda: "t", retries=0) as dl:  # type: ignore[arg-type,return-value]
        with pytest.raises(triofetch.InvalidInput, match="must be an async callable"):
            await dl.fetch("http://127.0.0.1:9/x")
    own = TrioTransport(TransportOptions(trust_env=False))
    for options in ({"proxy": "http://127.0.0.1:9"}, {"verify": False}, {"max_redirects": 0}):
        with pytest.raises(triofetch.InvalidInput, match="options of the transport"):
            triofetch.Downloader(transport=own, **options)  # type: ignore[arg-type]


def test_tls_files_that_cannot_be_loaded(tmp_path: Path) -> None:
    """A CA bundle or client certificate that exists but is no PEM is refused when the
    Downloader is made, naming the option and the file, not at the first TLS connection."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(triofetch.InvalidInput, match=rf"verify: cannot load '{junk}'"):
        triofetch.Downloader(verify=junk)
    with pytest.raises(triofetch.InvalidInput, match=rf"cert: cannot load '{junk}', '{junk}'"):
        triofetch.Downloader(cert=(str(junk), str(junk)))
    with pytest.raises(triofetch.InvalidInput, match="cert: no such file or directory: '/nx'"):
        triofetch.Downloader(cert=(str(junk), "/nx"))


async def test_a_fetch_temp_dir_is_checked_once(
    http_server: FaultServer, temp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch's temp_dir is checked (a stat, on the loop) the first time, not every time."""
    http_server.add_file("/a.bin", DATA)
    checked: list[str] = []
    real = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: checked.append(os.fspath(p)) or real(p))
    other = tmp_path / "other"
    other.mkdir()
    async with downloader("httpx", temp_dir) as dl:
        for where in (other, str(other), other):
            result = await dl.fetch(http_server.url("/a.bin"), temp_dir=where)
            assert result.path.parent == other
    assert checked.count(str(other)) == 1


def test_header_values_stay_out_of_messages() -> None:
    with pytest.raises(triofetch.InvalidInput) as info:
        triofetch.Downloader(headers={"Authorization": b"Bearer s3cret"})  # type: ignore[dict-item]
    assert "header 'Authorization' has a value of type bytes" in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_digest_arguments_in_other_shapes(http_server: FaultServer, temp_dir: Path) -> None:
    """One algorithm name as a string is that algorithm (not its letters); expected digests
    that are not a mapping are refused before any request."""
    http_server.add_file("/a.bin", DATA)
    async with downloader("httpx", temp_dir, digests="sha512") as dl:
        result = await dl.fetch(http_server.url("/a.bin"), digests="md5")
        assert sorted(result.digests) == ["md5", "sha256", "sha512"]
        assert result.digests["md5"] == hashlib.md5(DATA).hexdigest()
        with pytest.raises(triofetch.InvalidInput, match="must be a mapping"):
            await dl.fetch(http_server.url("/a.bin"), expected_digests=[("sha256", SHA256)])  # type: ignore[arg-type]
        with pytest.raises(triofetch.InvalidInput, match="header 'x' has a value of type int"):
            await dl.fetch(http_server.url("/a.bin"), headers={"x": 1})  # type: ignore[dict-item]
    assert http_server.count("/a.bin") == 1


async def test_rate_limit(http_server: FaultServer, transport: str, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA[:100])
    async with downloader(transport, temp_dir, rate_limit=20.0) as dl:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(11):
                nursery.start_soon(dl.fetch, http_server.url("/a.bin"))
        elapsed = trio.current_time() - start
    assert http_server.count("/a.bin") == 11
    # 11 requests at 20/s: the last one starts 0.5 s after the first (exact spacing is
    # checked in virtual time in test_virtual_time.py)
    assert elapsed >= 0.5 - 0.01


async def test_large_bodies_with_several_digests_on_one_thread_token(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    """Each large body with several digests keeps three worker threads busy (one writes,
    two hash); with a single thread token for everything, three such downloads at once
    must still all complete (a feeder gives its token back whenever it runs dry)."""
    bodies = {f"/big{i}": os.urandom(1 << 20) * (3 + i) for i in range(3)}
    for path, body in bodies.items():
        http_server.add_file(path, body)
    results: dict[str, triofetch.DownloadResult] = {}
    async with downloader(transport, temp_dir, threads=1, digests=triofetch.PULP_ALGORITHMS) as dl:

        async def one(path: str) -> None:
            results[path] = await dl.fetch(http_server.url(path), expected_size=len(bodies[path]))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for path in bodies:
                    nursery.start_soon(one, path)
    for path, body in bodies.items():
        got = results[path]
        assert got.path.read_bytes() == body
        for algorithm in triofetch.PULP_ALGORITHMS:
            assert got.digests[algorithm] == hashlib.new(algorithm, body).hexdigest()


async def test_large_body_write_failure_is_reported_and_cleaned_up(
    http_server: FaultServer, transport: str, temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails in the middle of a large body (several digests: the writing thread
    is not a hashing one) fails the fetch with that error, promptly, and leaves nothing."""
    from triofetch.downloader import _sinks as _downloader

    big = os.urandom(1 << 20) * 6
    http_server.add_file("/big", big)
    writes = 0
    real = _downloader._Sink._write_raw

    def failing(self: _downloader._Sink, chunks: list[bytes]) -> None:
        nonlocal writes
        writes += 1
        if writes == 3:
            raise OSError(28, "No space left on device (injected)")
        real(self, chunks)

    monkeypatch.setattr(_downloader._Sink, "_write_raw", failing)
    async with downloader(transport, temp_dir, retries=0, digests=triofetch.PULP_ALGORITHMS) as dl:
        with trio.fail_after(30), pytest.raises(OSError, match="injected"):
            await dl.fetch(http_server.url("/big"))
    assert leftovers(temp_dir) == []


async def test_cancelled_in_the_middle_of_a_large_body_with_several_digests(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    big = os.urandom(1 << 20) * 8
    http_server.add_file("/big", big, faults=[Slow(0.01, chunk=256 * 1024)])
    http_server.add_file("/ok", big)
    async with downloader(transport, temp_dir, digests=triofetch.PULP_ALGORITHMS) as dl:
        with trio.move_on_after(0.1) as scope:
            await dl.fetch(http_server.url("/big"))
        assert scope.cancelled_caught
        assert leftovers(temp_dir) == []
        # the threads and tokens of the cancelled download are all back
        result = await dl.fetch(http_server.url("/ok"), expected_size=len(big))
        assert result.path.read_bytes() == big
        assert dl.limiter.borrowed_tokens == 0


@pytest.mark.parametrize(("cores", "splits"), [(2, 1), (4, 2)])
async def test_several_digests_split_between_threads_only_with_cores_to_spare(
    http_server: FaultServer,
    transport: str,
    temp_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    cores: int,
    splits: int,
) -> None:
    """A large download with several digests hashes in two threads; one that starts while
    another hashes does so only if the machine has two more cores for it.  Either way every
    digest is right."""
    from triofetch import _digests
    from triofetch.downloader import _sinks as _downloader

    monkeypatch.setattr(_downloader, "_CORES", cores)
    split = trio.Event()
    calls = 0
    real = _digests.MultiHasher.halves

    def halves(self: _digests.MultiHasher) -> tuple[list[Any], list[Any]] | None:
        nonlocal calls
        calls += 1
        split.set()
        return real(self)

    monkeypatch.setattr(_digests.MultiHasher, "halves", halves)
    first = os.urandom(1 << 20) * 3
    second = os.urandom(1 << 20) * 2
    second_done = threading.Event()
    # the first body's rest is held until the second download is over, so that the first
    # one still hashes when the second one starts (a trickle of 0.24 s was outrun by the
    # second download on a loaded machine)
    http_server.add_generator("/first", held_at_the_gate(first, second_done, first=1 << 20))
    http_server.add_file("/second", second)
    results: dict[str, triofetch.DownloadResult] = {}
    async with downloader(transport, temp_dir, digests=triofetch.PULP_ALGORITHMS) as dl:

        async def one(path: str) -> None:
            results[path] = await dl.fetch(http_server.url(path))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "/first")
                await split.wait()
                try:
                    await one("/second")
                    assert "/first" not in results  # the two overlapped
                finally:
                    second_done.set()
    assert calls == splits
    for path, body in (("/first", first), ("/second", second)):
        for algorithm in triofetch.PULP_ALGORITHMS:
            assert results[path].digests[algorithm] == hashlib.new(algorithm, body).hexdigest()


async def test_results_and_outcomes_copy_and_pickle(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """An immutable value copies and pickles: a DownloadResult (and so a FetchSucceeded)
    raised FrozenInstanceError from copy.copy, copy.deepcopy and pickle.dumps, whose
    default way assigns the slots one by one."""
    import copy
    import pickle

    http_server.add_file("/p", b"pickled")
    async with triofetch.Downloader(temp_dir=tmp_path) as dl:
        result = await dl.fetch(http_server.url("/p"))
        async with dl.fetch_many([http_server.url("/p"), "http://[::1/x"]) as outcomes:
            got = [o async for o in outcomes]
    for value in (result, *got):
        for made in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
            if isinstance(value, triofetch.FetchFailed):  # (exceptions compare by identity)
                assert isinstance(made, triofetch.FetchFailed) and made.request == value.request
                assert repr(made.error) == repr(value.error)
            else:
                assert made == value and made is not value
    assert pickle.loads(pickle.dumps(result)).path == result.path


def test_download_result_is_an_immutable_value_with_a_path() -> None:
    """Its path is made on first use, from the text it was given (or is the Path given)."""
    import dataclasses

    given = Path("/srv/files/a.bin")
    by_text = triofetch.DownloadResult("http://h/a", "/srv/files/a.bin", 3, {"sha256": "ab"})
    by_path = triofetch.DownloadResult("http://h/a", given, 3, {"sha256": "ab"})
    assert by_path.path is given
    assert by_text.path == given and isinstance(by_text.path, Path)
    assert by_text.path is by_text.path  # made once
    assert by_text == by_path and by_text.headers == {} and by_text.attempts == 1
    assert by_text != triofetch.DownloadResult("http://h/a", given, 3, {"sha256": "ab"}, {}, 2)
    assert by_text.sha256 == "ab"
    assert repr(by_text) == (
        "DownloadResult(url='http://h/a', path=PosixPath('/srv/files/a.bin'), size=3, "
        "digests={'sha256': 'ab'}, headers={}, attempts=1)"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_text.size = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(by_text)


async def test_a_flag_that_is_not_a_bool_is_invalid_input(tmp_path: Path) -> None:
    """``trust_env="no"``, ``create="no"``, ``fail_fast=0``...: a flag given as a string or a
    number was taken for its truth value ("no" is true: the opposite of what was meant)."""
    from triofetch import ArtifactStorage, ContentUnitCreator, UnitDownloader
    from triofetch.store import open_store

    def refused(make: Callable[[], object], name: str) -> None:
        with pytest.raises(triofetch.InvalidInput, match=f"{name} must be True or False, got"):
            make()

    refused(lambda: triofetch.Downloader(trust_env="no"), "trust_env")  # type: ignore[arg-type]
    refused(lambda: open_store(root=tmp_path, create="no"), "create")  # type: ignore[arg-type]
    refused(lambda: open_store(root=tmp_path, readonly=1), "readonly")  # type: ignore[arg-type]
    refused(lambda: ArtifactStorage(tmp_path / "s", durable="yes"), "durable")  # type: ignore[arg-type]
    refused(lambda: ArtifactStorage(tmp_path / "s", readonly=0), "readonly")  # type: ignore[arg-type]
    async with open_store(root=tmp_path) as store, triofetch.Downloader(temp_dir=tmp_path) as dl:
        refused(lambda: UnitDownloader(dl, fail_fast="no"), "fail_fast")  # type: ignore[arg-type]
        refused(lambda: ContentUnitCreator(store, dl, fail_fast=1), "fail_fast")  # type: ignore[arg-type]
        creator = ContentUnitCreator(store, dl)
        with pytest.raises(triofetch.InvalidInput, match="mirror must be True or False, got"):
            await creator.run([], repository="r", mirror="no")  # type: ignore[arg-type]
    await trio.to_thread.run_sync(  # (the blocking face: outside Trio)
        refused,
        lambda: triofetch.download_units([], fail_fast="no"),  # type: ignore[arg-type]
        "fail_fast",
    )
    assert not (tmp_path / "s").exists()
