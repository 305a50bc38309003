"""Backoff, Retry-After and the rate limit, in virtual time (MockClock).

These use a scripted transport: a real implementation of the Transport protocol that answers
from a list, so that no socket wait lets the mock clock jump.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

import triofetch


class ScriptedResponse:
    def __init__(self, url: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.url = url
        self.status_code = status
        self.reason = ""
        self.headers = dict(headers)
        self._body = body

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        if self._body:
            yield self._body


class ScriptedTransport:
    """Answers each request with the next (status, headers) of a script, then 200."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.times: list[float] = []

    @asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[ScriptedResponse]:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        status, extra = self.script.pop(0) if self.script else (200, {})
        yield ScriptedResponse(url, status, extra, b"ok" if status == 200 else b"")

    async def aclose(self) -> None:
        return None


# Writing the temp file happens in a worker thread; while a thread runs, the autojumping
# mock clock would jump to the next deadline, a timeout's included.  Timeouts are not what
# these tests are about.
NO_TIMEOUTS: dict[str, None] = {"connect_timeout": None, "read_timeout": None}


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_exponential_backoff_with_jitter(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    transport = ScriptedTransport([(503, {})] * 4)
    async with triofetch.Downloader(
        **NO_TIMEOUTS,
        transport=transport,
        temp_dir=tmp_path,
        retries=4,
        backoff=1.0,
        backoff_max=3.0,
    ) as dl:
        result = await dl.fetch("http://example.invalid/x")
    assert result.attempts == 5
    gaps = [b - a for a, b in itertools.pairwise(transport.times)]
    # ceilings 1, 2, 3 (capped), 3; each wait is between half the ceiling and the ceiling
    for gap, ceiling in zip(gaps, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert ceiling / 2 <= gap <= ceiling


async def test_retry_after_is_honoured_exactly(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    transport = ScriptedTransport([(429, {"retry-after": "7"}), (503, {"retry-after": "2"})])
    async with triofetch.Downloader(
        **NO_TIMEOUTS, transport=transport, temp_dir=tmp_path, backoff=100.0
    ) as dl:
        await dl.fetch("http://example.invalid/x")
    gaps = [b - a for a, b in itertools.pairwise(transport.times)]
    assert gaps == pytest.approx([7.0, 2.0], abs=1e-6)


async def test_retry_after_is_capped(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    transport = ScriptedTransport([(429, {"retry-after": "86400"})])
    async with triofetch.Downloader(
        **NO_TIMEOUTS, transport=transport, temp_dir=tmp_path, max_retry_after=60.0
    ) as dl:
        await dl.fetch("http://example.invalid/x")
    assert transport.times[1] - transport.times[0] == pytest.approx(60.0)


async def test_rate_limit_spaces_requests(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    transport = ScriptedTransport([])
    async with (
        triofetch.Downloader(
            **NO_TIMEOUTS, transport=transport, temp_dir=tmp_path, rate_limit=4.0
        ) as dl,
        trio.open_nursery() as nursery,
    ):
        for _ in range(9):
            nursery.start_soon(dl.fetch, "http://example.invalid/x")
    times = sorted(transport.times)
    assert times[-1] - times[0] == pytest.approx(2.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.25)


async def test_no_retry_on_403(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    transport = ScriptedTransport([(403, {})] * 3)
    async with triofetch.Downloader(
        **NO_TIMEOUTS, transport=transport, temp_dir=tmp_path, retries=5
    ) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch("http://example.invalid/x")
    assert info.value.status_code == 403
    assert len(transport.times) == 1
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240
