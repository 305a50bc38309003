"""Cancellation and failure at every point of a commit (Hypothesis chooses where).

Whatever happens — a cancel before the commit starts, a cancel while its transaction runs
(at any step), a crash at any step, a database error for one unit — every unit of the batch
ends as if it never came, or complete; never in between.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence

import trio
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.test_store import counts, file_unit, record, unit_rows
from triofetch.store import NewUnit, Store, UnitKey, open_store

STEPS = ["artifacts", "units", "version", "unit_artifacts", "remote_artifacts", "fill", "commit"]
_examples = itertools.count()


class Boom(Exception):
    """A crash in the middle of a commit (a bug, a killed connection...)."""


events = st.one_of(
    st.just(("none", None)),
    st.just(("cancel_before", None)),
    st.tuples(st.just("cancel_during"), st.sampled_from(STEPS)),
    st.tuples(st.just("crash"), st.sampled_from(STEPS)),
    st.tuples(st.just("db_error"), st.sampled_from(STEPS)),
)


def make_unit(n: int, i: int, *, on_demand: bool) -> NewUnit:
    # contents repeat across units and examples: artifacts are shared and reused
    return file_unit(f"ex{n}/u{i}", f"content {i % 3}".encode(), on_demand=on_demand)


def db_error(store: Store) -> Exception:
    if store.dialect == "sqlite":
        return sqlite3.IntegrityError("injected")
    import psycopg

    return psycopg.errors.CheckViolation("injected")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    pre=st.dictionaries(st.integers(0, 5), st.booleans(), max_size=4),
    batch=st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=7),
    with_version=st.booleans(),
    event=events,
    victim=st.integers(0, 6),
)
async def test_commit_is_all_or_nothing(
    store_url: str,
    pre: dict[int, bool],
    batch: list[tuple[int, bool]],
    with_version: bool,
    event: tuple[str, str | None],
    victim: int,
) -> None:
    n = next(_examples)
    kind, step = event
    async with open_store(store_url) as store:
        # units already there: i -> committed on demand (True) or downloaded (False)
        if pre:
            await store.commit_units([make_unit(n, i, on_demand=od) for i, od in pre.items()])
        units = [make_unit(n, i, on_demand=od) for i, od in batch]
        keys = [u.key for u in units]
        victim_key = keys[victim % len(keys)]
        version = await store.new_version(f"repo{n}") if with_version else None
        before = {k: await unit_rows(store, k) for k in keys}
        before_counts = await counts(store)

        def fault(at: str, step_keys: Sequence[UnitKey]) -> None:
            if at != step:
                return
            if kind == "cancel_during":
                trio.from_thread.run_sync(scope.cancel)
            elif kind == "crash":
                raise Boom(at)
            elif kind == "db_error" and victim_key in step_keys:
                raise db_error(store)

        store._backend.fault = fault
        report = None
        with trio.CancelScope() as scope:
            if kind == "cancel_before":
                scope.cancel()
            try:
                report = await store.commit_units(units, version=version)
            except Boom:
                assert kind == "crash"
            await trio.lowlevel.checkpoint()  # a cancel made during the commit is delivered here
        store._backend.fault = None

        if kind in ("cancel_before", "crash") and report is None:
            assert await counts(store) == before_counts
        for i, (unit, (index, _)) in enumerate(zip(units, batch, strict=True)):
            after = await unit_rows(store, unit.key)
            outcome = None if report is None else report.outcomes[i]
            if outcome is None or outcome.status == "failed":
                assert after == before[unit.key], (kind, step, unit.key)
                continue
            # present and complete as declared
            assert after is not None
            downloaded = any(not od for j, od in batch if j == index) or (
                index in pre and not pre[index]
            )
            if before[unit.key] is not None and outcome.status == "existing":
                assert after["id"] == before[unit.key]["id"]
            rec = record(f"content {index % 3}".encode())
            path = unit.artifacts[0].relative_path
            sha, remotes = after["links"][path]
            assert set(after["links"]) == {path}
            assert remotes == 1
            assert sha == rec.sha256 or (sha is None and not downloaded)
            if version is not None:
                assert after["versions"] == {version.id}
        if kind in ("none", "cancel_during"):
            assert report is not None and not report.failed
        if kind == "db_error" and report is not None:
            assert all(o.status != "failed" or o.key == victim_key for o in report)


async def test_every_step_is_reached(store_url: str) -> None:
    """The steps Hypothesis picks from are the steps a commit goes through."""
    seen: list[str] = []
    async with open_store(store_url) as store:
        await store.commit_units([make_unit(-1, 0, on_demand=True)])
        store._backend.fault = lambda at, keys: seen.append(at)
        version = await store.new_version("r")
        units = [make_unit(-1, 0, on_demand=False), make_unit(-1, 1, on_demand=False)]
        await store.commit_units(units, version=version)
    assert seen == STEPS
