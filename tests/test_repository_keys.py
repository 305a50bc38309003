"""Repository keys: a version holds one unit per key, and never a file and a directory at one
path.  New content replaces content carried over from the previous version; two units added
at one key are refused.  Store level on both backends, the creator, and the command line
(the defects of issue #13: an additive sync kept both contents of a changed file, and two
additive syncs could leave ``a`` and ``a/b`` in one version).  On the command line the syncs
under test and the exports run as processes; the syncs that only fill the store first, the
listings read back and the sync of an exported manifest run the same main() in process
(tests/_cli_helpers.py, run_cli_in_process)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import triofetch
from tests._cli_helpers import publish, run_cli, run_cli_in_process
from tests.test_creator import content, file_unit
from tests.test_store import record
from triofetch.store import (
    NewUnit,
    NewUnitArtifact,
    RemoteArtifact,
    RepositoryKey,
    RepositoryKeyConflict,
    Store,
    UnitKey,
    open_store,
)
from triofetch.testing import FaultServer

# -- the store ---------------------------------------------------------------------------------


def fu(path: str, data: bytes) -> NewUnit:
    rec = record(data)
    remote = RemoteArtifact(f"http://example.invalid/{path}", size=len(data))
    return NewUnit(
        "file", (path, rec.sha256), {"relative_path": path}, (NewUnitArtifact(path, rec, remote),)
    )


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> Any:
    async with open_store(store_url, root=tmp_path / "root") as s:
        yield s


async def paths(store: Store, repo: str = "r", number: int | None = None) -> dict[str, str]:
    """{relative path: sha256} of a version (every unit listed: duplicates would show)."""
    found: dict[str, str] = {}
    for unit in await store.list_units(repo, number):
        path, sha = unit.key.natural_key
        assert path not in found, f"{path} twice in the version"
        found[path] = sha
    return found


async def commit_version(store: Store, units: list[NewUnit], **kw: Any) -> Any:
    version = await store.new_version("r", **kw)
    report = await store.commit_units(units, version=version)
    await store.complete_version(version)
    return report


async def test_new_content_replaces_the_old_at_its_path(store: Store) -> None:
    await commit_version(store, [fu("a", b"old a"), fu("b", b"b")])
    report = await commit_version(store, [fu("a", b"new a")])
    assert [o.status for o in report] == ["committed"]
    assert [(r.relative_path, r.key.natural_key[1]) for r in report.replaced] == [
        ("a", record(b"old a").sha256)
    ]
    assert report.replaced[0].by == UnitKey("file", ("a", record(b"new a").sha256))
    assert await paths(store) == {"a": record(b"new a").sha256, "b": record(b"b").sha256}
    # the old version is untouched, and the old unit stays in the store
    assert await paths(store, number=1) == {"a": record(b"old a").sha256, "b": record(b"b").sha256}


async def test_file_and_directory_at_one_path(store: Store) -> None:
    await commit_version(store, [fu("a", b"file a"), fu("x/y/z", b"deep")])
    # a directory where a file was, and a file where a directory was: the new wins
    report = await commit_version(store, [fu("a/b", b"under a"), fu("x/y", b"file y")])
    assert sorted(r.relative_path for r in report.replaced) == ["a", "x/y/z"]
    assert set(await paths(store)) == {"a/b", "x/y"}
    # siblings that only share a prefix are no conflict: 'a' and 'ab', 'a/b' and 'a/bc'
    report = await commit_version(store, [fu("ab", b"ab"), fu("a/bc", b"bc"), fu("x/y0", b"0")])
    assert report.replaced == ()
    assert set(await paths(store)) == {"a/b", "a/bc", "ab", "x/y", "x/y0"}


async def test_two_additions_at_one_key_are_refused(store: Store) -> None:
    version = await store.new_version("r")
    first = await store.commit_units([fu("a", b"one")], version=version)
    assert first.committed
    # same path, another batch; a file under it; a directory above an added file
    second = await store.commit_units(
        [fu("a", b"two"), fu("a/b", b"three"), fu("c/d", b"d"), fu("c", b"c")], version=version
    )
    statuses = [o.status for o in second]
    assert statuses == ["failed", "failed", "committed", "failed"]
    for outcome in second.failed:
        assert isinstance(outcome.error, RepositoryKeyConflict)
    assert "both are added to the same version" in str(second.outcomes[0].error)
    # nothing of a refused new unit is written
    assert await store.find_units([fu("a", b"two").key, fu("c", b"c").key]) == {}
    await store.complete_version(version)
    assert set(await paths(store)) == {"a", "c/d"}


async def test_readding_carried_over_unit_then_conflict_is_refused(store: Store) -> None:
    old = fu("a", b"old")
    await commit_version(store, [old])
    version = await store.new_version("r")
    # the input holds the old unit again (already present) and then new content at its path
    ids = (await store.find_units([old.key]))[old.key].id
    assert await store.add_to_version(version, [ids]) == 0
    report = await store.commit_units([fu("a", b"new")], version=version)
    assert [o.status for o in report] == ["failed"]
    assert report.replaced == ()


async def test_place_units_reports_and_add_to_version_is_all_or_nothing(store: Store) -> None:
    committed = await store.commit_units([fu("p", b"1"), fu("p", b"2"), fu("q", b"3")])
    ids = [o.unit_id for o in committed]
    assert all(isinstance(i, int) for i in ids)
    version = await store.new_version("r")
    with pytest.raises(RepositoryKeyConflict):
        await store.add_to_version(version, ids)  # type: ignore[arg-type]
    assert await store.count_units("r", version.number) == 0  # nothing changed
    placement = await store.place_units(version, ids)  # type: ignore[arg-type]
    assert placement.added == 2 and list(placement.refused) == [ids[1]]


async def test_custom_unit_type_key(tmp_path: Path, store_url: str) -> None:
    keys = {"pkg": RepositoryKey("name", "arch")}
    async with open_store(store_url, root=tmp_path / "root", repository_keys=keys) as store:

        def pkg(name: str, version: str, arch: str = "x86_64") -> NewUnit:
            return NewUnit("pkg", (name, version, arch), {"name": name, "arch": arch})

        await commit_version(store, [pkg("bash", "5.1"), pkg("bash", "5.1", "aarch64")])
        report = await commit_version(store, [pkg("bash", "5.2")])
        assert [r.key.natural_key for r in report.replaced] == [("bash", "5.1", "x86_64")]
        held = {u.key.natural_key for u in await store.list_units("r")}
        assert held == {("bash", "5.2", "x86_64"), ("bash", "5.1", "aarch64")}
        # a unit without its key field fails, alone
        bad = await store.commit_units([NewUnit("pkg", ("zsh", "1", "x"), {"name": "zsh"})])
        assert "needs the field 'arch'" in str(bad.outcomes[0].error)
        # a type without a key behaves as before: two units can share anything
        other = await commit_version(store, [NewUnit("note", ("1",)), NewUnit("note", ("2",))])
        assert other.replaced == ()


def test_repository_key_declarations_are_checked() -> None:
    with pytest.raises(triofetch.InvalidInput):
        RepositoryKey()
    with pytest.raises(triofetch.InvalidInput):
        RepositoryKey("a", "b", path=True)
    with pytest.raises(triofetch.InvalidInput):
        RepositoryKey("a", "a")


# -- the creator ---------------------------------------------------------------------------------


async def test_creator_replaces_changed_file(http_server: FaultServer, store: Store) -> None:
    async with triofetch.Downloader(connections=4, retries=0) as dl:
        creator = triofetch.ContentUnitCreator(store, dl)
        first = await creator.run(
            [file_unit(http_server, "a"), file_unit(http_server, "b")], repository="r"
        )
        assert first.created and first.version == 1
        changed = file_unit(http_server, "a2", data=content("changed"), serve=True)
        # same relative path 'a', new content
        sha = hashlib.sha256(content("changed")).hexdigest()
        unit = triofetch.DeclarativeUnit(
            "file",
            ("a", sha),
            {"relative_path": "a"},
            [triofetch.DeclarativeArtifact(changed.artifacts[0].urls, "a", {"sha256": sha})],
        )
        report = await creator.run([unit], repository="r")
        assert report.ok and report.created and report.version == 2
        assert report.units_replaced == 1 and report.replaced[0].relative_path == "a"
        assert (await paths(store))["a"] == sha


async def test_a_failed_run_replaced_nothing(
    http_server: FaultServer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A run whose changed file would replace the old one, but another unit fails: no
    version is made, so nothing was replaced: the report lists no replacement and no
    'replaced' WARNING is logged (the latest version still holds the old file)."""
    async with triofetch.Downloader(connections=4, retries=0) as dl:
        creator = triofetch.ContentUnitCreator(store, dl)
        assert (await creator.run([file_unit(http_server, "a")], repository="r")).created
        old = (await paths(store))["a"]
        sha = hashlib.sha256(content("changed")).hexdigest()
        changed = file_unit(http_server, "a2", data=content("changed"))
        unit = triofetch.DeclarativeUnit(
            "file",
            ("a", sha),
            {"relative_path": "a"},
            [triofetch.DeclarativeArtifact(changed.artifacts[0].urls, "a", {"sha256": sha})],
        )
        missing = file_unit(http_server, "gone", serve=False)  # a 404
        with caplog.at_level(logging.WARNING, logger="triofetch"):
            report = await creator.run([unit, missing], repository="r")
        assert not report.ok and report.version is None and not report.created
        assert report.units_replaced == 0 and report.replaced == []
        assert not [r for r in caplog.records if "replaced" in r.getMessage()]
        assert (await paths(store))["a"] == old
        # the same change without the failure: replaced, reported and logged
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="triofetch"):
            again = await creator.run([unit], repository="r")
        assert again.created and again.units_replaced == 1
        assert [r.relative_path for r in again.replaced] == ["a"]
        assert len([r for r in caplog.records if "replaced" in r.getMessage()]) == 1


