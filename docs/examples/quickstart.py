"""The quick start: create content units in a store from a Trio program.

Serves three small "packages" on 127.0.0.1, describes one unit per package, and creates
them in a store under a temporary directory, twice: the second run finds them all there.
Run it with ``python docs/examples/quickstart.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch


async def create_units(units: list[triofetch.DeclarativeUnit], root: Path) -> None:
    async with triofetch.open_store(root=root) as store, triofetch.Downloader() as dl:
        report = await triofetch.ContentUnitCreator(store, dl).run(units, repository="repo")
        print(
            report.units_new, "new,",
            report.units_existing, "existing,",
            len(report.failures), "failed",
        )  # fmt: skip


def describe(base: str, files: dict[str, bytes]) -> list[triofetch.DeclarativeUnit]:
    return [
        triofetch.DeclarativeUnit(
            "file",
            (name, sha256(data)),
            {"relative_path": name},
            [triofetch.DeclarativeArtifact(base + name, name, {"sha256": sha256(data)})],
        )
        for name, data in files.items()
    ]


def main() -> None:
    files = {f"package-{n}.tar": bytes([n]) * 2000 for n in range(3)}
    with serve_files(files) as base, tempfile.TemporaryDirectory() as root:
        units = describe(base, files)
        trio.run(create_units, units, Path(root))
        trio.run(create_units, units, Path(root))


if __name__ == "__main__":
    main()
