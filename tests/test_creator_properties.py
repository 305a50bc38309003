"""Property-based tests of the creator: random repositories, fault plans and cancellations.

Hypothesis draws a repository (units with 0..5 artifacts drawn from a small pool of contents,
so artifacts are shared across units and units repeat), a fault plan (which files fail for
good, fail once, or come back corrupt) and the point where a cancellation lands (the k-th
event of the run: before a unit's artifacts are complete, just before a commit, just after
one).  After every run the store must hold every unit complete or not at all, no temp file,
and a version only for a run that succeeded; a clean re-run must finish what is left.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio
from hypothesis import given, note, strategies as st

import triofetch
from tests._invariants import check_invariants
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import UnitKey, open_store
from triofetch.testing import FaultServer, Status, WrongBytes

POOL = [hashlib.sha256(str(i).encode()).digest() * (20 + 13 * i) for i in range(8)]
_run_ids = itertools.count()

FAULTS = {
    "ok": [],
    "404": [Status(404)] * 50,
    "corrupt": [WrongBytes()] * 50,
    "500-once": [Status(500)],
}
EVENTS = ["seen", "downloading", "artifact_downloaded", "artifact_reused", "committed", "existing"]


@dataclass(frozen=True)
class UnitSpec:
    name: str
    files: tuple[tuple[str, int], ...]  # (relative path, index into POOL)


unit_specs = st.builds(
    UnitSpec,
    name=st.sampled_from([f"u{i}" for i in range(10)]),
    files=st.lists(
        st.tuples(
            st.sampled_from(["a.bin", "b/c.bin", "d e.bin", "f", "g/h/i"]),
            st.integers(0, len(POOL) - 1),
        ),
        max_size=5,
        unique_by=lambda f: f[0],
    ).map(tuple),
)
repositories = st.lists(unit_specs, max_size=10)
fault_plans = st.dictionaries(
    st.integers(0, len(POOL) - 1), st.sampled_from(sorted(FAULTS)), max_size=3
)
cancel_points = st.none() | st.tuples(st.sampled_from(EVENTS), st.integers(1, 6))


def build(
    server: FaultServer, prefix: str, specs: list[UnitSpec], plan: dict[int, str]
) -> list[DeclarativeUnit]:
    for index, data in enumerate(POOL):
        server.add_file(f"/{prefix}/blob{index}", data, faults=list(FAULTS[plan.get(index, "ok")]))
    units = []
    for spec in specs:
        arts = [
            DeclarativeArtifact(
                server.url(f"/{prefix}/blob{idx}"),
                rel,
                {"sha256": hashlib.sha256(POOL[idx]).hexdigest()},
                len(POOL[idx]),
            )
            for rel, idx in spec.files
        ]
        # the same name with other files is another unit: the key includes the files
        key = (spec.name, *(f"{rel}={idx}" for rel, idx in spec.files))
        units.append(DeclarativeUnit("pkg", key, {}, arts))
    return units


def heal(server: FaultServer, prefix: str) -> None:
    for index, data in enumerate(POOL):
        server.remove(f"/{prefix}/blob{index}")
        server.add_file(f"/{prefix}/blob{index}", data)


async def one_run(
    store_url: str | None,
    root: Path,
    units: list[DeclarativeUnit],
    *,
    cancel_at: tuple[str, int] | None,
    mirror: bool = False,
    policy: str = "immediate",
) -> triofetch.CreateReport | None:
    """One creator run; returns None when the planned cancellation landed."""
    async with (
        open_store(store_url, root=root) as store,
        triofetch.Downloader(connections=4, retries=1, backoff=0.001) as dl,
    ):
        counts: dict[str, int] = {}
        scope = trio.CancelScope()

        def on_event(event: triofetch.CreatorEvent) -> None:
            counts[event.kind] = counts.get(event.kind, 0) + 1
            if (
                cancel_at is not None
                and counts[event.kind] == cancel_at[1]
                and event.kind == cancel_at[0]
            ):
                scope.cancel()

        creator = triofetch.ContentUnitCreator(
            store,
            dl,
            slice_size=3,
            policy=policy,  # type: ignore[arg-type]
            on_event=on_event,
        )
        report = None
        with scope:
            report = await creator.run(units, repository="r", mirror=mirror)
        return report


def distinct(units: list[DeclarativeUnit]) -> dict[UnitKey, DeclarativeUnit]:
    return {UnitKey(u.type, u.natural_key): u for u in units}


@given(specs=repositories, plan=fault_plans, cancel_at=cancel_points, mirror=st.booleans())
async def test_complete_or_absent_then_rerun_finishes(
    http_server_module: FaultServer,
    specs: list[UnitSpec],
    plan: dict[int, str],
    cancel_at: tuple[str, int] | None,
    mirror: bool,
) -> None:
    prefix = f"p{next(_run_ids)}"
    units = build(http_server_module, prefix, specs, plan)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report = await one_run(None, root, units, cancel_at=cancel_at, mirror=mirror)
        note(f"report: {report}")
        async with open_store(None, root=root) as store:
            state = await check_invariants(store, units, on_demand_ok=False)
            latest = await store.latest_version("r")
            if report is None:
                assert latest is None, "a cancelled run made a version"
            elif report.failures:
                assert latest is None, "a failed run made a version"
                failed = {f.key for f in report.failures}
                assert failed.isdisjoint(state)
                assert set(state) | failed == set(distinct(units))
            else:
                assert set(state) == set(distinct(units))
                if units:
                    assert latest is not None and report.version == latest.number
                    listed = {u.key for u in await store.list_units("r")}
                    assert listed == set(distinct(units))

        heal(http_server_module, prefix)
        again = await one_run(None, root, units, cancel_at=None, mirror=mirror)
        assert again is not None and again.ok, again
        async with open_store(None, root=root) as store:
            state = await check_invariants(store, units, on_demand_ok=False)
            assert set(state) == set(distinct(units)) and all(state.values())
            if units:
                assert {u.key for u in await store.list_units("r")} == set(distinct(units))


@given(specs=repositories, plan=fault_plans, cancel_at=cancel_points)
async def test_racing_creators(
    http_server_module: FaultServer,
    specs: list[UnitSpec],
    plan: dict[int, str],
    cancel_at: tuple[str, int] | None,
) -> None:
    """Two creators on overlapping units; one of them may be cancelled anywhere."""
    prefix = f"race{next(_run_ids)}"
    units = build(http_server_module, prefix, specs, plan)
    first, second = units[: len(units) * 2 // 3], units[len(units) // 3 :]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reports: list[triofetch.CreateReport | None] = []

        async def go(part: list[DeclarativeUnit], cancel: tuple[str, int] | None) -> None:
            reports.append(await one_run(None, root, part, cancel_at=cancel))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go, first, cancel_at)
            nursery.start_soon(go, second, None)
        async with open_store(None, root=root) as store:
            state = await check_invariants(store, units, on_demand_ok=False)
            assert all(state.values())
            # whatever failed is absent, whatever succeeded in either run is present
            for report in reports:
                if report is not None:
                    assert {f.key for f in report.failures}.isdisjoint(state)


@given(specs=repositories)
async def test_on_demand_then_immediate(
    http_server_module: FaultServer, specs: list[UnitSpec]
) -> None:
    prefix = f"od{next(_run_ids)}"
    units = build(http_server_module, prefix, specs, {})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lazy = await one_run(None, root, units, cancel_at=None, policy="on_demand")
        assert lazy is not None and lazy.ok and lazy.artifacts_downloaded == 0
        eager = await one_run(None, root, units, cancel_at=None)
        assert eager is not None and eager.ok
        async with open_store(None, root=root) as store:
            state = await check_invariants(store, units, on_demand_ok=False)
            assert set(state) == set(distinct(units)) and all(state.values())


def test_pool_is_diverse() -> None:
    assert len({hashlib.sha256(b).hexdigest() for b in POOL}) == len(POOL)
