"""Errors in the usual hierarchy (#17, item 6): builtin bases where one fits, pickling
round trips of every public exception, and a clear error when called from asyncio."""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import pickle
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import trio

import triofetch
from triofetch import errors
from triofetch.storage import ArtifactStorage, FileToAdopt


class _Key:
    type = "file"
    natural_key = ("a",)


def samples() -> list[BaseException]:
    url = "http://user:secret@example.org/x"
    return [
        errors.TriofetchError("boom"),
        errors.InvalidInput("bad"),
        errors.UnsupportedAlgorithm("md4", ["sha256"]),
        errors.InvalidDigest("sha256", "zz", "not hex"),
        errors.InvalidUnit("unsafe path"),
        errors.ArtifactMismatch("size", 1, 2, path=Path("/tmp/x")),
        errors.DownloadError("failed", url=url),
        errors.HTTPStatusError(503, url=url, reason="Busy", retry_after=2.0),
        errors.DigestMismatch("sha256", "a" * 64, "b" * 64, url=url),
        errors.SizeMismatch(10, 12, url=url, exceeded=True),
        errors.InvalidURL("no scheme", url="x"),
        errors.TooManyRedirects("11 redirects", url=url),
        errors.DestinationError(
            "/d/x", PermissionError(errno.EACCES, "Permission denied"), url=url
        ),
        errors.TempFileError(OSError(errno.ENOSPC, "No space left on device"), "/t", url=url),
        errors.TransportError("broke", url=url),
        errors.ConnectionFailed("connection refused", url=url),
        errors.DownloadTimeout("no byte for 5 s", url=url),
        errors.TruncatedBody("ended at 5 of 10 bytes", url=url),
        errors.ManifestError("3 fields expected", line_number=2, line="a,b", source=url),
        errors.StoreError("db"),
        errors.SchemaVersionError("schema 9"),
        errors.StoreNotFound("/s.db"),
        errors.NotAStore("/s.db", "empty file"),
        errors.RepositoryNotFound("r"),
        errors.VersionNotFound("no version 3"),
        errors.VersionNotWritable("complete"),
        errors.ArtifactConflict("c" * 64, 1, 2),
        errors.RepositoryKeyConflict(_Key(), "a", _Key(), how="has the key of"),
        errors.StoreBusy(3.0),
        errors.StorageWriteError(OSError(errno.ENOSPC, "No space left"), "/root/tmp"),
        errors.ArtifactMissing("d" * 64, Path("/a/d")),
        errors.UnitFailed(("file", "a"), ValueError("why")),
        errors.WrongContext("not here"),
    ]


def test_samples_cover_every_public_exception() -> None:
    public = {
        name
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), BaseException)
    }
    assert {type(e).__name__ for e in samples()} == public


@pytest.mark.parametrize("error", samples(), ids=lambda e: type(e).__name__)
def test_pickle_round_trip(error: BaseException) -> None:
    if isinstance(error, errors.DownloadError):
        error.attempts = [errors.ConnectionFailed("refused", url="http://a/x"), error]
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    skip = {"attempts", "key", "other", "cause"}
    state = {k: v for k, v in vars(error).items() if k not in skip}
    assert {k: v for k, v in vars(copy).items() if k not in skip} == state
    if isinstance(error, errors.DownloadError):
        assert isinstance(copy, errors.DownloadError)
        assert copy.attempts[-1] is copy
        assert [str(a) for a in copy.attempts] == [str(a) for a in error.attempts]


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (triofetch.DownloadTimeout, TimeoutError),
        (triofetch.ConnectionFailed, ConnectionError),
        (triofetch.InvalidURL, ValueError),
        (triofetch.InvalidInput, ValueError),
        (triofetch.StoreNotFound, LookupError),
        (triofetch.WrongContext, RuntimeError),
    ],
)
def test_builtin_bases(cls: type[BaseException], builtin: type[BaseException]) -> None:
    assert issubclass(cls, builtin)
    assert issubclass(cls, triofetch.TriofetchError)


