"""Giving stored units the files they lack: ``fill_missing``, and one unit at a time.

Owns attaching downloaded files to units already in the store (a unit created
``on_demand``, or one whose stored file was found missing or damaged): all of a unit's
files or none, then the unit placed in the run's version (:func:`fill_unit`); and
:func:`fill_missing`'s walk over the files the store records as missing, a page of units
at a time, building each unit from its recorded remote artifacts.  The downloads go
through :class:`._downloads.UnitDownloads`; it must not read an input, commit new units or
make a version.
"""

from __future__ import annotations

import trio

from .._groups import collapse_single
from ..declarative import DeclarativeArtifact, DeclarativeUnit
from ..errors import InvalidUnit, StorageWriteError, StoreError, TriofetchError, UnitFailed
from ..storage import ArtifactStorage
from ..store import ArtifactRecord, MissingArtifact, Store, VersionHandle
from ._downloads import UnitDownloads
from ._versions import place_stored

__all__ = ["fill_missing", "fill_unit"]


async def fill_unit(
    store: Store,
    storage: ArtifactStorage,
    downloads: UnitDownloads,
    unit: DeclarativeUnit,
    unit_id: int,
    records: dict[str, ArtifactRecord],
    version: VersionHandle | None,
) -> None:
    """Give the stored unit *unit_id* the files *records* (by relative path), made durable
    first, and place it in *version*; a store error fails this unit only, an OSError that
    stops a run (:meth:`StorageWriteError.matches`) stops it (the unit stays as it was)."""
    try:
        await storage.sync()
    except OSError as exc:
        if not StorageWriteError.matches(exc):
            raise
        await downloads.stop_on(exc, storage.artifacts_dir)  # not this unit's fault
        return
    try:
        await store.fill_artifacts({unit_id: records})
    except StoreError as exc:
        downloads.tally.fail(unit, UnitFailed((unit.type, unit.natural_key), exc))
        return
    # membership: one statement for this unit (a rare path: on-demand then immediate, or a
    # repaired file)
    await place_stored(store, downloads.tally, [(unit, unit_id)], version)


async def fill_missing(
    store: Store,
    storage: ArtifactStorage,
    downloads: UnitDownloads,
    repository: str | None,
    version_number: int | None,
    page_size: int,
) -> None:
    """Download and attach every file the store records as missing (see
    :meth:`ContentUnitCreator.fill_missing`), *page_size* units at a time.

    Raises:
        StorageWriteError: the disk filled (or too many open files); the units filled by
            then stay filled.
    """
    tally = downloads.tally
    after = 0
    with collapse_single():
        while True:
            missing = await store.missing_artifacts(
                repository, version_number, after_id=after, limit=page_size
            )
            if not missing:
                break
            after = max(m.unit_id for m in missing)
            by_unit: dict[int, list[MissingArtifact]] = {}
            for item in missing:
                by_unit.setdefault(item.unit_id, []).append(item)
            shas = sorted({m.digests["sha256"] for m in missing if "sha256" in m.digests})
            present = await store.find_artifacts(shas) if shas else {}
            async with trio.open_nursery() as nursery:
                for uid, items in by_unit.items():
                    tally.progress.units_seen += 1
                    unit = _unit_of(items)
                    if isinstance(unit, BaseException):
                        tally.fail(
                            DeclarativeUnit(items[0].key.type, items[0].key.natural_key), unit
                        )
                        continue
                    if not await downloads.admit():  # a full disk: no new download
                        break
                    nursery.start_soon(_fill_one, store, storage, downloads, unit, uid, present)
            if downloads.stopped is not None:
                raise downloads.stopped


async def _fill_one(
    store: Store,
    storage: ArtifactStorage,
    downloads: UnitDownloads,
    unit: DeclarativeUnit,
    unit_id: int,
    present: dict[str, ArtifactRecord],
) -> None:
    records = await downloads.download(unit, unit.artifacts, present)
    if records is not None:
        await fill_unit(store, storage, downloads, unit, unit_id, records, None)


def _unit_of(items: list[MissingArtifact]) -> DeclarativeUnit | BaseException:
    """A declarative unit holding the missing files of one stored unit."""
    try:
        arts = []
        for m in items:
            if not m.urls:
                raise InvalidUnit(f"{m.relative_path!r}: no remote artifact was recorded")
            arts.append(DeclarativeArtifact(m.urls, m.relative_path, m.digests, m.size))
        return DeclarativeUnit(items[0].key.type, items[0].key.natural_key, {}, arts)
    except TriofetchError as exc:
        return exc
