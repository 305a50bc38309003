"""The content unit downloader: nursery per unit, all files or a reported failure."""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio

import triofetch
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.testing import FaultServer, Slow, Status, WrongBytes


def blob(i: int, size: int = 3000) -> bytes:
    return hashlib.sha512(str(i).encode()).digest() * (size // 64 + 1)


def make_units(
    server: FaultServer,
    n: int,
    per_unit: int = 3,
    faults: dict[tuple[int, int], list[object]] | None = None,
) -> list[DeclarativeUnit]:
    units = []
    for u in range(n):
        arts = []
        for a in range(per_unit):
            data = blob(u * 100 + a)[: 2000 + a]
            path = f"/u{u}/f{a}.bin"
            server.add_file(path, data, faults=(faults or {}).get((u, a), []))
            arts.append(
                DeclarativeArtifact(
                    server.url(path),
                    f"f{a}.bin",
                    {"sha256": hashlib.sha256(data).hexdigest()},
                    len(data),
                )
            )
        units.append(DeclarativeUnit("file", (f"u{u}",), {"n": u}, arts))
    return units


def names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


async def test_all_units_complete(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 10)
    seen = []
    async with triofetch.Downloader(temp_dir=temp_dir) as dl, triofetch.UnitDownloader(dl) as ud:
        async for done in ud.download(units):
            assert isinstance(done, triofetch.DownloadedUnit)
            assert set(done.results) == {"f0.bin", "f1.bin", "f2.bin"}
            for art in done.unit.artifacts:
                result = done.results[art.relative_path]
                assert result.sha256 == art.sha256
                assert result.path.exists()
            seen.append(done.unit.natural_key)
            done.discard()
    assert sorted(seen) == sorted(u.natural_key for u in units)
    assert names(temp_dir) == set()


async def test_a_downloader_not_open_is_wrong_context(
    http_server: FaultServer, temp_dir: Path
) -> None:
    """Every unit came out failed with the same WrongContext, one after the other."""
    units = make_units(http_server, 3)
    async with triofetch.UnitDownloader(triofetch.Downloader(temp_dir=temp_dir)) as ud:
        with pytest.raises(triofetch.WrongContext, match="Downloader is not open"):
            ud.download(units)
    assert len(http_server.requests) == 0


async def test_entering_an_open_unit_downloader_again_is_wrong_context(
    http_server: FaultServer, temp_dir: Path
) -> None:
    """A second ``async with`` on an open UnitDownloader raised a bare AssertionError and
    left the first one's nursery misnested: Trio's "Nursery misnesting detected!" and
    stray cancellations of the caller's run followed.  It is WrongContext, as for the
    Downloader, and the first block goes on; once closed, it may be entered again."""
    units = make_units(http_server, 2)
    async with triofetch.Downloader(temp_dir=temp_dir) as dl:
        ud = triofetch.UnitDownloader(dl)
        async with ud:
            with pytest.raises(triofetch.WrongContext, match="already open"):
                async with ud:
                    pass  # pragma: no cover
            assert len([done async for done in ud.download(units) if done.ok]) == 2
        async with ud:  # closed: a new block
            assert len([done async for done in ud.download(units) if done.ok]) == 2
        await trio.lowlevel.checkpoint()  # (no stray cancellation left behind)


async def test_failed_artifact_cancels_siblings_and_reports(
    http_server: FaultServer, temp_dir: Path
) -> None:
    # unit 1: f0 is slow, f1 is corrupt -> f0 must be cancelled, not waited for
    units = make_units(
        http_server,
        3,
        faults={
            (1, 0): [Slow(0.5, chunk=100)] * 5,
            (1, 1): [WrongBytes()] * 5,
        },
    )
    outcomes: dict[tuple[str, ...], triofetch.UnitOutcome] = {}
    start = trio.current_time()
    async with (
        triofetch.Downloader(temp_dir=temp_dir, retries=1, backoff=0.01) as dl,
        triofetch.UnitDownloader(dl) as ud,
    ):
        async for done in ud.download(units):
            outcomes[done.unit.natural_key] = done
            if done.ok:
                done.discard()
            else:
                assert names(temp_dir) == set() or all(
                    n for n in names(temp_dir)
                )  # other units may be downloading
    assert trio.current_time() - start < 3.0
    failed = outcomes[("u1",)]
    assert isinstance(failed, triofetch.FailedUnit)
    assert isinstance(failed.error, triofetch.UnitFailed)
    assert isinstance(failed.error.cause, triofetch.DigestMismatch)
    assert "u1" in str(failed.error) and "sha256 mismatch" in str(failed.error)
    assert outcomes[("u0",)].ok and outcomes[("u2",)].ok
    assert names(temp_dir) == set()


async def test_fail_fast(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 8, faults={(0, 0): [Status(404)]})
    async with (
        triofetch.Downloader(temp_dir=temp_dir, connections=2) as dl,
        triofetch.UnitDownloader(dl, fail_fast=True) as ud,
    ):
        with pytest.raises(triofetch.UnitFailed) as info:
            async for done in ud.download(units):
                done.discard()
    assert isinstance(info.value.cause, triofetch.HTTPStatusError)
    assert names(temp_dir) == set()


async def test_async_iterable_input_is_lazy(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 50, per_unit=1)
    pulled = 0

    async def source() -> AsyncIterator[DeclarativeUnit]:
        nonlocal pulled
        for unit in units:
            pulled += 1
            yield unit

    async with (
        triofetch.Downloader(temp_dir=temp_dir, connections=2) as dl,
        triofetch.UnitDownloader(dl, units_in_flight=3, buffer=2) as ud,
    ):
        stream = ud.download(source())
        first = await stream.__anext__()
        first.discard()
        await trio.sleep(0.2)
        # in flight (3) + buffered (2) + the one received + one waiting for a slot
        assert pulled <= 3 + 2 + 1 + 1
        count = 1
        async for done in stream:
            done.discard()
            count += 1
    assert count == 50 and pulled == 50


async def test_leaving_early_leaves_no_temp_files(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 30, faults={(u, 0): [Slow(0.02, chunk=200)] for u in range(30)})
    async with triofetch.Downloader(temp_dir=temp_dir) as dl, triofetch.UnitDownloader(dl) as ud:
        async for done in ud.download(units):
            done.discard()
            break
    assert names(temp_dir) == set()


async def test_cancellation_leaves_no_temp_files(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 20, faults={(u, 1): [Slow(0.05, chunk=100)] for u in range(20)})
    with trio.move_on_after(0.3):
        async with (
            triofetch.Downloader(temp_dir=temp_dir) as dl,
            triofetch.UnitDownloader(dl) as ud,
        ):
            async for done in ud.download(units):
                done.discard()
    assert names(temp_dir) == set()


async def test_unit_without_artifacts(temp_dir: Path) -> None:
    unit = DeclarativeUnit("meta", ("x",), {"a": 1})
    async with triofetch.Downloader(temp_dir=temp_dir) as dl, triofetch.UnitDownloader(dl) as ud:
        got = [d async for d in ud.download([unit])]
    assert len(got) == 1 and got[0].ok and got[0].results == {}  # type: ignore[union-attr]


def test_sync_face(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 12, faults={(3, 2): [Status(404)]})
    ok, failed = [], []
    for done in triofetch.download_units(units, temp_dir=temp_dir, retries=0):
        if done.ok:
            ok.append(done.unit.natural_key)
            done.discard()
        else:
            failed.append(done)
    assert len(ok) == 11
    assert [f.unit.natural_key for f in failed] == [("u3",)]
    assert names(temp_dir) == set()


def test_sync_face_break_cancels_everything(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 40, faults={(u, 0): [Slow(0.02, chunk=300)] for u in range(40)})

    def lazy() -> Iterator[DeclarativeUnit]:
        yield from units

    it = triofetch.download_units(lazy(), temp_dir=temp_dir, buffer=2)
    for done in it:
        done.discard()
        break
    del it
    gc.collect()
    assert names(temp_dir) == set()
    assert sum(http_server.count(f"/u{u}/f0.bin") for u in range(40)) < 40


def test_sync_face_exception_in_body(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 20)
    gen = triofetch.download_units(units, temp_dir=temp_dir, buffer=4)
    with pytest.raises(ZeroDivisionError):
        for done in gen:
            done.discard()
            1 / 0  # noqa: B018
    gen.close()
    assert names(temp_dir) == set()


def test_sync_face_fail_fast(http_server: FaultServer, temp_dir: Path) -> None:
    units = make_units(http_server, 6, faults={(2, 1): [WrongBytes()]})
    with pytest.raises(triofetch.UnitFailed):
        for done in triofetch.download_units(
            units, temp_dir=temp_dir, retries=0, fail_fast=True, connections=1
        ):
            done.discard()
    assert names(temp_dir) == set()


def test_sync_face_bad_options() -> None:
    with pytest.raises(triofetch.InvalidInput):
        triofetch.download_units([], connections=-1)


def test_bad_items(http_server: FaultServer, temp_dir: Path) -> None:
    with pytest.raises(triofetch.InvalidInput, match="DeclarativeUnit"):
        for _ in triofetch.download_units(["nope"], temp_dir=temp_dir):  # type: ignore[list-item]
            pass


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("a/../../b", "'..'"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("", "non-empty"),
    ],
)
def test_unsafe_paths_rejected(path: str, reason: str) -> None:
    with pytest.raises(triofetch.InvalidUnit, match=reason):
        DeclarativeArtifact("http://127.0.0.1/x", path)


