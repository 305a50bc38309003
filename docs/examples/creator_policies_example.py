"""The content unit creator's policies: ``immediate``, ``on_demand``, then ``fill_missing``.

Serves four files on 127.0.0.1.  A first run records the units ``on_demand`` (nothing
downloaded: each file's URL, size and digest are recorded); ``fill_missing`` then downloads
what those units lack; a last ``immediate`` run with ``mirror=True`` makes a version
holding exactly its input's units.
Run it with ``python docs/examples/creator_policies_example.py``.
"""

from __future__ import annotations

import tempfile

import trio
from _local_server import serve_files, sha256

import triofetch

FILES = {f"file-{n}.txt": f"file number {n}\n".encode() * 50 for n in range(4)}


def file_units(base: str, names: list[str]) -> list[triofetch.DeclarativeUnit]:
    return [
        triofetch.DeclarativeUnit(
            "file",
            (name, sha256(FILES[name])),
            {"relative_path": name},
            [triofetch.DeclarativeArtifact(base + name, name, {"sha256": sha256(FILES[name])})],
        )
        for name in names
    ]


async def on_demand_then_fill(root: str, units: list[triofetch.DeclarativeUnit]) -> None:
    async with triofetch.open_store(root=root) as store, triofetch.Downloader() as dl:
        lazy = triofetch.ContentUnitCreator(store, dl, policy="on_demand")
        report = await lazy.run(units, repository="fedora")
        print("on_demand:", report.units_new, "units,", report.artifacts_downloaded, "downloaded")
        creator = triofetch.ContentUnitCreator(store, dl)
        # [start-fill-missing]
        report = await creator.fill_missing("fedora")  # or fill_missing() for every unit
        # [end-fill-missing]
        print("fill_missing:", report.artifacts_downloaded, "downloaded")
        assert report.ok and report.artifacts_downloaded == len(units)


async def mirror(root: str, units: list[triofetch.DeclarativeUnit]) -> triofetch.CreateReport:
    # [start-creator]
    async with triofetch.open_store(root=root) as store, triofetch.Downloader() as dl:
        creator = triofetch.ContentUnitCreator(store, dl, policy="immediate", slice_size=500)
        report = await creator.run(units, repository="fedora", mirror=True)
    # [end-creator]
    return report


def main() -> None:
    names = sorted(FILES)
    with serve_files(FILES) as base, tempfile.TemporaryDirectory() as root:
        trio.run(on_demand_then_fill, root, file_units(base, names[:3]))
        report = trio.run(mirror, root, file_units(base, names[1:]))
        print(
            f"mirror: version {report.version}, {report.units_new} new,"
            f" {report.units_existing} existing, {report.artifacts_downloaded} downloaded"
        )
        assert report.ok and report.version == 2
        assert (report.units_new, report.units_existing) == (1, 2)


if __name__ == "__main__":
    main()
