"""The creator as a state machine (Hypothesis stateful testing), on SQLite and PostgreSQL.

Rules: sync a subset (additive or mirror), sync with a cancellation landing at the k-th
event, sync while some files fail, on-demand sync then immediate sync.  The model is the
set of units the repository's latest version must hold.  Invariants after every step: every
unit in the store is complete (or on-demand with its remote artifacts), nothing is
half-written, no temp file remains, and the latest version holds exactly the model.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import triofetch
from tests._invariants import check_invariants
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import UnitKey, open_store
from triofetch.testing import FaultServer, PostgresServer, Status

BLOBS = [hashlib.sha512(str(i).encode()).digest() * (5 + 7 * i) for i in range(6)]
# 8 units over 6 blobs: shared artifacts, units with 0..3 files
LAYOUT = [(), (0,), (1, 2), (0, 3), (4,), (2, 4, 5), (5,), (1, 3, 5)]
EVENTS = ["seen", "artifact_downloaded", "committed", "existing", "downloading"]
_ids = itertools.count()

subsets = st.lists(st.integers(0, len(LAYOUT) - 1), min_size=0, max_size=len(LAYOUT), unique=True)


def make_machine(server: FaultServer, new_url: Callable[[Path], str | None]) -> type:
    class CreatorMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = f"sm{next(_ids)}"
            self.tmp = Path(tempfile.mkdtemp(prefix="tf-sm-"))
            self.url = new_url(self.tmp)
            self.model: set[UnitKey] | None = None  # None: no version yet
            self.latest = 0
            self.units = []
            for index, blobs in enumerate(LAYOUT):
                arts = [
                    DeclarativeArtifact(
                        server.url(f"/{self.prefix}/b{b}"),
                        f"f{b}",
                        {"sha256": hashlib.sha256(BLOBS[b]).hexdigest()},
                        len(BLOBS[b]),
                    )
                    for b in blobs
                ]
                self.units.append(DeclarativeUnit("pkg", (f"u{index}",), {"i": index}, arts))
            self.heal()

        def heal(self) -> None:
            for b, data in enumerate(BLOBS):
                server.remove(f"/{self.prefix}/b{b}")
                server.add_file(f"/{self.prefix}/b{b}", data)

        def teardown(self) -> None:
            shutil.rmtree(self.tmp, ignore_errors=True)

        def run(
            self,
            subset: list[int],
            *,
            mirror: bool = False,
            policy: str = "immediate",
            cancel_at: tuple[str, int] | None = None,
        ) -> triofetch.CreateReport | None:
            units = [self.units[i] for i in subset]

            async def main() -> triofetch.CreateReport | None:
                async with (
                    open_store(self.url, root=self.tmp / "root") as store,
                    triofetch.Downloader(connections=3, retries=0) as dl,
                ):
                    seen: dict[str, int] = {}
                    scope = trio.CancelScope()

                    def on_event(event: triofetch.CreatorEvent) -> None:
                        seen[event.kind] = seen.get(event.kind, 0) + 1
                        if cancel_at == (event.kind, seen[event.kind]):
                            scope.cancel()

                    creator = triofetch.ContentUnitCreator(
                        store,
                        dl,
                        policy=policy,
                        slice_size=3,  # type: ignore[arg-type]
                        on_event=on_event,
                    )
                    with scope:
                        return await creator.run(units, repository="r", mirror=mirror)
                    return None

            return trio.run(main)

        def expect_success(
            self, subset: list[int], mirror: bool, report: triofetch.CreateReport
        ) -> None:
            keys = {UnitKey("pkg", (f"u{i}",)) for i in subset}
            assert report.ok, report.failures
            new_model = keys if mirror else (self.model or set()) | keys
            if self.model is None:
                # the first successful run with a repository makes version 1 (even empty)
                assert report.version == 1 and report.created
                self.model = new_model
                self.latest = 1
                return
            if new_model == self.model:
                # nothing changed: the content is in the latest version, none was made
                assert report.version == self.latest and not report.created
            else:
                assert report.created and report.version is not None
                assert report.version > self.latest
                self.model = new_model
                self.latest = report.version

        @initialize()
        def start(self) -> None:
            assert self.model is None

        @rule(subset=subsets, mirror=st.booleans())
        def sync(self, subset: list[int], mirror: bool) -> None:
            report = self.run(subset, mirror=mirror)
            assert report is not None
            self.expect_success(subset, mirror, report)

        @rule(
            subset=subsets,
            mirror=st.booleans(),
            cancel_at=st.tuples(st.sampled_from(EVENTS), st.integers(1, 4)),
        )
        def cancelled_sync(
            self, subset: list[int], mirror: bool, cancel_at: tuple[str, int]
        ) -> None:
            report = self.run(subset, mirror=mirror, cancel_at=cancel_at)
            if report is not None:  # finished before the cancellation point was reached
                self.expect_success(subset, mirror, report)

        @rule(subset=subsets, broken=st.integers(0, len(BLOBS) - 1))
        def faulty_sync(self, subset: list[int], broken: int) -> None:
            server.add_faults(f"/{self.prefix}/b{broken}", [Status(404)] * 100)
            try:
                report = self.run(subset)
            finally:
                self.heal()
            assert report is not None
            needs = any(broken in LAYOUT[i] for i in subset)
            if report.failures:
                assert needs
                assert report.version is None and not report.created
            else:
                self.expect_success(subset, False, report)

        @rule(subset=subsets)
        def on_demand_then_immediate(self, subset: list[int]) -> None:
            lazy = self.run(subset, policy="on_demand")
            assert lazy is not None and lazy.artifacts_downloaded == 0
            self.expect_success(subset, False, lazy)
            eager = self.run(subset)
            assert eager is not None
            assert not eager.created  # same units: nothing changes in the version
            self.expect_success(subset, False, eager)

        @invariant()
        def complete_or_absent(self) -> None:
            async def check() -> None:
                async with open_store(self.url, root=self.tmp / "root") as store:
                    await check_invariants(store, self.units, on_demand_ok=True)
                    latest = (
                        await store.latest_version("r")
                        if "r" in await store.repositories()
                        else None
                    )
                    if self.model is None:
                        assert latest is None
                    else:
                        listed = {u.key for u in await store.list_units("r")}
                        assert listed == self.model

            trio.run(check)

    return CreatorMachine


#: eight examples in the default run; the stress profile (``nox -s stress``) runs an eighth of
#: its examples here
STATEFUL = settings(
    max_examples=max(8, settings.default.max_examples // 8), stateful_step_count=6, deadline=None
)


def test_stateful_sqlite(http_server_module: FaultServer) -> None:
    machine = make_machine(http_server_module, lambda tmp: f"sqlite:///{tmp / 'db.sqlite3'}")
    machine.TestCase.settings = STATEFUL
    machine.TestCase().runTest()


def test_stateful_postgresql(
    http_server_module: FaultServer, postgres_server: PostgresServer
) -> None:
    names: list[str] = []

    def new_url(tmp: Path) -> str:
        names.append(f"tf_sm_{next(_ids)}")
        return postgres_server.create_database(names[-1])

    machine = make_machine(http_server_module, new_url)
    machine.TestCase.settings = STATEFUL
    try:
        machine.TestCase().runTest()
    finally:
        for name in names:
            postgres_server.drop_database(name)
