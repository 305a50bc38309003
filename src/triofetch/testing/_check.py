"""The "complete or absent" invariant, checked from outside: :func:`check_store`.

Everything here goes through the public API of a :class:`~triofetch.Store` and its
:class:`~triofetch.ArtifactStorage` (what any program could read), never through the
database's tables: a consumer's test sees what a consumer's code would see.  Files are
hashed in worker threads (:meth:`ArtifactStorage.verify <triofetch.ArtifactStorage.verify>`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType
from typing import Literal

import trio

from triofetch import DeclarativeUnit
from triofetch.errors import InvalidUnit
from triofetch.store import Store, UnitInfo, UnitKey

__all__ = ["ProblemKind", "StoreProblem", "assert_store_ok", "check_store"]

ProblemKind = Literal[
    "missing_file",
    "corrupt_file",
    "unrecorded_file",
    "temp_file",
    "incomplete_unit",
    "unit_mismatch",
    "incomplete_version",
    "version_mismatch",
    "key_conflict",
]
"""What kind of problem a :class:`StoreProblem` is:

``missing_file``
    an artifact the store records has no file in the storage.
``corrupt_file``
    a recorded artifact's file has another size or content (sha256) than recorded.
``unrecorded_file``
    a file under ``artifacts/`` no artifact record names (reported only with
    ``unrecorded_files_ok=False``: a cancelled run may leave one, which ``gc`` removes).
``temp_file``
    a file left in the storage's temp area.
``incomplete_unit``
    a unit lacking downloaded files (reported only with ``on_demand_ok=False``).
``unit_mismatch``
    a stored unit that is not what was declared: other relative paths, another sha256 or
    size than the :class:`~triofetch.DeclarativeUnit` given in ``units=`` says.
``incomplete_version``
    a repository version left incomplete (reported unless ``incomplete_versions_ok``).
``version_mismatch``
    versions that contradict each other: a version whose unit count is not the units it
    lists, a unit listed twice, version numbers out of order, a latest version that is not
    the newest complete one.
``key_conflict``
    a version holding two units at one repository key (the store's ``repository_keys``:
    a file at the same relative path), or a file at a path where another unit's file
    needs a directory (``a`` and ``a/b``).
