"""The artifact storage and the store: adopting downloads, opening a store, repository
keys, repair, retention and garbage collection, the writers' lease.

Serves a few files on 127.0.0.1 and works on a store under a temporary directory.
Run it with ``python docs/examples/store_example.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from _local_server import serve_files, sha256

import triofetch
from triofetch import ArtifactStorage, RepositoryKey, open_store

FILES = {f"file-{n}.txt": f"file number {n}\n".encode() * 100 for n in range(4)}


async def adopt(root: Path, url: str) -> triofetch.StoredArtifact:
    async with triofetch.Downloader() as downloader:
        # [start-adopt]
        storage = ArtifactStorage(root)
        result = await downloader.fetch(url, temp_dir=storage.temp_dir)  # a DownloadResult
        stored = await storage.adopt_result(result)
        # or: await storage.adopt(path, sha256=..., size=..., digests=...)
        # [end-adopt]
    assert stored.created and stored.path == storage.path_for(result.sha256)
    return stored


async def open_both_ways(root: Path) -> None:
    # [start-open]
    async with open_store(f"sqlite:///{root}/db.sqlite3", root=root) as store:
        ...

    store = await open_store(f"sqlite:///{root}/db.sqlite3")  # or "postgresql://..."
    ...
    await store.aclose()
    # [end-open]


async def keyed(root: Path) -> None:
    # [start-keys]
    store = await open_store(
        root=root,
        repository_keys={
            "rpm": RepositoryKey("name", "epoch", "version", "release", "arch"),
            "deb": RepositoryKey("package", "architecture"),
        },
    )
    # [end-keys]
    await store.aclose()


async def create(root: Path, base: str, names: list[str]) -> triofetch.CreateReport:
    units = [
        triofetch.DeclarativeUnit(
            "file",
            (name, sha256(FILES[name])),
            {"relative_path": name},
            [triofetch.DeclarativeArtifact(base + name, name, {"sha256": sha256(FILES[name])})],
        )
        for name in names
    ]
    async with open_store(root=root) as store, triofetch.Downloader() as dl:
        return await triofetch.ContentUnitCreator(store, dl).run(
            units, repository="epel", mirror=True
        )


async def repair(root: Path) -> triofetch.RepairReport:
    # [start-repair]
    async with open_store(root=root) as store, triofetch.Downloader() as dl:
        report = await triofetch.repair(store, dl, repository=None)
    for fixed in report.repaired:
        print("repaired", fixed.path, fixed.reason)
    for lost in report.failed:
        print("not repaired", lost.sha256, lost.reason, lost.urls)
    # [end-repair]
    return report


async def retention(root: Path) -> triofetch.GCReport:
    # [start-retention]
    async with open_store(root=root) as store:
        for v in await store.versions("epel"):  # [VersionInfo], ascending
            print(v.number, v.created, v.units, v.complete)
        pruned = await store.prune("epel", keep=3)  # PruneReport(repository, kept, deleted)
        freed = await store.collect_garbage(wait=600)
        print(freed.units, freed.files, freed.bytes)
    # [end-retention]
    assert pruned.kept == (2, 3, 4) and pruned.deleted == (1,)
    return freed


async def hold_lease(root: Path) -> None:
    async with open_store(root=root) as store:
        # [start-lease]
        async with store.lease():  # shared: any number of writers at once
            ...  # collect_garbage waits until every writer has left
        # [end-lease]
        with trio.move_on_after(5):
            async with store.lease():
                try:
                    await store.collect_garbage(wait=0.05)
                except triofetch.StoreBusy:
                    print("gc refused while a writer holds the lease")


def main() -> None:
    names = sorted(FILES)
    with serve_files(FILES) as base, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stored = trio.run(adopt, root / "adopted", base + names[0])
        print("adopted", stored.sha256[:12], stored.size, "bytes")
        trio.run(open_both_ways, root / "opened")
        trio.run(keyed, root / "keyed")

        store_root = root / "store"
        # four versions; the fourth file is only in the first one
        for selection in (names, names[:3], names[:2], names[:3]):
            assert trio.run(create, store_root, base, selection).ok
        damaged = ArtifactStorage(store_root).path_for(sha256(FILES[names[0]]))
        damaged.chmod(0o644)
        damaged.write_bytes(b"damaged")
        report = trio.run(repair, store_root)
        assert report.ok and len(report.repaired) == 1
        freed = trio.run(retention, store_root)
        assert (freed.versions, freed.units, freed.files) == (0, 1, 1)
        trio.run(hold_lease, store_root)


if __name__ == "__main__":
    main()