def test_declarative_validation() -> None:
    a = DeclarativeArtifact("http://127.0.0.1/x", "x")
    with pytest.raises(triofetch.InvalidUnit, match="two artifacts"):
        DeclarativeUnit("file", ("k",), artifacts=[a, a])
    with pytest.raises(triofetch.UnsupportedAlgorithm):
        DeclarativeArtifact("http://127.0.0.1/x", "x", {"sha257": "00"})
    with pytest.raises(triofetch.InvalidDigest):
        DeclarativeArtifact("http://127.0.0.1/x", "x", {"sha256": "00"})
    with pytest.raises(triofetch.InvalidUnit, match="JSON"):
        DeclarativeUnit("file", ("k",), {"x": object()})
    with pytest.raises(triofetch.InvalidUnit, match="strings"):
        DeclarativeUnit("file", (1,))  # type: ignore[arg-type]
    with pytest.raises(triofetch.InvalidUnit, match="size"):
        DeclarativeArtifact("http://127.0.0.1/x", "x", size=-1)
    assert os.sep == "/"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DeclarativeUnit("x", ("a",), [1]), r"fields must be a mapping.*got \[1\]"),
        (lambda: DeclarativeUnit("x", ("a",), "f"), r"fields must be a mapping.*got 'f'"),
        (lambda: DeclarativeUnit("x", 5), r"natural key is a str or a sequence of str, got 5"),
        (
            lambda: DeclarativeUnit("x", ("a",), artifacts=DeclarativeArtifact("u", "p")),
            r"artifacts must be DeclarativeArtifacts, got DeclarativeArtifact\(",
        ),
        (lambda: DeclarativeArtifact(5, "a"), r"at least one URL: a str or a sequence.*got 5"),
        (lambda: DeclarativeArtifact(None, "a"), r"at least one URL.*got None"),
    ],
)
def test_declarations_of_the_wrong_type_are_invalid_units(
    make: Callable[[], object], match: str
) -> None:
    """A bare TypeError escaped (``dict([1])``, ``tuple(5)``) before."""
    with pytest.raises(triofetch.InvalidUnit, match=match):
        make()


class _BadInput(Exception):
    pass


def test_an_error_of_the_input_always_reaches_the_caller(tmp_path: Path) -> None:
    """An async input that raises after a few units: the error leaves the UnitDownloader's
    block every time.  (It was lost in about half the runs: the producer's send channel was
    closed with ``async with``, whose checkpoint raised Cancelled over the error, and the
    cancellation was absorbed by the downloader's own scope.)"""

    def unit(i: int) -> DeclarativeUnit:
        art = DeclarativeArtifact((tmp_path / f"none-{i}").as_uri(), f"f{i}")
        return DeclarativeUnit("file", (f"f{i}",), {"relative_path": f"f{i}"}, [art])

    async def source() -> AsyncIterator[DeclarativeUnit]:
        for i in range(3):
            yield unit(i)
            await trio.lowlevel.checkpoint()
        raise _BadInput("the input broke")

    async def main() -> None:
        async with (
            triofetch.Downloader(temp_dir=tmp_path) as dl,
            triofetch.UnitDownloader(dl) as units,
        ):
            async for _ in units.download(source()):
                pass

    for _ in range(40):
        with pytest.RaisesGroup(_BadInput, allow_unwrapped=True, flatten_subgroups=True):
            trio.run(main)
