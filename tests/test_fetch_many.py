"""``Downloader.fetch_many``: many downloads as outcomes, in completion order (issue #17, item 1).

Against the real loopback fault server: a failed download is an outcome and never cancels
the others; a bad request is refused before anything starts; leaving the block early
(``break``, an exception, a cancellation from outside) cancels what still runs and leaves no
file the caller was not handed — temp file or destination file; the input is read lazily and
no more downloads run at once than the bound; ``if outcome.ok:`` narrows under
``mypy --strict``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import trio

import triofetch
from triofetch.downloader import (
    DownloadResult,
    FetchFailed,
    FetchOutcome,
    FetchPlan,
    FetchRequest,
    FetchSucceeded,
)
from triofetch.testing import FaultServer, Hang, Slow

DATA = os.urandom(50_000)
SHA256 = hashlib.sha256(DATA).hexdigest()
REPO = Path(__file__).resolve().parent.parent


def downloader(temp_dir: Path, transport: str = "trio", **kw: object) -> triofetch.Downloader:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("read_timeout", 5.0)
    kw.setdefault("connect_timeout", 5.0)
    return triofetch.Downloader(transport=transport, temp_dir=temp_dir, **kw)  # type: ignore[arg-type]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def files(*directories: Path) -> list[Path]:
    return sorted(p for directory in directories for p in directory.iterdir())


async def collect(dl: triofetch.Downloader, requests: object) -> list[FetchOutcome]:
    got: list[FetchOutcome] = []
    async with dl.fetch_many(requests) as outcomes:  # type: ignore[arg-type]
        async for outcome in outcomes:
            got.append(outcome)
    return got


# -- outcomes -----------------------------------------------------------------------------


async def test_outcomes_come_in_completion_order(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/slow", DATA, faults=[Slow(delay=0.05, chunk=10_000)])
    http_server.add_file("/fast1", DATA)
    http_server.add_file("/fast2", DATA)
    requests = [http_server.url(p) for p in ("/slow", "/fast1", "/fast2")]
    async with downloader(temp_dir, transport) as dl:
        got = await collect(dl, requests)
    assert [o.request.url for o in got][-1] == http_server.url("/slow")
    assert sorted(o.request.url for o in got) == sorted(requests)
    for outcome in got:
        assert isinstance(outcome, FetchSucceeded) and outcome.ok is True
        assert outcome.request == FetchRequest(outcome.request.url)  # a URL becomes a request
        assert outcome.result.path.read_bytes() == DATA
        assert outcome.result.sha256 == SHA256
    # the three temp files are the caller's, and nothing else is there
    assert names(temp_dir) == sorted(o.result.path.name for o in got if o.ok)


async def test_a_failed_download_is_an_outcome_and_the_others_succeed(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/good", DATA)
    http_server.add_file("/other", DATA)
    http_server.add_file("/wrong", DATA)
    wrong = FetchRequest(http_server.url("/wrong"), expected_digests={"sha256": "0" * 64})
    requests: list[FetchRequest | str] = [
        http_server.url("/missing"),  # 404
        wrong,
        http_server.url("/good"),
        FetchRequest(http_server.url("/other"), expected_size=len(DATA)),
    ]
    async with downloader(temp_dir, transport, retries=1) as dl:
        got = await collect(dl, requests)
    by_url = {o.request.url: o for o in got}
    assert len(got) == 4
    missing = by_url[http_server.url("/missing")]
    assert isinstance(missing, FetchFailed) and missing.ok is False
    assert isinstance(missing.error, triofetch.HTTPStatusError)
    assert missing.error.status_code == 404
    mismatch = by_url[http_server.url("/wrong")]
    assert isinstance(mismatch, FetchFailed)
    assert mismatch.request is wrong
    assert isinstance(mismatch.error, triofetch.DigestMismatch)
    for url in ("/good", "/other"):
        ok = by_url[http_server.url(url)]
        assert isinstance(ok, FetchSucceeded)
        assert ok.result.path.read_bytes() == DATA
    # the failures left no temp file: only the two results' files remain
    assert len(names(temp_dir)) == 2


async def test_an_outcome_logged_shows_no_credential(
    http_server: FaultServer, temp_dir: Path
) -> None:
    """An outcome's repr (what ``log.warning("%r", outcome)`` writes) showed the password
    of its request's URL and mirrors, and the value of its headers (a bearer token, say),
    though no credential is ever to be logged (docs/downloader.rst, "Logging")."""
    http_server.add_file("/a", DATA)
    http_server.require_basic_auth("user", "s3cret")
    url = http_server.url("/a").replace("http://", "http://user:wr0ng@")
    mirror = http_server.url("/a").replace("http://", "http://user:s3cret@")
    request = FetchRequest(url, mirrors=[mirror], headers={"X-Api-Key": "k3y"})
    async with downloader(temp_dir, retries=0) as dl:
        (outcome,) = await collect(dl, [request])
    assert outcome.ok and outcome.request is request
    assert outcome.request.url == url and outcome.request.mirrors == [mirror]  # (kept)
    shown = repr(outcome)
    for secret in ("s3cret", "wr0ng", "k3y"):
        assert secret not in shown
    assert "http://***@127.0.0.1" in shown and "'X-Api-Key': '***'" in shown
    failed = FetchFailed(request, triofetch.InvalidURL("x", url="http://h/"))
    assert "wr0ng" not in repr(failed) and "s3cret" not in repr(failed)
    unit = triofetch.DeclarativeUnit(
        "t", ("a",), artifacts=[triofetch.DeclarativeArtifact([url, mirror], "a")]
    )
    assert "wr0ng" not in repr(unit) and "s3cret" not in repr(unit)
    assert unit.artifacts[0].urls == (url, mirror)  # (the URLs themselves are unchanged)
    # the store's records of where a file can be fetched (on-demand units) likewise
    from triofetch.store import MissingArtifact, RemoteArtifact, UnitKey

    remote = RemoteArtifact((url, mirror), 5)
    missing = MissingArtifact(1, UnitKey("t", ("a",)), "a", (url, mirror), 5, {})
    for record in (remote, missing):
        assert "wr0ng" not in repr(record) and "s3cret" not in repr(record), record
        assert "http://***@127.0.0.1" in repr(record)
    assert set(remote.urls) == {url, mirror} and missing.urls == (url, mirror)


async def test_mirrors_headers_and_destination_are_passed_to_the_fetch(
    http_server: FaultServer, temp_dir: Path, tmp_path: Path
) -> None:
    http_server.add_file("/mirror", DATA)
    target = tmp_path / "out.bin"
    request = FetchRequest(
        http_server.url("/gone"),
        mirrors=[http_server.url("/mirror")],
        destination=target,
        headers={"X-Test": "yes"},
        expected_digests={"sha256": SHA256},
    )
    async with downloader(temp_dir, retries=0) as dl:
        (outcome,) = await collect(dl, [request])
    assert outcome.ok
    assert outcome.result.path == target and target.read_bytes() == DATA
    assert http_server.requests[-1].headers["x-test"] == "yes"
    assert names(temp_dir) == []


# -- bad requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        FetchRequest("http://x/", expected_digests={"sha256": "zz"}),
        FetchRequest("http://x/", expected_size=-1),
        FetchRequest(""),
        FetchRequest("http://x/", mirrors="http://y/"),
        42,  # not a request at all
    ],
    ids=["digest", "size", "empty-url", "mirrors-string", "not-a-request"],
)
async def test_a_bad_request_raises_before_anything_starts(
    http_server: FaultServer, temp_dir: Path, bad: object
) -> None:
    http_server.add_file("/a", DATA)
    async with downloader(temp_dir) as dl:
        with pytest.raises(triofetch.InvalidInput):
            dl.fetch_many([http_server.url("/a"), http_server.url("/a"), bad])  # type: ignore[list-item]
        await trio.sleep(0.05)
    assert http_server.requests == []
    assert names(temp_dir) == []


async def test_two_requests_with_one_destination_are_refused(
    http_server: FaultServer, temp_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "same"
    requests = [
        FetchRequest(http_server.url("/a"), destination=target),
        FetchRequest(http_server.url("/b"), destination=str(target)),
    ]
    async with downloader(temp_dir) as dl:
        with pytest.raises(triofetch.InvalidInput, match="share the destination"):
            dl.fetch_many(requests)
        with pytest.raises(triofetch.InvalidInput, match="single string"):
            dl.fetch_many(http_server.url("/a"))
    assert http_server.requests == []


async def test_a_bad_request_in_a_lazy_input_raises_out_of_the_block(
    http_server: FaultServer, temp_dir: Path
) -> None:
    http_server.add_file("/hang", DATA, faults=[Hang(30)])

    def lazy() -> Iterator[FetchRequest | str]:
        yield http_server.url("/hang")
        yield FetchRequest(http_server.url("/a"), expected_digests={"nope": "00"})

    async with downloader(temp_dir) as dl:
        with trio.fail_after(5), pytest.raises(triofetch.InvalidInput):
            await collect(dl, lazy())
    assert names(temp_dir) == []


async def test_fetch_many_needs_an_open_downloader(temp_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="async with"):
        downloader(temp_dir).fetch_many(["http://127.0.0.1:1/"])


# -- leaving early ------------------------------------------------------------------------


def early_exit_server(server: FaultServer) -> None:
    for i in range(6):
        server.add_file(f"/f{i}", DATA)
    server.add_file("/hang", DATA, faults=[Hang(30)])


def early_exit_requests(server: FaultServer, destinations: Path) -> list[FetchRequest]:
    requests = [FetchRequest(server.url("/hang"))]
    for i in range(6):
        destination = destinations / f"f{i}" if i % 2 else None
        requests.append(FetchRequest(server.url(f"/f{i}"), destination=destination))
    return requests


async def test_break_cancels_the_rest_and_removes_every_file_not_handed(
    http_server: FaultServer, temp_dir: Path, tmp_path: Path
) -> None:
    early_exit_server(http_server)
    destinations = tmp_path / "dest"
    destinations.mkdir()
    requests = early_exit_requests(http_server, destinations)
    handed: list[FetchOutcome] = []
    async with downloader(temp_dir) as dl:
        with trio.fail_after(5):
            async with dl.fetch_many(requests) as outcomes:
                async for outcome in outcomes:
                    handed.append(outcome)
                    # let every quick download complete (into the buffer, or waiting to be
                    # received), then leave while the hanging one still runs
                    await trio.sleep(0.3)
                    break
    (first,) = handed
    assert first.ok
    kept = [first.result.path]
    assert files(temp_dir, destinations) == kept
    assert first.result.path.read_bytes() == DATA


async def test_an_exception_in_the_block_removes_every_file_not_handed(
    http_server: FaultServer, temp_dir: Path, tmp_path: Path
) -> None:
    early_exit_server(http_server)
    destinations = tmp_path / "dest"
    destinations.mkdir()
    async with downloader(temp_dir) as dl:
        with trio.fail_after(5), pytest.raises(KeyError):
            async with dl.fetch_many(early_exit_requests(http_server, destinations)):
                await trio.sleep(0.3)  # nothing received
                raise KeyError("mine")
    assert names(temp_dir) == [] and names(destinations) == []


async def test_cancellation_from_outside_removes_every_file_not_handed(
    http_server: FaultServer, temp_dir: Path, tmp_path: Path
) -> None:
    early_exit_server(http_server)
    destinations = tmp_path / "dest"
    destinations.mkdir()
    handed: list[FetchOutcome] = []
    async with downloader(temp_dir, connections=2) as dl:
        with trio.move_on_after(0.5) as scope:
            async with dl.fetch_many(early_exit_requests(http_server, destinations)) as outcomes:
                async for outcome in outcomes:
                    handed.append(outcome)
                    await trio.sleep_forever()
    assert scope.cancelled_caught
    assert len(handed) == 1 and handed[0].ok
    kept = [handed[0].result.path]
    assert files(temp_dir, destinations) == kept


async def test_a_bug_propagates_out_of_the_block(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(url: str | Sequence[str], plan: FetchPlan) -> DownloadResult:
        if url[0].endswith("/b"):
            await trio.sleep_forever()  # (cancelled by the bug of the other one)
        raise ZeroDivisionError("a bug")

    async with downloader(temp_dir) as dl:
        monkeypatch.setattr(dl, "fetch_planned", broken)
        with pytest.raises(ZeroDivisionError, match="a bug"):
            await collect(dl, ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"])


# -- bounded ------------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["iterator", "async-iterator"])
async def test_a_lazy_input_of_10000_requests_is_read_and_run_within_the_bound(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch, asynchronous: bool
) -> None:
    total = 10_000
    running = 0
    most = 0
    read = 0

    async def counting(url: str | Sequence[str], plan: FetchPlan) -> DownloadResult:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
        finally:
            running -= 1
        return DownloadResult(url[0], temp_dir / "none", 0, {"sha256": "0" * 64})

    def requests() -> Iterator[str]:
        nonlocal read
        for i in range(total):
            read += 1
            yield f"http://127.0.0.1:1/{i}"

    async def arequests() -> AsyncIterator[str]:
        for url in requests():
            yield url

    received = 0
    async with downloader(temp_dir, connections=4) as dl:
        monkeypatch.setattr(dl, "fetch_planned", counting)
        source = arequests() if asynchronous else requests()
        async with dl.fetch_many(source) as outcomes:
            async for outcome in outcomes:
                received += 1
                assert outcome.ok
                # read no further than the downloads in flight (2 x connections), the
                # channel's small buffer and the item being started
                assert read - received <= 8 + 4 + 1
    assert received == read == total
    assert 1 < most <= 8


async def test_in_flight_bounds_the_downloads_at_the_server(
    http_server: FaultServer, temp_dir: Path
) -> None:
    http_server.add_file("/s", DATA, faults=[Slow(delay=0.02, chunk=25_000)] * 12)
    async with downloader(temp_dir, connections=8) as dl:
        got = await collect_with(dl, [http_server.url("/s")] * 12, in_flight=3)
    assert all(o.ok for o in got) and len(got) == 12
    # the server saw at most three requests at once (each took about 40 ms)
    times = sorted(r.time for r in http_server.requests)
    assert len(times) == 12
    assert all(later - earlier >= 0.019 for earlier, later in zip(times, times[3:], strict=False))


async def collect_with(
    dl: triofetch.Downloader, requests: list[str], in_flight: int
) -> list[FetchOutcome]:
    got: list[FetchOutcome] = []
    async with dl.fetch_many(requests, in_flight=in_flight) as outcomes:
        async for outcome in outcomes:
            got.append(outcome)
            if outcome.ok:
                outcome.result.path.unlink()
    return got


# -- typing -------------------------------------------------------------------------------

TYPED = """\
from pathlib import Path