# -- the command line: the defects as a user met them ---------------------------------------------


def test_additive_sync_of_a_changed_file_exports_the_new_content(
    http_server: FaultServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    old = {"a.txt": b"old content", "b.txt": b"b"}
    new = {"a.txt": b"NEW content!", "b.txt": b"b"}
    url = publish(http_server, old, prefix="/one")
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    # a second repository holds the new content first, so its unit has the lower id
    url2 = publish(http_server, new, prefix="/two")
    assert run_cli_in_process("sync", url2, "--root", root, "--repository", "other").code == 0
    url3 = publish(http_server, new, prefix="/three")
    result = run_cli("sync", url3, "--root", root, "--repository", "r", "--json")
    assert result.code == 0, result
    report = result.json()
    assert report["version"] == 2 and report["created"] is True
    assert report["units"]["replaced"] == 1
    assert report["replaced"] == [
        {
            "relative_path": "a.txt",
            "sha256": hashlib.sha256(b"old content").hexdigest(),
            "by": hashlib.sha256(b"NEW content!").hexdigest(),
        }
    ]
    listed = run_cli_in_process("list", "--root", root, "--repository", "r", "--json")
    assert [(f["relative_path"], f["size"]) for f in listed.json()] == [("a.txt", 12), ("b.txt", 1)]
    out = tmp_path / "out"
    exported = run_cli("export", "--root", root, "--repository", "r", out)
    assert exported.code == 0, exported
    assert (out / "a.txt").read_bytes() == b"NEW content!"


def test_additive_syncs_never_hold_a_file_and_a_directory(
    http_server: FaultServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    url = publish(http_server, {"a": b"file a", "c": b"c"}, prefix="/one")
    assert run_cli_in_process("sync", url, "--root", root, "--repository", "r").code == 0
    url2 = publish(http_server, {"a/b": b"now a directory"}, prefix="/two")
    result = run_cli("sync", url2, "--root", root, "--repository", "r")
    assert result.code == 0, result
    assert "version 2 created" in result.out
    assert "1 replaced" in result.out
    assert "replaced: a:" in result.err
    listed = run_cli_in_process("list", "--root", root, "--repository", "r", "--json").json()
    assert sorted(f["relative_path"] for f in listed) == ["a/b", "c"]
    out = tmp_path / "out"
    assert run_cli("export", "--root", root, "--repository", "r", out).code == 0
    assert (out / "a" / "b").read_bytes() == b"now a directory"
    # the export's manifest is one triofetch syncs again, to the same content
    again = run_cli_in_process(
        "sync", out / "PULP_MANIFEST", "--root", tmp_path / "copy", "--repository", "copy", "--json"
    )
    assert again.code == 0, again
    copy = run_cli_in_process(
        "list", "--root", tmp_path / "copy", "--repository", "copy", "--json"
    ).json()
    assert copy == listed


def test_noop_sync_reports_the_version_holding_the_content(
    http_server: FaultServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    url = publish(http_server, {"x": b"x"})
    first = run_cli_in_process("sync", url, "--root", root, "--repository", "r", "--json").json()
    assert (first["version"], first["created"]) == (1, True)
    again = run_cli("sync", url, "--root", root, "--repository", "r")
    assert again.code == 0
    assert "up to date at version 1" in again.out
    assert "None" not in again.out + again.err
    data = json.loads(run_cli("sync", url, "--root", root, "--repository", "r", "--json").out)
    assert (data["version"], data["created"]) == (1, False)


def test_repository_key_names_are_public() -> None:
    for name in (
        "RepositoryKey",
        "RepositoryKeyConflict",
        "ReplacedUnit",
        "Placement",
        "DEFAULT_REPOSITORY_KEYS",
    ):
        assert name in triofetch.__all__
        assert getattr(triofetch, name) is not None
    assert triofetch.DEFAULT_REPOSITORY_KEYS["file"] == RepositoryKey("relative_path", path=True)
    assert issubclass(triofetch.RepositoryKeyConflict, triofetch.StoreError)
