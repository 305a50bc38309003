"""Serve a store from a Trio program, with a file fetched on demand.

Serves two "packages" on 127.0.0.1 as the remote, creates one unit per package in a store
under a temporary directory (one downloaded now, one ``on_demand``: recorded, not
downloaded), then runs the content app on a free port and downloads both files from it.
The on-demand file is fetched from the remote on that first request, streamed, then kept
in the store.  Run it with ``python docs/examples/serve_example.py`` (needs
``pip install 'triofetch[serve]'``).
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch
from triofetch.serve import make_app, serve_app


def unit(base: str, name: str, data: bytes) -> triofetch.DeclarativeUnit:
    art = triofetch.DeclarativeArtifact(base + name, name, {"sha256": sha256(data)}, len(data))
    return triofetch.DeclarativeUnit("file", (name, sha256(data)), {"relative_path": name}, [art])


# [start-serve]
async def serve_and_fetch(root: Path, names: list[str]) -> None:
    async with triofetch.open_store(root=root, create=False) as store:
        app = make_app(store)  # a plain ASGI 3 application
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, app, port=0))  # 127.0.0.1
            print("serving at", urls[0])
            async with triofetch.Downloader() as dl:
                for name in names:
                    result = await dl.fetch(f"{urls[0]}/repo/{name}")
                    print(name, result.size, "bytes")
            nursery.cancel_scope.cancel()  # stops the server
        print("still missing:", [m.relative_path for m in await store.missing_artifacts()])


# [end-serve]


async def create(
    root: Path, now: triofetch.DeclarativeUnit, later: triofetch.DeclarativeUnit
) -> None:
    async with triofetch.open_store(root=root) as store, triofetch.Downloader() as dl:
        creator = triofetch.ContentUnitCreator(store, dl)
        await creator.run([now], repository="repo")
        lazy = triofetch.ContentUnitCreator(store, dl, policy="on_demand")
        await lazy.run([now, later], repository="repo")


def main() -> None:
    files = {"stored.tar": b"s" * 3000, "on-demand.tar": b"o" * 5000}
    with serve_files(files) as base, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        now, later = (unit(base, name, data) for name, data in files.items())
        trio.run(create, root, now, later)
        trio.run(serve_and_fetch, root, list(files))


if __name__ == "__main__":
    main()
