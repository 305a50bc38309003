"""A separate process running one creator: ``python -m tests._creator_worker SPEC.json``.

SPEC: {"db": url, "root": path, "repository": name or null, "units": [[name, url, sha256,
size], ...]}.  Prints the report as JSON on stdout.
"""

from __future__ import annotations

import json
import sys

import trio

import triofetch
from triofetch.store import open_store


async def main(spec: dict[str, object]) -> dict[str, object]:
    units = [
        triofetch.DeclarativeUnit(
            "file",
            (name, sha),
            {"relative_path": name},
            [triofetch.DeclarativeArtifact(url, name, {"sha256": sha}, size)],
        )
        for name, url, sha, size in spec["units"]  # type: ignore[attr-defined]
    ]
    async with (
        open_store(spec["db"], root=spec["root"]) as store,
        triofetch.Downloader(connections=4) as dl,
    ):
        report = await triofetch.ContentUnitCreator(store, dl, slice_size=7).run(
            units, repository=spec["repository"]
        )  # type: ignore[arg-type]
    return {
        "new": report.units_new,
        "existing": report.units_existing,
        "failed": [str(f.error) for f in report.failures],
        "version": report.version,
        "created": report.created,
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    print(json.dumps(trio.run(main, spec)))