"""


@dataclass(frozen=True, slots=True)
class StoreProblem:
    """One thing :func:`check_store` found wrong; ``str(problem)`` is its ``message``.

    Attributes:
        kind: what is wrong (see :data:`ProblemKind`).
        message: a readable sentence saying what and where.
        key: the unit concerned, if any.
        sha256: the artifact concerned, if any.
        path: the file concerned, if any.
        repository: the repository concerned, if any.
        version: the version number concerned, if any.
    """

    kind: ProblemKind
    message: str
    key: UnitKey | None = None
    sha256: str | None = None
    path: Path | None = None
    repository: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return self.message


async def check_store(
    store: Store,
    *,
    units: Iterable[DeclarativeUnit] = (),
    on_demand_ok: bool = True,
    incomplete_versions_ok: bool = False,
    unrecorded_files_ok: bool = True,
) -> list[StoreProblem]:
    """Check that every unit of *store* is complete or absent; return the problems found.

    An empty list means the store is clean:

    - every artifact the store records has its file in the storage, with the recorded size
      and content (re-hashed, in worker threads);
    - the storage's temp area holds no file (a run removes its temp files however it ends);
    - every version of every repository lists as many units as it counts, each once; its
      units' files are recorded artifacts; it holds one unit per repository key (the
      store's :attr:`~triofetch.Store.repository_keys`), and no file where another unit's
      file needs a directory; numbers go up, and the latest version is the
      newest complete one; no version is left incomplete (unless *incomplete_versions_ok*:
      a writer is still at work, or one was killed and ``gc`` has not run yet);
    - with *on_demand_ok* false, no unit lacks a file (no ``on_demand`` unit is expected);
    - each unit of *units* (the :class:`~triofetch.DeclarativeUnit` objects a test
      declared) that is in the store has exactly the declared relative paths, and the
      declared sha256 and size of each file;
    - with *unrecorded_files_ok* false, no file under ``artifacts/`` lacks a record.

    Units that are in no version and not among *units* are checked through their files
    only (every stored artifact is): the public API has no list of every unit.

    Run it when nothing writes to the store (after the runs under test ended, a content
    app's downloads included: ``await app.on_demand.wait_idle()``): it reads the store in
    several queries, not in one snapshot, so a commit landing between two of them can look
    like a ``unit_mismatch``.

    Args:
        store: an open store with an artifact storage (``open_store(..., root=...)``).
        units: declared units to compare with what the store holds (absent ones are fine).
        on_demand_ok: whether units without all their files (``on_demand``) are allowed.
        incomplete_versions_ok: whether incomplete versions are allowed.
        unrecorded_files_ok: whether files the store does not record are allowed.

    Raises:
        ValueError: the store has no artifact storage.
    """
    storage = store.storage
    if storage is None:
        raise ValueError("check_store needs a store with an artifact storage (root=...)")
    problems: list[StoreProblem] = []

    # -- the artifacts the store records, page by page --------------------------------------
    recorded: dict[str, int] = {}
    after = 0
    while True:
        rows, cursor = await store.stored_artifacts(after=after, limit=1000)
        for _id, sha256, size in rows:
            recorded[sha256] = size
        if cursor is None:
            break
        after = cursor

    checked: set[UnitKey] = set()

    def unit_files(info: UnitInfo, repository: str | None, version: int | None) -> None:
        """A unit's files are recorded artifacts (each unit once, however often listed)."""
        if info.key in checked:
            return
        checked.add(info.key)
        for relative_path, record in sorted(info.artifacts.items()):
            if record is None:
                if not on_demand_ok:
                    problems.append(
                        StoreProblem(
                            "incomplete_unit",
                            f"unit {_key(info.key)} lacks its file {relative_path!r}",
                            key=info.key,
                            repository=repository,
                            version=version,
                        )
                    )
                continue
            if recorded.get(record.sha256) != record.size:
                problems.append(
                    StoreProblem(
                        "unit_mismatch",
                        f"unit {_key(info.key)}: its file {relative_path!r} is artifact "
                        f"{record.sha256} of {record.size} bytes, which the store's artifacts "
                        f"record as {_size(recorded.get(record.sha256))}",
                        key=info.key,
                        sha256=record.sha256,
                        repository=repository,
                        version=version,
                    )
                )

    # -- repositories and their versions ----------------------------------------------------
    for repository in await store.repositories():
        versions = await store.versions(repository)
        numbers = [v.number for v in versions]
        if numbers != sorted(set(numbers)) or any(n < 1 for n in numbers):
            problems.append(
                StoreProblem(
                    "version_mismatch",
                    f"repository {repository!r}: version numbers {numbers} are not ascending "
                    "and distinct",
                    repository=repository,
                )
            )
        complete = [v.number for v in versions if v.complete]
        latest = await store.latest_version(repository)
        expected_latest = max(complete) if complete else None
        if (latest.number if latest is not None else None) != expected_latest:
            problems.append(
                StoreProblem(
                    "version_mismatch",
                    f"repository {repository!r}: the latest version is "
                    f"{None if latest is None else latest.number}, the newest complete one "
                    f"is {expected_latest}",
                    repository=repository,
                )
            )
        for version in versions:
            where = f"repository {repository!r} version {version.number}"
            if not version.complete and not incomplete_versions_ok:
                problems.append(
                    StoreProblem(
                        "incomplete_version",
                        f"{where} is incomplete (a run left it behind)",
                        repository=repository,
                        version=version.number,
                    )
                )
            listed = await store.list_units(repository, version.number)
            # an incomplete version may be growing under its writer while this reads it
            if version.complete and len(listed) != version.units:
                problems.append(
                    StoreProblem(
                        "version_mismatch",
                        f"{where} counts {version.units} units but lists {len(listed)}",
                        repository=repository,
                        version=version.number,
                    )
                )
            seen: set[UnitKey] = set()
            for listed_unit in listed:
                if listed_unit.key in seen:
                    problems.append(
                        StoreProblem(
                            "version_mismatch",
                            f"{where} lists unit {_key(listed_unit.key)} twice",
                            key=listed_unit.key,
                            repository=repository,
                            version=version.number,
                        )
                    )
                seen.add(listed_unit.key)
                unit_files(listed_unit, repository, version.number)
            problems += _key_conflicts(store, listed, repository, version.number)

    # -- the declared units -----------------------------------------------------------------
    declared = {UnitKey(u.type, u.natural_key): u for u in units}
    if declared:
        found = await store.find_units(list(declared))
        for key, info in sorted(found.items(), key=lambda item: _key(item[0])):
            want = {a.relative_path: a for a in declared[key].artifacts}
            if set(info.artifacts) != set(want):
                problems.append(
                    StoreProblem(
                        "unit_mismatch",
                        f"unit {_key(key)} holds the files {sorted(info.artifacts)}, "
                        f"declared {sorted(want)}",
                        key=key,
                    )
                )
            for relative_path, record in sorted(info.artifacts.items()):
                art = want.get(relative_path)
                if art is None or record is None:
                    continue
                if art.sha256 is not None and record.sha256 != art.sha256:
                    problems.append(
                        StoreProblem(
                            "unit_mismatch",
                            f"unit {_key(key)}: {relative_path!r} is stored as sha256 "
                            f"{record.sha256}, declared {art.sha256}",
                            key=key,
                            sha256=record.sha256,
                        )
                    )
                if art.size is not None and record.size != art.size:
                    problems.append(
                        StoreProblem(
                            "unit_mismatch",
                            f"unit {_key(key)}: {relative_path!r} is stored with "
                            f"{record.size} bytes, declared {art.size}",
                            key=key,
                            sha256=record.sha256,
                        )
                    )
            unit_files(info, None, None)

    # -- the files: every recorded artifact whole, and what else lies there ------------------
    report = await storage.verify(expected=recorded)
    for bad in report.corrupted:
        if bad.reason == "missing":
            problems.append(
                StoreProblem(
                    "missing_file",
                    f"artifact {bad.sha256} ({_size(recorded.get(bad.sha256))}) has no file "
                    f"at {bad.path}",
                    sha256=bad.sha256,
                    path=bad.path,
                )
            )
        else:
            problems.append(
                StoreProblem(
                    "corrupt_file",
                    f"the file of artifact {bad.sha256} at {bad.path} is damaged: {bad.reason}",
                    sha256=bad.sha256,
                    path=bad.path,
                )
            )
    if not unrecorded_files_ok:
        for path in report.orphans:
            problems.append(
                StoreProblem(
                    "unrecorded_file",
                    f"{path} is a file no artifact of the store records",
                    path=path,
                )
            )
    for path in await trio.to_thread.run_sync(_temp_files, storage.temp_dir):
        problems.append(
            StoreProblem("temp_file", f"a temp file was left behind: {path}", path=path)
        )
    return problems


async def assert_store_ok(
    store: Store,
    *,
    units: Iterable[DeclarativeUnit] = (),
    on_demand_ok: bool = True,
    incomplete_versions_ok: bool = False,
    unrecorded_files_ok: bool = True,
) -> None:
    """Raise :class:`AssertionError` listing every problem :func:`check_store` finds
    (same arguments); return quietly when the store is clean."""
    problems = await check_store(
        store,
        units=units,
        on_demand_ok=on_demand_ok,
        incomplete_versions_ok=incomplete_versions_ok,
        unrecorded_files_ok=unrecorded_files_ok,
    )
    if problems:
        lines = "\n".join(f"- {p.kind}: {p.message}" for p in problems)
        raise AssertionError(f"the store has {len(problems)} problem(s):\n{lines}")


def _temp_files(temp_dir: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(temp_dir))
    except FileNotFoundError:
        return []
    return [temp_dir / name for name in names]


def _key(key: UnitKey) -> str:
    return f"{key.type}:{'/'.join(key.natural_key)}"


def _size(size: int | None) -> str:
    return "no artifact" if size is None else f"{size} bytes"


# The public home of every class and function above, for reprs, pickling and the docs.
for _name in __all__:
    if isinstance(globals()[_name], type | FunctionType):
        globals()[_name].__module__ = "triofetch.testing"
del _name


def _key_conflicts(
    store: Store, listed: Iterable[UnitInfo], repository: str, version: int
) -> list[StoreProblem]:
    """The units of one version that share a repository key, or where one unit's file is
    in the way of another's directory (path keys: ``a`` and ``a/b``)."""
    declared = store.repository_keys
    at: dict[str, UnitKey] = {}
    problems: list[StoreProblem] = []
    where = f"repository {repository!r} version {version}"

    def conflict(message: str, key: UnitKey) -> None:
        problems.append(
            StoreProblem(
                "key_conflict",
                f"{where} {message}",
                key=key,
                repository=repository,
                version=version,
            )
        )

    for unit in listed:
        keyed = declared.get(unit.key.type)
        if keyed is None:
            continue
        try:
            place = keyed.of(unit.key.type, unit.fields)
        except InvalidUnit:  # (a unit the store would not have taken: not this check's)
            continue
        other = at.setdefault(place, unit.key)
        if other != unit.key:
            conflict(f"holds {_key(other)} and {_key(unit.key)} at {place!r}", unit.key)
    for place, key in at.items():
        if place.startswith("/"):  # (a key that is not a path)
            continue
        cut = place.find("/")
        while cut > 0:
            above = at.get(place[:cut])
            if above is not None:
                conflict(
                    f"holds {_key(above)} at {place[:cut]!r}, where {_key(key)} at "
                    f"{place!r} needs a directory",
                    key,
                )
                break
            cut = place.find("/", cut + 1)
    return problems
