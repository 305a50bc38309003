"""Property-based: gc tried at random moments beside a sync never removes what it commits.

Hypothesis draws two versions of a small repository (paths with one of a few contents),
prunes the first (its own units become orphans), then a third input mixing orphan content,
unchanged content and new, slowed files, synced by a creator while gc is tried (from another
store: its own lease handle, as another process would have) at drawn moments with drawn
waits.  Whatever the interleaving: the sync succeeds with exactly its content, every file
whole; a gc that ran did so before the sync took its lease or after it let go; and once a
last gc ran, the store holds exactly what its versions need — no unit, artifact or file more
— and every one of those files.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, note, settings, strategies as st

import triofetch
from triofetch import DeclarativeArtifact, DeclarativeUnit, StoreBusy
from triofetch.store import Store, open_store
from triofetch.testing import FaultServer, PostgresServer, Slow

PATHS = [f"p{i}.bin" for i in range(6)]
#: content 0..2 per path; content 3 is "new" (never in v1/v2), served slowly
CONTENTS = 4
_ids = itertools.count()

versions = st.dictionaries(st.sampled_from(PATHS), st.integers(0, 2), min_size=1)
race_inputs = st.dictionaries(st.sampled_from(PATHS), st.integers(0, 3), min_size=1)
gc_plans = st.lists(
    st.tuples(st.integers(0, 60), st.sampled_from([0.0, 0.02, 10.0])), min_size=1, max_size=6
)


def data(path: str, content: int) -> bytes:
    return hashlib.sha256(f"{path}:{content}".encode()).digest() * 64


def units(server: FaultServer, prefix: str, files: dict[str, int]) -> list[DeclarativeUnit]:
    made = []
    for path, content in sorted(files.items()):
        body = data(path, content)
        url = f"/{prefix}/{path}"
        server.add_file(url, body, faults=[Slow(0.01, chunk=512)] if content == 3 else [])
        digest = hashlib.sha256(body).hexdigest()
        made.append(
            DeclarativeUnit(
                "file",
                (path, digest),
                {"relative_path": path},
                [DeclarativeArtifact(server.url(url), path, {"sha256": digest}, len(body))],
            )
        )
    return made


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_db(request: pytest.FixtureRequest) -> Iterator[object]:
    """Makes a database URL for each example: an SQLite file, or a new PostgreSQL database."""
    made: list[str] = []
    server: PostgresServer | None = (
        request.getfixturevalue("postgres_server") if request.param == "postgresql" else None
    )

    def make(root: Path) -> str:
        if server is None:
            return f"sqlite:///{root / 'store.sqlite3'}"
        name = f"tf_gcprop_{next(_ids)}"
        made.append(name)
        return server.create_database(name)

    yield make
    for name in made:
        assert server is not None
        server.drop_database(name)


@asynccontextmanager
async def store_at(db: str, root: Path) -> AsyncIterator[Store]:
    async with open_store(db, root=root) as store:
        yield store


async def clean_and_whole(store: Store) -> None:
    """Nothing but what the versions hold, and all of it: rows and files."""
    backend = store._backend
    assert store.storage is not None

    def query(sql: str) -> list[tuple[object, ...]]:
        return backend.run_read(lambda c: list(c.execute(sql).fetchall()))

    orphans = await trio.to_thread.run_sync(
        query, "SELECT id FROM units WHERE id NOT IN (SELECT unit_id FROM version_units)"
    )
    assert orphans == []
    loose = await trio.to_thread.run_sync(
        query,
        "SELECT sha256 FROM artifacts WHERE id NOT IN "
        "(SELECT artifact_id FROM unit_artifacts WHERE artifact_id IS NOT NULL)",
    )
    assert loose == []
    rows = await trio.to_thread.run_sync(query, "SELECT sha256, size FROM artifacts")
    files = {p.name: p for p in store.storage.artifacts_dir.rglob("*") if p.is_file()}
    assert set(files) == {str(r[0]) for r in rows}
    for sha, size in rows:
        body = files[str(sha)].read_bytes()
        assert len(body) == size and hashlib.sha256(body).hexdigest() == sha


#: a dozen examples in the default run; the stress profile (``nox -s stress``) runs a quarter
#: of its examples here
@settings(
    max_examples=max(12, settings.default.max_examples // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(v1=versions, v2=versions, race=race_inputs, plan=gc_plans, slice_size=st.integers(1, 4))
async def test_gc_at_random_moments_beside_a_sync(
    http_server_module: FaultServer,
    new_db: object,
    v1: dict[str, int],
    v2: dict[str, int],
    race: dict[str, int],
    plan: list[tuple[int, float]],
    slice_size: int,
) -> None:
    prefix = f"gcp{next(_ids)}"
    server = http_server_module
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = new_db(root)  # type: ignore[operator]
        async with store_at(db, root) as store, triofetch.Downloader(connections=4) as dl:
            for n, files in ((1, v1), (2, v2)):
                creator = triofetch.ContentUnitCreator(store, dl)
                await creator.run(units(server, f"{prefix}/v{n}", files), repository="r")
            await store.prune("r", 1)
            base = {u.key for u in await store.list_units("r")}
            expected = {**{k.natural_key[0]: k for k in base}}
            race_units = units(server, f"{prefix}/race", race)
            for u in race_units:
                expected[u.natural_key[0]] = triofetch.UnitKey(u.type, u.natural_key)
            outcomes: list[str] = []
            held_at: list[float] = []
            let_go_at: list[float] = []

            async with store_at(db, root) as collector:
                ran: list[tuple[float, float]] = []

                async def collect() -> None:
                    for delay_ms, wait in plan:
                        await trio.sleep(delay_ms / 1000)
                        started = trio.current_time()
                        try:
                            await collector.collect_garbage(wait=wait)
                        except StoreBusy:
                            outcomes.append("busy")
                            continue
                        ran.append((started, trio.current_time()))
                        outcomes.append("ran")

                async def sync() -> triofetch.CreateReport:
                    creator = triofetch.ContentUnitCreator(store, dl, slice_size=slice_size)
                    original = store.lease

                    @asynccontextmanager
                    async def watched() -> AsyncIterator[None]:
                        async with original():
                            held_at.append(trio.current_time())
                            try:
                                yield
                            finally:
                                let_go_at.append(trio.current_time())

                    store.lease = watched  # type: ignore[method-assign]
                    try:
                        return await creator.run(race_units, repository="r")
                    finally:
                        del store.lease

                reports: list[triofetch.CreateReport] = []

                async def run_sync() -> None:
                    reports.append(await sync())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_sync)
                    nursery.start_soon(collect)
                note(f"gc outcomes: {outcomes}")
                # no gc ran while the sync held its lease
                (held,), (let_go,) = held_at, let_go_at
                for started, ended in ran:
                    assert not (held <= started and ended <= let_go), (ran, held, let_go)
                (report,) = reports
                assert report.ok, report.failures
                content = {u.key for u in await store.list_units("r")}
                assert content == set(expected.values())
                await collector.collect_garbage(wait=10)
                await clean_and_whole(store)
                assert {u.key for u in await store.list_units("r")} == content
