"""The shape of ``triofetch.store``, and the rules it shares with the rest of triofetch.

- Inside the store, modules import only the ones below them (see the map in
  ``triofetch/store/__init__.py``), and nothing outside the store imports its private
  modules.
- One relative-path rule (``_model.check_relative_path``): the store refuses a backslash and
  a control character like the declarative model does, in an artifact's path and in a path
  used as a repository key, and writes nothing of such a unit.
- One "an int, but not a bool" rule (``_model.check_int``) for every count and id the store
  takes, with the same answer on SQLite and PostgreSQL.
"""

from __future__ import annotations

import ast
import hashlib
import pickle
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import triofetch.store
from tests.test_store import TABLES, counts, file_unit, record
from triofetch._model import _PLAIN_PATH, check_relative_path_fully as check_relative_path
from triofetch.errors import InvalidInput, InvalidUnit
from triofetch.store import (
    CommitOutcome,
    NewUnit,
    NewUnitArtifact,
    RemoteArtifact,
    Store,
    open_store,
)

SRC = Path(__file__).resolve().parent.parent / "src" / "triofetch"
STORE = SRC / "store"

#: each module of the store, by its rank: a module imports only modules of a lower rank
RANKS = {
    "_schema": 0,
    "_types": 1,
    "_dialect": 1,
    "_sqlite": 2,
    "_postgres": 2,
    "_commit": 3,
    "_versions": 3,
    "_retention": 4,
    "_facade": 5,
    "__init__": 6,
}


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(store_url, root=tmp_path / "root") as s:
        yield s


def store_imports(path: Path) -> set[str]:
    """The store modules *path* imports: any import, lazy or under TYPE_CHECKING too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:  # from . import _commit, _versions
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "triofetch.store."
        ):
            found.add(node.module.split(".")[2])  # type: ignore[union-attr]
    return found


def test_every_store_module_has_a_rank() -> None:
    assert {p.stem for p in STORE.glob("*.py")} == set(RANKS)


@pytest.mark.parametrize("module", sorted(RANKS))
def test_store_imports_run_down_only(module: str) -> None:
    for target in store_imports(STORE / f"{module}.py"):
        assert RANKS[target] < RANKS[module], f"{module} imports {target}"


@pytest.mark.parametrize("module", sorted(RANKS))
def test_each_store_module_says_what_it_owns_and_must_not_touch(module: str) -> None:
    doc = ast.get_docstring(ast.parse((STORE / f"{module}.py").read_text(encoding="utf-8")))
    assert doc is not None
    assert "owns" in doc.lower() and "must not" in doc


def test_nothing_outside_the_store_imports_its_private_modules() -> None:
    private = re.compile(r"(from|import) +(triofetch)?\.*store\._|from +\.+store import +_")
    for path in SRC.rglob("*.py"):
        if STORE in path.parents:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            assert not private.search(line), f"{path}: {line}"


def test_commit_outcome_is_the_stores_name_for_what_a_commit_did() -> None:
    assert CommitOutcome.__module__ == "triofetch.store"
    assert not hasattr(triofetch.store, "UnitOutcome")  # triofetch.UnitOutcome is another type
    assert "UnitOutcome" not in triofetch.store.__all__


async def test_commit_report_holds_commit_outcomes(store: Store) -> None:
    report = await store.commit_units([file_unit("a", b"a")])
    assert all(isinstance(o, CommitOutcome) for o in report)


# -- one relative-path rule ------------------------------------------------------------------


UNSAFE_PATHS = ["dir\\file.txt", "dir/fi\x07le.txt", "tab\there", "del\x7f"]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_an_artifact_path_with_a_backslash_or_a_control_character_is_refused(path: str) -> None:
    with pytest.raises(InvalidUnit):
        NewUnitArtifact(path, record(b"x"))


@pytest.mark.parametrize("path", UNSAFE_PATHS)
async def test_the_store_writes_nothing_of_a_unit_at_an_unsafe_path(
    store: Store, path: str
) -> None:
    """A file unit's ``relative_path`` field is its repository key: the same rule applies."""
    rec = record(b"body")
    unit = NewUnit(
        "file",
        (path, rec.sha256),
        {"relative_path": path},
        (NewUnitArtifact("safe.txt", rec, RemoteArtifact(("http://example.invalid/x",))),),
    )
    report = await store.commit_units([unit])
    (outcome,) = report.outcomes
    assert outcome.status == "failed"
    assert isinstance(outcome.error, InvalidUnit)
    assert await counts(store) == dict.fromkeys(TABLES, 0)
    version = await store.new_version("r")
    report = await store.commit_units([unit, file_unit("ok.txt", b"ok")], version=version)
    assert [o.status for o in report] == ["failed", "committed"]
    assert (await counts(store))["units"] == 1
    assert await store.place_units(version, [report.outcomes[1].unit_id or 0]) is not None


