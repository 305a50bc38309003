"""Creators in separate processes on one database and one storage root."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests._invariants import check_invariants
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import open_store
from triofetch.testing import FaultServer, Slow

ROOT_DIR = Path(__file__).resolve().parent.parent


def spawn(spec: dict[str, object], tmp: Path, index: int) -> subprocess.Popen[str]:
    path = tmp / f"spec{index}.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen(
        [sys.executable, "-m", "tests._creator_worker", str(path)],
        cwd=ROOT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("workers", [pytest.param(4, marks=pytest.mark.postgres)])
def test_processes_race_on_postgresql(
    http_server: FaultServer, postgres_dsn: str, tmp_path: Path, workers: int
) -> None:
    rows = []
    for i in range(60):
        data = hashlib.sha256(f"proc{i}".encode()).digest() * (40 + i)
        http_server.add_file(f"/p/{i}", data, faults=[Slow(0.001, chunk=4096)] * workers)
        rows.append(
            [
                f"dir/{i}.bin",
                http_server.url(f"/p/{i}"),
                hashlib.sha256(data).hexdigest(),
                len(data),
            ]
        )
    root = tmp_path / "root"
    procs = []
    for w in range(workers):
        # overlapping slices of the same repository content, in different orders
        part = rows[w * 10 :] + rows[: w * 10]
        if w % 2:
            part = list(reversed(part))
        spec = {"db": postgres_dsn, "root": str(root), "repository": f"repo{w}", "units": part}
        procs.append(spawn(spec, tmp_path, w))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert all(r["failed"] == [] for r in results)
    assert sum(r["new"] for r in results) == 60
    assert all(r["new"] + r["existing"] == 60 for r in results)
    assert all(r["version"] == 1 for r in results)
    # one file per sha256 in the shared storage
    files = [p for p in (root / "artifacts").rglob("*") if p.is_file()]
    assert len(files) == 60

    units = [
        DeclarativeUnit(
            "file", (n, s), {"relative_path": n}, [DeclarativeArtifact(u, n, {"sha256": s}, z)]
        )
        for n, u, s, z in rows
    ]

    async def check() -> None:
        async with open_store(postgres_dsn, root=root) as store:
            state = await check_invariants(store, units, on_demand_ok=False)
            assert len(state) == 60 and all(state.values())
            for w in range(workers):
                assert await store.count_units(f"repo{w}") == 60

    trio.run(check)


def test_two_processes_on_sqlite_one_repository(http_server: FaultServer, tmp_path: Path) -> None:
    rows = []
    for i in range(30):
        data = hashlib.sha256(f"sq{i}".encode()).digest() * (20 + i)
        http_server.add_file(f"/s/{i}", data)
        rows.append(
            [f"{i}.bin", http_server.url(f"/s/{i}"), hashlib.sha256(data).hexdigest(), len(data)]
        )
    root = tmp_path / "root"
    db = f"sqlite:///{root / 'triofetch.sqlite3'}"
    procs = [
        spawn(
            {
                "db": db,
                "root": str(root),
                "repository": "shared",
                "units": rows if w == 0 else rows[::-1],
            },
            tmp_path,
            w,
        )
        for w in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["new"] for r in results) == 30
    # both runs succeed with the same content: one makes a version, the other finds it
    # holding everything (whether it started before that version was complete or after)
    assert sorted(r["created"] for r in results) == [False, True]
    assert len({r["version"] for r in results}) == 1

    async def check() -> None:
        async with open_store(db, root=root) as store:
            assert await store.count_units("shared") == 30
            assert [v.number for v in await store.versions("shared")] == [results[0]["version"]]

    trio.run(check)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_processes_replacing_content_at_the_same_paths(
    http_server: FaultServer, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Three processes sync, at once and additively, different contents at the same paths
    (and a file where another needs a directory) into one repository: every version each
    makes holds one unit per path and no file-and-directory, and the last one holds one of
    the inputs' contents at each path."""
    db = (
        f"sqlite:///{tmp_path / 'db.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_dsn")
    )
    paths = [f"p{i}" for i in range(12)] + ["d"]
    specs = []
    for w in range(3):
        rows = []
        for path in paths if w != 2 else [*paths[:-1], "d/x"]:
            data = f"{path} from worker {w}".encode() * 50
            url_path = f"/swap{w}/{path}"
            http_server.add_file(url_path, data, faults=[Slow(0.002, chunk=1024)])
            rows.append(
                [path, http_server.url(url_path), hashlib.sha256(data).hexdigest(), len(data)]
            )
        specs.append({"db": db, "root": str(tmp_path / "root"), "repository": "r", "units": rows})
    procs = [spawn(spec, tmp_path, w) for w, spec in enumerate(specs)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["failed"] == []

    async def check() -> None:
        async with open_store(db, root=tmp_path / "root") as store:
            for info in await store.versions("r"):
                if not info.complete:
                    continue
                held = [u.key.natural_key[0] for u in await store.list_units("r", info.number)]
                assert len(held) == len(set(held)), (info.number, sorted(held))
                assert not ("d" in held and "d/x" in held), info.number
                assert len(held) == len(paths)

    trio.run(check)
