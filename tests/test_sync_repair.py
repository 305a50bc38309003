"""Every sync checks that the units it finds present really have their files (one stat each)
and downloads again what is missing or has the wrong size, replacing the file atomically.

The defect of issue #13: after ``rm <root>/artifacts/*/*/*`` a sync said "already present",
downloaded nothing, and ``verify`` stayed red.  The syncs that fill the store first run the
same main() in process (tests/_cli_helpers.py, run_cli_in_process); the syncs that repair, and
verify, run as processes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

import triofetch
from tests._cli_helpers import file_requests, publish, run_cli, run_cli_in_process
from tests.test_creator import file_unit
from triofetch.store import open_store
from triofetch.testing import FaultServer

FILES = {"a.txt": b"alpha" * 100, "dir/b.txt": b"beta" * 50, "c.txt": b"gamma"}


def stored(root: Path, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return root / "artifacts" / sha[:2] / sha[2:4] / sha


def test_sync_downloads_again_a_deleted_or_truncated_file(
    http_server: FaultServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    url = publish(http_server, FILES)
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    stored(root, FILES["a.txt"]).unlink()
    damaged = stored(root, FILES["dir/b.txt"])
    os.chmod(damaged, 0o644)
    damaged.write_bytes(b"beta")  # shorter: the size tells
    assert run_cli("verify", "--root", root).code == 1
    http_server.reset_counters()
    result = run_cli("sync", url, "--root", root, "--repository", "r", "--json")
    assert result.code == 0, result
    report = result.json()
    assert report["artifacts"]["repaired"] == 2
    assert report["artifacts"]["downloaded"] == 2
    assert report["units"]["existing"] == 3 and report["units"]["new"] == 0
    # nothing changed in the version's content: the files are back, no new version
    assert (report["version"], report["created"]) == (1, False)
    assert sorted(file_requests(http_server)) == ["/repo/a.txt", "/repo/dir/b.txt"]
    assert stored(root, FILES["a.txt"]).read_bytes() == FILES["a.txt"]
    assert stored(root, FILES["dir/b.txt"]).read_bytes() == FILES["dir/b.txt"]
    assert oct(stored(root, FILES["dir/b.txt"]).stat().st_mode & 0o777) == oct(0o444)
    verify = run_cli("verify", "--root", root)
    assert verify.code == 0, verify
    # and the next sync is a no-op again: no file request
    http_server.reset_counters()
    again = run_cli("sync", url, "--root", root, "--repository", "r", "--json").json()
    assert again["artifacts"] == {"downloaded": 0, "reused": 0, "repaired": 0, "bytes": 0}
    assert file_requests(http_server) == []


def test_sync_repair_that_fails_is_a_failure(http_server: FaultServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    url = publish(http_server, FILES)
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    stored(root, FILES["c.txt"]).unlink()
    http_server.remove("/repo/c.txt")
    result = run_cli("sync", url, "--root", root, "--repository", "r", "--json")
    assert result.code == 1, result
    report = result.json()
    assert [f["relative_path"] for f in report["failures"]] == ["c.txt"]
    assert report["version"] is None
    assert not (root / "tmp").exists() or list((root / "tmp").iterdir()) == []


@pytest.mark.parametrize("policy", ["immediate"])
async def test_creator_repairs_on_both_backends(
    http_server: FaultServer, store_url: str, tmp_path: Path, policy: str
) -> None:
    units = [file_unit(http_server, f"r{i}") for i in range(6)]
    async with (
        open_store(store_url, root=tmp_path / "root") as store,
        triofetch.Downloader(connections=4, retries=0) as dl,
    ):
        creator = triofetch.ContentUnitCreator(store, dl, policy=policy, slice_size=4)  # type: ignore[arg-type]
        assert (await creator.run(units, repository="r")).created
        assert store.storage is not None
        gone = store.storage.path_for(units[4].artifacts[0].sha256 or "")
        await trio.Path(gone).unlink()
        report = await creator.run(units, repository="r")
        assert report.ok and report.artifacts_repaired == 1 and not report.created
        assert await trio.Path(gone).exists()
        assert (await store.storage.verify()).ok
