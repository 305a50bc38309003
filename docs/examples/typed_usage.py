"""The public API as a type-checked user writes it.

``nox -s typecheck`` holds this file to ``mypy --strict`` (with the rest of
``docs/examples/``), and the test suite runs it: every annotation below is a type a user
may rely on — ``if outcome.ok:`` narrowing, paths as ``os.PathLike``, the keyword options
of ``fetch()`` and ``download_units()``, errors caught as the builtins they also are.
``tests/test_typing.py`` checks that misuses (a misspelt option) are type errors.
Run it with ``python docs/examples/typed_usage.py``.
"""

from __future__ import annotations

import socket
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch
from triofetch.downloader import DownloaderOptions

FILES = {"a.txt": b"a" * 3000, "b.txt": b"b" * 4000}


def units_of(base: str) -> list[triofetch.DeclarativeUnit]:
    return [
        triofetch.DeclarativeUnit(
            "file",
            (name, sha256(data)),
            {"relative_path": name},
            [triofetch.DeclarativeArtifact(base + name, name, {"sha256": sha256(data)})],
        )
        for name, data in FILES.items()
    ]


async def many(base: str, keep: Path) -> Counter[bool]:
    """``fetch_many`` with ``FetchRequest``; ``ok`` narrows each outcome; ``move_to``."""
    requests: list[str | triofetch.FetchRequest] = [
        base + "a.txt",
        triofetch.FetchRequest(
            base + "missing.txt",
            mirrors=[base + "b.txt"],
            expected_digests={"sha256": sha256(FILES["b.txt"])},
            expected_size=len(FILES["b.txt"]),
            destination=keep / "b.txt",
        ),
        triofetch.FetchRequest(base + "none.txt", headers={"x-example": "1"}),
    ]
    seen: Counter[bool] = Counter()
    async with (
        triofetch.Downloader(connections=4, per_host=2, retries=1, backoff=0.01) as dl,
        dl.fetch_many(requests, in_flight=2) as outcomes,
    ):
        private: Path | None = dl.temp_dir
        assert private is not None
        async for outcome in outcomes:
            seen[outcome.ok] += 1
            if outcome.ok:
                succeeded: triofetch.FetchSucceeded = outcome
                result: triofetch.DownloadResult = succeeded.result
                if outcome.request.destination is None:
                    result = await result.move_to(keep / "a.txt")
                kept: Path = result.path
                digests: Mapping[str, str] = result.digests
                assert await trio.Path(kept).exists() and digests["sha256"] == result.sha256
            else:
                failed: triofetch.FetchFailed = outcome
                error: triofetch.TriofetchError = failed.error
                if isinstance(error, triofetch.HTTPStatusError):
                    status: int = error.status_code
                    assert status == 404
    return seen


def blocking(base: str, keep: Path) -> triofetch.DownloadResult:
    """``fetch()`` with its options spelt out (a ``DownloaderOptions`` mapping)."""
    options: DownloaderOptions = {
        "retries": 2,
        "read_timeout": 5.0,
        "digests": triofetch.PULP_ALGORITHMS,  # computed besides sha256
    }
    return triofetch.fetch(
        base + "a.txt",
        expected_digests={"sha256": sha256(FILES["a.txt"])},
        expected_size=len(FILES["a.txt"]),
        destination=keep / "fetched.txt",
        **options,
    )


@contextmanager
def silent_server() -> Iterator[str]:
    """A URL on 127.0.0.1 whose server accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow.txt"


def closed_port_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port: int = listener.getsockname()[1]
    return f"http://127.0.0.1:{port}/x"  # nothing listens there any more


def builtin_errors() -> list[str]:
    """triofetch's errors are caught as the builtins they also are."""
    caught: list[str] = []
    try:
        triofetch.fetch(closed_port_url(), retries=0)
    except ConnectionError as exc:  # ConnectionFailed
        caught.append(type(exc).__name__)
    with silent_server() as url:
        try:
            triofetch.fetch(url, retries=0, connect_timeout=0.2)
        except TimeoutError as exc:  # DownloadTimeout
            caught.append(type(exc).__name__)
    try:
        triofetch.fetch("http://127.0.0.1:9/x", expected_digests={"sha256": "not hex"})
    except ValueError as exc:  # InvalidInput (InvalidDigest)
        caught.append(type(exc).__name__)
    return caught


async def wrong_context() -> str:
    try:
        triofetch.fetch("http://127.0.0.1:9/x")
    except RuntimeError as exc:  # WrongContext: use a Downloader inside a Trio run
        return type(exc).__name__
    raise AssertionError("fetch() inside trio.run did not refuse")


async def units_async(base: str, incoming: Path) -> list[str]:
    """``UnitDownloader`` with a ``Path`` temp_dir; ``ok`` narrows each outcome."""
    names: list[str] = []
    async with (
        triofetch.Downloader() as dl,
        triofetch.UnitDownloader(dl, temp_dir=incoming, buffer=4) as unit_downloader,
    ):
        async for done in unit_downloader.download(units_of(base)):
            if done.ok:
                downloaded: triofetch.DownloadedUnit = done
                results: Mapping[str, triofetch.DownloadResult] = downloaded.results
                names.extend(results)
                downloaded.discard()
            else:
                failed_unit: triofetch.FailedUnit = done
                cause: BaseException = failed_unit.error.cause
                print("failed:", cause)
    return names


def units_sync(base: str, incoming: Path) -> int:
    count = 0
    outcome: triofetch.UnitOutcome
    for outcome in triofetch.download_units(units_of(base), temp_dir=incoming, connections=2):
        count += outcome.ok
        outcome.discard()
    return count


async def create(base: str, root: Path) -> triofetch.CreateReport:
    """``open_store`` and ``ContentUnitCreator``; the report and the versions."""
    kinds: Counter[triofetch.CreatorEventKind] = Counter()

    def on_event(event: triofetch.CreatorEvent) -> None:
        kinds[event.kind] += 1

    async with (
        triofetch.open_store(root=root) as store,
        triofetch.Downloader(connections=4) as dl,
    ):
        creator = triofetch.ContentUnitCreator(store, dl, policy="immediate", on_event=on_event)
        report: triofetch.CreateReport = await creator.run(units_of(base), repository="typed")
        failure: triofetch.UnitFailure
        for failure in report.failures:
            print("failed:", failure.key, failure.url)
        versions: list[triofetch.VersionInfo] = await store.versions("typed")
        assert [v.number for v in versions] == [report.version]
        listed: list[triofetch.UnitInfo] = await store.list_units("typed")
        assert len(listed) == len(FILES) and kinds["committed"] == len(FILES)
    return report


def main() -> None:
    with serve_files(FILES) as base, tempfile.TemporaryDirectory() as tmp:
        keep, incoming, root = Path(tmp, "keep"), Path(tmp, "incoming"), Path(tmp, "store")
        keep.mkdir()
        incoming.mkdir()
        seen = trio.run(many, base, keep)
        print("fetch_many:", seen[True], "ok,", seen[False], "failed")
        result = blocking(base, keep)
        print("fetch:", result.path.name, sorted(result.digests))
        print("caught:", ", ".join(builtin_errors()), trio.run(wrong_context))
        print("UnitDownloader:", sorted(trio.run(units_async, base, incoming)))
        print("download_units:", units_sync(base, incoming), "units")
        report = trio.run(create, base, root)
        print("creator: version", report.version, "with", report.units_new, "new units")
        assert sorted(p.name for p in keep.iterdir()) == ["a.txt", "b.txt", "fetched.txt"]
        assert list(incoming.iterdir()) == []


if __name__ == "__main__":
    main()