def test_os_error_attributes_are_empty() -> None:
    # an OSError by class, not one with an errno of its own: no "[Errno ...]" in the text,
    # and a full-disk check never mistakes it for a disk error
    exc = triofetch.DownloadTimeout("no byte for 5 s", url="http://a/x")
    assert exc.errno is None and exc.strerror is None and exc.filename is None
    assert str(exc) == "no byte for 5 s (http://a/x)"
    assert not triofetch.StorageWriteError.matches(exc)


async def test_refused_connection_is_a_connection_error(temp_dir: Path) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with triofetch.Downloader(retries=0, temp_dir=temp_dir) as dl:
        with pytest.raises(ConnectionError):
            await dl.fetch(f"http://127.0.0.1:{port}/x")


# -- called from asyncio ---------------------------------------------------------------------


def _run_under_asyncio(main: object) -> triofetch.WrongContext:
    with pytest.raises(triofetch.WrongContext) as info:
        asyncio.run(main)  # type: ignore[arg-type]
    return info.value


def _says_what_to_do(exc: triofetch.WrongContext) -> None:
    text = str(exc)
    assert "triofetch runs under Trio, not asyncio" in text
    assert "trio.run(" in text and "triofetch.fetch()" in text
    # (in a worker thread: a blocking call on the event loop would block it for the download)
    assert "asyncio.to_thread" in text


def test_downloader_under_asyncio() -> None:
    async def main() -> None:
        async with triofetch.Downloader() as dl:
            await dl.fetch("http://127.0.0.1:9/x")

    _says_what_to_do(_run_under_asyncio(main()))


def test_open_store_under_asyncio(tmp_path: Path) -> None:
    async def main() -> None:
        async with triofetch.open_store(root=tmp_path / "root"):
            pass

    _says_what_to_do(_run_under_asyncio(main()))
    assert not (tmp_path / "root").exists()  # nothing done


def _storage_calls(storage: ArtifactStorage) -> dict[str, Coroutine[Any, Any, object]]:
    """A call of each async method of *storage* (none of them started yet)."""
    sha, temp = "0" * 64, storage.temp_dir / "x"
    result = triofetch.DownloadResult("file:///x", temp, 1, {"sha256": sha})
    return {
        "adopt": storage.adopt(temp, sha256=sha, size=1),
        "adopt_many": storage.adopt_many([FileToAdopt(b"x", sha, 1)]),
        "adopt_result": storage.adopt_result(result),
        "add_bytes": storage.add_bytes(b"x"),
        "sync": storage.sync(),
        "exists": storage.exists(sha),
        "damaged": storage.damaged({}),
        "open": storage.open(sha),
        "read_bytes": storage.read_bytes(sha),
        "verify": storage.verify(),
        "check": storage.check(sha),
        "cleanup_temp": storage.cleanup_temp(),
    }


def test_artifact_storage_under_asyncio(tmp_path: Path) -> None:
    """Every async method of ArtifactStorage, awaited under asyncio, raises WrongContext
    (Trio's bare RuntimeError came from its worker threads; ``sync`` and ``damaged({})``
    returned as if they had worked), and nothing is written."""
    storage = ArtifactStorage(tmp_path / "root")
    calls = _storage_calls(storage)
    public = {
        name
        for name, value in vars(ArtifactStorage).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }
    assert set(calls) == public  # a new async method is checked here too
    for name, call in calls.items():
        exc = _run_under_asyncio(call)
        _says_what_to_do(exc)
        assert os.listdir(storage.temp_dir) == [], name
    assert os.listdir(storage.artifacts_dir) == []


def test_unit_downloader_under_asyncio() -> None:
    async def main() -> None:
        async with triofetch.UnitDownloader(triofetch.Downloader()):
            pass

    _says_what_to_do(_run_under_asyncio(main()))


def test_outside_any_event_loop() -> None:
    # a coroutine driven by hand: no async library at all
    coro = triofetch.Downloader().__aenter__()
    with pytest.raises(triofetch.WrongContext, match="runs under Trio") as info:
        coro.send(None)
    assert "asyncio" not in str(info.value)
