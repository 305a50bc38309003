"""Fetch many files and learn which failed: ``Downloader.fetch_many``.

Serves three files on 127.0.0.1 and asks for five: one is missing on its first URL but
found on its mirror, one has a wrong expected digest, one does not exist.  Each request
gives one outcome, in completion order; the failures do not stop the others.  Every file
downloaded ends in ``keep/``, moved there by ``destination=`` or by ``result.move_to``.
Run it with ``python docs/examples/fetch_many_example.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch

FILES = {
    "a.txt": b"the first file\n" * 100,
    "b.txt": b"the second file\n" * 200,
    "mirror/c.txt": b"the third file\n" * 300,
    **{f"many/{n}.bin": bytes([n]) * 100_000 for n in range(20)},
}


async def fetch_all(base: str, keep: Path) -> list[str]:
    """Download five files into *keep*; return the URLs that failed."""
    # [start-fetch-many]
    requests: list[str | triofetch.FetchRequest] = [
        base + "a.txt",  # a URL alone: no expected size or digest
        triofetch.FetchRequest(
            base + "b.txt",
            expected_digests={"sha256": sha256(FILES["b.txt"])},
            destination=keep / "b.txt",  # moved there once validated
        ),
        triofetch.FetchRequest(
            base + "c.txt",  # 404 here, not retried...
            mirrors=[base + "mirror/c.txt"],  # ...so the mirror is tried next
            expected_size=len(FILES["mirror/c.txt"]),
        ),
        triofetch.FetchRequest(base + "a.txt", expected_digests={"sha256": "0" * 64}),
        base + "missing.txt",
    ]
    failed: list[str] = []
    async with (
        triofetch.Downloader(connections=16) as dl,
        dl.fetch_many(requests) as outcomes,
    ):
        async for outcome in outcomes:
            if outcome.ok:  # a FetchSucceeded: outcome.result is a DownloadResult
                result = outcome.result
                if outcome.request.destination is None:  # still in dl's temp dir
                    name = result.url.rsplit("/", 1)[-1]
                    result = await result.move_to(keep / name)
                print("got", result.path.name, result.size, "bytes")
            else:  # a FetchFailed: outcome.error is a DownloadError; no file remains
                print("failed", outcome.request.url, "-", type(outcome.error).__name__)
                failed.append(outcome.request.url)
    # [end-fetch-many]
    return failed


async def first_two(base: str, incoming: Path) -> list[triofetch.DownloadResult]:
    """Keep the first two files that arrive, out of twenty; leave the rest behind."""
    kept: list[triofetch.DownloadResult] = []
    # [start-leave-early]
    async with (
        triofetch.Downloader(temp_dir=incoming) as dl,  # temp files stay here: ours
        dl.fetch_many([f"{base}many/{n}.bin" for n in range(20)]) as outcomes,
    ):
        async for outcome in outcomes:
            if outcome.ok:
                kept.append(outcome.result)
            if len(kept) == 2:
                break  # the other downloads are cancelled, their files removed
    # [end-leave-early]
    return kept


def main() -> None:
    with serve_files(FILES) as base, tempfile.TemporaryDirectory() as tmp:
        keep = Path(tmp)
        failed = trio.run(fetch_all, base, keep)
        assert sorted(failed) == [base + "a.txt", base + "missing.txt"]
        kept = sorted(p.name for p in keep.iterdir())
        print("kept:", ", ".join(kept))
        assert kept == ["a.txt", "b.txt", "c.txt"]
        incoming = Path(tmp, "incoming")
        incoming.mkdir()
        first = trio.run(first_two, base, incoming)
        left = sorted(incoming.iterdir())
        print("kept the first", len(first), "of 20; files left:", len(left))
        assert left == sorted(result.path for result in first)  # nothing else
        for result in first:
            result.path.unlink()


if __name__ == "__main__":
    main()
