"""Declare content units and download their files, without a store.

Serves two "packages" on 127.0.0.1 (one file only on a second mirror, one missing), then
downloads the units' files with the ``UnitDownloader`` in a Trio program and with
``download_units`` in plain synchronous code.  A unit comes out only when all of its files
are there; a unit with a missing file comes out failed, its other files removed.
Run it with ``python docs/examples/units_example.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch

FILES = {
    "b/bash.tar": b"bash source\n" * 1000,  # only on the second mirror
    "a/bash.sig": b"a signature\n",
    "a/zsh.tar": b"zsh source\n" * 1000,
}


def declare_bash(base: str) -> triofetch.DeclarativeUnit:
    # [start-declare]
    unit = triofetch.DeclarativeUnit(
        "package",  # type
        ("bash", "5.2.26-1"),  # natural key: strings
        {"summary": "The GNU Bourne Again shell"},  # fields: anything JSON
        [
            triofetch.DeclarativeArtifact(
                [base + "a/bash.tar", base + "b/bash.tar"],  # mirrors, tried in order
                "bash.tar",  # relative path inside the unit
                {"sha256": sha256(FILES["b/bash.tar"])},  # expected digests
                len(FILES["b/bash.tar"]),  # expected size
            ),
            triofetch.DeclarativeArtifact(base + "a/bash.sig", "bash.tar.sig"),
        ],
    )
    # [end-declare]
    return unit


def declare_units(base: str) -> list[triofetch.DeclarativeUnit]:
    zsh = triofetch.DeclarativeUnit(
        "package",
        ("zsh", "5.9-1"),
        {"summary": "The Z shell"},
        [
            triofetch.DeclarativeArtifact(base + "a/zsh.tar", "zsh.tar"),
            triofetch.DeclarativeArtifact(base + "a/zsh.sig", "zsh.tar.sig"),  # missing
        ],
    )
    return [declare_bash(base), zsh]


async def download_async(units: list[triofetch.DeclarativeUnit], target: Path) -> None:
    # [start-unit-downloader]
    async with (
        triofetch.Downloader(connections=16) as dl,
        triofetch.UnitDownloader(dl) as unit_downloader,
    ):
        async for done in unit_downloader.download(units):  # any sync or async iterable
            if done.ok:  # a DownloadedUnit: every file is there
                for relative_path, result in done.results.items():
                    await result.move_to(target / relative_path)
            else:  # a FailedUnit: no temp file remains
                print(done.unit.key, "failed:", done.error.cause)
    # [end-unit-downloader]


def download_sync(units: list[triofetch.DeclarativeUnit], target: Path, incoming: Path) -> None:
    # [start-download-units]
    for done in triofetch.download_units(units, connections=8, temp_dir=incoming):
        if done.ok:
            for relative_path, result in done.results.items():
                result.path.replace(target / relative_path)  # the files are yours
        else:
            print(done.unit.key, "failed:", done.error.cause)
    # [end-download-units]


def main() -> None:
    with serve_files(FILES) as base, tempfile.TemporaryDirectory() as tmp:
        units = declare_units(base)
        first, second, incoming = Path(tmp, "first"), Path(tmp, "second"), Path(tmp, "in")
        for directory in (first, second, incoming):
            directory.mkdir()
        trio.run(download_async, units, first)
        download_sync(units, second, incoming)
        for target in (first, second):
            kept = sorted(p.name for p in target.iterdir())
            print("kept:", ", ".join(kept))
            assert kept == ["bash.tar", "bash.tar.sig"]
        assert list(incoming.iterdir()) == []  # nothing left behind


if __name__ == "__main__":
    main()
