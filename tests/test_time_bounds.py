"""Time bounds (issue 14, item 2): the lowest-speed rule, the total time per file, and the
cap on ``Retry-After``.

The "Slow server" reproduction: a file (or a manifest) served at a trickle used to download
for as long as the server kept trickling, because the read timeout restarts on every byte.
Here it fails within the configured bound, on every transport and through the command line.
Wall-clock cases use a real trickling server on 127.0.0.1 with short bounds (a few seconds
each); the exact arithmetic (windows, deadlines, caps) runs in virtual time.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import triofetch
from tests._cli_helpers import publish, run_cli, run_cli_in_process
from triofetch.testing import FaultServer, Slow, Status

DATA = os.urandom(4000)
SHA256 = hashlib.sha256(DATA).hexdigest()
#: about 20 bytes/s: far under any limit used here
TRICKLE = Slow(delay=0.05, chunk=1)
#: the short rule of these tests: under 1000 bytes/s on average over 1 s fails
RULE: dict[str, Any] = {"speed_limit": 1000, "speed_time": 1.0}
#: the same rule over a 0.5 s window, for the cases about what follows a speed timeout (the
#: retries), not about when it comes: each trickled attempt fails in half the time
QUICK_RULE: dict[str, Any] = {"speed_limit": 1000, "speed_time": 0.5}


def leftovers(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def downloader(transport: str, temp_dir: Path, **kw: Any) -> triofetch.Downloader:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("connect_timeout", 5.0)
    kw.setdefault("read_timeout", 5.0)
    return triofetch.Downloader(transport=transport, temp_dir=temp_dir, **kw)


# -- the lowest-speed rule, on a real trickling server ------------------------------------


async def test_trickle_fails_within_the_speed_bound(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/slow.bin", DATA, faults=[TRICKLE])
    started = time.monotonic()
    async with downloader(transport, temp_dir, retries=0, **RULE) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch(http_server.url("/slow.bin"), expected_size=len(DATA))
    elapsed = time.monotonic() - started
    assert "slower than 1000 bytes/s for 1 s" in str(info.value)
    assert info.value.retryable
    # checked at the first chunk past the 1 s window (chunks come every 50 ms)
    assert 1.0 <= elapsed < 3.0, elapsed
    assert not leftovers(temp_dir)
    assert http_server.bytes_sent("/slow.bin") < len(DATA) // 10


async def test_trickle_through_a_file_url_fails_too(tmp_path: Path, temp_dir: Path) -> None:
    # file:// is read by the file transport: a FIFO fed a byte at a time is its trickle
    fifo = tmp_path / "slow.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        try:
            with open(fifo, "wb", buffering=0) as pipe:
                for byte in DATA:
                    if stop.wait(0.05):
                        return
                    pipe.write(bytes([byte]))
        except BrokenPipeError:
            return  # the reader gave up: as it should

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        started = time.monotonic()
        async with downloader("trio", temp_dir, retries=0, **RULE) as dl:
            with pytest.raises(triofetch.DownloadTimeout, match="slower than 1000 bytes/s"):
                await dl.fetch(fifo.as_uri())
        assert time.monotonic() - started < 3.0
    finally:
        stop.set()
        writer.join(5)
    assert not leftovers(temp_dir)


async def test_slow_but_fast_enough_succeeds(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    # ~200 kB/s for about a second, against a 20 kB/s limit over 0.3 s windows
    data = os.urandom(200_000)
    http_server.add_file("/steady.bin", data, faults=[Slow(delay=0.01, chunk=2000)])
    async with downloader(transport, temp_dir, retries=0, speed_limit=20_000, speed_time=0.3) as dl:
        result = await dl.fetch(
            http_server.url("/steady.bin"),
            expected_digests={"sha256": hashlib.sha256(data).hexdigest()},
        )
    assert result.size == len(data) and result.attempts == 1


async def test_speed_timeout_is_retried(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/flaky.bin", DATA, faults=[TRICKLE, TRICKLE])
    async with downloader(transport, temp_dir, retries=2, **QUICK_RULE) as dl:
        result = await dl.fetch(http_server.url("/flaky.bin"), expected_digests={"sha256": SHA256})
    assert result.attempts == 3
    assert http_server.count("/flaky.bin") == 3
    assert result.path.read_bytes() == DATA


async def test_speed_timeout_retries_run_out(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/slow.bin", DATA, faults=[TRICKLE] * 2)
    async with downloader(transport, temp_dir, retries=1, **QUICK_RULE) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch(http_server.url("/slow.bin"))
    assert len(info.value.attempts) == 2
    assert all("slower than" in a.message for a in info.value.attempts)
    assert not leftovers(temp_dir)


async def test_speed_limit_zero_turns_the_rule_off(
    http_server: FaultServer, temp_dir: Path
) -> None:
    # 1000 bytes at ~20 bytes/s... in pieces of 100: about half a second, well under the rule
    data = os.urandom(1000)
    http_server.add_file("/slow.bin", data, faults=[Slow(delay=0.05, chunk=100)])
    async with downloader("trio", temp_dir, retries=0, speed_limit=0, speed_time=0.1) as dl:
        result = await dl.fetch(http_server.url("/slow.bin"))
    assert result.size == len(data)


def test_sync_fetch_takes_the_options(http_server: FaultServer, temp_dir: Path) -> None:
    http_server.add_file("/slow.bin", DATA, faults=[TRICKLE])
    with pytest.raises(triofetch.DownloadTimeout, match="slower than 1000 bytes/s for 1 s"):
        triofetch.fetch(
            http_server.url("/slow.bin"), temp_dir=temp_dir, retries=0, transport="trio", **RULE
        )
    assert not leftovers(temp_dir)


# -- the total time per file ---------------------------------------------------------------


async def test_max_time_bounds_a_transfer(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    # 2 kB/s (above no rule: the rule is off) for a body that would take 10 s
    data = os.urandom(20_000)
    http_server.add_file("/long.bin", data, faults=[Slow(delay=0.05, chunk=100)])
    started = time.monotonic()
    async with downloader(transport, temp_dir, retries=3, speed_limit=0, max_time=1.0) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch(http_server.url("/long.bin"))
    assert 1.0 <= time.monotonic() - started < 3.0
    assert "took longer than 1 s" in str(info.value)
    # the file's time is up: no retry
    assert http_server.count("/long.bin") == 1
    assert not leftovers(temp_dir)


async def test_max_time_counts_retries_and_their_waits(
    http_server: FaultServer, temp_dir: Path
) -> None:
    http_server.add_file("/busy.bin", DATA, faults=[Status(503)] * 50)
    started = time.monotonic()
    async with downloader(
        "trio", temp_dir, retries=50, backoff=0.2, backoff_max=0.2, max_time=1.0
    ) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch(http_server.url("/busy.bin"))
    assert 1.0 <= time.monotonic() - started < 3.0
    assert "took longer than 1 s" in str(info.value)
    assert 2 <= http_server.count("/busy.bin") <= 11
    # the earlier attempts are listed with the final error
    assert "503" in info.value.attempts[0].message


async def test_max_time_leaves_a_fast_file_alone(http_server: FaultServer, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(503)])
    async with downloader("trio", temp_dir, max_time=30.0) as dl:
        result = await dl.fetch(http_server.url("/a.bin"))
    assert result.attempts == 2 and result.size == len(DATA)


# -- virtual time: the exact rules -----------------------------------------------------------


class _Response:
    def __init__(
        self, url: str, status: int, headers: Mapping[str, str], pieces: list[tuple[float, bytes]]
    ) -> None:
        self.url = url
        self.status_code = status
        self.reason = ""
        self.headers = dict(headers)
        self._pieces = pieces

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        for delay, piece in self._pieces:
            await trio.sleep(delay)
            yield piece


class ScriptedTransport:
    """Answers request *n* with ``script[n]`` — (status, headers, [(delay, bytes), ...]) —
    then with the last entry; records when each request came."""

    def __init__(self, script: list[tuple[int, dict[str, str], list[tuple[float, bytes]]]]):
        self.script = script
        self.times: list[float] = []

    @asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_Response]:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        status, extra, pieces = self.script[min(len(self.times), len(self.script)) - 1]
        yield _Response(url, status, extra, pieces)

    async def aclose(self) -> None:
        return None


def one_byte_per_second(n: int) -> list[tuple[float, bytes]]:
    return [(1.0, b"x")] * n


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_defaults_end_a_one_byte_per_second_server_within_a_minute(
    clock: trio.testing.MockClock, temp_dir: Path
) -> None:
    # the reproduction with every default: 1 byte/s used to download for as long
    # as the server kept it up (here 600 s); the default rule ends it after 30 s
    transport = ScriptedTransport([(200, {}, one_byte_per_second(600))])
    async with triofetch.Downloader(transport=transport, temp_dir=temp_dir, retries=0) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch("http://example.invalid/slow")
    assert trio.current_time() == pytest.approx(30.0)
    assert "slower than 1000 bytes/s for 30 s" in str(info.value)
    assert "30 bytes in 30.0 s" in str(info.value)


async def test_defaults_with_retries(clock: trio.testing.MockClock, temp_dir: Path) -> None:
    transport = ScriptedTransport([(200, {}, one_byte_per_second(600))])
    async with triofetch.Downloader(transport=transport, temp_dir=temp_dir) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch("http://example.invalid/slow")
    # 4 attempts (3 retries), each ended at 30 s, short backoffs between them
    assert len(info.value.attempts) == 4 == len(transport.times)
    assert trio.current_time() < 4 * 30 + 3


async def test_a_transfer_that_slows_down_fails_within_two_windows(
    clock: trio.testing.MockClock, temp_dir: Path
) -> None:
    # 100 kB at once, then 1 byte/s: the first window (0-30 s) is well above the limit; the
    # second (30-60 s) is all trickle and fails at its end
    pieces = [(0.0, b"x" * 100_000), *one_byte_per_second(600)]
    transport = ScriptedTransport([(200, {}, pieces)])
    async with triofetch.Downloader(transport=transport, temp_dir=temp_dir, retries=0) as dl:
        with pytest.raises(triofetch.DownloadTimeout, match="slower than 1000 bytes/s"):
            await dl.fetch("http://example.invalid/slower")
    assert trio.current_time() == pytest.approx(60.0)


async def test_the_rule_is_an_average_over_the_window(
    clock: trio.testing.MockClock, temp_dir: Path
) -> None:
    # 5 s of silence, then a burst: 10 kB in 5 s is 2000 bytes/s on average, above 1000
    pieces = [(5.0, b"x" * 10_000)] * 3
    transport = ScriptedTransport([(200, {}, pieces)])
    async with triofetch.Downloader(
        transport=transport, temp_dir=temp_dir, retries=0, speed_time=5.0
    ) as dl:
        result = await dl.fetch("http://example.invalid/bursts")
    assert result.size == 30_000


async def test_max_time_in_virtual_time(clock: trio.testing.MockClock, temp_dir: Path) -> None:
    # 503 with Retry-After 10, again and again: requests at 0, 10, 20; the wait for the
    # fourth is cut at the file's 25 s
    transport = ScriptedTransport([(503, {"retry-after": "10"}, [])])
    async with triofetch.Downloader(
        transport=transport, temp_dir=temp_dir, retries=10, max_time=25.0
    ) as dl:
        with pytest.raises(triofetch.DownloadTimeout) as info:
            await dl.fetch("http://example.invalid/busy")
    assert transport.times == pytest.approx([0.0, 10.0, 20.0])
    assert trio.current_time() == pytest.approx(25.0)
    assert info.value.message == "took longer than 25 s (max_time)"
    assert len(info.value.attempts) == 4  # three 503s, then the timeout


async def test_max_time_starts_with_the_first_request(
    clock: trio.testing.MockClock, temp_dir: Path
) -> None:
    # a file that waits 100 s for a connection has not used any of its max_time yet
    transport = ScriptedTransport([(200, {}, [(5.0, b"x")])])
    async with triofetch.Downloader(
        transport=transport, temp_dir=temp_dir, connections=1, max_time=10.0, retries=0
    ) as dl:
        await dl.limiter.acquire()  # the only connection is busy for 100 s
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dl.fetch, "http://example.invalid/queued")
            await trio.sleep(100)
            dl.limiter.release()
    # it started at 100 s and took 5 s: within its 10 s
    assert transport.times == pytest.approx([100.0])
    assert trio.current_time() == pytest.approx(105.0)


async def test_retry_after_default_cap_is_60_seconds(
    clock: trio.testing.MockClock, temp_dir: Path
) -> None:
    transport = ScriptedTransport([(503, {"retry-after": "3600"}, []), (200, {}, [(0, b"ok")])])
    async with triofetch.Downloader(transport=transport, temp_dir=temp_dir) as dl:
        result = await dl.fetch("http://example.invalid/x")
    assert result.attempts == 2
    assert transport.times[1] - transport.times[0] == pytest.approx(60.0)


async def test_retry_after_within_the_cap_is_honoured(
    clock: trio.testing.MockClock, temp_dir: Path
) -> None:
    transport = ScriptedTransport([(429, {"retry-after": "45"}, []), (200, {}, [(0, b"ok")])])
    async with triofetch.Downloader(transport=transport, temp_dir=temp_dir) as dl:
        await dl.fetch("http://example.invalid/x")
    assert transport.times[1] - transport.times[0] == pytest.approx(45.0)


async def test_max_retry_after_zero_backs_off_as_usual(
    clock: trio.testing.MockClock, temp_dir: Path
) -> None:
    transport = ScriptedTransport([(503, {"retry-after": "3600"}, []), (200, {}, [(0, b"ok")])])
    async with triofetch.Downloader(
        transport=transport, temp_dir=temp_dir, max_retry_after=0, backoff=2.0
    ) as dl:
        await dl.fetch("http://example.invalid/x")
    assert 1.0 <= transport.times[1] - transport.times[0] <= 2.0


async def test_retry_after_above_the_cap_on_a_real_server(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/later.bin", DATA, faults=[Status(503, {"Retry-After": "3600"})])
    started = time.monotonic()
    async with downloader(transport, temp_dir, max_retry_after=0.3) as dl:
        result = await dl.fetch(http_server.url("/later.bin"))
    assert result.attempts == 2
    assert 0.3 <= time.monotonic() - started < 3.0


# -- options ---------------------------------------------------------------------------------


BAD_OPTIONS = [
    ("speed_limit", -1),
    ("speed_limit", 1.5),
    ("speed_limit", True),
    ("speed_limit", "1000"),
    ("speed_time", 0),
    ("speed_time", -1.0),
    ("speed_time", None),
    ("speed_time", math.inf),
    ("speed_time", math.nan),
    ("max_time", 0),
    ("max_time", -5),
    ("max_time", math.inf),
    ("max_time", True),
    ("max_time", "10"),
    ("max_retry_after", -1),
    ("max_retry_after", True),
    ("max_retry_after", "60"),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS)
def test_bad_options_are_refused(name: str, value: object) -> None:
    with pytest.raises(triofetch.InvalidInput, match=name):
        triofetch.Downloader(**{name: value})
    with pytest.raises(triofetch.InvalidInput, match=name):
        triofetch.fetch("http://127.0.0.1:9/never", **{name: value})


def test_good_options_are_taken() -> None:
    triofetch.Downloader(speed_limit=None, speed_time=0.5, max_time=None, max_retry_after=0)
    triofetch.Downloader(speed_limit=0, speed_time=120, max_time=3600.0, max_retry_after=600)


# -- the command line ------------------------------------------------------------------------


def temp_files(root: Path) -> list[Path]:
    tmp = root / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def test_cli_trickled_manifest_exit_2(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"f{i}.bin": os.urandom(100) for i in range(20)}
    url = publish(http_server, files)
    http_server.add_faults("/repo/PULP_MANIFEST", [TRICKLE] * 5)
    root, tmpdir = tmp_path / "root", tmp_path / "systemp"
    tmpdir.mkdir()
    started = time.monotonic()
    result = run_cli(
        "sync", url, "--root", root, "--repository", "r", "--retries", "1",
        "--speed-limit", "1000", "--speed-time", "1",
        env={"TMPDIR": str(tmpdir)}, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 15
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result
    assert "cannot fetch the manifest" in lines[0]
    assert "slower than 1000 bytes/s for 1 s" in lines[0]
    assert http_server.count("/repo/PULP_MANIFEST") == 2  # retried once
    assert not root.exists() or not temp_files(root)
    assert not any(tmpdir.iterdir())


def test_cli_trickled_file_fails_then_resyncs(http_server: FaultServer, tmp_path: Path) -> None:
    files = {"fast.bin": os.urandom(1000), "slow.bin": DATA}
    url = publish(http_server, files, faults={"slow.bin": [TRICKLE] * 2})
    root = tmp_path / "root"
    result = run_cli(
        "sync", url, "--root", root, "--repository", "r", "--retries", "1",
        "--speed-limit", "1000", "--speed-time", "1", timeout=60,
    )  # fmt: skip
    assert result.code == 1, result
    assert "Traceback" not in result.err
    failed = [line for line in result.err.splitlines() if line.startswith("triofetch: failed")]
    assert len(failed) == 1 and "slow.bin" in failed[0], result
    assert "slower than 1000 bytes/s for 1 s" in failed[0]
    assert not temp_files(root)
    # the server is fast again: the next sync completes
    again = run_cli("sync", url, "--root", root, "--repository", "r")
    assert again.code == 0, again
    assert run_cli("verify", "--root", root).code == 0


def test_cli_max_time(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(
        http_server, {"long.bin": DATA}, faults={"long.bin": [Slow(delay=0.05, chunk=100)]}
    )
    root = tmp_path / "root"
    result = run_cli(
        "sync", url, "--root", root, "--repository", "r",
        "--speed-limit", "0", "--max-time", "1", timeout=60,
    )  # fmt: skip
    assert result.code == 1, result
    assert "took longer than 1 s (max_time)" in result.err
    assert "Traceback" not in result.err
    assert not temp_files(root)


def test_cli_max_retry_after(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(
        http_server,
        {"later.bin": DATA},
        faults={"later.bin": [Status(503, {"Retry-After": "3600"})]},
    )
    started = time.monotonic()
    result = run_cli(
        "sync", url, "--root", tmp_path / "root", "--repository", "r",
        "--max-retry-after", "0.5", timeout=60,
    )  # fmt: skip
    assert result.code == 0, result
    assert time.monotonic() - started < 20


def test_cli_repair_takes_the_flags(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, {"a.bin": DATA})
    root = tmp_path / "root"
    # (the store to repair: the sync's main() in process; repair runs as a process)
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    (root / "artifacts" / SHA256[:2] / SHA256[2:4] / SHA256).unlink()
    http_server.add_faults("/repo/a.bin", [TRICKLE])
    result = run_cli(
        "repair", "--root", root, "--retries", "0", "--speed-limit", "1000", "--speed-time", "1",
        timeout=60,
    )  # fmt: skip
    assert result.code == 1, result
    assert "Traceback" not in result.err
    assert "slower than 1000 bytes/s for 1 s" in result.err
    assert not temp_files(root)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--speed-limit", "-1", "expected an integer >= 0"),
        ("--speed-limit", "1k", "expected an integer"),
        ("--speed-time", "0", "expected a number of seconds > 0"),
        ("--speed-time", "inf", "expected a number of seconds >= 0"),
        ("--max-time", "-1", "expected a number of seconds >= 0"),
        ("--max-time", "nan", "expected a number of seconds >= 0"),
        ("--max-retry-after", "soon", "expected a number of seconds"),
    ],
)
def test_cli_bad_flags_exit_2(tmp_path: Path, flag: str, value: str, message: str) -> None:
    # in-process: usage errors stop before any I/O (the subprocess path is the same main())
    for command in (["sync", "http://127.0.0.1:9/M", "--repository", "r"], ["repair"]):
        result = run_cli_in_process(*command, "--root", tmp_path / "root", f"{flag}={value}")
        assert result.code == 2, result
        assert flag in result.err and message in result.err, result
        assert "Traceback" not in result.err


def test_cli_flags_left_out_keep_the_library_defaults() -> None:
    from triofetch._cli._parser import build_parser
    from triofetch._cli._sync import time_bounds

    for argv in (["sync", "x", "--repository", "r"], ["repair"]):
        args = build_parser().parse_args(argv)
        assert time_bounds(args) == {}
    args = build_parser().parse_args(["repair", "--max-time", "0", "--speed-limit", "0"])
    assert time_bounds(args) == {"max_time": None, "speed_limit": 0}
