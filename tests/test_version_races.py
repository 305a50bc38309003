"""Two runs that finish with the same content make one version, not two identical ones.

Two syncs of one source into one repository at once: each prepares its own version.  Each
used to complete it when it differed from the version *it* started from, so two runs that
both started before either finished made two identical versions (1 and 2 of a new
repository), where one run after the other makes version 1 and then reports it unchanged.
The store now decides it when completing, under the repository's lock, against the latest
version too.  Each test holds one run at a point (its version opened, nothing committed
yet) while the other runs, so the race is the same every time: both backends, a new
repository and an existing one, both finishing orders, the creator and ``triofetch sync``.

Three runs at once, two of one content and one of another numbered above them, made two
identical versions when the other content's run finished between the two: the second
compared its version with the one it started from and the latest, the other content's, and
not with the first's, no longer the latest.  It compares with the complete versions next to
it in number order now (the latest, the nearest below and above); three runs are let
finish in every order.  A version the same as one further back is a change: a run of the
content of two versions ago, started last and finishing last, makes the latest version
(it used to be found the same as the version it started from, and discarded).
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, note, settings, strategies as st

import triofetch
from tests._cli_helpers import Result, manifest_of, run_cli, start_cli
from tests.test_retention import stored_unit
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import Store, VersionNotFound, VersionNotWritable, _versions, open_store
from triofetch.testing import FaultServer


def file_unit(server: FaultServer, name: str, data: bytes) -> DeclarativeUnit:
    sha = hashlib.sha256(data).hexdigest()
    path = f"/race/{name}/{sha[:8]}"
    server.add_file(path, data)
    art = DeclarativeArtifact(server.url(path), name, {"sha256": sha}, len(data))
    return DeclarativeUnit("file", (name, sha), {"relative_path": name, "size": len(data)}, [art])


def units_of(server: FaultServer, files: dict[str, bytes]) -> list[DeclarativeUnit]:
    return [file_unit(server, name, data) for name, data in sorted(files.items())]


async def held(
    units: Iterable[DeclarativeUnit], opened: trio.Event, go: trio.Event
) -> AsyncIterator[DeclarativeUnit]:
    """*units*, once *go* is set.  A run reads its input only after it opened its version:
    *opened* is set then."""
    opened.set()
    await go.wait()
    for unit in units:
        yield unit


@pytest.fixture
async def dl() -> AsyncIterator[triofetch.Downloader]:
    async with triofetch.Downloader(connections=4, backoff=0.01, retries=1) as d:
        yield d


async def overlapping(
    store: Store,
    dl: triofetch.Downloader,
    inputs: dict[str, list[DeclarativeUnit]],
    finish: Iterable[str],
    *,
    mirror: bool = False,
) -> dict[str, triofetch.CreateReport]:
    """Runs of *inputs* into repository ``r`` at once, by name: each opens its version in
    the order of *inputs* (so their numbers follow that order) before any commits a unit,
    then they are let go one at a time in the order *finish*, each once the one before it
    finished.  Their reports, by name."""
    reports: dict[str, triofetch.CreateReport] = {}
    opened = {name: trio.Event() for name in inputs}
    go = {name: trio.Event() for name in inputs}
    done = {name: trio.Event() for name in inputs}

    async def run(which: str) -> None:
        creator = triofetch.ContentUnitCreator(store, dl)
        source = held(inputs[which], opened[which], go[which])
        reports[which] = await creator.run(source, repository="r", mirror=mirror)
        done[which].set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for name in inputs:
                nursery.start_soon(run, name)
                await opened[name].wait()
            for name in finish:
                go[name].set()
                await done[name].wait()
    assert reports.keys() == inputs.keys()
    return reports


async def race(
    store: Store,
    dl: triofetch.Downloader,
    units: list[DeclarativeUnit],
    *,
    held_finishes_last: bool,
    mirror: bool = False,
    other_units: list[DeclarativeUnit] | None = None,
) -> tuple[triofetch.CreateReport, triofetch.CreateReport]:
    """Two runs of *units* (the other one of *other_units*, if given) into repository
    ``r``, both with their version opened before either commits a unit: (the held run's
    report, the other's).  The held one finishes after the other with
    *held_finishes_last*, else first."""
    inputs = {"held": units, "other": units if other_units is None else other_units}
    finish = ("other", "held") if held_finishes_last else ("held", "other")
    reports = await overlapping(store, dl, inputs, finish, mirror=mirror)
    return reports["held"], reports["other"]


def numbers(infos: list[triofetch.VersionInfo]) -> list[int]:
    return [v.number for v in infos if v.complete]


@pytest.mark.parametrize("held_finishes_last", [True, False])
async def test_two_runs_into_a_new_repository_make_one_version(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader, held_finishes_last: bool
) -> None:
    """Two runs of one input into a new repository, both started before either finished:
    one version, made by the first to finish; the other reports it, not created."""
    units = units_of(http_server, {f"f{i}.txt": b"new %d\n" % i * 40 for i in range(6)})
    held_report, other = await race(store, dl, units, held_finishes_last=held_finishes_last)
    assert held_report.ok and other.ok
    infos = await store.versions("r")
    # one version holds the content; the run that finished last made none and says so
    assert len(numbers(infos)) == 1 and all(v.complete for v in infos), infos
    (made,) = numbers(infos)
    first, last = (other, held_report) if held_finishes_last else (held_report, other)
    assert (first.created, first.version, first.latest_version) == (True, made, made)
    assert (last.created, last.version, last.latest_version) == (False, made, made)
    assert last.units_replaced == 0 and last.replaced == []
    assert await store.count_units("r") == 6


@pytest.mark.parametrize("held_finishes_last", [True, False])
async def test_two_runs_of_a_changed_source_make_one_new_version(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader, held_finishes_last: bool
) -> None:
    """An existing repository, its source changed (one file's content, one file more): two
    runs at once make one new version, the other run reports it unchanged."""
    files = {f"f{i}.txt": b"old %d\n" % i * 40 for i in range(5)}
    first = await triofetch.ContentUnitCreator(store, dl).run(
        units_of(http_server, files), repository="r"
    )
    assert (first.created, first.version) == (True, 1)
    changed = {**files, "f0.txt": b"changed\n" * 40, "f9.txt": b"added\n" * 40}
    units = units_of(http_server, changed)
    held_report, other = await race(store, dl, units, held_finishes_last=held_finishes_last)
    assert held_report.ok and other.ok
    infos = await store.versions("r")
    assert all(v.complete for v in infos) and len(infos) == 2, infos
    made = infos[-1].number
    winner, loser = (other, held_report) if held_finishes_last else (held_report, other)
    assert (winner.created, winner.version, winner.units_replaced) == (True, made, 1)
    assert (loser.created, loser.version, loser.latest_version) == (False, made, made)
    assert loser.units_replaced == 0 and loser.replaced == []
    assert {u.key.natural_key[0] for u in await store.list_units("r")} == set(changed)
    # and a run after both finds nothing to do, as the loser did
    again = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
    assert (again.created, again.version, again.latest_version) == (False, made, made)


@pytest.mark.parametrize("mirror", [False, True])
async def test_runs_with_different_content_still_make_their_versions(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader, mirror: bool
) -> None:
    """What the same-content rule leaves as it was: two runs at once with different inputs
    both make their versions, and the higher number is the latest, whichever finishes
    last; a run that changed nothing since the version it started from makes none, though
    another run made a version meanwhile (completing it would take that run's additions out
    of the latest version)."""
    base = {"a.txt": b"a\n" * 30}
    await triofetch.ContentUnitCreator(store, dl).run(units_of(http_server, base), repository="r")
    one = units_of(http_server, {**base, "b.txt": b"b\n" * 30})
    two = units_of(http_server, {**base, "c.txt": b"c\n" * 30})
    held_report, other = await race(
        store, dl, one, other_units=two, held_finishes_last=False, mirror=mirror
    )
    assert held_report.created and other.created
    assert (held_report.version, other.version) == (2, 3)
    assert other.latest_version == 3  # (the held run finished first: 2 was the latest then)
    assert {u.key.natural_key[0] for u in await store.list_units("r")} == {"a.txt", "c.txt"}

    # from version 3: one run of its very content (nothing to change), the other adds d
    three = units_of(http_server, {**base, "c.txt": b"c\n" * 30, "d.txt": b"d\n" * 30})
    held_report, other = await race(
        store, dl, two, other_units=three, held_finishes_last=True, mirror=mirror
    )
    assert (held_report.created, held_report.version, held_report.latest_version) == (
        False,
        3,
        5,
    )
    assert (other.created, other.version) == (True, 5)
    assert numbers(await store.versions("r")) == [1, 2, 3, 5]
    assert {u.key.natural_key[0] for u in await store.list_units("r")} == {
        "a.txt",
        "c.txt",
        "d.txt",
    }


#: every order three runs can finish in
_FINISHES = list(itertools.permutations(["p1", "p2", "q"]))


@pytest.mark.parametrize("finish", _FINISHES, ids=["-".join(f) for f in _FINISHES])
async def test_three_runs_make_one_version_of_each_content_whatever_order_they_finish_in(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader, finish: tuple[str, ...]
) -> None:
    """Three runs at once from version 1: two of one input (p1, p2: versions 2 and 3) and
    one of another (q: version 4).  The first of p1 and p2 to finish makes the version of
    their content, the other reports it, not created; q makes its own.  When q finished
    between them, its version 4 was the latest and the second p run compared its version
    only with that one and with version 1, and completed it: versions 2 and 3 held the
    same units, and neither was the latest."""
    base = {"a.txt": b"a\n" * 30}
    first = await triofetch.ContentUnitCreator(store, dl).run(
        units_of(http_server, base), repository="r"
    )
    assert (first.created, first.version) == (True, 1)
    p = units_of(http_server, {**base, "p.txt": b"p\n" * 30})
    q = units_of(http_server, {**base, "q.txt": b"q\n" * 30})
    reports = await overlapping(store, dl, {"p1": p, "p2": p, "q": q}, finish)
    assert all(r.ok for r in reports.values()), reports
    infos = await store.versions("r")
    assert all(v.complete for v in infos), infos
    held = {n: {k[0] for k in keys_of(await store.list_units("r", n))} for n in numbers(infos)}
    p_first, p_last = [name for name in finish if name != "q"]
    made = reports[p_first].version
    assert made in (2, 3) and reports[p_first].created, reports
    # one version per content: versions 2 and 3 used to both hold p's, when q finished
    # between p1 and p2
    assert held == {1: {"a.txt"}, made: {"a.txt", "p.txt"}, 4: {"a.txt", "q.txt"}}, held
    assert (reports[p_last].created, reports[p_last].version) == (False, made)
    assert reports[p_last].units_replaced == 0 and reports[p_last].replaced == []
    assert (reports["q"].created, reports["q"].version) == (True, 4)
    # the latest is the highest number, whatever order they finished in
    assert reports[finish[-1]].latest_version == 4


@pytest.mark.parametrize("finish", [("w", "v"), ("v", "w")], ids=["w-first", "v-first"])
@pytest.mark.parametrize("mirror", [False, True], ids=["additive", "mirror"])
async def test_a_run_that_changed_nothing_takes_nothing_out_of_the_latest(
    http_server: FaultServer,
    store: Store,
    dl: triofetch.Downloader,
    finish: tuple[str, ...],
    mirror: bool,
) -> None:
    """From version 1 (a), two runs at once: w adds b (version 2), v, started after it, has
    an input version 1 holds already (version 3: nothing changed).  Without mirror, v makes
    no version in either finishing order and the latest holds b: finishing last, it
    completed version 3 — version 1's units again, as the latest, with w's b taken out —
    because its nearest complete neighbour below was w's version, not the one it started
    from, and an unchanged run made a version only when another finished first.  It
    reports the latest, which holds its input.  With mirror, v's version is its exact
    input, started last: finishing last it is made (the source dropped b)."""
    base = {"a.txt": b"a\n" * 30}
    first = await triofetch.ContentUnitCreator(store, dl).run(
        units_of(http_server, base), repository="r", mirror=mirror
    )
    assert (first.created, first.version) == (True, 1)
    w = units_of(http_server, {**base, "b.txt": b"b\n" * 30})
    v = units_of(http_server, base)
    reports = await overlapping(store, dl, {"w": w, "v": v}, finish, mirror=mirror)
    infos = await store.versions("r")
    held = {n: {k[0] for k in keys_of(await store.list_units("r", n))} for n in numbers(infos)}
    assert all(v.complete for v in infos), infos
    assert (reports["w"].created, reports["w"].version) == (True, 2), reports
    if mirror and finish == ("w", "v"):
        assert held == {1: {"a.txt"}, 2: {"a.txt", "b.txt"}, 3: {"a.txt"}}, held
        assert (reports["v"].created, reports["v"].version) == (True, 3), reports
        return
    assert held == {1: {"a.txt"}, 2: {"a.txt", "b.txt"}}, held
    quiet = reports["v"]
    assert not quiet.created and quiet.units_replaced == 0 and quiet.replaced == [], quiet
    # finishing first it found version 1, its neighbour; last, the latest holding its input
    assert quiet.version == (1 if finish == ("v", "w") else 2), quiet
    assert reports[finish[-1]].latest_version == 2
    if not mirror:  # and a run after both finds nothing to do (a mirror of v drops b)
        again = await triofetch.ContentUnitCreator(store, dl).run(v, repository="r")
        assert (again.created, again.version, again.latest_version) == (False, 2, 2), again


# -- the store: complete_if_changed ---------------------------------------------------------


async def test_complete_if_changed_makes_one_version_of_one_content(store: Store) -> None:
    """The store's half, with versions made by hand: the second of two versions of one
    content completed is discarded and the first returned; so is a version holding what
    the version it started from holds; its number is given back when it was the last."""
    unit = await stored_unit(store, "a")
    first = await store.new_version("r")
    second = await store.new_version("r")
    for version in (first, second):
        assert not (await store.commit_units([unit], version=version)).failed
    kept = await store.complete_if_changed(second, None)
    assert (kept.id, kept.number, kept.complete) == (second.id, 2, True)
    kept = await store.complete_if_changed(first, None)  # (started before 2 was complete)
    assert (kept.id, kept.number, kept.complete) == (second.id, 2, True)
    assert [(v.number, v.complete) for v in await store.versions("r")] == [(2, True)]
    with pytest.raises(VersionNotFound):
        await store.complete_if_changed(first, None)  # (discarded)
    with pytest.raises(VersionNotWritable):
        await store.complete_if_changed(second, None)  # (complete)

    third = await store.new_version("r")  # the units of 2, nothing changed
    assert third.number == 3
    assert (await store.complete_if_changed(third, kept)).id == second.id
    fourth = await store.new_version("r")
    assert fourth.number == 3  # (3 was given back: the last handed out)
    assert not (await store.commit_units([await stored_unit(store, "b")], version=fourth)).failed
    assert (await store.complete_if_changed(fourth, kept)).id == fourth.id
    # a new repository's first version is made even when empty
    empty = await store.new_version("e")
    assert (await store.complete_if_changed(empty, None)).id == empty.id
    with pytest.raises(triofetch.InvalidInput, match="previous"):
        await store.complete_if_changed(await store.new_version("e"), 1)  # type: ignore[arg-type]


async def test_complete_if_changed_finds_a_version_completed_meanwhile_that_is_not_the_latest(
    store: Store,
) -> None:
    """Versions 2 and 3 of one content, 4 of another, all started from version 1: with 2
    and then 4 complete, 3 is the same as 2, which is no longer the latest but was
    completed after 1 (the version 3 started from): 3 is discarded, 2 returned.  A version
    the same as one completed *before* the one it started from is a change, and made."""
    base, p, q = [await stored_unit(store, name) for name in ("base", "p", "q")]
    one = await store.new_version("r")
    assert not (await store.commit_units([base], version=one)).failed
    one = await store.complete_if_changed(one, None)
    two, three, four = [await store.new_version("r") for _ in range(3)]
    assert [v.number for v in (two, three, four)] == [2, 3, 4]
    for version, unit in ((two, p), (three, p), (four, q)):
        assert not (await store.commit_units([unit], version=version)).failed
    assert (await store.complete_if_changed(two, one)).id == two.id
    assert (await store.complete_if_changed(four, one)).id == four.id
    kept = await store.complete_if_changed(three, one)
    assert (kept.id, kept.number, kept.complete) == (two.id, 2, True)
    assert [(v.number, v.complete) for v in await store.versions("r")] == [
        (1, True),
        (2, True),
        (4, True),
    ]
    assert (await store.latest_version("r")).number == 4  # type: ignore[union-attr]

    # from 4 (q's): a version holding p's units again, as 2 does, is made: 2 was complete
    # before the run started, and the latest (4) holds other units
    five = await store.new_version("r", base=2)
    assert (await store.complete_if_changed(five, await store.get_version("r", 4))).id == five.id
    assert numbers(await store.versions("r")) == [1, 2, 4, 5]


async def test_complete_if_changed_makes_a_version_the_same_as_one_further_back(
    store: Store,
) -> None:
    """The numbers are the history's order: a version the same as its neighbour in that
    order changes nothing, one the same as a version further back is a change.  From
    version 1 (x), runs of y (2) and of x again (3) that finish in that order: 3 is made
    and is the latest — it was discarded as "the same as the version it started from",
    and the repository stayed at y although the last run to start, and to finish, had x.
    And with runs of x (2), y (3), x (4) finishing in order, 4 is made, not found the same
    as 2, which a version of other content follows."""
    x, y = [await stored_unit(store, name) for name in ("x", "y")]
    one = await store.new_version("r")
    assert not (await store.commit_units([x], version=one)).failed
    one = await store.complete_if_changed(one, None)
    two, three = [await store.new_version("r", base=None) for _ in range(2)]
    for version, unit in ((two, y), (three, x)):
        assert not (await store.commit_units([unit], version=version)).failed
    assert (await store.complete_if_changed(two, one)).id == two.id
    made = await store.complete_if_changed(three, one)
    assert (made.id, made.number) == (three.id, 3)
    latest = await store.latest_version("r")
    assert latest is not None and latest.number == 3
    assert [u.key.natural_key for u in await store.list_units("r", 3)] == [x.natural_key]

    four, five, six = [await store.new_version("r", base=None) for _ in range(3)]
    for version, unit in ((four, y), (five, x), (six, y)):
        assert not (await store.commit_units([unit], version=version)).failed
    three_again = await store.get_version("r", 3)
    assert (await store.complete_if_changed(four, three_again)).id == four.id
    assert (await store.complete_if_changed(five, three_again)).id == five.id
    assert (await store.complete_if_changed(six, three_again)).id == six.id
    assert numbers(await store.versions("r")) == [1, 2, 3, 4, 5, 6]


async def test_complete_if_changed_additive_takes_nothing_out_of_the_latest(
    store: Store,
) -> None:
    """*additive*: a version holding the units of *previous* (the version it was started
    from: its writer changed nothing) is not made when the latest holds every unit its
    writer added (its input), though another writer completed a version between them: it
    is discarded (its number given back) and the latest returned.  It is made when the
    latest lacks a unit of its input (content changed back at one key), and without
    *additive* (a mirror: its exact input).  *additive* is a bool."""
    a, b = [await stored_unit(store, name) for name in ("a", "b")]
    one = await store.new_version("r")
    assert not (await store.commit_units([a], version=one)).failed
    one = await store.complete_if_changed(one, None)
    two, three = [await store.new_version("r") for _ in range(2)]  # both from 1
    assert not (await store.commit_units([b], version=two)).failed
    (a_id,) = [u.id for u in await store.list_units("r", 1)]
    assert (await store.place_units(three, [a_id])).added == 0  # (input a: there already)
    assert (await store.complete_if_changed(two, one, additive=True)).id == two.id
    kept = await store.complete_if_changed(three, one, additive=True)
    assert (kept.id, kept.number, kept.complete) == (two.id, 2, True)
    assert numbers(await store.versions("r")) == [1, 2]
    again = await store.new_version("r", base=1)
    assert again.number == 3  # (given back)
    # without additive: made, as a mirror of version 1's content is
    made = await store.complete_if_changed(again, one)
    assert (made.id, made.number) == (again.id, 3)
    with pytest.raises(triofetch.InvalidInput, match="additive"):
        await store.complete_if_changed(
            await store.new_version("r"),
            None,
            additive=1,  # type: ignore[arg-type]
        )

    # one key, f: its first content (s) in version 1, other content (t) in 2; two writers
    # started from 1 meanwhile: 3 with s as its input again (the source changed back) is
    # made; 4 with no input (s only carried over) is not, and finds 3
    s1, t1 = await stored_unit(store, "f", b"first\n" * 9), await stored_unit(store, "f", b"t\n")
    first = await store.new_version("k")
    assert not (await store.commit_units([s1], version=first)).failed
    first = await store.complete_if_changed(first, None, additive=True)
    (s_id,) = [u.id for u in await store.list_units("k", 1)]
    second, third, fourth = [await store.new_version("k") for _ in range(3)]
    assert not (await store.commit_units([t1], version=second)).failed
    assert (await store.place_units(third, [s_id])).added == 0
    assert (await store.complete_if_changed(second, first, additive=True)).id == second.id
    back = await store.complete_if_changed(third, first, additive=True)
    assert (back.id, back.number) == (third.id, 3)
    assert (await store.complete_if_changed(fourth, first, additive=True)).id == third.id
    four = await store.new_version("k", base=1)  # (4 was given back)
    assert four.number == 4 and (await store.complete_if_changed(four, first)).id == third.id
    assert numbers(await store.versions("k")) == [1, 2, 3]


@pytest.mark.postgres
async def test_completions_at_once_take_turns_on_the_repositorys_lock(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """Two completions of one content, both waiting for the repository's row lock (held
    by another session), then let go at once: the second to get the lock sees the version
    the first completed, though both started before it was there."""
    import psycopg

    async with open_store(postgres_dsn, root=tmp_path / "root") as store:
        unit = await stored_unit(store, "a")
        versions = [await store.new_version("r") for _ in range(2)]
        for version in versions:
            assert not (await store.commit_units([unit], version=version)).failed
        kept: list[triofetch.VersionHandle] = []

        async def complete(version: triofetch.VersionHandle) -> None:
            kept.append(await store.complete_if_changed(version, None))

        with (
            psycopg.connect(postgres_dsn) as holder,
            psycopg.connect(postgres_dsn, autocommit=True) as watcher,
        ):
            holder.execute("SELECT id FROM repositories WHERE name = 'r' FOR UPDATE")
            async with trio.open_nursery() as nursery:
                for version in versions:
                    nursery.start_soon(complete, version)
                for _ in range(1000):
                    row = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ).fetchone()
                    if row is not None and row[0] == 2:
                        break
                    await trio.sleep(0.01)
                else:
                    raise AssertionError("the completions did not both wait for the lock")
                holder.rollback()
        assert len({v.id for v in kept}) == 1, kept
        assert [v.number for v in await store.versions("r")] == [kept[0].number]


@pytest.mark.postgres
async def test_completing_reads_each_unit_once_when_the_statistics_miss_the_new_version(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """Twenty versions of 20,000 units each, analyzed: PostgreSQL's statistics then list
    every version id, and estimate one row for a version they have not seen — the new
    one.  The comparison of a finishing version with a complete one was then planned as a
    nested loop that read the other version's membership whole for each of its units
    (20,000 x 20,000 rows: seconds per probe, up to six probes, all under the repository's
    lock; 124 s measured for three candidates).  Each unit is one probe of the primary
    key now."""
    import psycopg

    versions, units = 20, 20_000
    async with open_store(postgres_dsn, root=tmp_path / "root"):
        pass  # (the schema)
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(
            "INSERT INTO units (id, type, natural_key, fields) SELECT i, 'file', "
            "'[\"u' || i || '\"]', '{}' FROM generate_series(1, %s) i",
            (units + versions + 10,),
        )
        conn.execute("SELECT setval(pg_get_serial_sequence('units', 'id'), %s)", (units + 99,))
        conn.execute("INSERT INTO repositories (name, last_number) VALUES ('r', %s)", (versions,))
        conn.execute(
            "INSERT INTO repository_versions (repository_id, number, complete) "
            "SELECT r.id, i, true FROM repositories r, generate_series(1, %s) i",
            (versions,),
        )
        # version k holds units k .. k + units - 1: each differs from its neighbours
        conn.execute(
            "INSERT INTO version_units (version_id, unit_id) SELECT v.id, v.number + i - 1 "
            "FROM repository_versions v, generate_series(1, %s) i",
            (units,),
        )
        conn.commit()
        conn.execute("ANALYZE version_units")
        conn.commit()
    async with open_store(postgres_dsn, root=tmp_path / "root") as store:
        latest = await store.latest_version("r")
        assert latest is not None and latest.number == versions
        unchanged = await store.new_version("r")
        # the plan of one probe, as PostgreSQL makes it for the comparison (not a timing:
        # the plan is what made it quadratic)
        probe = _versions.only_in_sql().replace("?", "%s")
        with psycopg.connect(postgres_dsn) as conn:
            for pair in ((unchanged.id, latest.id), (latest.id, unchanged.id)):
                plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + probe, pair))
                assert "Anti Join" not in plan and "SubPlan" in plan, plan
                assert "Index Only Scan using version_units_pkey" in plan, plan
        kept = await store.complete_if_changed(unchanged, latest)
        assert kept.id == latest.id
        more = await store.new_version("r")
        await store.add_to_version(more, [units + versions + 1])  # (found at the end)
        made = await store.complete_if_changed(more, latest)
        assert made.id == more.id


# -- a property: rounds of one run, or two or three at once ---------------------------------

_examples = itertools.count()

#: a source: up to four files, each with one of two contents
sources = st.dictionaries(st.sampled_from(["a", "b", "c", "d/e"]), st.sampled_from([1, 2]))
#: a round: one run of a source, or two or three at once (each of the first run's source,
#: None, or of its own), let go one at a time in the order given (by index), each once the
#: one before it finished
rounds = st.tuples(sources, st.lists(st.one_of(st.none(), sources), max_size=2)).flatmap(
    lambda r: st.tuples(st.just(r[0]), st.just(r[1]), st.permutations(range(1 + len(r[1]))))
)


#: twenty examples in the default run; the stress profile (``nox -s stress``) runs half of its
#: examples here
@settings(max_examples=max(20, settings.default.max_examples // 2))
@given(plan=st.lists(rounds, min_size=1, max_size=4), mirror=st.booleans())
async def test_no_version_is_made_the_same_as_the_one_before_it(
    http_server_module: FaultServer, plan: list[tuple[Any, ...]], mirror: bool
) -> None:
    """However runs overlap: no complete version holds the same units as the complete
    version numbered just before it; the latest version holds the content of the round's
    last-numbered run (the last to start), or of a run that finished after it; each run's
    report names a complete version holding its input (exactly, with mirror), and
    ``created`` only for a version that run made; and without mirror a run whose input
    the version it started from and every version made meanwhile hold makes none."""
    prefix = f"prop{next(_examples)}"

    def units(source: dict[str, int]) -> list[DeclarativeUnit]:
        files = {name: f"{prefix} {name} {v}\n".encode() * 20 for name, v in source.items()}
        return units_of(http_server_module, files)

    def keys(units: list[DeclarativeUnit]) -> set[tuple[str, ...]]:
        return {tuple(u.natural_key) for u in units}

    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_store(None, root=Path(tmp)) as store,
            triofetch.Downloader(connections=4, retries=0) as dl,
        ):
            made: set[int] = set()
            for first, more, finish in plan:
                before = numbers(await store.versions("r")) if made else []
                # what the round's runs start from (all open their versions before any ends)
                base = keys_of(await store.list_units("r", before[-1])) if before else None
                given = [first, *(first if s is None else s for s in more)]
                inputs = [units(source) for source in given]
                by_name = await overlapping(
                    store,
                    dl,
                    {str(i): run_units for i, run_units in enumerate(inputs)},
                    [str(i) for i in finish],
                    mirror=mirror,
                )
                reports = [by_name[str(i)] for i in range(len(inputs))]
                note(f"{given} {finish}: {[(r.version, r.created) for r in reports]}")
                infos = await store.versions("r")
                assert all(v.complete for v in infos), infos
                complete = numbers(infos)
                held = {n: keys_of(await store.list_units("r", n)) for n in complete}
                for older, newer in itertools.pairwise(complete):
                    assert held[older] != held[newer], (older, newer, held)
                new = set(complete) - set(before)
                # the runs' versions are numbered in the order of `given`: the last one's
                # content is the latest, unless a run finished after it made another
                last = len(given) - 1
                after_last = [last, *finish[finish.index(last) + 1 :]]
                latest_may_hold = [held[reports[i].version] for i in after_last]
                assert held[complete[-1]] in latest_may_hold, (given, finish, reports, held)
                for report, given_units in zip(reports, inputs, strict=True):
                    assert report.ok and report.version in complete, report
                    if mirror:
                        assert held[report.version] == keys(given_units)
                    else:
                        assert held[report.version] >= keys(given_units)
                    quiet = base is not None and all(keys(given_units) <= held[n] for n in new)
                    if not mirror and quiet and keys(given_units) <= base:
                        # its input adds nothing to the version it started from, and every
                        # version the round made holds it: it makes none (one would only
                        # take out of the latest what the others changed)
                        assert not report.created, (given, finish, reports, held)
                made_now = [r.version for r in reports if r.created]
                assert sorted(made_now) == sorted(new), (made_now, new)
                made |= new


def keys_of(infos: list[triofetch.UnitInfo]) -> set[tuple[str, ...]]:
    return {tuple(u.key.natural_key) for u in infos}


# -- the command line ---------------------------------------------------------------------


class GatedSource:
    """A manifest and its files on a loopback HTTP server, where the first *holds* GETs of
    the file *gated* each wait until released: a ``sync`` whose request arrived there has
    opened its version and commits nothing until then."""

    def __init__(self, files: dict[str, bytes], gated: str, holds: int) -> None:
        self.files = files
        self.gated = gated
        self.arrived = [threading.Event() for _ in range(holds)]
        self.released = [threading.Event() for _ in range(holds)]
        self._seen = 0
        self._lock = threading.Lock()
        source = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.removeprefix("/repo/")
                body = (
                    manifest_of(source.files) if name == "PULP_MANIFEST" else source.files.get(name)
                )
                if body is None:
                    self.send_error(404)
                    return
                if name == source.gated:
                    with source._lock:
                        turn, source._seen = source._seen, source._seen + 1
                    if turn < len(source.arrived):
                        source.arrived[turn].set()
                        source.released[turn].wait(60)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/repo/PULP_MANIFEST"

    @contextmanager
    def serving(self) -> Iterator[GatedSource]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            for event in self.released:
                event.set()
            self.server.shutdown()
            self.server.server_close()
            thread.join()


def wait_arrived(source: GatedSource, turn: int, proc: subprocess.Popen[str]) -> None:
    """Until sync *proc* is held at the gate (its version opened)."""
    for _ in range(600):
        if source.arrived[turn].wait(0.1):
            return
        assert proc.poll() is None, proc.communicate()
    raise AssertionError("the sync never reached the gate")


def finished(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=60)
    return Result(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


@pytest.mark.parametrize("existing", [False, True], ids=["new-root", "existing"])
@pytest.mark.parametrize("held_finishes_last", [True, False], ids=["held-last", "held-first"])
def test_two_syncs_at_once_print_what_a_sync_that_changes_nothing_prints(
    tmp_path: Path, store_url: str, existing: bool, held_finishes_last: bool
) -> None:
    """Two ``triofetch sync`` of one source into one root (new, or holding the source's
    previous content) at once, each held by the server after it opened its version: one
    makes a version, and the other ends as a sync run after it would: status 0, ``up to
    date at version N`` (or, with ``--json``, that ``version`` and ``"created": false``), no
    file said replaced.  The one held prints the human summary, the other JSON."""
    root = tmp_path / "root"
    where = ["--root", str(root)] + ([] if store_url.startswith("sqlite") else ["--db", store_url])
    files = {f"f{i}.txt": b"file %d\n" % i * 60 for i in range(4)}
    source = GatedSource(files, "f1.txt", holds=0 if existing else 2)
    with source.serving():
        sync = ("sync", source.url, *where, "--repository", "r")
        if existing:
            assert run_cli(*sync).code == 0
            source.files = {**files, "f1.txt": b"changed\n" * 60, "f8.txt": b"added\n" * 9}
            source.arrived = [threading.Event() for _ in range(2)]
            source.released = [threading.Event() for _ in range(2)]
            source._seen = 0
        held = start_cli(*sync)
        wait_arrived(source, 0, held)
        other = start_cli(*sync, "--json")
        wait_arrived(source, 1, other)
        if held_finishes_last:
            source.released[1].set()
            other_result = finished(other)
            source.released[0].set()
            held_result = finished(held)
        else:
            source.released[0].set()
            held_result = finished(held)
            source.released[1].set()
            other_result = finished(other)
        after = run_cli(*sync)  # one after both: changes nothing
        after_json = run_cli(*sync, "--json")
    for result in (held_result, other_result, after, after_json):
        assert result.code == 0 and "Traceback" not in result.err, result
    report = other_result.json()
    listed = run_cli("versions", *where, "--repository", "r", "--json")
    numbers = [v["number"] for v in listed.json() if v["complete"]]
    assert len(listed.json()) == len(numbers) == (2 if existing else 1), listed
    made = numbers[-1]
    up_to_date = f"\nrepository 'r': up to date at version {made}\n"
    assert up_to_date in after.out, after
    quiet = {"version": made, "created": False, "replaced": []}
    assert {k: after_json.json()[k] for k in quiet} == quiet
    if held_finishes_last:  # the held one found the other's version: a no-op's words
        assert up_to_date in held_result.out, held_result
        assert "replaced" not in held_result.err, held_result
        assert (report["version"], report["created"]) == (made, True)
    else:  # the other one did, in JSON
        assert f"\nrepository 'r': version {made} created\n" in held_result.out
        assert {k: report[k] for k in quiet} == quiet, report
        assert report["units"]["replaced"] == 0 and "replaced" not in other_result.err
    assert run_cli("verify", *where).code == 0


def test_three_syncs_at_once_make_no_second_version_of_one_source(
    tmp_path: Path, store_url: str
) -> None:
    """Three ``triofetch sync`` processes into a new repository at once, each held by its
    server after it opened its version: two of source P (versions 1 and 2), one of source
    Q (version 3).  The first P sync finishes, then the Q sync, then the second P sync:
    it finds P's content in version 1, completed while it ran though not the latest, and
    prints ``up to date at version 1``.  It used to make version 2, the same as 1."""
    root = tmp_path / "root"
    where = ["--root", str(root)] + ([] if store_url.startswith("sqlite") else ["--db", store_url])
    p = GatedSource({f"p{i}.txt": b"p %d\n" % i * 60 for i in range(3)}, "p1.txt", holds=2)
    q = GatedSource({f"q{i}.txt": b"q %d\n" % i * 60 for i in range(3)}, "q1.txt", holds=1)
    with p.serving(), q.serving():
        procs = []
        for source, turn in ((p, 0), (p, 1), (q, 0)):
            procs.append(start_cli("sync", source.url, *where, "--repository", "r", "--json"))
            wait_arrived(source, turn, procs[-1])
        try:
            p.released[0].set()
            first = finished(procs[0])
            q.released[0].set()
            other = finished(procs[2])
            p.released[1].set()
            last = finished(procs[1])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    for result in (first, other, last):
        assert result.code == 0 and "Traceback" not in result.err, result
    quiet = {"version": 1, "created": False, "replaced": []}
    assert {k: first.json()[k] for k in quiet} == {**quiet, "created": True}
    assert {k: other.json()[k] for k in quiet} == {**quiet, "version": 3, "created": True}
    assert {k: last.json()[k] for k in quiet} == quiet, last
    listed = run_cli("versions", *where, "--repository", "r", "--json").json()
    assert [(v["number"], v["complete"]) for v in listed] == [(1, True), (3, True)], listed
