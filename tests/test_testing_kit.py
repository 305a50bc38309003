"""The public testing kit, ``triofetch.testing``: check_store finds each kind of problem
(and nothing on a clean store), the strategies draw valid repositories, fault plans and
cancellation points, the fixtures of the pytest plugin work, and importing the kit (or the
plugin) pulls in neither Hypothesis nor psycopg."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, Phase, find, given, settings

import triofetch
from triofetch import ContentUnitCreator, DeclarativeArtifact, DeclarativeUnit, Downloader
from triofetch.store import Store, UnitKey, open_store
from triofetch.testing import (
    CREATOR_EVENT_KINDS,
    CancelPoint,
    Fault,
    FaultServer,
    FileSpec,
    PostgresServer,
    PostgresUnavailable,
    RepositorySpec,
    Status,
    StoreProblem,
    UnitSpec,
    WrongBytes,
    _pgserver,
    assert_store_ok,
    check_store,
    strategies,
)

_ids = itertools.count()


def blob(i: int, size: int = 300) -> bytes:
    return hashlib.sha256(b"kit-%d" % i).digest() * (size // 32 + 1)


SPEC = RepositorySpec(
    contents=(blob(0), blob(1), blob(2)),
    units=(
        UnitSpec("pkg", "a", (FileSpec("a.bin", 0), FileSpec("docs/readme", 1))),
        UnitSpec("pkg", "b", (FileSpec("b.bin", 1),)),  # shares content 1 with "a"
        UnitSpec("pkg", "c", ()),
        UnitSpec("other", "d", (FileSpec("d e/f", 2),)),
    ),
)


async def create(
    store: Store, units: list[DeclarativeUnit], **options: object
) -> triofetch.CreateReport:
    async with Downloader(connections=4, retries=0) as dl:
        creator = ContentUnitCreator(store, dl, **options)  # type: ignore[arg-type]
        return await creator.run(units, repository="r")


@pytest.fixture
async def filled(
    triofetch_sqlite_store: Store, triofetch_fault_server: FaultServer
) -> tuple[Store, list[DeclarativeUnit]]:
    """A store holding every unit of SPEC, made by a creator run."""
    units = SPEC.serve(triofetch_fault_server, "kit")
    report = await create(triofetch_sqlite_store, units)
    assert report.ok and report.version == 1, report
    return triofetch_sqlite_store, units


def kinds(problems: list[StoreProblem]) -> list[str]:
    return [p.kind for p in problems]


# -- check_store ----------------------------------------------------------------------------


async def test_a_clean_store_has_no_problem(filled: tuple[Store, list[DeclarativeUnit]]) -> None:
    store, units = filled
    assert await check_store(store) == []
    assert await check_store(store, units=units, on_demand_ok=False) == []
    assert await check_store(store, unrecorded_files_ok=False) == []
    await assert_store_ok(store, units=units)


async def test_an_empty_store_has_no_problem(triofetch_sqlite_store: Store) -> None:
    assert await check_store(triofetch_sqlite_store) == []


async def test_a_missing_file(filled: tuple[Store, list[DeclarativeUnit]]) -> None:
    store, _ = filled
    assert store.storage is not None
    sha = SPEC.sha256(1)
    store.storage.path_for(sha).unlink()
    problems = await check_store(store)
    assert kinds(problems) == ["missing_file"]
    (problem,) = problems
    assert problem.sha256 == sha and problem.path == store.storage.path_for(sha)
    assert sha in str(problem) and "no file" in str(problem)


@pytest.mark.parametrize("damage", ["wrong bytes", "shorter", "longer"])
async def test_a_damaged_file(filled: tuple[Store, list[DeclarativeUnit]], damage: str) -> None:
    store, _ = filled
    assert store.storage is not None
    sha = SPEC.sha256(0)
    path = store.storage.path_for(sha)
    data = path.read_bytes()
    path.chmod(0o644)
    changed = {
        "wrong bytes": bytes(b ^ 1 for b in data),
        "shorter": data[:-1],
        "longer": data + b"!",
    }[damage]
    path.write_bytes(changed)
    problems = await check_store(store)
    assert kinds(problems) == ["corrupt_file"]
    assert problems[0].sha256 == sha
    expected = "sha256 is" if damage == "wrong bytes" else "size"
    assert expected in problems[0].message


async def test_a_leftover_temp_file(filled: tuple[Store, list[DeclarativeUnit]]) -> None:
    store, _ = filled
    assert store.storage is not None
    leftover = store.storage.new_temp_path()
    leftover.write_bytes(b"half a download")
    problems = await check_store(store)
    assert kinds(problems) == ["temp_file"]
    assert problems[0].path == leftover and str(leftover) in problems[0].message


async def test_an_unrecorded_file_only_when_asked(
    filled: tuple[Store, list[DeclarativeUnit]],
) -> None:
    store, _ = filled
    assert store.storage is not None
    stored = await store.storage.add_bytes(b"adopted, never committed")
    assert await check_store(store) == []  # a cancelled run may leave one; gc removes it
    problems = await check_store(store, unrecorded_files_ok=False)
    assert kinds(problems) == ["unrecorded_file"]
    assert problems[0].path == stored.path


async def test_an_incomplete_version(filled: tuple[Store, list[DeclarativeUnit]]) -> None:
    store, _ = filled
    await store.new_version("r")
    problems = await check_store(store)
    assert kinds(problems) == ["incomplete_version"]
    assert (problems[0].repository, problems[0].version) == ("r", 2)
    assert await check_store(store, incomplete_versions_ok=True) == []


async def test_on_demand_units_are_incomplete_only_when_not_allowed(
    triofetch_sqlite_store: Store, triofetch_fault_server: FaultServer
) -> None:
    store = triofetch_sqlite_store
    units = SPEC.serve(triofetch_fault_server, "lazy")
    assert (await create(store, units, policy="on_demand")).ok
    assert await check_store(store, units=units) == []
    problems = await check_store(store, units=units, on_demand_ok=False)
    assert set(kinds(problems)) == {"incomplete_unit"}
    # one per file of a unit (each unit once: in the version and among the declared units)
    lacking = [(p.key, p.message.partition("lacks its file ")[2]) for p in problems]
    assert sorted(lacking) == sorted(
        (u.key, repr(f.relative_path)) for u in SPEC.units for f in u.files
    )
    assert {(p.repository, p.version) for p in problems} == {("r", 1)}


async def test_a_unit_other_than_declared(filled: tuple[Store, list[DeclarativeUnit]]) -> None:
    store, units = filled
    a = units[0]
    other_sha = DeclarativeUnit(
        a.type,
        a.natural_key,
        a.fields,
        [replace_digest(a.artifacts[0], SPEC.sha256(2)), *a.artifacts[1:]],
    )
    other_size = DeclarativeUnit(
        a.type,
        a.natural_key,
        a.fields,
        [
            DeclarativeArtifact(
                art.urls, art.relative_path, {}, None if art.size is None else art.size + 1
            )
            for art in a.artifacts
        ],
    )
    fewer_files = DeclarativeUnit(a.type, a.natural_key, a.fields, a.artifacts[:1])
    for declared, words in (
        (other_sha, "declared " + SPEC.sha256(2)),
        (other_size, "bytes, declared"),
        (fewer_files, "declared ['a.bin']"),
    ):
        problems = await check_store(store, units=[declared])
        assert set(kinds(problems)) == {"unit_mismatch"}, problems
        assert all(p.key == UnitKey(*a.key) for p in problems)
        assert any(words in p.message for p in problems), (words, problems)
    # a declared unit that is not in the store is fine: absent
    absent = DeclarativeUnit("pkg", ("nowhere",), {}, a.artifacts)
    assert await check_store(store, units=[absent]) == []


def replace_digest(art: DeclarativeArtifact, sha: str) -> DeclarativeArtifact:
    return DeclarativeArtifact(art.urls, art.relative_path, {"sha256": sha}, art.size)


async def test_versions_that_contradict_each_other(
    filled: tuple[Store, list[DeclarativeUnit]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version listing fewer units than it counts, or one unit twice (the store would
    have to be broken for this: the store's answers are doctored here)."""
    store, _ = filled
    listed = await store.list_units("r", 1)

    async def fewer(repository: str, version_number: int | None = None) -> object:
        return listed[1:]

    monkeypatch.setattr(store, "list_units", fewer)
    problems = await check_store(store)
    assert kinds(problems) == ["version_mismatch"]
    assert f"counts {len(listed)} units but lists {len(listed) - 1}" in problems[0].message

    async def twice(repository: str, version_number: int | None = None) -> object:
        return [*listed[1:], listed[1]]

    monkeypatch.setattr(store, "list_units", twice)
    problems = await check_store(store)
    assert kinds(problems) == ["version_mismatch"]
    assert "twice" in problems[0].message and problems[0].key == listed[1].key


