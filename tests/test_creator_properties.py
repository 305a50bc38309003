"""Property-based tests of the creator: random repositories, fault plans and cancellations.

Hypothesis draws, with the public testing kit's strategies (``triofetch.testing``), a
repository (units with 0..5 artifacts drawn from a small pool of contents, so artifacts are
shared across units and units repeat), a fault plan (which contents fail for good, or fail
transiently: server errors, resets, truncated or wrong bytes, slow bodies) and the point
where a cancellation lands (the k-th event of the run: before a unit's artifacts are
complete, just before a commit, just after one).  After every run the store must hold every
unit complete or not at all, no temp file, and a version only for a run that succeeded; a
clean re-run must finish what is left.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import trio
from hypothesis import given, note, strategies as st

import triofetch
from tests._invariants import check_invariants
from triofetch import DeclarativeUnit
from triofetch.store import UnitKey, open_store
from triofetch.testing import CancelPoint, Fault, FaultServer, RepositorySpec, strategies

_run_ids = itertools.count()

# The testing kit's strategies (triofetch.testing.strategies), as a consumer uses them: few
# contents for up to ten units (shared artifacts, repeated units), faults on up to three
# contents (transient ones, or broken for good), and a cancellation at some event.
repositories = strategies.repository_specs(max_units=10, max_contents=8, content_sizes=(0, 3000))
fault_maps = strategies.fault_maps(pool=8)
cancel_points = strategies.cancel_points()


def build(
    server: FaultServer, prefix: str, spec: RepositorySpec, plan: dict[int, list[Fault]]
) -> list[DeclarativeUnit]:
    return spec.serve(server, prefix, plan)


async def one_run(
    store_url: str | None,
    root: Path,
    units: list[DeclarativeUnit],
    *,
    cancel_at: CancelPoint | None,
    mirror: bool = False,
    policy: str = "immediate",
) -> triofetch.CreateReport | None:
    """One creator run; returns None when the planned cancellation landed."""
    async with (
        open_store(store_url, root=root) as store,
        triofetch.Downloader(connections=4, retries=1, backoff=0.001) as dl,
    ):
        scope = trio.CancelScope()
        on_event = None if cancel_at is None else cancel_at.watch(scope)
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


@given(specs=repositories, plan=fault_maps, cancel_at=cancel_points, mirror=st.booleans())
async def test_complete_or_absent_then_rerun_finishes(
    http_server_module: FaultServer,
    specs: RepositorySpec,
    plan: dict[int, list[Fault]],
    cancel_at: CancelPoint | None,
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

        specs.heal(http_server_module, prefix)
        again = await one_run(None, root, units, cancel_at=None, mirror=mirror)
        assert again is not None and again.ok, again
        async with open_store(None, root=root) as store:
            state = await check_invariants(store, units, on_demand_ok=False)
            assert set(state) == set(distinct(units)) and all(state.values())
            if units:
                assert {u.key for u in await store.list_units("r")} == set(distinct(units))


@given(specs=repositories, plan=fault_maps, cancel_at=cancel_points)
async def test_racing_creators(
    http_server_module: FaultServer,
    specs: RepositorySpec,
    plan: dict[int, list[Fault]],
    cancel_at: CancelPoint | None,
) -> None:
    """Two creators on overlapping units; one of them may be cancelled anywhere."""
    prefix = f"race{next(_run_ids)}"
    units = build(http_server_module, prefix, specs, plan)
    first, second = units[: len(units) * 2 // 3], units[len(units) // 3 :]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reports: dict[int, triofetch.CreateReport | None] = {}
        parts = (first, second)

        async def go(which: int, cancel: CancelPoint | None) -> None:
            reports[which] = await one_run(None, root, parts[which], cancel_at=cancel)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go, 0, cancel_at)
            nursery.start_soon(go, 1, None)
        async with open_store(None, root=root) as store:
            state = await check_invariants(store, units, on_demand_ok=False)
            assert all(state.values())
            for which, report in reports.items():
                if report is None:  # cancelled: anything of it may or may not be there
                    continue
                mine = set(distinct(parts[which]))
                others = set(distinct(parts[1 - which]))
                failed = {f.key for f in report.failures}
                note(f"run {which}: failed {sorted(failed)}")
                # what this run committed or found is there; what it failed is absent
                # unless the other run, racing on the same unit, got it in
                assert mine - failed <= set(state)
                assert (failed - others).isdisjoint(state)


@given(specs=repositories)
async def test_on_demand_then_immediate(
    http_server_module: FaultServer, specs: RepositorySpec
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
