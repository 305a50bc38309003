"""Races across processes: workers committing overlapping units into one database and one
storage root at once end with one row per natural key and per sha256, one file per sha256,
no error and no deadlock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tests._store_worker import CONTENTS, content
from tests.test_store import counts, raw
from triofetch.storage import ArtifactStorage
from triofetch.store import open_store

WORKER = Path(__file__).with_name("_store_worker.py")


def run_workers(
    url: str, root: Path, tmp_path: Path, *, workers: int, count: int, step: int, slice_size: int
) -> list[dict[str, int]]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, str(root), str(w), str(w * step), str(count),
             str(slice_size), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all(Path(f"{go}.ready.{w}").exists() for w in range(workers)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "workers did not get ready"
            time.sleep(0.02)
        go.touch()
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err and "deadlock" not in err.lower()
    return [json.loads(out) for out, _ in results]


async def check_outcome(
    url: str, root: Path, *, workers: int, count: int, step: int, summaries: list[dict[str, int]]
) -> None:
    indices = {i for w in range(workers) for i in range(w * step, w * step + count)}
    shas = {hashlib.sha256(content(i)).hexdigest() for i in indices}
    assert len(shas) == min(len(indices), CONTENTS)
    assert sum(s["failed"] for s in summaries) == 0
    # rows are written in a fixed order: no transaction ever deadlocked (and was retried)
    assert not any(k.startswith("retried_DeadlockDetected") for s in summaries for k in s)
    assert sum(s["committed"] for s in summaries) == len(indices)
    assert sum(s["created_files"] for s in summaries) == len(shas)
    assert sorted(s["version"] for s in summaries) == list(range(1, workers + 1))

    storage = ArtifactStorage(root)
    files = sorted(p.name for p in storage.artifacts_dir.rglob("*") if p.is_file())
    assert files == sorted(shas)
    assert os.listdir(storage.temp_dir) == []
    assert (await storage.verify()).ok

    async with open_store(url) as store:
        c = await counts(store)
        assert c["units"] == len(indices) == c["unit_artifacts"] == c["remote_artifacts"]
        assert c["artifacts"] == len(shas)
        assert c["repositories"] == 1 and c["repository_versions"] == workers
        dup = await raw(
            store, "SELECT count(*) FROM (SELECT unit_id FROM unit_artifacts "
            "WHERE artifact_id IS NULL) t"
        )  # fmt: skip
        assert dup[0][0] == 0
        for number in range(1, workers + 1):
            assert await store.count_units("shared", number) == count


@pytest.mark.postgres
async def test_four_processes_one_postgres(postgres_dsn: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    kw = {"workers": 4, "count": 800, "step": 200}
    summaries = await trio.to_thread.run_sync(
        lambda: run_workers(postgres_dsn, root, tmp_path, slice_size=100, **kw)
    )
    await check_outcome(postgres_dsn, root, summaries=summaries, **kw)


async def test_two_processes_one_sqlite(tmp_path: Path) -> None:
    root = tmp_path / "root"
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    kw = {"workers": 2, "count": 800, "step": 300}
    summaries = await trio.to_thread.run_sync(
        lambda: run_workers(url, root, tmp_path, slice_size=100, **kw)
    )
    await check_outcome(url, root, summaries=summaries, **kw)
