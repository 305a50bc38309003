"""Two runs that finish with the same content make one version, not two identical ones.

Two syncs of one source into one repository at once: each prepares its own version.  Each
used to complete it when it differed from the version *it* started from, so two runs that
both started before either finished made two identical versions (1 and 2 of a new
repository), where one run after the other makes version 1 and then reports it unchanged.
The store now decides it when completing, under the repository's lock, against the latest
version too.  Each test holds one run at a point (its version opened, nothing committed
yet) while the other runs, so the race is the same every time: both backends, a new
repository and an existing one, both finishing orders, the creator and ``triofetch sync``.
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
from triofetch.store import Store, VersionNotFound, VersionNotWritable, open_store
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
    reports: dict[str, triofetch.CreateReport] = {}
    opened = {"held": trio.Event(), "other": trio.Event()}
    go = {"held": trio.Event(), "other": trio.Event()}
    done = {"held": trio.Event(), "other": trio.Event()}
    inputs = {"held": units, "other": units if other_units is None else other_units}

    async def run(which: str) -> None:
        creator = triofetch.ContentUnitCreator(store, dl)
        source = held(inputs[which], opened[which], go[which])
        reports[which] = await creator.run(source, repository="r", mirror=mirror)
        done[which].set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "held")
        await opened["held"].wait()
        nursery.start_soon(run, "other")
        await opened["other"].wait()
        first, last = ("other", "held") if held_finishes_last else ("held", "other")
        go[first].set()
        await done[first].wait()
        go[last].set()
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


# -- a property: rounds of one run or two at once -------------------------------------------

_examples = itertools.count()

#: a source: up to four files, each with one of two contents
sources = st.dictionaries(st.sampled_from(["a", "b", "c", "d/e"]), st.sampled_from([1, 2]))
#: a round: one run of a source, or two at once (of the same source, or of two), one of
#: them held until the other finished (or the other way round)
rounds = st.one_of(
    st.tuples(sources),
    st.tuples(sources, st.none(), st.booleans()),
    st.tuples(sources, sources, st.booleans()),
)


#: twenty examples in the default run; the stress profile (``nox -s stress``) runs half of its
#: examples here
@settings(max_examples=max(20, settings.default.max_examples // 2))
@given(plan=st.lists(rounds, min_size=1, max_size=4), mirror=st.booleans())
async def test_no_version_is_made_the_same_as_the_one_before_it(
    http_server_module: FaultServer, plan: list[tuple[Any, ...]], mirror: bool
) -> None:
    """However runs overlap: no complete version holds the same units as the complete
    version numbered just before it; a round of two runs of one source makes at most one
    version; each run's report names a complete version holding its input (exactly, with
    mirror), and ``created`` only for a version that run made."""
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
            for step in plan:
                before = numbers(await store.versions("r")) if made else []
                inputs = [units(step[0])]
                if len(step) == 1:
                    reports = [
                        await triofetch.ContentUnitCreator(store, dl).run(
                            inputs[0], repository="r", mirror=mirror
                        )
                    ]
                else:
                    inputs.append(inputs[0] if step[1] is None else units(step[1]))
                    reports = list(
                        await race(
                            store,
                            dl,
                            inputs[0],
                            other_units=inputs[1],
                            held_finishes_last=step[2],
                            mirror=mirror,
                        )
                    )
                note(f"{step}: {[(r.version, r.created) for r in reports]}")
                infos = await store.versions("r")
                assert all(v.complete for v in infos), infos
                complete = numbers(infos)
                held = {n: keys_of(await store.list_units("r", n)) for n in complete}
                for older, newer in itertools.pairwise(complete):
                    assert held[older] != held[newer], (older, newer, held)
                new = set(complete) - set(before)
                if len(step) == 3 and step[1] is None:
                    assert len(new) <= 1, (step, new)
                for report, given_units in zip(reports, inputs, strict=True):
                    assert report.ok and report.version in complete, report
                    if mirror:
                        assert held[report.version] == keys(given_units)
                    else:
                        assert held[report.version] >= keys(given_units)
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
