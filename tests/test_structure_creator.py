"""The shape of ``triofetch.creator`` and of the unit downloader, and the rules they share.

- Inside the creator, modules import only the ones listed above them in the map of
  ``triofetch/creator/__init__.py``, and nothing outside the creator imports its private
  modules.
- One nursery per unit, written once (:func:`triofetch.units.fetch_artifacts`) for the unit
  downloader and the creator: what it returns, what it cancels, what it lets through.
- One "an int, but not a bool" rule (``_model.check_int``) for the counts the unit
  downloader and the creator take.
"""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import triofetch
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.errors import InvalidInput, TriofetchError
from triofetch.store import Store, open_store
from triofetch.units import fetch_artifacts

SRC = Path(__file__).resolve().parent.parent / "src" / "triofetch"
CREATOR = SRC / "creator"

#: the creator's modules, in the order of the map in its __init__: each imports only modules
#: listed before it
ORDER = ["_reports", "_versions", "_flights", "_downloads", "_fill", "_pipeline", "_creator"]


def creator_imports(path: Path) -> set[str]:
    """The creator's own modules that *path* imports (``from ._x import ...``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update(alias.name for alias in node.names)
    return found


def test_every_creator_module_is_on_the_map() -> None:
    modules = {p.stem for p in CREATOR.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)
    doc = ast.get_docstring(ast.parse((CREATOR / "__init__.py").read_text(encoding="utf-8")))
    assert doc is not None
    listed = [name for name in ORDER if f"``{name}``" in doc]
    assert listed == ORDER
    assert sorted(ORDER, key=lambda name: doc.index(f"``{name}``")) == ORDER


@pytest.mark.parametrize("name", ORDER)
def test_creator_imports_go_one_way(name: str) -> None:
    allowed = set(ORDER[: ORDER.index(name)])
    assert creator_imports(CREATOR / f"{name}.py") <= allowed


def test_nothing_outside_the_creator_imports_its_private_modules() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parent == CREATOR:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(".creator._" in f".{name}" for name in names):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


# -- the nursery of one unit ---------------------------------------------------------------

ARTS = tuple(DeclarativeArtifact(f"http://127.0.0.1:9/{n}", n) for n in ("a", "b", "c"))


async def test_a_unit_whose_fetches_all_return_has_no_error() -> None:
    done: dict[str, int] = {}

    async def fetch(art: DeclarativeArtifact, into: dict[str, int], value: int) -> None:
        await trio.lowlevel.checkpoint()
        into[art.relative_path] = value

    assert await fetch_artifacts(ARTS, fetch, done, 7) is None
    assert done == {"a": 7, "b": 7, "c": 7}


async def test_a_failed_fetch_cancels_its_siblings_and_is_returned() -> None:
    cleaned: list[str] = []
    failure = triofetch.DownloadError("boom", url="http://127.0.0.1:9/b")

    async def fetch(art: DeclarativeArtifact) -> None:
        if art.relative_path == "b":
            await trio.lowlevel.checkpoint()
            raise failure
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(art.relative_path)

    with trio.fail_after(5):
        errors = await fetch_artifacts(ARTS, fetch)
    assert errors is not None
    assert list(errors.exceptions) == [failure]
    assert sorted(cleaned) == ["a", "c"]


async def test_anything_but_a_triofetch_error_goes_through() -> None:
    async def fetch(art: DeclarativeArtifact) -> None:
        if art.relative_path == "a":
            raise KeyError("a bug")
        raise InvalidInput("an error of the unit")

    with pytest.raises(BaseExceptionGroup) as info:
        await fetch_artifacts(ARTS, fetch)
    assert info.group_contains(KeyError)


async def test_a_unit_cancelled_through_its_scope_is_not_a_failure() -> None:
    cleaned: list[str] = []
    scope = trio.CancelScope()

    async def fetch(art: DeclarativeArtifact) -> None:
        if art.relative_path == "a":
            scope.cancel()
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(art.relative_path)

    with trio.fail_after(5):
        assert await fetch_artifacts(ARTS, fetch, scope=scope) is None
    assert scope.cancelled_caught
    assert sorted(cleaned) == ["a", "b", "c"]


async def test_errors_beside_the_scopes_cancellation_are_the_units() -> None:
    """Cancelled by its scope while one fetch fails: the cancellation is taken out before
    the errors are looked at, so the unit fails (its error returned), nothing is raised."""
    scope = trio.CancelScope()

    async def fetch(art: DeclarativeArtifact) -> None:
        try:
            if art.relative_path == "a":
                scope.cancel()
            await trio.sleep_forever()
        finally:
            if art.relative_path == "b":
                raise InvalidInput("failed while cancelled")

    errors = await fetch_artifacts(ARTS, fetch, scope=scope)
    assert errors is not None
    assert all(isinstance(e, TriofetchError) for e in errors.exceptions)


async def test_cancellation_from_outside_goes_through() -> None:
    async def fetch(art: DeclarativeArtifact) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as outer:
        await fetch_artifacts(ARTS, fetch)
        pytest.fail("not cancelled")
    assert outer.cancelled_caught


# -- counts: an int, not a bool ------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(None, root=tmp_path / "root") as s:
        yield s


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        *(("units_in_flight", bad) for bad in (True, False, 0, -1, 2.5, "4")),
        *(("buffer", bad) for bad in (True, False, -1, 2.5, "4")),  # 0: no buffer, valid
    ],
)
async def test_the_unit_downloader_takes_counts_that_are_ints(name: str, bad: object) -> None:
    """True passed as 1 before (and a float failed later, inside Trio)."""
    async with triofetch.Downloader() as dl:
        with pytest.raises(InvalidInput, match=name):
            triofetch.UnitDownloader(dl, **{name: bad})  # type: ignore[arg-type]
        assert triofetch.UnitDownloader(dl, **{name: 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, False, 0, -1, 2.5, "4"])
@pytest.mark.parametrize(
    "name", ["slice_size", "slices_in_flight", "units_in_flight", "commit_batch"]
)
async def test_the_creator_takes_counts_that_are_ints(store: Store, name: str, bad: object) -> None:
    async with triofetch.Downloader() as dl:
        with pytest.raises(InvalidInput, match=name):
            triofetch.ContentUnitCreator(store, dl, **{name: bad})  # type: ignore[arg-type]


async def test_the_creator_takes_a_store_and_a_downloader(store: Store) -> None:
    """An AttributeError escaped (``None.storage``, ``None.limiter``) before; the same for
    the unit downloader."""
    async with triofetch.Downloader() as dl:
        with pytest.raises(InvalidInput, match=r"store must be a Store.*got None"):
            triofetch.ContentUnitCreator(None, dl)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=r"downloader must be a Downloader.*got None"):
            triofetch.ContentUnitCreator(store, None)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=r"downloader must be a Downloader.*got None"):
            triofetch.UnitDownloader(None)  # type: ignore[arg-type]


async def test_the_creator_runs_with_the_smallest_counts(store: Store) -> None:
    async with triofetch.Downloader() as dl:
        creator = triofetch.ContentUnitCreator(
            store, dl, slice_size=1, slices_in_flight=1, units_in_flight=1, commit_batch=1
        )
        report = await creator.run([DeclarativeUnit("t", ("k",))], repository="r")
    assert report.ok and report.units_new == 1