import triofetch
from triofetch.downloader import FetchRequest


async def main(dl: triofetch.Downloader) -> list[Path]:
    paths: list[Path] = []
    requests: list[FetchRequest | str] = [
        "https://example.org/a",
        FetchRequest("https://example.org/b"),
    ]
    async with dl.fetch_many(requests) as outcomes:
        async for outcome in outcomes:
            if outcome.ok:
                paths.append(outcome.result.path)
            else:
                error: triofetch.TriofetchError = outcome.error
                print(error, outcome.request.url)
    return paths
"""

UNNARROWED = """\
from triofetch.downloader import FetchOutcome


def wrong(outcome: FetchOutcome) -> object:
    return outcome.result
"""


def test_if_outcome_ok_narrows_under_mypy_strict(tmp_path: Path, mypy_cache: Path) -> None:
    (tmp_path / "typed_use.py").write_text(TYPED, encoding="utf-8")
    (tmp_path / "unnarrowed.py").write_text(UNNARROWED, encoding="utf-8")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(mypy_cache),
            str(tmp_path / "typed_use.py"),
            str(tmp_path / "unnarrowed.py"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    # the narrowed use is clean; without the check, ``result`` is not on every outcome
    assert not [e for e in errors if "typed_use.py" in e], run.stdout
    assert len(errors) == 1, run.stdout
    assert "unnarrowed.py:5" in errors[0], run.stdout
    assert '"FetchFailed"' in errors[0] and 'has no attribute "result"' in errors[0], run.stdout
