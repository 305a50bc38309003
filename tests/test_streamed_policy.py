"""The ``streamed`` policy (issue #18, item 4): units recorded as for ``on_demand``, their
files marked streamed (the content app serves them from the remote, never stores them).

The mark lives in the store (``unit_artifacts.streamed``, schema version 5) and comes back
with the unit's missing files; an ``on_demand`` unit's files are not marked; an immediate
run fills a streamed unit's files like any other.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import trio

import triofetch
from tests._cli_helpers import publish, run_cli
from tests.test_creator import content, file_requests, file_unit
from triofetch.store import RemoteArtifact, Store, open_store
from triofetch.testing import FaultServer


async def test_streamed_units_are_recorded_and_marked(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    streamed = [file_unit(http_server, f"s{i}") for i in range(3)]
    lazy = [file_unit(http_server, f"o{i}") for i in range(2)]
    report = await triofetch.ContentUnitCreator(store, dl, policy=triofetch.Policy.STREAMED).run(
        streamed, repository="s"
    )
    assert report.ok and report.units_new == 3 and report.artifacts_downloaded == 0
    await triofetch.ContentUnitCreator(store, dl, policy="on_demand").run(lazy, repository="o")
    assert file_requests(http_server) == 0
    missing = await store.missing_artifacts()
    marks = {m.relative_path: m.streamed for m in missing}
    assert marks == {"s0": True, "s1": True, "s2": True, "o0": False, "o1": False}
    by_repo = await store.missing_artifacts("s")
    assert {m.relative_path for m in by_repo} == {"s0", "s1", "s2"}
    for m in by_repo:
        assert m.urls == (http_server.url(f"/repo/{m.relative_path}"),)
        assert m.size == 1500 and "sha256" in m.digests


async def test_immediate_run_fills_streamed_units(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = [file_unit(http_server, f"f{i}") for i in range(4)]
    await triofetch.ContentUnitCreator(store, dl, policy="streamed").run(units, repository="r")
    filled = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
    assert filled.ok and filled.artifacts_downloaded == 4
    assert await store.missing_artifacts() == []


async def test_policy_is_checked(store: Store, dl: triofetch.Downloader) -> None:
    with pytest.raises(triofetch.InvalidInput, match="'streamed'"):
        triofetch.ContentUnitCreator(store, dl, policy="lazy")  # type: ignore[arg-type]


def test_remote_artifact_streamed_flag() -> None:
    remote = RemoteArtifact(("http://127.0.0.1:1/a",), 3, {"sha256": "a" * 64}, streamed=True)
    assert pickle.loads(pickle.dumps(remote)) == remote
    assert remote != RemoteArtifact(("http://127.0.0.1:1/a",), 3, {"sha256": "a" * 64})
    with pytest.raises(triofetch.InvalidInput, match="streamed must be a bool"):
        RemoteArtifact(("http://127.0.0.1:1/a",), streamed="yes")  # type: ignore[arg-type]


def test_cli_sync_policy_streamed(http_server: FaultServer, tmp_path: Path) -> None:
    files = {f"d/{i}.bin": content(str(i), 2000) for i in range(3)}
    url = publish(http_server, files)
    root = tmp_path / "root"
    done = run_cli("sync", url, "--repository", "r", "--policy", "streamed", "--root", root)
    assert done.code == 0, done.err
    assert [r.path for r in http_server.requests] == ["/repo/PULP_MANIFEST"]

    async def marks() -> dict[str, bool]:
        async with open_store(root=root) as store:
            return {m.relative_path: m.streamed for m in await store.missing_artifacts("r")}

    assert trio.run(marks) == dict.fromkeys(files, True)
    bad = run_cli("sync", url, "--repository", "r", "--policy", "lazy", "--root", root)
    assert bad.code == 2 and "streamed" in bad.err
