"""The content unit creator as a benchmark client (a separate process, measured from outside).

    python benchmarks/units_client.py synthetic N ROOT --policy on_demand|immediate
        N units generated lazily (one artifact each, URLs on a closed port): with on_demand
        they are recorded without any download; run a second time they are all present.
    python benchmarks/units_client.py job JOB.json ROOT [--transport trio|httpx]
        one file unit per file of the download benchmark's job format.

Prints one JSON line: units/s, the report's counts, this process's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterator

import trio
from _client_report import vm_hwm_kib

import triofetch
from triofetch.store import open_store


def synthetic(n: int) -> Iterator[triofetch.DeclarativeUnit]:
    for i in range(n):
        name = f"pkgs/{i % 1000:03d}/file-{i}.rpm"
        sha = hashlib.sha256(name.encode()).hexdigest()
        art = triofetch.DeclarativeArtifact(
            f"http://127.0.0.1:9/{name}", name, {"sha256": sha}, 1024
        )
        yield triofetch.DeclarativeUnit(
            "file", (name, sha), {"relative_path": name, "size": 1024}, [art]
        )


def from_job(path: str) -> Iterator[triofetch.DeclarativeUnit]:
    with open(path) as fh:
        job = json.load(fh)
    for url, name, size, sha in job["files"]:
        art = triofetch.DeclarativeArtifact(url, name, {"sha256": sha}, size)
        yield triofetch.DeclarativeUnit(
            "file", (name, sha), {"relative_path": name, "size": size}, [art]
        )


async def run(
    units: Iterator[triofetch.DeclarativeUnit],
    root: str,
    policy: str,
    transport: str,
    connections: int,
) -> triofetch.CreateReport:
    async with (
        open_store(None, root=root) as store,
        triofetch.Downloader(
            connections=connections,
            transport=transport,  # type: ignore[arg-type]
            temp_dir=store.storage.temp_dir if store.storage else None,
            retries=0,
        ) as dl,
    ):
        creator = triofetch.ContentUnitCreator(
            store,
            dl,
            policy=policy,  # type: ignore[arg-type]
            slice_size=500,
        )
        return await creator.run(units, repository="bench")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["synthetic", "job"])
    parser.add_argument("source")
    parser.add_argument("root")
    parser.add_argument("--policy", default="immediate")
    parser.add_argument("--transport", default="trio")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    units = synthetic(int(args.source)) if args.mode == "synthetic" else from_job(args.source)
    started = time.perf_counter()
    report = trio.run(run, units, args.root, args.policy, args.transport, args.connections)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "units": report.units_total,
                "new": report.units_new,
                "existing": report.units_existing,
                "failed": report.units_failed,
                "downloaded": report.artifacts_downloaded,
                "seconds": seconds,
                "units_per_s": report.units_total / seconds if seconds else 0.0,
                "vm_hwm_kib": vm_hwm_kib(),
                "failures": [str(f.error) for f in report.failures[:3]],
            }
        )
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
