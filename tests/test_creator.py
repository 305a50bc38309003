"""The content unit creator against a real loopback server and a real store."""

from __future__ import annotations

import gc
import hashlib
import re
import warnings
from collections.abc import Iterator

import pytest
import trio

import triofetch
from tests._invariants import check_invariants
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import Store, UnitKey
from triofetch.testing import FaultServer, Slow, Status, WrongBytes


def content(name: str, size: int = 1500) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def file_unit(
    server: FaultServer,
    name: str,
    data: bytes | None = None,
    faults: list[object] | None = None,
    serve: bool = True,
) -> DeclarativeUnit:
    data = content(name) if data is None else data
    sha = hashlib.sha256(data).hexdigest()
    path = f"/repo/{name}"
    if serve:
        server.add_file(path, data, faults=faults or [])
    art = DeclarativeArtifact(server.url(path), name, {"sha256": sha}, len(data))
    return DeclarativeUnit("file", (name, sha), {"relative_path": name, "size": len(data)}, [art])


def multi_unit(server: FaultServer, name: str, files: dict[str, bytes]) -> DeclarativeUnit:
    arts = []
    for rel, data in files.items():
        path = f"/multi/{name}/{rel}"
        server.add_file(path, data)
        arts.append(
            DeclarativeArtifact(
                server.url(path), rel, {"sha256": hashlib.sha256(data).hexdigest()}, len(data)
            )
        )
    return DeclarativeUnit("pkg", (name,), {}, arts)


def file_requests(server: FaultServer) -> int:
    return sum(1 for r in server.requests if r.path.startswith(("/repo/", "/multi/")))


async def versions_units(store: Store, repo: str, number: int | None = None) -> set[str]:
    return {u.key.natural_key[0] for u in await store.list_units(repo, number)}


