"""Teach triofetch another repository format: a ``RepositoryReader`` for a JSON index.

Serves a JSON index of two packages (several files each) on 127.0.0.1, reads it with
``JsonIndexReader`` and creates one unit per package in a store under a temporary
directory; then shows that a malformed index is refused before anything is written.
Run it with ``python docs/examples/json_reader_example.py``.
"""

# [start-reader]
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import trio

import triofetch


@dataclass
class JsonIndex:
    source: str
    packages: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.packages)

    @property
    def total_size(self) -> int:
        return sum(f["size"] for p in self.packages for f in p["files"])

    def unit_size(self, natural_key: tuple[str, ...]) -> int:
        for p in self.packages:
            if (p["name"], p["version"]) == natural_key:
                return sum(f["size"] for f in p["files"])
        return 0

    def units(self) -> Iterator[triofetch.DeclarativeUnit]:
        for p in self.packages:
            yield triofetch.DeclarativeUnit(
                "package",
                (p["name"], p["version"]),
                {"summary": p.get("summary", "")},
                [
                    triofetch.DeclarativeArtifact(
                        urljoin(self.source, f["path"]),
                        f["path"],
                        {"sha256": f["sha256"]},
                        f["size"],
                    )
                    for f in p["files"]
                ],
            )


class JsonIndexReader(triofetch.RepositoryReader):
    format = "json-index"

    async def read(self, source: str, downloader: triofetch.Downloader) -> JsonIndex:
        try:
            result = await downloader.fetch(source)
        except triofetch.DownloadError as exc:
            raise triofetch.ManifestError(f"cannot fetch the index: {exc}") from None
        index_file = trio.Path(result.path)
        try:
            text = await index_file.read_text("utf-8")
        finally:
            await index_file.unlink()  # the downloaded index is ours: remove it
        try:
            packages = json.loads(text)["packages"]
        except (ValueError, KeyError) as exc:
            raise triofetch.ManifestError(f"not a JSON index: {exc}", source=source) from None
        index = JsonIndex(source, packages)
        try:
            list(index.units())  # validate everything now, before anything is written
        except (triofetch.InvalidInput, KeyError, TypeError) as exc:
            raise triofetch.ManifestError(f"bad package: {exc}", source=source) from None
        return index


# [end-reader]


async def sync_index(source: str, root: str) -> triofetch.CreateReport:
    # [start-sync]
    async with (
        triofetch.Downloader() as dl,
        triofetch.open_store(root=root) as store,
    ):
        index = await triofetch.read_manifest(source, dl, reader=JsonIndexReader())
        creator = triofetch.ContentUnitCreator(store, dl)
        report = await creator.run(index.units(), repository="packages", mirror=True)
    # [end-sync]
    return report


def make_repository() -> dict[str, bytes]:
    """Two packages of two files each, and ``index.json`` listing them."""
    from _local_server import sha256

    files = {
        "bash/bash-5.2.tar": b"bash source\n" * 500,
        "bash/bash-5.2.tar.sig": b"a signature\n",
        "zsh/zsh-5.9.tar": b"zsh source\n" * 700,
        "zsh/zsh-5.9.tar.sig": b"another signature\n",
    }
    packages = [
        {
            "name": name,
            "version": version,
            "summary": f"the {name} shell",
            "files": [
                {"path": path, "sha256": sha256(data), "size": len(data)}
                for path, data in files.items()
                if path.startswith(name + "/")
            ],
        }
        for name, version in (("bash", "5.2"), ("zsh", "5.9"))
    ]
    return {**files, "index.json": json.dumps({"packages": packages}).encode()}


def main() -> None:
    import tempfile

    from _local_server import serve_files

    repository = make_repository()
    repository["broken.json"] = b'{"packages": [{"name": "x"}]}'
    with serve_files(repository) as base, tempfile.TemporaryDirectory() as root:
        report = trio.run(sync_index, base + "index.json", root)
        print(f"version {report.version}: {report.units_new} packages created")
        assert report.ok and report.units_new == 2 and report.artifacts_downloaded == 4
        try:
            trio.run(sync_index, base + "broken.json", root)
        except triofetch.ManifestError as exc:
            print("refused:", exc)
        else:
            raise AssertionError("a broken index was accepted")


if __name__ == "__main__":
    main()
