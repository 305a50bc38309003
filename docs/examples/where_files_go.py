"""Where a ``Downloader``'s files go: its private temp directory, ``destination=``,
``move_to``, or a ``temp_dir`` of your own.

Run it with ``python docs/examples/where_files_go.py``: it serves two files on 127.0.0.1
and prints where each download ended up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from _local_server import serve_files

import triofetch


async def private_temp_dir(base: str, keep: Path) -> None:
    # [start-private]
    async with triofetch.Downloader() as dl:
        private = dl.temp_dir  # made when the downloader was entered
        kept = await dl.fetch(base + "a.txt", destination=keep / "a.txt")
        moved = await dl.fetch(base + "b.txt")  # in the private directory, for now...
        moved = await moved.move_to(keep / "b.txt")  # ...now yours (any file system)
        dropped = await dl.fetch(base + "a.txt")  # never moved out
    # leaving the block removed the private directory, with everything still in it
    assert private is not None and not private.exists()
    assert kept.path.exists() and moved.path.exists() and not dropped.path.exists()
    # [end-private]
    print("kept:", kept.path.name, moved.path.name, "- removed:", dropped.path.name)


async def own_temp_dir(base: str, incoming: Path) -> None:
    # [start-own]
    async with triofetch.Downloader(temp_dir=incoming) as dl:
        result = await dl.fetch(base + "a.txt")
    assert result.path.parent == incoming and result.path.exists()  # yours to keep
    # [end-own]
    print("left in temp_dir:", result.path.parent.name)
    result.path.unlink()  # or move it: a temp file in a temp_dir of your own is yours


def main() -> None:
    files = {"a.txt": b"a" * 5000, "b.txt": b"b" * 7000}
    with serve_files(files) as base, tempfile.TemporaryDirectory() as tmp:
        keep, incoming = Path(tmp, "keep"), Path(tmp, "incoming")
        keep.mkdir()
        incoming.mkdir()
        trio.run(private_temp_dir, base, keep)
        trio.run(own_temp_dir, base, incoming)
        assert sorted(p.name for p in keep.iterdir()) == ["a.txt", "b.txt"]
        assert list(incoming.iterdir()) == []


if __name__ == "__main__":
    main()