async def test_units_at_one_repository_key(
    triofetch_sqlite_store: Store,
    triofetch_fault_server: FaultServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two units of a version at one relative path, or a file where another unit's file
    needs a directory, is a ``key_conflict`` (the store refuses both, so its answers are
    doctored here); units of a type with no repository key are not compared."""
    store = triofetch_sqlite_store
    files = {"a": b"file a", "c": b"file c", "pkg": b"a package"}
    units = []
    for name, data in files.items():
        triofetch_fault_server.add_file(f"/keys/{name}", data)
        sha = hashlib.sha256(data).hexdigest()
        art = DeclarativeArtifact(
            triofetch_fault_server.url(f"/keys/{name}"), name, {"sha256": sha}
        )
        unit_type = "pkg" if name == "pkg" else "file"
        units.append(DeclarativeUnit(unit_type, (name, sha), {"relative_path": "a"}, [art]))
    units[1] = DeclarativeUnit(
        "file", units[1].natural_key, {"relative_path": "c"}, units[1].artifacts
    )
    assert (await create(store, units)).ok
    assert await check_store(store) == []  # ("pkg" has no repository key: no conflict)
    listed = await store.list_units("r", 1)
    a = next(u for u in listed if u.key.natural_key[0] == "a")
    c = next(u for u in listed if u.key.natural_key[0] == "c")
    for place, says in (("a", "at 'a'"), ("a/b", "where file:c/")):
        doctored = [u for u in listed if u is not c]
        doctored.append(dataclasses.replace(c, fields={**c.fields, "relative_path": place}))

        async def doctor(
            repository: str, version_number: int | None = None, units: object = doctored
        ) -> object:
            return units

        monkeypatch.setattr(store, "list_units", doctor)
        problems = await check_store(store)
        assert kinds(problems) == ["key_conflict"], problems
        assert problems[0].repository == "r" and problems[0].version == 1
        assert says in problems[0].message and "file:a/" in problems[0].message, problems
        assert problems[0].key == c.key
    assert a.fields["relative_path"] == "a"


async def test_several_problems_are_all_reported(
    filled: tuple[Store, list[DeclarativeUnit]],
) -> None:
    store, _ = filled
    assert store.storage is not None
    store.storage.path_for(SPEC.sha256(2)).unlink()
    store.storage.new_temp_path().write_bytes(b"x")
    await store.new_version("r")
    problems = await check_store(store)
    assert sorted(kinds(problems)) == ["incomplete_version", "missing_file", "temp_file"]
    with pytest.raises(AssertionError, match=r"3 problem\(s\)") as caught:
        await assert_store_ok(store)
    assert all(p.message in str(caught.value) for p in problems)


async def test_a_store_without_storage_is_refused(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}") as store:
        assert store.storage is None
        with pytest.raises(ValueError, match="artifact storage"):
            await check_store(store)


# -- specs and strategies -----------------------------------------------------------------


def test_a_spec_declares_units_sharing_artifacts() -> None:
    units = SPEC.declare(lambda i: f"http://127.0.0.1:9/c{i}")
    assert [u.key for u in units] == [tuple(s.key) for s in SPEC.units]
    a, b = units[0], units[1]
    assert a.artifacts[1].sha256 == b.artifacts[0].sha256 == SPEC.sha256(1)
    assert [art.relative_path for art in a.artifacts] == ["a.bin", "docs/readme"]
    assert all(art.size == len(SPEC.contents[0]) for art in a.artifacts[:1])
    assert SPEC.keys == {s.key for s in SPEC.units}
    with pytest.raises(ValueError, match="not in the pool"):
        RepositorySpec((b"x",), (UnitSpec("pkg", "a", (FileSpec("f", 1),)),))


def test_serve_puts_faults_before_the_content(triofetch_fault_server: FaultServer) -> None:
    import httpx

    server = triofetch_fault_server
    units = SPEC.serve(server, "served", {0: [Status(503)], 99: [Status(500)]})
    url = units[0].artifacts[0].url
    assert httpx.get(url).status_code == 503
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == SPEC.contents[0]
    assert server.count(RepositorySpec.path("served", 0)) == 2
    server.add_faults(RepositorySpec.path("served", 1), [Status(404)] * 3)
    SPEC.heal(server, "served")
    assert httpx.get(units[1].artifacts[0].url).status_code == 200


@settings(max_examples=60, deadline=None)
@given(spec=strategies.repository_specs(types=["pkg", "rpm"], max_units=8))
def test_drawn_repositories_are_valid(spec: RepositorySpec) -> None:
    units = spec.declare(lambda i: f"http://127.0.0.1:9/c{i}")  # validated when made
    assert len(units) == len(spec.units)
    assert len(set(spec.contents)) == len(spec.contents) >= 1
    for unit, declared in zip(spec.units, units, strict=True):
        assert declared.type in ("pkg", "rpm")
        paths = [f.relative_path for f in unit.files]
        assert len(set(paths)) == len(paths)
        assert not any(q.startswith(p + "/") for p in paths for q in paths)
        for art in declared.artifacts:
            assert art.sha256 in {spec.sha256(i) for i in range(len(spec.contents))}
    # a key means one set of files
    by_key: dict[UnitKey, frozenset[tuple[str, int]]] = {}
    for unit in spec.units:
        files = frozenset((f.relative_path, f.content) for f in unit.files)
        assert by_key.setdefault(unit.key, files) == files


@settings(max_examples=30, deadline=None)
@given(spec=strategies.repository_specs(min_contents=0, max_contents=2))
def test_a_repository_may_hold_no_content(spec: RepositorySpec) -> None:
    """``min_contents=0`` (documented: *min_contents* to *max_contents* contents) raised
    ValueError whenever the pool drawn was empty; its units then have no file."""
    units = spec.declare(lambda i: f"http://127.0.0.1:9/c{i}")
    if not spec.contents:
        assert all(not unit.artifacts for unit in units)


#: find() returns the first example found (no shrinking: the point is that it exists)
FIRST_FOUND = settings(database=None, max_examples=500, phases=[Phase.generate])


def test_drawn_repositories_share_artifacts_and_repeat_units() -> None:
    shared = find(
        strategies.repository_specs(),
        lambda s: (
            len({(u.name, f.content) for u in s.units for f in u.files})
            > len({f.content for u in s.units for f in u.files})
        ),
        settings=FIRST_FOUND,
    )
    assert len(shared.units) >= 2
    several = find(
        strategies.repository_specs(),
        lambda s: any(len(u.files) >= 3 for u in s.units),
        settings=FIRST_FOUND,
    )
    assert several.units
    repeated = find(
        strategies.repository_specs(),
        lambda s: len(s.keys) < len(s.units),
        settings=FIRST_FOUND,
    )
    assert len(repeated.units) >= 2


@settings(max_examples=80, deadline=None)
@given(plan=strategies.fault_plans(), faults=strategies.fault_maps(pool=3))
def test_drawn_fault_plans_are_faults_the_server_takes(
    plan: list[Fault], faults: dict[int, list[Fault]]
) -> None:
    server = FaultServer()  # not started: add_file only checks the plan
    server.add_file("/x", b"data", faults=plan)
    assert len(plan) <= 3 or len(plan) == strategies.FOREVER
    if len(plan) == strategies.FOREVER:
        assert len(set(plan)) == 1
    assert set(faults) <= {0, 1, 2}


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a plan of FOREVER faults
def test_broken_and_transient_plans_both_come_up() -> None:
    broken = find(
        strategies.fault_plans(), lambda p: len(p) == strategies.FOREVER, settings=FIRST_FOUND
    )
    assert isinstance(broken[0], Status | WrongBytes)
    transient = find(strategies.fault_plans(), lambda p: len(p) == 2, settings=FIRST_FOUND)
    assert len(transient) == 2
    assert find(strategies.fault_plans(broken=False), lambda p: len(p) >= 0) == []


@settings(max_examples=40, deadline=None)
@given(point=strategies.cancel_points(max_nth=4))
def test_drawn_cancel_points(point: CancelPoint | None) -> None:
    if point is not None:
        assert point.kind in CREATOR_EVENT_KINDS and 1 <= point.nth <= 4


async def test_a_cancel_point_cancels_at_its_nth_event() -> None:
    seen: list[str] = []
    with trio.CancelScope() as scope:
        watch = CancelPoint("committed", 2).watch(scope, then=lambda e: seen.append(e.kind))
        for kind in ["seen", "committed", "seen", "existing"]:
            watch(triofetch.CreatorEvent(kind))
        assert not scope.cancel_called
        watch(triofetch.CreatorEvent("committed"))
        assert scope.cancel_called
        await trio.sleep(1)
    assert scope.cancelled_caught
    assert seen == ["seen", "committed", "seen", "existing", "committed"]
    with pytest.raises(ValueError, match="kind"):
        CancelPoint("nope")
    with pytest.raises(ValueError, match="nth"):
        CancelPoint("seen", 0)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=strategies.repository_specs(max_units=5, content_sizes=(0, 600)),
    faults=strategies.fault_maps(pool=8),
    cancel=strategies.cancel_points(max_nth=3),
)
def test_a_creator_under_drawn_faults_and_cancellations_leaves_a_clean_store(
    triofetch_fault_server_session: FaultServer,
    tmp_path: Path,
    spec: RepositorySpec,
    faults: dict[int, list[Fault]],
    cancel: CancelPoint | None,
) -> None:
    """The strategies, the server and check_store together, as a consumer uses them."""
    units = spec.serve(triofetch_fault_server_session, f"drawn{next(_ids)}", faults)
    root = tmp_path / f"root{next(_ids)}"

    async def main() -> None:
        async with open_store(root=root) as store:
            async with Downloader(connections=3, retries=1, backoff=0.001) as dl:
                scope = trio.CancelScope()
                on_event = cancel.watch(scope) if cancel is not None else None
                creator = ContentUnitCreator(store, dl, slice_size=2, on_event=on_event)
                with scope:
                    await creator.run(units, repository="r")
            await assert_store_ok(store, units=units, on_demand_ok=False)

    trio.run(main)


# -- the pytest plugin and the modules of the kit ------------------------------------------


def test_fault_server_fixtures(
    triofetch_fault_server: FaultServer, triofetch_fault_server_session: FaultServer
) -> None:
    import httpx

    assert triofetch_fault_server is not triofetch_fault_server_session
    for server in (triofetch_fault_server, triofetch_fault_server_session):
        path = f"/fixture{next(_ids)}"
        server.add_file(path, b"hello", faults=[Status(500)])
        assert httpx.get(server.url(path)).status_code == 500
        assert httpx.get(server.url(path)).content == b"hello"
        assert server.count(path) == 2
        assert server.base_url.startswith("http://127.0.0.1:")


async def test_sqlite_store_fixture(triofetch_sqlite_store: Store, tmp_path: Path) -> None:
    store = triofetch_sqlite_store
    assert store.storage is not None and store.storage.root.is_relative_to(tmp_path)
    assert await store.repositories() == []
    await store.create_repository("r")
    assert await store.repositories() == ["r"]


@pytest.mark.postgres
async def test_postgres_fixtures(
    triofetch_postgres_server: PostgresServer,
    triofetch_postgres_url: str,
    triofetch_postgres_store: Store,
    triofetch_fault_server: FaultServer,
    postgres_server: PostgresServer,
) -> None:
    assert postgres_server is triofetch_postgres_server  # the suite's own fixture is the kit's
    assert triofetch_postgres_url.startswith("postgresql://postgres@127.0.0.1:")
    units = SPEC.serve(triofetch_fault_server, "pg")
    assert (await create(triofetch_postgres_store, units)).ok
    assert await check_store(triofetch_postgres_store, units=units, on_demand_ok=False) == []
    async with open_store(triofetch_postgres_url) as again:  # the same, fresh database
        assert await again.repositories() == ["r"]


ALBUM_KEY = triofetch.RepositoryKey("artist", "title")


@pytest.mark.triofetch_store(repository_keys={"album": ALBUM_KEY}, pool_size=2, cache_mib=2)
async def test_the_sqlite_store_fixture_takes_open_store_options(
    triofetch_sqlite_store: Store,
) -> None:
    keys = triofetch_sqlite_store.repository_keys
    assert keys["album"] == ALBUM_KEY and "file" in keys  # the default kept beside it


@pytest.mark.postgres
@pytest.mark.triofetch_store(repository_keys={"album": ALBUM_KEY, "file": None})
async def test_the_postgres_store_fixture_takes_open_store_options(
    triofetch_postgres_store: Store,
) -> None:
    assert dict(triofetch_postgres_store.repository_keys) == {"album": ALBUM_KEY}


MARKED = """
import pytest

@pytest.mark.triofetch_store({marker})
async def test_marked(triofetch_sqlite_store):
    pass
"""


@pytest.mark.parametrize(
    ("marker", "said"),
    [
        ("root='/tmp'", "unknown option root; it takes repository_keys, pool_size"),
        ("{}", "takes keywords only"),
    ],
)
def test_the_store_marker_refuses_what_it_does_not_take(
    tmp_path: Path, marker: str, said: str
) -> None:
    (tmp_path / "test_marked.py").write_text(MARKED.format(marker=marker), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS"))}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "trio", "-q"],
        cwd=tmp_path,
        env=env | {"PYTEST_ADDOPTS": "-o trio_mode=true"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode != 0, ran.stdout
    assert said in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    assert "@pytest.mark.triofetch_store" in ran.stdout + ran.stderr


# -- PostgresServer and its fixture: failures, a root run, SIGTERM ----------------------------


def fake_bin_dir(where: Path, content: str = "#!/nonexistent/interpreter\n") -> Path:
    """A directory of executable initdb, pg_ctl and postgres that cannot run."""
    where.mkdir()
    for name in ("initdb", "pg_ctl", "postgres"):
        (where / name).write_text(content)
        (where / name).chmod(0o755)
    return where


def pg_dirs(where: Path) -> list[str]:
    return sorted(p.name for p in where.glob("triofetch-pg-*"))


def test_a_wrong_pg_bin_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TRIOFETCH_PG_BIN", "/nonexistent")
    with pytest.raises(PostgresUnavailable, match=r"/nonexistent.*initdb, pg_ctl, postgres"):
        PostgresServer()
    partial = fake_bin_dir(tmp_path / "bin")
    (partial / "pg_ctl").chmod(0o644)
    (partial / "postgres").unlink()
    monkeypatch.setenv("TRIOFETCH_PG_BIN", str(partial))
    expected = f"no executable pg_ctl, postgres in {re.escape(str(partial))}"
    with pytest.raises(PostgresUnavailable, match=expected):
        PostgresServer()
    assert pg_dirs(tmp_path) == []


def test_a_binary_that_cannot_run_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRIOFETCH_PG_BIN", str(fake_bin_dir(tmp_path / "bin")))
    monkeypatch.setattr(_pgserver, "_server_user", lambda: None)  # as a user other than root
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server = PostgresServer()
    assert server.base.parent == tmp_path
    with pytest.raises(PostgresUnavailable, match=r"could not run .*initdb"):
        server.start()
    server.stop()
    assert pg_dirs(tmp_path) == []


FAILING_CONFTEST = """
import triofetch.testing._pgserver as pgserver

pgserver._server_user = lambda: None  # as a user other than root
if {broken_start!r}:
    def start(self):
        self.socket_dir.mkdir()
        raise RuntimeError("an unexpected error")
    pgserver.PostgresServer.start = start
"""

USES_THE_SERVER = """
def test_server(triofetch_postgres_server):
    pass
"""


def consumer_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS"))}
    env.update(changes)
    return env


@pytest.mark.parametrize("case", ["no binaries", "binaries that cannot run", "an error"])
def test_the_postgres_fixture_fails_cleanly(tmp_path: Path, case: str) -> None:
    """The fixture fails the test with PostgresUnavailable's message, and whatever made
    ``start()`` fail, the server's temp dir is deleted."""
    project, tmp = tmp_path / "project", tmp_path / "tmp"
    project.mkdir()
    tmp.mkdir()
    bin_dir = "/nonexistent" if case == "no binaries" else str(fake_bin_dir(tmp_path / "bin"))
    conftest = FAILING_CONFTEST.format(broken_start=case == "an error")
    (project / "conftest.py").write_text(conftest)
    (project / "test_it.py").write_text(USES_THE_SERVER)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_it.py"],
        cwd=project,
        env=consumer_env(TRIOFETCH_PG_BIN=bin_dir, TMPDIR=str(tmp)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    expected = {
        "no binaries": "triofetch_postgres_server: TRIOFETCH_PG_BIN=/nonexistent: no executable",
        "binaries that cannot run": "PostgreSQL could not start: could not run",
        "an error": "RuntimeError: an unexpected error",
    }[case]
    assert expected in out
    assert pg_dirs(tmp) == []


def test_no_temp_dir_the_server_user_can_reach(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    monkeypatch.setenv("TRIOFETCH_PG_BIN", str(fake_bin_dir(tmp_path / "bin")))
    monkeypatch.setattr(_pgserver, "_server_user", lambda: nobody)  # as root
    monkeypatch.setattr(_pgserver, "_FALLBACK_TEMP_DIRS", (str(closed),))
    monkeypatch.setattr(tempfile, "tempdir", str(closed))
    expected = re.escape(str(closed)) + r" \(.* is not searchable by nobody\)"
    with pytest.raises(PostgresUnavailable, match=expected):
        PostgresServer()
    assert list(closed.iterdir()) == []


@pytest.mark.postgres
@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only for root")
def test_as_root_the_server_dir_is_where_its_user_can_reach(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """$TMPDIR in a 0700 directory of root (as pytest's own /tmp/pytest-of-root): the
    server's temp dir is made elsewhere, and the server starts."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(closed))
    server = PostgresServer()
    try:
        assert server.user is not None
        assert not server.base.is_relative_to(tmp_path)
        assert server.base.stat().st_uid == server.user.pw_uid
        server.start()
        server.execute("SELECT 1")
    finally:
        server.stop()
    assert not server.base.exists()


SLEEPING_TEST = """
import time

import pytest
import trio


def test_sleeps(triofetch_postgres_server):
    with open({info!r} + ".part", "w") as f:
        f.write(str(triofetch_postgres_server.base))
    {rename}
    time.sleep(60)


@pytest.mark.trio
async def test_sleeps_in_trio(triofetch_postgres_server):
    with open({info!r} + ".part", "w") as f:
        f.write(str(triofetch_postgres_server.base))
    {rename}
    await trio.sleep(60)
"""


def postgres_processes(data_dir: Path) -> list[int]:
    """The pids of the processes whose command line holds ``-D data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(data_dir).encode() in args:
            pids.append(int(proc.name))
    return pids


@pytest.mark.postgres
@pytest.mark.parametrize("test", ["test_sleeps", "test_sleeps_in_trio"])
def test_sigterm_stops_and_deletes_the_session_server(tmp_path: Path, test: str) -> None:
    """pytest stopped by SIGTERM (``timeout``, a CI job cancelled) while a test runs: the
    session's PostgreSQL server is stopped and its temp dir deleted, as with Ctrl-C."""
    info = tmp_path / "server-base"
    rename = f"import os; os.rename({str(info) + '.part'!r}, {str(info)!r})"
    (tmp_path / "test_it.py").write_text(SLEEPING_TEST.format(info=str(info), rename=rename))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"test_it.py::{test}"],
        cwd=tmp_path,
        env=consumer_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base: Path | None = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        base = Path(info.read_text())
        assert postgres_processes(base / "data")  # the test is asleep, the server up
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode != 0, out
        assert postgres_processes(base / "data") == [], out
        assert not base.exists(), out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if base is not None:  # what the old code left: the server, and its dir
            for sig in (signal.SIGQUIT, signal.SIGKILL):  # immediate shutdown, else a kill
                for pid in postgres_processes(base / "data"):
                    os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while postgres_processes(base / "data") and time.monotonic() < deadline:
                    time.sleep(0.05)
            shutil.rmtree(base, ignore_errors=True)


def test_public_names_report_the_public_module() -> None:
    import triofetch.testing as kit

    homes = {}
    for name in kit.__all__:
        value = getattr(kit, name)
        if isinstance(value, type | types.FunctionType):
            homes[name] = value.__module__
    assert set(homes.values()) == {"triofetch.testing"}, homes
    assert {"FaultServer", "check_store", "assert_store_ok", "running_postgres"} <= set(homes)
    assert "testing" not in triofetch.__all__
    with pytest.raises(AttributeError):
        kit.nothing_here  # noqa: B018


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_library_is_not_assertion_rewritten() -> None:
    """pytest marks every package shipping a plugin for assertion rewriting; the plugin
    takes triofetch off that list: the library runs as it does outside pytest."""
    import triofetch.storage
    import triofetch.store

    for module in (triofetch.storage, triofetch.store):
        assert "@py_builtins" not in vars(module), module


def test_the_plugin_imports_cheaply() -> None:
    out = _run(
        "import sys\n"
        "import triofetch.testing.pytest_plugin\n"
        "heavy = ['hypothesis', 'psycopg', 'trio', 'triofetch.store', 'httpx']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


def test_the_kit_works_without_hypothesis() -> None:
    out = _run(
        "import sys\n"
        "sys.modules['hypothesis'] = None  # as if it were not installed\n"
        "from triofetch.testing import FaultServer, check_store, RepositorySpec, CancelPoint\n"
        "import triofetch.testing.pytest_plugin\n"
        "try:\n"
        "    import triofetch.testing.strategies\n"
        "except ImportError:\n"
        "    print('strategies need hypothesis')\n"
        "with FaultServer() as server:\n"
        "    print(server.base_url.startswith('http://127.0.0.1:'))\n"
    )
    assert out.split() == ["strategies", "need", "hypothesis", "True"]


def test_the_entry_point_registers_the_plugin() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "triofetch"]
    assert entry.value == "triofetch.testing.pytest_plugin"
    plugin = entry.load()
    names = {n for n in dir(plugin) if n.startswith("triofetch_")}
    assert names == set(plugin.__all__)
    assert len(names) == 6


def test_no_fixture_of_the_plugin_lacks_the_prefix(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("triofetch")
    assert plugin is not None, "the triofetch pytest plugin is not loaded"
    fixtures = [
        name
        for name in dir(plugin)
        if hasattr(getattr(plugin, name), "_fixture_function_marker")
        or type(getattr(plugin, name)).__name__ == "FixtureFunctionDefinition"
    ]
    assert fixtures and all(f.startswith("triofetch_") for f in fixtures), fixtures
