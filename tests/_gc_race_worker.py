"""A sync in its own process for the gc race tests: ``python -m tests._gc_race_worker SPEC``.

SPEC (JSON): {"db", "root", "repository", "units": [[path, url, sha256, size], ...],
"lease": bool, "slice_size": int}.  With ``"lease": false`` the creator runs *without* the
writers' lease (``Store.lease`` made a no-op): the negative control, showing what the lease
prevents.  Prints the report as JSON, or {"error": "..."} when the run raised.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import trio

import triofetch
from triofetch.store import Store, open_store


@contextlib.asynccontextmanager
async def _no_lease(self: Store) -> AsyncIterator[None]:
    yield


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    if not spec.get("lease", True):
        Store.lease = _no_lease  # type: ignore[method-assign]
    units = [
        triofetch.DeclarativeUnit(
            "file",
            (path, sha),
            {"relative_path": path},
            [triofetch.DeclarativeArtifact(url, path, {"sha256": sha}, size)],
        )
        for path, url, sha, size in spec["units"]
    ]
    async with (
        open_store(spec["db"], root=spec["root"]) as store,
        triofetch.Downloader(connections=8) as dl,
    ):
        creator = triofetch.ContentUnitCreator(store, dl, slice_size=spec.get("slice_size", 500))
        try:
            report = await creator.run(units, repository=spec["repository"])
        except Exception as exc:  # the negative control may break the run itself
            return {"error": f"{type(exc).__name__}: {exc}"}
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
