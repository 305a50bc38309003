"""One worker of tests/test_store_races.py, run as a separate process.

    python tests/_store_worker.py URL ROOT WORKER FIRST COUNT SLICE GO_FILE

Waits for GO_FILE to exist (so all workers start together), then for units FIRST ..
FIRST+COUNT-1 (in a shuffled order of slices): writes each unit's file into the storage's
temp area, adopts it, and commits the slice into a new version of repository "shared".
Prints a JSON summary on stdout; exits non-zero on any error.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time

import trio

from triofetch.storage import ArtifactStorage
from triofetch.store import ArtifactRecord, NewUnit, NewUnitArtifact, RemoteArtifact, open_store

#: Distinct contents: units i and i + CONTENTS share their artifact.
CONTENTS = 700


def content(i: int) -> bytes:
    return f"content {i % CONTENTS}\n".encode() * (1 + i % 7)


def unit_for(i: int) -> tuple[NewUnit, bytes]:
    data = content(i)
    rec = ArtifactRecord(hashlib.sha256(data).hexdigest(), len(data))
    path = f"pool/{i:05d}.bin"
    art = NewUnitArtifact(path, rec, RemoteArtifact(f"http://example.invalid/{path}"))
    return NewUnit("file", (path, rec.sha256), {"i": i, "relative_path": path}, (art,)), data


async def main(argv: list[str]) -> dict[str, int]:
    url, root, worker, first, count, size, go = argv
    first_i, count_i, slice_size = int(first), int(count), int(size)
    rng = random.Random(int(worker))
    storage = ArtifactStorage(root, durable=False)
    async with open_store(url, storage=storage) as store:
        await trio.Path(f"{go}.ready.{worker}").touch()
        deadline = time.monotonic() + 60
        while not await trio.Path(go).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            await trio.sleep(0.01)
        indices = list(range(first_i, first_i + count_i))
        slices = [indices[s : s + slice_size] for s in range(0, len(indices), slice_size)]
        rng.shuffle(slices)
        version = await store.new_version("shared")
        summary = {"committed": 0, "existing": 0, "failed": 0, "created_files": 0}
        for chunk in slices:
            units = []
            for i in chunk:
                unit, data = unit_for(i)
                tmp = storage.new_temp_path()
                await trio.to_thread.run_sync(tmp.write_bytes, data)
                art = unit.artifacts[0].artifact
                assert art is not None
                stored = await storage.adopt(tmp, sha256=art.sha256, size=art.size)
                summary["created_files"] += stored.created
                units.append(unit)
            report = await store.commit_units(units, version=version)
            for outcome in report:
                summary[outcome.status] += 1
                if outcome.error is not None:
                    raise outcome.error
        await store.complete_version(version)
        summary["version"] = version.number
        summary.update({f"retried_{k}": v for k, v in store._backend.retried.items()})
        return summary


if __name__ == "__main__":
    print(json.dumps(trio.run(main, sys.argv[1:])))
