"""Testing your own unit type: two creators race on one store under random faults and
cancellations, and the store stays clean.

A pytest test file.  The ``triofetch_fault_server_session`` fixture comes from triofetch's
pytest plugin (installed with triofetch), the strategies from
:mod:`triofetch.testing.strategies` (install Hypothesis).  Run it with
``pytest docs/examples/testing_racing_creators.py``, or ``python`` on this file.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from hypothesis import event, given, settings, strategies as st

import triofetch
from triofetch.testing import CancelPoint, Fault, FaultServer, check_store, strategies

# -- the application's own unit type ------------------------------------------------------


@dataclass(frozen=True)
class Album:
    """What the application downloads: an album, its tracks, and a cover that albums of
    one artist share (one artifact, stored once)."""

    artist: str
    title: str
    cover: bytes
    tracks: tuple[bytes, ...]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declare(album: Album, url_of: Callable[[bytes], str]) -> triofetch.DeclarativeUnit:
    """An album as a triofetch unit of type ``album``, keyed by artist and title."""
    files = {"cover.jpg": album.cover}
    files.update({f"tracks/{n:02}.flac": data for n, data in enumerate(album.tracks, 1)})
    return triofetch.DeclarativeUnit(
        "album",
        (album.artist, album.title),
        {"tracks": len(album.tracks)},
        [
            triofetch.DeclarativeArtifact(url_of(data), path, {"sha256": sha256(data)}, len(data))
            for path, data in files.items()
        ],
    )


# -- what Hypothesis draws ----------------------------------------------------------------


@st.composite
def albums(draw: st.DrawFn) -> list[Album]:
    """Two to six albums of two artists; an artist's albums share a cover, tracks repeat."""
    covers = {a: draw(strategies.contents(min_size=1, max_size=512)) for a in ("ana", "bo")}
    tracks = draw(st.lists(strategies.contents(min_size=1, max_size=4096), min_size=1, max_size=4))
    drawn = draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(covers)),
                st.sampled_from(["one", "two", "three"]),
                st.lists(st.sampled_from(tracks), max_size=3),
            ),
            min_size=2,
            max_size=6,
            unique_by=lambda t: (t[0], t[1]),  # a key always means the same files
        )
    )
    return [Album(artist, title, covers[artist], tuple(t)) for artist, title, t in drawn]


def serve(
    server: FaultServer, prefix: str, albums: list[Album], faults: Mapping[int, list[Fault]]
) -> list[triofetch.DeclarativeUnit]:
    """Serve every distinct file once under ``/<prefix>/``; the i-th file after the faults
    ``faults[i]``."""
    contents = sorted({data for album in albums for data in (album.cover, *album.tracks)})
    for index, data in enumerate(contents):
        server.add_file(f"/{prefix}/{sha256(data)}", data, faults=faults.get(index, []))
    return [
        declare(album, lambda data: server.url(f"/{prefix}/{sha256(data)}")) for album in albums
    ]


# -- the run under test -------------------------------------------------------------------


async def create(
    root: Path, units: Sequence[triofetch.DeclarativeUnit], cancel: CancelPoint | None
) -> triofetch.CreateReport | None:
    """One worker: its own store object on the shared root, its own downloader; None when
    the cancellation landed."""
    async with (
        triofetch.open_store(root=root) as store,
        triofetch.Downloader(connections=4, retries=2, backoff=0.001) as downloader,
    ):
        scope = trio.CancelScope()
        creator = triofetch.ContentUnitCreator(
            store,
            downloader,
            slice_size=2,
            on_event=cancel.watch(scope) if cancel is not None else None,
        )
        with scope:
            return await creator.run(units, repository="music")
        return None


_examples = itertools.count()


@settings(max_examples=20, deadline=None)
@given(
    albums=albums(),
    faults=strategies.fault_maps(pool=6, max_size=3),
    cancel=strategies.cancel_points(
        kinds=["downloading", "artifact_downloaded", "committed"], max_nth=3, none=False
    ),
)
def test_racing_creators_leave_every_album_complete_or_absent(
    triofetch_fault_server_session: FaultServer,
    albums: list[Album],
    faults: dict[int, list[Fault]],
    cancel: CancelPoint,
) -> None:
    server = triofetch_fault_server_session
    units = serve(server, f"example{next(_examples)}", albums, faults)
    first, second = units[: len(units) * 2 // 3], units[len(units) // 3 :]

    async def race(root: Path) -> None:
        reports: dict[str, triofetch.CreateReport | None] = {}

        async def worker(
            name: str, part: list[triofetch.DeclarativeUnit], point: CancelPoint | None
        ) -> None:
            reports[name] = await create(root, part, point)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "first", first, cancel)  # maybe cancelled
            nursery.start_soon(worker, "second", second, None)

        async with triofetch.open_store(root=root) as store:
            # complete or absent, files whole, no temp file, versions consistent
            assert await check_store(store, units=units) == []
            present = await store.find_units([u.key for u in units])
            for name, part in (("first", first), ("second", second)):
                report = reports[name]
                outcome = "cancelled" if report is None else "ok" if report.ok else "failures"
                event(f"{name} run: {outcome}")  # pytest --hypothesis-show-statistics
                if report is not None and report.ok:  # a run that succeeded left it all
                    assert {triofetch.UnitKey(*u.key) for u in part} <= set(present)

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(race, Path(tmp))


if __name__ == "__main__":
    # run as a script, this file imports pytest plugins' packages (triofetch) before
    # pytest starts, which pytest warns about: harmless, and `pytest <file>` does not
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    raise SystemExit(pytest.main([__file__, "-q", *quiet]))
