"""Several workers on one store: each opens the same database and storage root.

Serves twenty files on 127.0.0.1 and runs two workers at once, each with its own store
connection pool and downloader, creating overlapping units into one store: every unit and
every file ends up there once, and neither worker sees an error because the other got
there first.  The database is SQLite under a temporary directory, or the URL given:
``python docs/examples/workers_example.py [postgresql://user@host/database]``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch

FILES = {f"file-{n:02}.txt": f"file number {n}\n".encode() * 100 for n in range(20)}


async def worker(
    database_url: str, root: Path, units: list[triofetch.DeclarativeUnit]
) -> triofetch.CreateReport:
    # [start-worker]
    async with (
        triofetch.open_store(
            database_url,  # e.g. "postgresql://triofetch@db.internal/triofetch"
            root=root,  # the storage root every worker shares
            pool_size=8,  # connections, and threads doing database work (default 4)
        ) as store,
        triofetch.Downloader(connections=32, per_host=8) as dl,
    ):
        report = await triofetch.ContentUnitCreator(store, dl).run(units, repository="fedora")
    # [end-worker]
    return report


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


async def two_workers(database_url: str, root: Path, base: str) -> list[triofetch.CreateReport]:
    names = sorted(FILES)
    reports: list[triofetch.CreateReport] = []

    async def run(selection: list[str]) -> None:
        reports.append(await worker(database_url, root, file_units(base, selection)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, names[:15])  # the two overlap on 10 files
        nursery.start_soon(run, names[5:])
    return reports


def main() -> None:
    with serve_files(FILES) as base, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{root}/triofetch.sqlite3"
        reports = trio.run(two_workers, url, root, base)
        for report in reports:
            print(
                f"version {report.version}: {report.units_new} new, "
                f"{report.units_existing} existing, {report.units_failed} failed"
            )
        assert all(r.ok for r in reports)
        assert sorted(r.version for r in reports if r.version is not None) == [1, 2]
        stored = [p for p in (root / "artifacts").rglob("*") if p.is_file()]
        print(len(stored), "files stored")
        assert len(stored) == len(FILES)


if __name__ == "__main__":
    main()
