"""The slice pipeline of one run: the input in slices, a nursery per unit, batched commits.

::

    run ─ parent nursery
     ├─ slice tasks (at most ``slices_in_flight``): dedupe, one query for the units present,
     │   one for the artifacts present, then a nursery per unit needing work
     │    └─ artifact tasks under the downloader's limiters → adopted into the storage
     └─ committer: complete units in batches → store.commit_units (shielded once started)

Owns the order and the concurrency of :meth:`ContentUnitCreator.run` between opening its
version and finishing it: reading the input lazily, slice by slice; dropping the units
whose key came earlier in the run; deciding what each unit needs (a place in the version,
a record of its remote files, downloads, or files for a stored unit); and committing the
complete units in batches, each made durable first.  A unit's downloads are
:mod:`._downloads`', filling a stored unit is :mod:`._fill`'s, the version itself
:mod:`._versions`'.  It must not open, complete or discard the version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing

import trio

from ..declarative import DeclarativeArtifact, DeclarativeUnit
from ..errors import InvalidInput, InvalidUnit, StorageWriteError, StoreError, UnitFailed
from ..storage import ArtifactStorage
from ..store import (
    ArtifactRecord,
    NewUnit,
    NewUnitArtifact,
    RemoteArtifact,
    Store,
    UnitInfo,
    UnitKey,
    VersionHandle,
)
from ..units import aiter_units
from ._downloads import UnitDownloads
from ._fill import fill_unit
from ._versions import place_stored

__all__ = ["SlicePipeline"]

#: a WARNING for each stored file repaired (see docs/downloader.rst, "Logging")
_log = logging.getLogger("triofetch.creator")

#: unit keys a run remembers to find duplicates, in two generations of this many each (a
#: hash of the key → one of the content), so that the memory of a run stays bounded by its
#: slices however long the input is (the "stream" benchmark checks it)
_KEYS_REMEMBERED = 8192
_COMMIT_GATHER = 0.05  # seconds the committer waits for more complete units

#: a complete unit on its way to the committer
_Complete = tuple[DeclarativeUnit, NewUnit]


class SlicePipeline:
    """One run's units, from the input to the store (see the module's diagram)."""

    def __init__(
        self,
        store: Store,
        storage: ArtifactStorage,
        downloads: UnitDownloads,
        version: VersionHandle | None,
        *,
        immediate: bool,
        streamed: bool = False,
        slice_size: int,
        slices_in_flight: int,
        commit_batch: int,
    ) -> None:
        self.store = store
        self.storage = storage
        self.downloads = downloads
        self.tally = downloads.tally
        self.version = version
        self.immediate = immediate
        #: units recorded without their files are marked streamed (never stored when served)
        self.streamed = streamed
        self.slice_size = slice_size
        self.slices_in_flight = slices_in_flight
        self.commit_batch = commit_batch

    async def run(self, units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit]) -> None:
        """Every unit of *units* committed, placed in the version, or recorded as failed.

        Raises:
            StorageWriteError: the run stopped on a full disk (or too many open files),
                after the committer committed every unit that was complete.
        """
        seen: tuple[dict[int, int], dict[int, int]] = ({}, {})
        send, receive = trio.open_memory_channel[_Complete](self.commit_batch)
        slice_slots = trio.Semaphore(self.slices_in_flight)
        downloads = self.downloads
        async with trio.open_nursery() as parent:
            parent.start_soon(self._committer, receive)
            async with (
                send,
                trio.open_nursery() as slices,
                # both generators closed (the inner one, left suspended by the outer's close,
                # was garbage collected unfinished: a ResourceWarning once cancelled)
                aclosing(aiter_units(units)) as checked,
                aclosing(_slices(checked, self.slice_size)) as chunks,
            ):
                async for chunk in chunks:
                    chunk = self._distinct(chunk, seen)
                    if not chunk:
                        continue
                    await slice_slots.acquire()
                    if downloads.stopped is not None:  # a full disk: read no further
                        break
                    slices.start_soon(self._slice, chunk, send.clone(), slice_slots)
        # raised here, after the committer committed every unit that was complete
        if downloads.stopped is not None:
            raise downloads.stopped

    def _distinct(
        self, chunk: list[DeclarativeUnit], seen: tuple[dict[int, int], dict[int, int]]
    ) -> list[DeclarativeUnit]:
        """*chunk* without the units whose key came earlier in the run: the same content
        again counts once (seen, not reported); other content under a key already given is
        a failure (:class:`InvalidUnit`), never silently dropped.  *seen* remembers the keys
        (hashes of key → content) of at least the last ``_KEYS_REMEMBERED`` units."""
        recent, older = seen
        kept: list[DeclarativeUnit] = []
        tally = self.tally
        for unit in chunk:
            key = hash(unit.key)
            content = _content_hash(unit)
            first = recent.get(key)
            if first is None:
                first = older.get(key)
            if first is None:
                if len(recent) >= _KEYS_REMEMBERED:
                    older.clear()
                    older.update(recent)
                    recent.clear()
                recent[key] = content
                kept.append(unit)
                continue
            tally.progress.units_seen += 1
            tally.event("seen", unit)
            if first != content:
                error = InvalidUnit(
                    f"unit {unit.type} {list(unit.natural_key)!r} is given twice in one run "
                    "with different artifacts or fields: the first is kept"
                )
                tally.fail(unit, UnitFailed((unit.type, unit.natural_key), error))
        return kept

    async def _slice(
        self,
        chunk: list[DeclarativeUnit],
        send: trio.MemorySendChannel[_Complete],
        slice_slots: trio.Semaphore,
    ) -> None:
        try:
            with send:  # (not "async with": its checkpoint could swallow the error)
                await self._process_slice(chunk, send)
        finally:
            slice_slots.release()

    async def _process_slice(
        self, chunk: list[DeclarativeUnit], send: trio.MemorySendChannel[_Complete]
    ) -> None:
        tally = self.tally
        progress = tally.progress
        unique: dict[tuple[str, tuple[str, ...]], DeclarativeUnit] = {}
        for unit in chunk:
            progress.units_seen += 1
            tally.event("seen", unit)
            unique.setdefault(unit.key, unit)
        existing = await self.store.find_units(UnitKey(*k) for k in unique)
        immediate = self.immediate
        wanted: set[str] = set()
        for key, unit in unique.items():
            info = existing.get(UnitKey(*key))
            paths = None if info is None else set(info.missing)
            for art in unit.artifacts:
                if art.sha256 and (paths is None or art.relative_path in paths):
                    wanted.add(art.sha256)
        present = await self.store.find_artifacts(sorted(wanted)) if wanted else {}
        damaged: set[str] = set()
        if immediate and existing:
            # units found complete must really have their files: one stat each (no hashing)
            damaged = await self.storage.damaged(
                {
                    rec.sha256: rec.size
                    for info in existing.values()
                    for rec in info.artifacts.values()
                    if rec is not None
                }
            )
        stored: list[tuple[DeclarativeUnit, int]] = []
        records: list[_Complete] = []
        downloads = self.downloads
        async with trio.open_nursery() as nursery:
            for key, unit in unique.items():
                info = existing.get(UnitKey(*key))
                repair: frozenset[str] = frozenset()
                if info is not None and damaged:
                    repair = frozenset(
                        path
                        for path, rec in info.artifacts.items()
                        if rec is not None and rec.sha256 in damaged
                    )
                if info is not None and not repair and (info.complete or not immediate):
                    stored.append((unit, info.id))
                    continue
                if info is None and not immediate:
                    # nothing to download: the slice commits these itself, in one batch
                    try:
                        records.append((unit, _on_demand_unit(unit, present, self.streamed)))
                    except InvalidInput as exc:  # this unit only: the others go on
                        tally.fail(unit, UnitFailed((unit.type, unit.natural_key), exc))
                    continue
                if not await downloads.admit():  # a full disk: no new download
                    break
                if info is None:
                    nursery.start_soon(self._new_unit, unit, present, send)
                else:
                    nursery.start_soon(self._stored_unit, unit, info, present, repair)
            if downloads.stopped is not None:
                return  # no version will be made: placing the units present is moot
            for start in range(0, len(records), self.commit_batch):
                await self._commit(records[start : start + self.commit_batch])
            await place_stored(self.store, tally, stored, self.version)

    async def _new_unit(
        self,
        unit: DeclarativeUnit,
        present: dict[str, ArtifactRecord],
        send: trio.MemorySendChannel[_Complete],
    ) -> None:
        """A unit not in the store: every file, then to the committer."""
        records = await self.downloads.download(unit, unit.artifacts, present)
        if records is None:
            return
        try:
            new = NewUnit(
                unit.type,
                unit.natural_key,
                unit.fields,
                tuple(
                    NewUnitArtifact(a.relative_path, records[a.relative_path], _remote(a))
                    for a in unit.artifacts
                ),
            )
        except InvalidInput as exc:  # e.g. the bytes have another digest than the remote says
            self.tally.fail(unit, UnitFailed((unit.type, unit.natural_key), exc))
            return
        await send.send((unit, new))

    async def _stored_unit(
        self,
        unit: DeclarativeUnit,
        info: UnitInfo,
        present: dict[str, ArtifactRecord],
        repair: frozenset[str],
    ) -> None:
        """A unit in the store that lacks files: those it lacks (on-demand) and the paths in
        *repair* (stored files found missing or damaged, downloaded again whatever is
        recorded), then attached to it."""
        wanted = set(info.missing) | repair
        todo = tuple(a for a in unit.artifacts if a.relative_path in wanted)
        records = await self.downloads.download(unit, todo, present, repair)
        if records is None:
            return
        repaired = [p for p in records if p in repair]
        if repaired:
            self.tally.progress.artifacts_repaired += len(repaired)
            for path in repaired:
                _log.warning(
                    "repaired %r of %s %r: the stored file was missing or damaged, "
                    "downloaded again",
                    path,
                    unit.type,
                    unit.natural_key,
                )
        await fill_unit(
            self.store, self.storage, self.downloads, unit, info.id, records, self.version
        )

    async def _committer(self, receive: trio.MemoryReceiveChannel[_Complete]) -> None:
        """Commit complete units in batches: whatever is waiting, up to commit_batch."""
        async with receive:
            async for first in receive:
                batch = [first]
                # gather what arrives within a moment: one transaction (and one sync of the
                # storage) for many units, at the cost of a little latency
                with trio.move_on_after(_COMMIT_GATHER):
                    while len(batch) < self.commit_batch:
                        try:
                            batch.append(await receive.receive())
                        except trio.EndOfChannel:
                            break
                try:
                    await self._commit(batch)
                except StoreError as exc:
                    # A run stopping on a full disk still commits the units complete; the
                    # database may be on that disk too: then its transaction rolled back
                    # (these units are absent) and the disk error, raised by run, says so.
                    # (Files that could not be synced are not the database's error.)
                    stopped = self.downloads.stopped
                    if stopped is None:
                        raise
                    if not isinstance(exc, StorageWriteError) and stopped.database_error is None:
                        stopped.database_error = exc

    async def _commit(self, batch: list[_Complete]) -> None:
        try:
            await self.storage.sync()  # every file these units refer to is durable first
        except OSError as exc:
            if not StorageWriteError.matches(exc):
                raise
            # the files cannot be made durable (EIO...): nothing may refer to them
            raise await self.downloads.stop_on(exc, self.storage.artifacts_dir) from exc
        report = await self.store.commit_units([new for _, new in batch], version=self.version)
        tally = self.tally
        tally.took_places(report.replaced)
        progress = tally.progress
        for (unit, _), outcome in zip(batch, report.outcomes, strict=True):
            if outcome.status == "committed":
                progress.units_committed += 1
                tally.event("committed", unit)
            elif outcome.status == "existing":
                progress.units_existing += 1
                tally.event("existing", unit)
            else:
                assert outcome.error is not None
                tally.fail(unit, UnitFailed((unit.type, unit.natural_key), outcome.error))


def _on_demand_unit(
    unit: DeclarativeUnit, present: dict[str, ArtifactRecord], streamed: bool = False
) -> NewUnit:
    """A new unit recorded with its remote files (marked *streamed* for the ``streamed``
    policy), and the stored ones *present* knows."""
    return NewUnit(
        unit.type,
        unit.natural_key,
        unit.fields,
        tuple(
            NewUnitArtifact(
                art.relative_path,
                present.get(art.sha256) if art.sha256 else None,
                _remote(art, streamed),
            )
            for art in unit.artifacts
        ),
    )


def _remote(art: DeclarativeArtifact, streamed: bool = False) -> RemoteArtifact:
    return RemoteArtifact(tuple(dict.fromkeys(art.urls)), art.size, dict(art.digests), streamed)


def _content_hash(unit: DeclarativeUnit) -> int:
    """A hash of what a unit holds besides its key: its fields, and each artifact's path,
    size and digests (not its URLs: the same file from elsewhere is the same content)."""
    try:
        fields = hash(tuple(sorted(unit.fields.items())))
    except TypeError:  # a list or a dict among the values
        fields = hash(json.dumps(unit.fields, sort_keys=True))
    arts = sorted((a.relative_path, a.size, *sorted(a.digests.items())) for a in unit.artifacts)
    return hash((fields, *arts))


async def _slices(
    units: AsyncIterator[DeclarativeUnit], size: int
) -> AsyncGenerator[list[DeclarativeUnit]]:
    chunk: list[DeclarativeUnit] = []
    async for unit in units:
        chunk.append(unit)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
