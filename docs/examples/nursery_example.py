"""Each download a task of your own: ``Downloader.fetch`` in your nursery.

The lower-level pattern under ``fetch_many``: start one task per file in a nursery of your
own.  Each task catches its own ``DownloadError`` (otherwise one failure would end the
nursery and cancel every other download) and gives its file a ``destination`` (otherwise
it stays in the downloader's private temp directory, removed when the downloader closes).
Run it with ``python docs/examples/nursery_example.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch

FILES = {f"file-{n}.bin": bytes([n]) * (1000 + n) for n in range(10)}


async def fetch_one(
    dl: triofetch.Downloader, url: str, digest: str, keep: Path, failed: list[str]
) -> None:
    try:
        await dl.fetch(
            url,
            expected_digests={"sha256": digest},
            destination=keep / url.rsplit("/", 1)[-1],
        )
    except triofetch.DownloadError as exc:  # one failure must not cancel the others
        failed.append(str(exc))  # the message names the URL


async def fetch_wanted(wanted: list[tuple[str, str]], keep: Path) -> list[str]:
    failed: list[str] = []
    async with (
        triofetch.Downloader(connections=16, per_host=4, retries=3) as dl,
        trio.open_nursery() as nursery,
    ):
        for url, digest in wanted:
            nursery.start_soon(fetch_one, dl, url, digest, keep, failed)
    return failed


def main() -> None:
    with serve_files(FILES) as base, tempfile.TemporaryDirectory() as tmp:
        keep = Path(tmp)
        wanted = [(base + name, sha256(data)) for name, data in FILES.items()]
        wanted.append((base + "not-there.bin", "0" * 64))
        failed = trio.run(fetch_wanted, wanted, keep)
        print(len(list(keep.iterdir())), "files kept,", len(failed), "failed:")
        for line in failed:
            print(" ", line)
        assert len(list(keep.iterdir())) == 10 and len(failed) == 1


if __name__ == "__main__":
    main()