async def test_creates_units_then_noop_rerun(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = [file_unit(http_server, f"dir/f{i}.txt") for i in range(40)]
    creator = triofetch.ContentUnitCreator(store, dl, slice_size=7)
    report = await creator.run(units, repository="repo")
    assert report.ok
    assert (report.units_total, report.units_new, report.units_existing) == (40, 40, 0)
    assert report.artifacts_downloaded == 40 and report.artifacts_reused == 0
    assert report.bytes_downloaded == 40 * 1500
    assert report.version == 1 and report.latest_version == 1 and report.created
    assert await store.count_units("repo") == 40
    state = await check_invariants(store, units, on_demand_ok=False)
    assert len(state) == 40 and all(state.values())

    before = file_requests(http_server)
    again = await creator.run(units, repository="repo")
    assert file_requests(http_server) == before  # zero file requests
    assert (again.units_new, again.units_existing, again.artifacts_downloaded) == (0, 40, 0)
    # nothing changed: the content is in version 1, no version was made
    assert again.version == 1 and again.latest_version == 1 and not again.created


async def test_shared_artifacts_download_once(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    shared = content("shared", 5000)
    units = [
        multi_unit(http_server, f"p{i}", {"shared.bin": shared, "own.bin": content(f"own{i}")})
        for i in range(10)
    ]
    report = await triofetch.ContentUnitCreator(store, dl, slice_size=4).run(units)
    assert report.ok and report.units_new == 10
    shared_requests = [r for r in http_server.requests if r.path.endswith("/shared.bin")]
    assert len(shared_requests) == 1
    assert report.artifacts_downloaded == 11
    assert report.artifacts_reused == 9
    await check_invariants(store, units, on_demand_ok=False)


async def test_a_unit_declaring_another_size_for_stored_content_fails(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """A unit whose artifact declares a sha256 already stored (or being downloaded in the
    run) with another size fails with ArtifactConflict, as its download would have failed
    with a size mismatch.  It was committed with the stored file of the other size ("already
    present"), its declared size a lie the store then held."""
    data = content("stored", 5000)
    sha = hashlib.sha256(data).hexdigest()
    first = await triofetch.ContentUnitCreator(store, dl).run(
        [file_unit(http_server, "right", data)], repository="r"
    )
    assert first.ok

    def wrong(name: str) -> DeclarativeUnit:
        art = DeclarativeArtifact(http_server.url("/repo/right"), name, {"sha256": sha}, 10**12)
        return DeclarativeUnit("file", (name, sha), {"relative_path": name, "size": 10**12}, [art])

    later = await triofetch.ContentUnitCreator(store, dl).run([wrong("lie")], repository="r")
    assert not later.ok and later.version is None and later.latest_version == 1
    (failure,) = later.failures
    cause = failure.error.cause if isinstance(failure.error, triofetch.UnitFailed) else None
    assert isinstance(cause, triofetch.ArtifactConflict), failure.error
    assert (cause.recorded_size, cause.given_size) == (5000, 10**12)
    assert await versions_units(store, "r") == {"right"}
    await check_invariants(store, [file_unit(http_server, "right", data, serve=False)])


async def test_a_gc_between_two_runs_of_one_creator_is_not_trusted_past(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """Run 1 makes a unit in no version; gc removes it, its artifact and its file; run 2
    of the same creator declares another unit with that content.  The creator trusted
    what it had adopted in run 1 (nothing downloaded) and committed a unit whose file
    was gone."""
    from triofetch.testing import check_store

    data = content("kept, then collected")
    creator = triofetch.ContentUnitCreator(store, dl)
    first = file_unit(http_server, "a.bin", data)
    assert (await creator.run([first])).ok  # (no repository: the unit is in no version)
    assert (await store.collect_garbage()).files == 1
    second = multi_unit(http_server, "b", {"b.bin": data})
    report = await creator.run([second], repository="repo")
    assert report.ok and report.artifacts_downloaded == 1, report
    assert await check_store(store) == []


async def test_a_content_failing_on_one_units_urls_is_fetched_from_anothers(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """Two units with the same content at different URLs; the first one's URL is gone.
    The second waited for the first one's download and failed with its 404 (its own URL
    never asked, the failure naming a URL it never declared)."""
    data = content("one content, two places")
    sha = hashlib.sha256(data).hexdigest()
    http_server.add_file("/elsewhere/good.bin", data)
    gone = DeclarativeArtifact(http_server.url("/elsewhere/gone.bin"), "a.bin", {"sha256": sha})
    good = DeclarativeArtifact(http_server.url("/elsewhere/good.bin"), "b.bin", {"sha256": sha})
    units = [DeclarativeUnit("pkg", ("a",), {}, [gone]), DeclarativeUnit("pkg", ("b",), {}, [good])]
    report = await triofetch.ContentUnitCreator(store, dl).run(units, repository="repo")
    assert (report.units_new, report.units_failed) == (1, 1), report.failures
    (failure,) = report.failures
    assert failure.key.natural_key == ("a",) and failure.url == gone.urls[0]
    assert http_server.count("/elsewhere/good.bin") == 1  # (b committed; no version: a failed)


async def test_failed_units_reported_others_committed(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    good = [file_unit(http_server, f"g{i}") for i in range(10)]
    missing = file_unit(http_server, "missing.txt", serve=False)
    corrupt = file_unit(http_server, "corrupt.txt", faults=[WrongBytes()] * 2)
    units = [*good[:5], missing, corrupt, *good[5:]]
    report = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
    assert not report.ok
    assert report.units_new == 10 and report.units_failed == 2
    causes = {f.unit.natural_key[0]: f.error for f in report.failures}
    assert isinstance(causes["missing.txt"], triofetch.UnitFailed)
    assert isinstance(causes["missing.txt"].cause, triofetch.HTTPStatusError)
    assert isinstance(causes["corrupt.txt"].cause, triofetch.DigestMismatch)
    by_path = {f.relative_path: f.url for f in report.failures}
    assert by_path["missing.txt"] == http_server.url("/repo/missing.txt")
    # no new version for a failed run; the good units stay for reuse
    assert report.version is None and report.latest_version is None and not report.created
    state = await check_invariants(store, units, on_demand_ok=False)
    assert set(k.natural_key[0] for k in state) == {u.natural_key[0] for u in good}

    # the file appears upstream: a re-run finishes what is left and makes the version
    http_server.add_file("/repo/missing.txt", content("missing.txt"))
    before = file_requests(http_server)
    again = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
    assert again.ok and again.units_new == 2 and again.units_existing == 10
    assert file_requests(http_server) - before == 2
    assert again.version == 1 and again.created
    assert await store.count_units("r") == 12


async def test_mirror_and_additive_versions(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    a, b, c, d, e = (file_unit(http_server, n) for n in "abcde")
    creator = triofetch.ContentUnitCreator(store, dl)
    assert (await creator.run([a, b, c], repository="r")).version == 1
    r2 = await creator.run([b, c, d], repository="r", mirror=True)
    assert r2.version == 2
    assert await versions_units(store, "r") == {"b", "c", "d"}
    r3 = await creator.run([e], repository="r")
    assert r3.version == 3
    assert await versions_units(store, "r") == {"b", "c", "d", "e"}
    assert await versions_units(store, "r", 1) == {"a", "b", "c"}
    # a mirror run with the same content changes nothing: no new version
    r4 = await creator.run([b, c, d, e], repository="r", mirror=True)
    assert r4.version == 3 and r4.latest_version == 3 and not r4.created
    # an additive run of units already in the version: no new version
    r5 = await creator.run([b], repository="r")
    assert r5.version == 3 and not r5.created


async def test_on_demand_then_immediate(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = [file_unit(http_server, f"od{i}") for i in range(12)]
    lazy = triofetch.ContentUnitCreator(store, dl, policy="on_demand", slice_size=5)
    report = await lazy.run(units, repository="r")
    assert report.ok and report.units_new == 12 and report.artifacts_downloaded == 0
    assert file_requests(http_server) == 0
    state = await check_invariants(store, units)
    assert state and not any(state.values())  # recorded, nothing downloaded
    assert report.version == 1

    eager = triofetch.ContentUnitCreator(store, dl, policy="immediate", slice_size=5)
    filled = await eager.run(units, repository="r")
    assert filled.ok and filled.artifacts_downloaded == 12
    assert filled.units_existing == 12 and filled.units_new == 0
    state = await check_invariants(store, units, on_demand_ok=False)
    assert all(state.values()) and len(state) == 12
    assert filled.version == 1 and not filled.created  # same units: the version did not change


async def test_on_demand_reuses_present_artifacts(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    data = content("same", 3000)
    first = file_unit(http_server, "one.bin", data)
    await triofetch.ContentUnitCreator(store, dl).run([first])
    second = DeclarativeUnit(
        "other",
        ("k",),
        {},
        [
            DeclarativeArtifact(
                first.artifacts[0].urls, "copy.bin", first.artifacts[0].digests, 3000
            )
        ],
    )
    report = await triofetch.ContentUnitCreator(store, dl, policy="on_demand").run([second])
    assert report.ok
    state = await check_invariants(store, [first, second])
    assert state[UnitKey("other", ("k",))] is True


async def test_duplicates_in_input(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = [file_unit(http_server, f"d{i % 5}") for i in range(20)]
    report = await triofetch.ContentUnitCreator(store, dl, slice_size=8).run(units)
    assert report.ok
    assert report.units_new == 5
    assert report.units_new + report.units_existing == report.units_total
    assert file_requests(http_server) == 5


async def test_fail_fast(http_server: FaultServer, store: Store, dl: triofetch.Downloader) -> None:
    units = [file_unit(http_server, f"ff{i}") for i in range(5)]
    units.insert(2, file_unit(http_server, "gone", serve=False))
    creator = triofetch.ContentUnitCreator(
        store, dl, fail_fast=True, units_in_flight=1, slices_in_flight=1, slice_size=1
    )
    with pytest.raises(triofetch.UnitFailed) as info:
        await creator.run(units, repository="r")
    assert isinstance(info.value.cause, triofetch.HTTPStatusError)
    assert await store.latest_version("r") is None
    await check_invariants(store, units, on_demand_ok=False)


async def test_fail_fast_raises_one_unit_failed_when_several_fail_at_once(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """Four units waiting for one download that fails: they fail at the same moment,
    before the run's cancellation reaches them, and the run raised a nested group of
    their UnitFailed errors, which ``except UnitFailed`` misses."""
    sha = hashlib.sha256(b"never served").hexdigest()
    gone = DeclarativeArtifact(http_server.url("/repo/gone-for-all"), "f.bin", {"sha256": sha})
    units = [DeclarativeUnit("pkg", (f"w{i}",), {}, [gone]) for i in range(4)]
    creator = triofetch.ContentUnitCreator(store, dl, fail_fast=True)
    for _ in range(3):
        with pytest.raises(triofetch.UnitFailed) as info:
            await creator.run(units, repository="r")
        assert isinstance(info.value.cause, triofetch.HTTPStatusError)
    assert await store.latest_version("r") is None


def slow_units(http_server: FaultServer, prefix: str) -> list[DeclarativeUnit]:
    """30 units of two files each, the second sent slowly (a run of them takes seconds):
    for the tests that cancel a run in its middle."""
    units = [
        multi_unit(
            http_server, f"{prefix}{i}", {"a": content(f"a{i}", 4000), "b": content(f"b{i}", 4000)}
        )
        for i in range(30)
    ]
    for i in range(30):
        http_server.add_faults(f"/multi/{prefix}{i}/b", [Slow(0.02, chunk=500)])
    return units


async def test_cancel_mid_run_closes_the_iteration_of_the_units(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """The run closed its slicing generator but not the one it reads (``aiter_units``):
    cancelled mid-run, that was garbage collected unfinished, a ResourceWarning (seen under
    ``python -X dev``, on Ctrl-C of ``triofetch sync`` or ``demo``)."""
    units = slow_units(http_server, "w")
    creator = triofetch.ContentUnitCreator(store, dl, slice_size=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with trio.move_on_after(0.25) as scope:
            await creator.run(units, repository="r")
        gc.collect()
    assert scope.cancelled_caught
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


async def test_cancel_mid_run_leaves_complete_or_absent(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = slow_units(http_server, "c")
    creator = triofetch.ContentUnitCreator(store, dl, slice_size=10)
    with trio.move_on_after(0.25) as scope:
        await creator.run(units, repository="r")
    assert scope.cancelled_caught
    state = await check_invariants(store, units, on_demand_ok=False)
    assert all(state.values())
    assert await store.latest_version("r") is None  # no version for a cancelled run
    # a re-run finishes the rest
    report = await triofetch.ContentUnitCreator(store, dl).run(units, repository="r")
    assert report.ok and report.units_new + report.units_existing == 30
    assert report.units_existing == len(state)
    assert report.version == 1


async def test_two_creators_race(http_server: FaultServer, store: Store) -> None:
    units = [file_unit(http_server, f"race{i}") for i in range(30)]
    reports = []
    async with triofetch.Downloader(connections=4) as d1, triofetch.Downloader(connections=4) as d2:

        async def go(d: triofetch.Downloader, part: list[DeclarativeUnit]) -> None:
            reports.append(await triofetch.ContentUnitCreator(store, d, slice_size=5).run(part))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go, d1, units)
            nursery.start_soon(go, d2, list(reversed(units)))
    assert all(r.ok for r in reports)
    assert sum(r.units_new for r in reports) == 30
    state = await check_invariants(store, units, on_demand_ok=False)
    assert len(state) == 30


async def test_progress_and_events(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = [file_unit(http_server, f"e{i}") for i in range(6)]
    units.append(file_unit(http_server, "bad", serve=False))
    events: list[triofetch.CreatorEvent] = []
    creator = triofetch.ContentUnitCreator(store, dl, on_event=events.append)
    report = await creator.run(units)
    kinds = [e.kind for e in events]
    assert kinds.count("seen") == 7
    assert kinds.count("committed") == 6
    assert kinds.count("failed") == 1
    assert kinds.count("artifact_downloaded") == 6
    p = creator.progress
    assert (p.units_seen, p.units_committed, p.units_failed) == (7, 6, 1)
    assert p.units_downloading == 0 and p.bytes_downloaded == report.bytes_downloaded


async def test_progress_taken_before_a_run_shows_the_run(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    """A task drawing ``creator.progress``, handed the object before the runs, sees each run
    (each run replaced the object: the task saw zeros throughout); a run started while
    another goes on counts apart, each report its own."""
    units = [file_unit(http_server, f"pb{i}") for i in range(4)]
    creator = triofetch.ContentUnitCreator(store, dl, policy="on_demand")
    progress = creator.progress
    seen: list[tuple[int, int]] = []

    def draw() -> None:
        seen.append((progress.units_committed, progress.units_existing))

    creator.on_event = lambda event: draw()
    await creator.run(units[:3])
    assert seen[-1] == (3, 0)
    await creator.run(units)  # counted from zero again
    assert seen[-1] == (1, 3) and creator.progress is progress
    report = await triofetch.ContentUnitCreator(store, dl).fill_missing()
    assert report.artifacts_downloaded == 4

    async def twice() -> list[triofetch.CreateReport]:
        reports: list[triofetch.CreateReport] = []

        async def one(part: list[DeclarativeUnit]) -> None:
            reports.append(await creator.run(part))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, units[:2])
            nursery.start_soon(one, units)
        return reports

    creator.on_event = None
    reports = await twice()
    assert sorted(r.units_existing for r in reports) == [2, 4]


async def test_a_downloader_not_open_is_wrong_context_not_failed_units(
    http_server: FaultServer, store: Store
) -> None:
    """Forgetting the downloader's ``async with`` raises at once, before the store is
    touched: every unit was tried and listed as failed, the version discarded."""
    units = [file_unit(http_server, f"no{i}") for i in range(3)]
    closed = triofetch.Downloader()
    assert not closed.is_open
    creator = triofetch.ContentUnitCreator(store, closed)
    with pytest.raises(triofetch.WrongContext, match="Downloader is not open"):
        await creator.run(units, repository="r")
    with pytest.raises(triofetch.WrongContext, match="Downloader is not open"):
        await creator.fill_missing()
    assert await store.repositories() == [] and file_requests(http_server) == 0
    # on demand downloads nothing: no downloader needed
    lazy = triofetch.ContentUnitCreator(store, closed, policy="on_demand")
    assert (await lazy.run(units, repository="r")).ok
    async with closed:
        assert closed.is_open
        assert (await creator.fill_missing()).artifacts_downloaded == 3
    assert not closed.is_open


@pytest.mark.parametrize(
    ("given", "says"),
    [("one", "got one unit: pass \\[unit\\]"), (None, "got NoneType"), ("abc", "got str")],
)
async def test_an_input_that_is_not_units_is_refused_before_anything(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader, given: object, says: str
) -> None:
    """One unit instead of a list (or no iterable at all) is InvalidInput at once: it was a
    bare TypeError from inside the run, after the repository was made."""
    if given == "one":
        given = file_unit(http_server, "single")
    creator = triofetch.ContentUnitCreator(store, dl)
    with pytest.raises(triofetch.InvalidInput, match=says):
        await creator.run(given, repository="r")  # type: ignore[arg-type]
    with pytest.raises(triofetch.InvalidInput, match=says):
        async with triofetch.UnitDownloader(dl) as ud:
            ud.download(given)  # type: ignore[arg-type]
    with pytest.raises(triofetch.InvalidInput, match=says):
        # (the blocking face, from a thread: inside Trio it is WrongContext first)
        await trio.to_thread.run_sync(triofetch.download_units, given)
    assert await store.repositories() == [] and file_requests(http_server) == 0


async def test_lazy_input_bounded_read_ahead(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    data = content("x", 100)
    http_server.add_file("/repo/x", data)
    sha = hashlib.sha256(data).hexdigest()
    pulled = 0
    peak_ahead = 0
    creator = triofetch.ContentUnitCreator(
        store, dl, slice_size=50, slices_in_flight=2, policy="on_demand"
    )

    def source() -> Iterator[DeclarativeUnit]:
        nonlocal pulled, peak_ahead
        for i in range(2000):
            pulled += 1
            done = creator.progress.units_committed + creator.progress.units_existing
            peak_ahead = max(peak_ahead, pulled - done)
            yield DeclarativeUnit(
                "file",
                (f"n{i}", sha),
                {"relative_path": f"n{i}"},
                [DeclarativeArtifact(http_server.url("/repo/x"), f"n{i}", {"sha256": sha}, 100)],
            )

    report = await creator.run(source())
    assert report.units_new == 2000
    # slices in flight + the slice being read + the commit queue
    assert peak_ahead <= 50 * 3 + creator.commit_batch


async def test_bad_arguments(store: Store, dl: triofetch.Downloader) -> None:
    with pytest.raises(triofetch.InvalidInput, match="policy"):
        triofetch.ContentUnitCreator(store, dl, policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(triofetch.InvalidInput, match="slice_size"):
        triofetch.ContentUnitCreator(store, dl, slice_size=0)
    creator = triofetch.ContentUnitCreator(store, dl)
    with pytest.raises(triofetch.InvalidInput, match="mirror"):
        await creator.run([], mirror=True)
    with pytest.raises(triofetch.InvalidInput, match="DeclarativeUnit"):
        await creator.run(["x"])  # type: ignore[list-item]


async def test_an_on_event_that_cannot_be_called_on_the_loop_is_refused(
    store: Store, dl: triofetch.Downloader
) -> None:
    """on_event=5 raised TypeError ('int' object is not callable) at the run's first
    event; an async callback (the natural thing to write in a Trio app) was called, made a
    coroutine never awaited, and saw no event at all.  Both are InvalidInput up front."""
    seen: list[triofetch.CreatorEvent] = []

    async def async_callback(event: triofetch.CreatorEvent) -> None:
        seen.append(event)  # pragma: no cover

    for bad in (5, async_callback):
        says = "on_event must be .*got " + re.escape(repr(bad))
        with pytest.raises(triofetch.InvalidInput, match=says):
            triofetch.ContentUnitCreator(store, dl, on_event=bad)  # type: ignore[arg-type]
    assert seen == []


async def test_empty_first_run_creates_an_empty_version(
    store: Store, dl: triofetch.Downloader
) -> None:
    report = await triofetch.ContentUnitCreator(store, dl).run([], repository="r")
    assert report.ok and report.units_total == 0
    # a brand-new repository and nothing in the input: version 1 holds that (empty) content
    assert report.version == 1 and report.latest_version == 1 and report.created
    again = await triofetch.ContentUnitCreator(store, dl).run([], repository="r")
    assert again.version == 1 and not again.created
    # without a repository there is no version at all
    bare = await triofetch.ContentUnitCreator(store, dl).run([])
    assert bare.version is None and not bare.created


def test_statuses_are_unit_keys() -> None:
    assert UnitKey("file", ("a", "b")) == ("file", ("a", "b"))


async def test_on_demand_without_sha256(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    http_server.add_file("/repo/nosha", b"abc")
    unit = DeclarativeUnit(
        "file",
        ("nosha",),
        {"relative_path": "nosha"},
        [DeclarativeArtifact(http_server.url("/repo/nosha"), "nosha")],
    )
    report = await triofetch.ContentUnitCreator(store, dl).run([unit])
    assert report.ok and report.artifacts_downloaded == 1
    info = (await store.find_units([unit.key]))[UnitKey(*unit.key)]
    record = info.artifacts["nosha"]
    assert record is not None and record.sha256 == hashlib.sha256(b"abc").hexdigest()


async def test_status_500_retried_inside_creator(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    unit = file_unit(http_server, "flaky", faults=[Status(500)])
    report = await triofetch.ContentUnitCreator(store, dl).run([unit])
    assert report.ok and report.units_new == 1


async def test_fill_missing_explicit_call(
    http_server: FaultServer, store: Store, dl: triofetch.Downloader
) -> None:
    units = [file_unit(http_server, f"fm{i}") for i in range(9)]
    shared = multi_unit(http_server, "both", {"x": content("fm0"), "y": content("extra")})
    other = [file_unit(http_server, "elsewhere")]
    lazy = triofetch.ContentUnitCreator(store, dl, policy="on_demand", slice_size=4)
    assert (await lazy.run([*units, shared], repository="r")).ok
    assert (await lazy.run(other, repository="other")).ok
    assert file_requests(http_server) == 0
    missing = await store.missing_artifacts("r")
    assert {m.relative_path for m in missing} == {f"fm{i}" for i in range(9)} | {"x", "y"}
    assert all(m.urls and m.size for m in missing)
    http_server.remove("/repo/fm3")  # this one is gone upstream

    creator = triofetch.ContentUnitCreator(store, dl, slice_size=4)
    report = await creator.fill_missing("r")
    assert report.units_failed == 1 and report.units_existing == 9
    assert [f.unit.natural_key[0] for f in report.failures] == ["fm3"]
    assert isinstance(report.failures[0].error, triofetch.UnitFailed)
    # fm0's bytes serve two units: downloaded once, then reused
    assert report.artifacts_downloaded + report.artifacts_reused == 10
    state = await check_invariants(store, [*units, shared, *other])
    assert state[UnitKey("file", units[3].natural_key)] is False
    assert state[UnitKey("file", other[0].natural_key)] is False  # another repository
    assert sum(state.values()) == 9
    # the rest of the store, repository or not
    http_server.add_file("/repo/fm3", content("fm3"))
    again = await creator.fill_missing()
    assert again.ok and again.units_existing == 2
    assert all((await check_invariants(store, [*units, shared, *other])).values())
    assert await store.missing_artifacts() == []