@given(
    st.text(
        alphabet=st.sampled_from([*"ab./\\-_ ~\x00\x1f\x7f\t", "é"]),
        max_size=40,
    )
)
def test_the_repository_keys_fast_path_accepts_nothing_the_rule_refuses(path: str) -> None:
    if _PLAIN_PATH(path):
        assert check_relative_path(path) == path


@pytest.mark.parametrize("segment", [255, 256])
def test_the_fast_path_keeps_the_segment_limit(segment: int) -> None:
    path = "d/" + "a" * segment
    if segment <= 255:
        assert _PLAIN_PATH(path) and check_relative_path(path) == path
    else:
        assert not _PLAIN_PATH(path)
        with pytest.raises(InvalidUnit, match="segment too long"):
            check_relative_path(path)


# -- one int rule --------------------------------------------------------------------------


async def test_counts_and_ids_refuse_bools(store: Store) -> None:
    version = await store.new_version("r")
    await store.commit_units([file_unit("a", b"a")], version=version)
    with pytest.raises(InvalidInput, match="keep"):
        await store.prune("r", True)
    with pytest.raises(InvalidInput, match="limit"):
        await store.missing_artifacts(limit=True)
    with pytest.raises(InvalidInput, match="after"):
        await store.stored_artifacts(after=True)
    with pytest.raises(InvalidInput, match="unit_ids"):
        await store.add_to_version(version, [True])
    with pytest.raises(InvalidInput, match="artifact_ids"):
        await store.artifact_urls([False])
    with pytest.raises(InvalidInput, match="unit id"):
        await store.fill_artifacts({True: {"a": record(b"a")}})
    with pytest.raises(InvalidInput, match="base"):
        await store.new_version("r", base=True)


@pytest.mark.parametrize("after_id", [True, "1", 1.0])
async def test_missing_artifacts_refuses_a_cursor_that_is_no_int(
    store: Store, after_id: object
) -> None:
    """Before, SQLite answered an empty page (or a bool's page) and PostgreSQL an error."""
    await store.commit_units([file_unit("lazy", b"lazy", on_demand=True)])
    with pytest.raises(InvalidInput, match="after_id"):
        await store.missing_artifacts(after_id=after_id)  # type: ignore[arg-type]
    assert len(await store.missing_artifacts(after_id=0)) == 1


@pytest.mark.parametrize(
    "options",
    [{"pool_size": True}, {"pool_size": 0}, {"cache_mib": True}, {"connect_timeout": True}],
)
async def test_open_store_refuses_bools_for_numbers(
    options: dict[str, object], tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=next(iter(options))):
        await open_store(f"sqlite:///{tmp_path / 'db'}", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "db").exists()


def test_commit_outcomes_pickle() -> None:
    outcome = CommitOutcome(file_unit("a", b"a"), "committed", 1)
    assert pickle.loads(pickle.dumps(outcome)) == outcome
    assert hashlib.sha256(b"a").hexdigest() in repr(outcome)
