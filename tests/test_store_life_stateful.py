"""A store's whole life as a state machine (Hypothesis stateful testing), SQLite and PostgreSQL.

The system: one repository of ``file`` units synced from a fault-injecting server, over paths
that conflict on purpose (``d`` is a file in some inputs and a directory of ``d/x`` in
others) and contents that change (two variants of each path).  Rules: additive and mirror
syncs of changed and conflicting paths, damaging a stored file (deleting it, truncating it,
or flipping bytes while keeping its size), repair, prune, gc (alone and while a sync runs),
and export followed by a sync of the export.

The model is the content of every version kept: ``{number: {path: variant}}``.  Invariants
after every step: each version the store keeps holds exactly the model's content (one unit
per path, never a file and a directory at one path), the stored files are intact except
those the model damaged and nothing has repaired since, no temp file is left, and every
unit is complete or absent.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import triofetch
from tests._cli_helpers import run_cli
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import Store, open_store
from triofetch.testing import FaultServer, PostgresServer

PATHS = ["a", "b", "d", "d/x", "d/y"]
_ids = itertools.count()


def data_of(path: str, variant: int) -> bytes:
    return f"{path}:{variant}:".encode() * (3 + 5 * variant + len(path))


def sha_of(path: str, variant: int) -> str:
    return hashlib.sha256(data_of(path, variant)).hexdigest()


def clash(p: str, q: str) -> bool:
    """One path where the other needs a directory, or the same path."""
    return p == q or q.startswith(p + "/") or p.startswith(q + "/")


def clean(pairs: list[tuple[str, int]]) -> dict[str, int]:
    """An input without conflicts inside it: later clashing entries are dropped."""
    kept: dict[str, int] = {}
    for path, variant in pairs:
        if not any(clash(path, other) for other in kept):
            kept[path] = variant
    return kept


inputs = st.lists(st.tuples(st.sampled_from(PATHS), st.integers(0, 1)), max_size=4).map(clean)


def make_machine(server: FaultServer, new_url: Callable[[Path], str]) -> type:
    class StoreLife(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = f"life{next(_ids)}"
            self.tmp = Path(tempfile.mkdtemp(prefix="tf-life-"))
            self.url = new_url(self.tmp)
            self.root = self.tmp / "root"
            #: the content of every version the store should keep
            self.versions: dict[int, dict[str, int]] = {}
            self.latest: int | None = None
            #: sha256 -> "size" (size changed or file gone: a sync notices) / "bytes"
            self.damaged: dict[str, str] = {}
            for path in PATHS:
                for variant in (0, 1):
                    server.add_file(self.file_path(path, variant), data_of(path, variant))

        def file_path(self, path: str, variant: int) -> str:
            return f"/{self.prefix}/v{variant}/{path}"

        def teardown(self) -> None:
            shutil.rmtree(self.tmp, ignore_errors=True)

        def unit(self, path: str, variant: int) -> DeclarativeUnit:
            data = data_of(path, variant)
            art = DeclarativeArtifact(
                server.url(self.file_path(path, variant)),
                path,
                {"sha256": sha_of(path, variant)},
                len(data),
            )
            return DeclarativeUnit(
                "file",
                (path, sha_of(path, variant)),
                {"relative_path": path, "size": len(data)},
                [art],
            )

        def store(self) -> open_store:  # type: ignore[valid-type]
            return open_store(self.url, root=self.root)

        # -- the model --------------------------------------------------------------------

        def expect_sync(self, given: dict[str, int], mirror: bool) -> dict[str, int]:
            before = {} if self.latest is None else self.versions[self.latest]
            if mirror:
                return dict(given)
            after = {p: v for p, v in before.items() if not any(clash(p, q) for q in given)}
            after.update(given)
            return after

        def record_sync(self, given: dict[str, int], mirror: bool, report: object) -> None:
            assert isinstance(report, triofetch.CreateReport)
            assert report.ok, report.failures
            after = self.expect_sync(given, mirror)
            before = None if self.latest is None else self.versions[self.latest]
            if before is None or after != before:
                assert report.created and report.version is not None
                assert report.version not in self.versions
                self.versions[report.version] = after
                self.latest = report.version
            else:
                assert not report.created and report.version == self.latest
            if before is not None and not mirror:
                gone = {p for p in before if p not in after or after[p] != before[p]}
                assert {r.relative_path for r in report.replaced} == gone
            # the sync repaired the files of its units whose size tells they are damaged
            for path, variant in given.items():
                if self.damaged.get(sha_of(path, variant)) == "size":
                    del self.damaged[sha_of(path, variant)]

        def held_shas(self) -> set[str]:
            return {sha_of(p, v) for c in self.versions.values() for p, v in c.items()}

        # -- rules ------------------------------------------------------------------------

        @initialize()
        def start(self) -> None:
            assert self.latest is None

        async def _sync(self, given: dict[str, int], mirror: bool) -> triofetch.CreateReport:
            async with self.store() as store, triofetch.Downloader(retries=0) as dl:
                creator = triofetch.ContentUnitCreator(store, dl, slice_size=2)
                return await creator.run(
                    [self.unit(p, v) for p, v in given.items()], repository="r", mirror=mirror
                )

        @rule(given=inputs, mirror=st.booleans())
        def sync(self, given: dict[str, int], mirror: bool) -> None:
            report = trio.run(self._sync, given, mirror)
            self.record_sync(given, mirror, report)

        @precondition(lambda self: self.latest is not None and self.versions[self.latest])
        @rule(data=st.data(), how=st.sampled_from(["delete", "truncate", "flip"]))
        def damage(self, data: st.DataObject, how: str) -> None:
            assert self.latest is not None
            content = self.versions[self.latest]
            path = data.draw(st.sampled_from(sorted(content)))
            sha = sha_of(path, content[path])
            stored = self.root / "artifacts" / sha[:2] / sha[2:4] / sha
            if not stored.exists():
                return  # damaged already (deleted)
            if how == "delete":
                stored.unlink()
            else:
                os.chmod(stored, 0o644)
                body = stored.read_bytes()
                if how == "truncate":
                    stored.write_bytes(body[: len(body) // 2])
                else:
                    stored.write_bytes(b"\xff" * len(body))  # same size, never the content
            if how == "flip" and self.damaged.get(sha) != "size":
                self.damaged[sha] = "bytes"
            else:
                self.damaged[sha] = "size"

        @rule()
        def repair(self) -> None:
            async def main() -> triofetch.RepairReport:
                async with self.store() as store, triofetch.Downloader(retries=0) as dl:
                    return await triofetch.repair(store, dl)

            report = trio.run(main)
            assert report.ok, report.failed
            repaired = {r.sha256 for r in report.repaired}
            # what repair found is what the model damaged among the artifacts recorded
            assert set(self.damaged) <= repaired | (set(self.damaged) - self.recorded_shas())
            self.damaged = {}

        def recorded_shas(self) -> set[str]:
            async def main() -> set[str]:
                async with self.store() as store:
                    found = await store.find_units(
                        [("file", (p, sha_of(p, v))) for p in PATHS for v in (0, 1)]
                    )
                    return {r.sha256 for u in found.values() for r in u.artifacts.values() if r}

            return trio.run(main)

        @precondition(lambda self: self.latest is not None)
        @rule(keep=st.integers(1, 3))
        def prune(self, keep: int) -> None:
            async def main() -> object:
                async with self.store() as store:
                    return await store.prune("r", keep)

            report = trio.run(main)
            kept = sorted(self.versions)[-keep:]
            assert list(report.kept) == kept  # type: ignore[attr-defined]
            self.versions = {n: c for n, c in self.versions.items() if n in kept}

        @rule()
        def gc(self) -> None:
            async def main() -> object:
                async with self.store() as store:
                    return await store.collect_garbage(wait=30)

            trio.run(main)
            self.forget_collected()

        def forget_collected(self) -> None:
            held = self.held_shas()
            self.damaged = {s: how for s, how in self.damaged.items() if s in held}

        @rule(given=inputs, mirror=st.booleans(), delay=st.sampled_from([0, 0.001, 0.01]))
        def sync_beside_gc(self, given: dict[str, int], mirror: bool, delay: float) -> None:
            """gc started while a sync runs: it waits for the sync, never takes its content."""

            async def main() -> triofetch.CreateReport:
                result: list[triofetch.CreateReport] = []

                async def syncing() -> None:
                    result.append(await self._sync(given, mirror))

                async def collecting() -> None:
                    await trio.sleep(delay)
                    async with self.store() as store:
                        await store.collect_garbage(wait=60)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(syncing)
                    nursery.start_soon(collecting)
                return result[0]

            report = trio.run(main)
            self.record_sync(given, mirror, report)
            self.forget_collected()

        @precondition(lambda self: self.latest is not None and not self.damaged)
        @rule()
        def export_then_sync_the_export(self) -> None:
            assert self.latest is not None
            dest = self.tmp / f"export{next(_ids)}"
            base = ("--root", self.root, "--db", self.url)
            done = run_cli("export", *base, "--repository", "r", dest)
            assert done.code == 0, done
            written = {
                str(p.relative_to(dest)): p.read_bytes()
                for p in dest.rglob("*")
                if p.is_file() and p.name != "PULP_MANIFEST"
            }
            content = self.versions[self.latest]
            assert written == {p: data_of(p, v) for p, v in content.items()}
            copy = run_cli(
                "sync",
                dest / "PULP_MANIFEST",
                *base,
                "--repository",
                "copy",
                "--mirror",
                "--allow-empty",  # an empty version exports an empty manifest
                "--json",
            )
            assert copy.code == 0, copy
            listed = run_cli("list", *base, "--repository", "copy", "--json")
            assert {f["relative_path"]: f["sha256"] for f in listed.json()} == {
                p: sha_of(p, v) for p, v in content.items()
            }

        # -- invariants -------------------------------------------------------------------

        @invariant()
        def versions_are_the_model(self) -> None:
            async def check() -> None:
                async with self.store() as store:
                    await self.check_store(store)

            trio.run(check)

        async def check_store(self, store: Store) -> None:
            if self.latest is None:
                return
            complete = [v.number for v in await store.versions("r") if v.complete]
            assert complete == sorted(self.versions)
            for number, content in self.versions.items():
                held: dict[str, str] = {}
                for unit in await store.list_units("r", number):
                    path, sha = unit.key.natural_key
                    assert path not in held, f"{path} twice in version {number}"
                    held[path] = sha
                    # complete: its one file is recorded with the unit's sha256
                    assert [r.sha256 if r else None for r in unit.artifacts.values()] == [sha]
                assert held == {p: sha_of(p, v) for p, v in content.items()}, number
                for p in held:
                    assert not any(clash(p, q) for q in held if q != p)
            assert store.storage is not None
            # every file on disk, and every file the kept versions hold (missing ones too)
            walked = await store.storage.verify()
            held = await store.storage.verify(self.held_shas())
            bad = {c.sha256 for c in (*walked.corrupted, *held.corrupted)}
            assert bad == {s for s in self.damaged if s in self.held_shas() or s in bad}, (
                bad,
                self.damaged,
            )
            leftovers = list(await trio.Path(store.storage.temp_dir).iterdir())
            assert leftovers == [], leftovers

    return StoreLife


#: a few examples in the default run (each step syncs, exports...); the stress profile
#: (``nox -s stress``) runs a quarter of its examples here
LIFE = settings(
    max_examples=max(6, settings.default.max_examples // 4),
    stateful_step_count=8,
    deadline=None,
)


def test_store_life_sqlite(http_server_module: FaultServer) -> None:
    machine = make_machine(http_server_module, lambda tmp: f"sqlite:///{tmp / 'db.sqlite3'}")
    machine.TestCase.settings = LIFE
    machine.TestCase().runTest()


def test_store_life_postgresql(
    http_server_module: FaultServer, postgres_server: PostgresServer
) -> None:
    names: list[str] = []

    def new_url(tmp: Path) -> str:
        names.append(f"tf_life_{next(_ids)}")
        return postgres_server.create_database(names[-1])

    machine = make_machine(http_server_module, new_url)
    machine.TestCase.settings = LIFE
    try:
        machine.TestCase().runTest()
    finally:
        for name in names:
            postgres_server.drop_database(name)
