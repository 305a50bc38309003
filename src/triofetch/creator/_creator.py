"""The content unit creator: slices, a nursery per unit, every unit complete or absent.

::

    creator run ─ parent nursery
     ├─ slice tasks (at most ``slices_in_flight``): dedupe, one query for the units present,
     │   one for the artifacts present, then a nursery per unit needing work
     │    └─ artifact tasks under the downloader's limiters → adopted into the storage
     └─ committer: complete units in batches → store.commit_units (shielded once started)
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import trio

from .._groups import collapse_single, first_error
from ..declarative import DeclarativeArtifact, DeclarativeUnit
from ..downloader import Downloader
from ..errors import (
    DownloadError,
    InvalidInput,
    InvalidUnit,
    StorageWriteError,
    StoreError,
    TriofetchError,
    UnitFailed,
)
from ..store import (
    ArtifactRecord,
    MissingArtifact,
    NewUnit,
    NewUnitArtifact,
    RemoteArtifact,
    ReplacedUnit,
    Store,
    UnitInfo,
    UnitKey,
    VersionHandle,
)
from ..units import aiter_units

__all__ = [
    "ContentUnitCreator",
    "CreateReport",
    "CreatorEvent",
    "CreatorProgress",
    "Policy",
    "UnitFailure",
]


class Policy(StrEnum):
    """When artifacts are downloaded."""

    #: download every missing artifact now; a unit is committed with all of its files
    IMMEDIATE = "immediate"
    #: record units and where their files can be fetched (remote artifacts); download nothing
    ON_DEMAND = "on_demand"


@dataclass
class CreatorProgress:
    """Live counters of a run; read them at any time (e.g. to draw progress bars)."""

    units_seen: int = 0
    units_existing: int = 0
    units_downloading: int = 0
    units_committed: int = 0
    units_failed: int = 0
    artifacts_downloaded: int = 0
    artifacts_reused: int = 0
    #: stored files found missing or of the wrong size, downloaded again
    artifacts_repaired: int = 0
    #: units the new version no longer holds because new content took their place
    units_replaced: int = 0
    bytes_downloaded: int = 0
    #: expected bytes of the artifacts the run decided to download (when sizes are known)
    bytes_planned: int = 0


@dataclass(frozen=True, slots=True)
class CreatorEvent:
    """What happened to one unit or artifact (passed to ``on_event``).

    ``kind`` is one of ``seen``, ``existing``, ``downloading``, ``committed``, ``failed``,
    ``artifact_downloaded``, ``artifact_reused``.
    """

    kind: str
    key: UnitKey | None = None
    relative_path: str | None = None
    size: int = 0
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class UnitFailure:
    """A unit that is not in the store, and why."""

    unit: DeclarativeUnit
    error: BaseException

    @property
    def key(self) -> UnitKey:
        return UnitKey(self.unit.type, self.unit.natural_key)

    @property
    def url(self) -> str | None:
        """The URL of the download that failed, when a download failed."""
        cause = self.error.cause if isinstance(self.error, UnitFailed) else self.error
        return cause.url if isinstance(cause, DownloadError) else None

    @property
    def relative_path(self) -> str | None:
        """The relative path of the artifact that failed, when known."""
        url = self.url
        for art in self.unit.artifacts:
            if url is not None and url in art.urls:
                return art.relative_path
        return self.unit.artifacts[0].relative_path if len(self.unit.artifacts) == 1 else None


@dataclass
class CreateReport:
    """The result of :meth:`ContentUnitCreator.run`.

    ``version`` is the number of the repository version that holds the input's content after
    the run: the version this run created (``created`` is True), or, when nothing changed,
    the latest version the run started from (``created`` False).  It is None when some units
    failed (no version holds the input then: check ``ok``) and without a repository.
    ``latest_version`` is the repository's latest complete version after the run (another
    worker's may be newer than ``version``).

    ``replaced`` lists the units of the previous version that new content took the place of
    (same repository key: a file at the same relative path), which the new version no longer
    holds; ``artifacts_repaired`` counts stored files found missing or damaged and downloaded
    again.
    """

    repository: str | None
    version: int | None
    latest_version: int | None
    units_total: int
    units_new: int
    units_existing: int
    units_failed: int
    artifacts_downloaded: int
    artifacts_reused: int
    bytes_downloaded: int
    failures: list[UnitFailure] = field(default_factory=list)
    seconds: float = 0.0
    created: bool = False
    units_replaced: int = 0
    replaced: list[ReplacedUnit] = field(default_factory=list)
    artifacts_repaired: int = 0

    @property
    def ok(self) -> bool:
        """True when every unit of the input is in the store."""
        return not self.failures


class _Flight:
    """One download of one sha256, awaited by every unit that needs it."""

    __slots__ = ("done", "error", "record")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.record: ArtifactRecord | None = None
        self.error: TriofetchError | None = None


_RECENT = 16384  # adopted artifacts remembered across slices (sha256 → record)
#: unit keys a run remembers to find duplicates, in two generations of this many each (a
#: 64-bit hash of the key → one of the content: about 120 bytes each, 2 MiB at most, so that
#: memory stays bounded by the slices: see benchmarks/README.md, "stream")
_KEYS_REMEMBERED = 8192
_COMMIT_GATHER = 0.05  # seconds the committer waits for more complete units


class ContentUnitCreator:
    """Creates content units in a store: every unit complete or absent.

    ::

        async with open_store(root=root) as store, Downloader() as dl:
            creator = ContentUnitCreator(store, dl)
            report = await creator.run(units, repository="fedora")

    Args:
        store: an open :class:`Store` with an artifact storage (``open_store(root=...)``).
        downloader: an open :class:`Downloader`; its limiters bound the connections.
        policy: ``"immediate"`` (download now) or ``"on_demand"`` (record remote artifacts).
        slice_size: units read, deduplicated and looked up together (one query each).
        slices_in_flight: slices processed at once (the next slice's queries overlap the
            current one's downloads).
        units_in_flight: units downloading at once (default: twice the connections).
        commit_batch: most units in one commit transaction.
        fail_fast: stop the run at the first failed unit (raises :class:`UnitFailed`).
        on_event: called with a :class:`CreatorEvent` for each unit and artifact event.
    """

    def __init__(
        self,
        store: Store,
        downloader: Downloader,
        *,
        policy: Policy | Literal["immediate", "on_demand"] = Policy.IMMEDIATE,
        slice_size: int = 500,
        slices_in_flight: int = 2,
        units_in_flight: int | None = None,
        commit_batch: int = 500,
        fail_fast: bool = False,
        on_event: Callable[[CreatorEvent], None] | None = None,
    ) -> None:
        try:
            self.policy = Policy(policy)
        except ValueError:
            raise InvalidInput(
                f"policy must be 'immediate' or 'on_demand', got {policy!r}"
            ) from None
        for name, value in (
            ("slice_size", slice_size),
            ("slices_in_flight", slices_in_flight),
            ("commit_batch", commit_batch),
            ("units_in_flight", units_in_flight),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}")
        if store.storage is None:
            raise InvalidInput("the store has no artifact storage: open it with a root")
        self.store = store
        self.storage = store.storage
        self.downloader = downloader
        self.slice_size = slice_size
        self.slices_in_flight = slices_in_flight
        self.units_in_flight = units_in_flight or 2 * int(downloader.limiter.total_tokens)
        self.commit_batch = commit_batch
        self.fail_fast = fail_fast
        self.on_event = on_event
        self.progress = CreatorProgress()
        self._flights: dict[str, _Flight] = {}
        self._recent: OrderedDict[str, ArtifactRecord] = OrderedDict()
        self._failures: list[UnitFailure] = []
        self._replaced: list[ReplacedUnit] = []
        self._version: VersionHandle | None = None
        # A full (or failing) disk stops the whole run, not one unit: the first such error,
        # and the cancel scopes of the units downloading (cancelled then; see _stop).
        self._stopped: StorageWriteError | None = None
        self._unit_scopes: set[trio.CancelScope] = set()

    # -- events ------------------------------------------------------------------------

    def _event(
        self,
        kind: str,
        unit: DeclarativeUnit | None = None,
        *,
        relative_path: str | None = None,
        size: int = 0,
        error: BaseException | None = None,
    ) -> None:
        if self.on_event is not None:
            key = UnitKey(unit.type, unit.natural_key) if unit is not None else None
            self.on_event(CreatorEvent(kind, key, relative_path, size, error))

    def _fail(self, unit: DeclarativeUnit, error: BaseException) -> None:
        self.progress.units_failed += 1
        self._failures.append(UnitFailure(unit, error))
        self._event("failed", unit, error=error)
        if self.fail_fast:
            raise (
                error
                if isinstance(error, UnitFailed)
                else UnitFailed((unit.type, unit.natural_key), error)
            )

    def _stop(self, error: StorageWriteError) -> None:
        """Stop the run: no download starts, those running are cancelled (their temp files
        removed), the units already complete are still committed; _run raises *error*."""
        if self._stopped is None:
            self._stopped = error
        for scope in self._unit_scopes:
            scope.cancel()

    # -- the run -----------------------------------------------------------------------

    async def run(
        self,
        units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit],
        *,
        repository: str | None = None,
        mirror: bool = False,
    ) -> CreateReport:
        """Create *units* (any sync or async iterable, read lazily, slice by slice).

        With *repository*, a new version of it is prepared: every unit of the input is
        associated with it in the transaction that commits the unit (or, for units already
        present, in one statement per slice).  Without *mirror* the new version keeps the
        previous version's units; with it, it holds exactly the input's.  The version is
        completed only when every unit succeeded and something changed; otherwise it is
        discarded, while the committed units stay for reuse.

        Returns a :class:`CreateReport`; failed units are listed there (not raised) unless
        ``fail_fast`` is set.  Cancelling the run stops it promptly: a commit that started
        finishes, nothing else is written, no temp file remains.

        Raises:
            StorageWriteError: a write under the storage root failed with a full disk, a
                quota, a read-only or failing file system.  No download started after it,
                the units complete by then were committed, no temp file remains, and no
                version was made; the error's ``report`` counts what was done.
        """
        if mirror and repository is None:
            raise InvalidInput("mirror=True needs a repository")
        started = time.monotonic()
        self.progress = CreatorProgress()
        self._failures = []
        self._replaced = []
        self._stopped = None
        # the lease keeps gc away from what this run finds and is about to commit
        async with self.store.lease():
            previous = version = None
            if repository is not None:
                await self.store.create_repository(repository)
                previous = await self.store.latest_version(repository)
                version = await self.store.new_version(
                    repository, base=None if mirror else "latest", create_repository=True
                )
            self._version = version
            created = False
            holding: int | None = None
            try:
                with collapse_single():
                    await self._run(units, version)
                if version is not None:
                    created = await self._finish_version(version, previous)
                    if created:
                        holding = version.number
                    elif not self._failures and previous is not None:
                        holding = previous.number  # the same content: it is there
            except BaseException as exc:
                if version is not None:
                    with trio.CancelScope(shield=True):
                        await self._discard(version, exc)
                if isinstance(exc, StorageWriteError):
                    # what was done before the disk filled: the caller says so
                    exc.report = self._report(repository, None, None, started)
                raise
        latest = await self.store.latest_version(repository) if repository else None
        number = latest.number if latest else None
        return self._report(repository, holding, number, started, created=created)

    async def _discard(self, version: VersionHandle, error: BaseException) -> None:
        try:
            await self.store.discard_version(version)
        except StoreError as exc:
            if not isinstance(error, StorageWriteError):
                raise
            # the database is on the full disk too: the version stays incomplete (no reader
            # sees it; gc removes it), and the disk error is the one to report
            if error.database_error is None:
                error.database_error = exc

    def _report(
        self,
        repository: str | None,
        version: int | None,
        latest: int | None,
        started: float,
        *,
        created: bool = False,
    ) -> CreateReport:
        p = self.progress
        return CreateReport(
            repository=repository,
            version=version,
            latest_version=latest,
            units_total=p.units_committed + p.units_existing + p.units_failed,
            units_new=p.units_committed,
            units_existing=p.units_existing,
            units_failed=p.units_failed,
            artifacts_downloaded=p.artifacts_downloaded,
            artifacts_reused=p.artifacts_reused,
            bytes_downloaded=p.bytes_downloaded,
            failures=list(self._failures),
            seconds=time.monotonic() - started,
            created=created,
            units_replaced=p.units_replaced,
            replaced=list(self._replaced),
            artifacts_repaired=p.artifacts_repaired,
        )

    async def fill_missing(
        self, repository: str | None = None, version_number: int | None = None
    ) -> CreateReport:
        """Download the files that units created ``on_demand`` still lack.

        The files are fetched from the remote artifacts recorded with the units (no input
        needed), adopted into the storage and attached to their units, a unit at a time and
        all or nothing per unit; page by page of ``slice_size`` units.  With *repository*,
        only the units of that version (default: the latest) are filled.  Files another unit
        already brought are reused, not downloaded again.  Units whose files cannot be
        fetched are listed in the report's ``failures`` and stay as they were.  A full
        disk stops it as it stops :meth:`run` (:class:`StorageWriteError`).
        """
        started = time.monotonic()
        self.progress = CreatorProgress()
        self._failures = []
        self._replaced = []
        self._version = None
        unit_slots = trio.Semaphore(self.units_in_flight)
        after = 0
        self._stopped = None
        async with self.store.lease():
            try:
                await self._fill_pages(repository, version_number, unit_slots, after)
            except StorageWriteError as exc:  # a full disk: as in run()
                exc.report = self._report(repository, None, None, started)
                raise
        return self._report(repository, None, None, started)

    async def _fill_pages(
        self,
        repository: str | None,
        version_number: int | None,
        unit_slots: trio.Semaphore,
        after: int,
    ) -> None:
        with collapse_single():
            while True:
                missing = await self.store.missing_artifacts(
                    repository, version_number, after_id=after, limit=self.slice_size
                )
                if not missing:
                    break
                after = max(m.unit_id for m in missing)
                by_unit: dict[int, list[MissingArtifact]] = {}
                for item in missing:
                    by_unit.setdefault(item.unit_id, []).append(item)
                shas = sorted({m.digests["sha256"] for m in missing if "sha256" in m.digests})
                present = await self.store.find_artifacts(shas) if shas else {}
                async with trio.open_nursery() as nursery:
                    for uid, items in by_unit.items():
                        self.progress.units_seen += 1
                        unit = _unit_of(items)
                        if isinstance(unit, BaseException):
                            self._fail(
                                DeclarativeUnit(items[0].key.type, items[0].key.natural_key), unit
                            )
                            continue
                        info = UnitInfo(
                            uid, items[0].key, {}, {m.relative_path: None for m in items}
                        )
                        await unit_slots.acquire()
                        if self._stopped is not None:  # a full disk: no new download
                            unit_slots.release()
                            break
                        nursery.start_soon(self._unit, unit, info, present, None, unit_slots)
                if self._stopped is not None:
                    raise self._stopped

    async def _finish_version(self, version: VersionHandle, previous: VersionHandle | None) -> bool:
        """Complete the version if the run succeeded and changed something, else discard it.

        The first version of a repository is completed even when empty: it is where the
        (empty) content is.
        """
        if previous is None:
            changed = True
        else:
            added, removed = await self.store.version_changes(version, previous)
            changed = bool(added or removed)
        if self._failures or not changed:
            with trio.CancelScope(shield=True):
                await self.store.discard_version(version)
            return False
        with trio.CancelScope(shield=True):
            await self.store.complete_version(version)
        return True

    def _distinct(
        self, chunk: list[DeclarativeUnit], seen: tuple[dict[int, int], dict[int, int]]
    ) -> list[DeclarativeUnit]:
        """*chunk* without the units whose key came earlier in the run: the same content
        again counts once (seen, not reported); other content under a key already given is
        a failure (:class:`InvalidUnit`), never silently dropped.  *seen* remembers the keys
        (hashes of key → content) of at least the last ``_KEYS_REMEMBERED`` units."""
        recent, older = seen
        kept: list[DeclarativeUnit] = []
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
            self.progress.units_seen += 1
            self._event("seen", unit)
            if first != content:
                error = InvalidUnit(
                    f"unit {unit.type} {list(unit.natural_key)!r} is given twice in one run "
                    "with different artifacts or fields: the first is kept"
                )
                self._fail(unit, UnitFailed((unit.type, unit.natural_key), error))
        return kept

    async def _run(
        self,
        units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit],
        version: VersionHandle | None,
    ) -> None:
        seen: tuple[dict[int, int], dict[int, int]] = ({}, {})
        send, receive = trio.open_memory_channel[tuple[DeclarativeUnit, NewUnit]](self.commit_batch)
        unit_slots = trio.Semaphore(self.units_in_flight)
        slice_slots = trio.Semaphore(self.slices_in_flight)
        async with trio.open_nursery() as parent:
            parent.start_soon(self._committer, receive, version)
            async with (
                send,
                trio.open_nursery() as slices,
                aclosing(_slices(aiter_units(units), self.slice_size)) as chunks,
            ):
                async for chunk in chunks:
                    chunk = self._distinct(chunk, seen)
                    if not chunk:
                        continue
                    await slice_slots.acquire()
                    if self._stopped is not None:  # a full disk: read no further
                        break
                    slices.start_soon(
                        self._slice, chunk, send.clone(), unit_slots, slice_slots, version
                    )
        # raised here, after the committer committed every unit that was complete
        if self._stopped is not None:
            raise self._stopped

    async def _slice(
        self,
        chunk: list[DeclarativeUnit],
        send: trio.MemorySendChannel[tuple[DeclarativeUnit, NewUnit]],
        unit_slots: trio.Semaphore,
        slice_slots: trio.Semaphore,
        version: VersionHandle | None,
    ) -> None:
        try:
            async with send:
                await self._process_slice(chunk, send, unit_slots, version)
        finally:
            slice_slots.release()

    async def _process_slice(
        self,
        chunk: list[DeclarativeUnit],
        send: trio.MemorySendChannel[tuple[DeclarativeUnit, NewUnit]],
        unit_slots: trio.Semaphore,
        version: VersionHandle | None,
    ) -> None:
        progress = self.progress
        unique: dict[tuple[str, tuple[str, ...]], DeclarativeUnit] = {}
        for unit in chunk:
            progress.units_seen += 1
            self._event("seen", unit)
            unique.setdefault(unit.key, unit)
        existing = await self.store.find_units(UnitKey(*k) for k in unique)
        immediate = self.policy is Policy.IMMEDIATE
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
        reuse: list[tuple[DeclarativeUnit, int]] = []
        records: list[tuple[DeclarativeUnit, NewUnit]] = []
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
                    reuse.append((unit, info.id))
                    continue
                if info is None and not immediate:
                    # nothing to download: the slice commits these itself, in one batch
                    try:
                        records.append((unit, self._on_demand_unit(unit, present)))
                    except InvalidInput as exc:  # this unit only: the others go on
                        self._fail(unit, UnitFailed((unit.type, unit.natural_key), exc))
                    continue
                await unit_slots.acquire()
                if self._stopped is not None:  # a full disk: no new download
                    unit_slots.release()
                    break
                nursery.start_soon(self._unit, unit, info, present, send, unit_slots, repair)
            if self._stopped is not None:
                return  # no version will be made: placing the units present is moot
            for start in range(0, len(records), self.commit_batch):
                await self._commit(records[start : start + self.commit_batch], version)
            await self._reuse(reuse, version)

    async def _reuse(
        self, reuse: list[tuple[DeclarativeUnit, int]], version: VersionHandle | None
    ) -> None:
        """Units already in the store: into the version (one statement), counted existing."""
        refused: dict[int, BaseException] = {}
        if version is not None and reuse:
            placement = await self.store.place_units(version, [uid for _, uid in reuse])
            refused = dict(placement.refused)
            self._took_places(placement.replaced)
        for unit, uid in reuse:
            error = refused.get(uid)
            if error is not None:
                self._fail(unit, UnitFailed((unit.type, unit.natural_key), error))
                continue
            self.progress.units_existing += 1
            self._event("existing", unit)

    def _took_places(self, replaced: Iterable[ReplacedUnit]) -> None:
        for item in replaced:
            self._replaced.append(item)
            self.progress.units_replaced += 1

    def _on_demand_unit(self, unit: DeclarativeUnit, present: dict[str, ArtifactRecord]) -> NewUnit:
        return NewUnit(
            unit.type,
            unit.natural_key,
            unit.fields,
            tuple(
                NewUnitArtifact(
                    art.relative_path,
                    present.get(art.sha256) if art.sha256 else None,
                    _remote(art),
                )
                for art in unit.artifacts
            ),
        )

    async def _unit(
        self,
        unit: DeclarativeUnit,
        info: UnitInfo | None,
        present: dict[str, ArtifactRecord],
        send: trio.MemorySendChannel[tuple[DeclarativeUnit, NewUnit]] | None,
        unit_slots: trio.Semaphore,
        repair: frozenset[str] = frozenset(),
    ) -> None:
        """One unit needing downloads: a nursery for its artifacts, then hand it over.

        For a unit already stored, the files it lacks (on-demand) and the paths in *repair*
        (stored files found missing or damaged, downloaded again whatever is recorded).
        """
        progress = self.progress
        progress.units_downloading += 1
        self._event("downloading", unit)
        try:
            if info is None:
                todo = unit.artifacts
            else:
                wanted = set(info.missing) | repair
                todo = tuple(a for a in unit.artifacts if a.relative_path in wanted)
            records: dict[str, ArtifactRecord] = {}
            scope = trio.CancelScope()  # cancelled by _stop
            self._unit_scopes.add(scope)
            try:
                with scope:
                    async with trio.open_nursery() as nursery:
                        for art in todo:
                            nursery.start_soon(
                                self._artifact,
                                unit,
                                art,
                                present,
                                records,
                                art.relative_path in repair,
                            )
            except BaseExceptionGroup as group:
                full, others = group.split(StorageWriteError)
                if full is not None:
                    # not this unit's fault: every write under the root fails now
                    stop = first_error(full)
                    assert isinstance(stop, StorageWriteError)
                    self._stop(stop)
                    if others is None or others.split(TriofetchError)[1] is None:
                        return  # the unit is absent, and not a failure of its own
                    raise others from None
                errors, rest = group.split(TriofetchError)
                if rest is not None or errors is None:
                    raise
                self._fail(unit, UnitFailed((unit.type, unit.natural_key), first_error(errors)))
                return
            finally:
                self._unit_scopes.discard(scope)
            if scope.cancelled_caught and any(a.relative_path not in records for a in todo):
                return  # stopped by a full disk while downloading: the unit is absent
        finally:
            progress.units_downloading -= 1
            unit_slots.release()
        if info is not None:
            progress.artifacts_repaired += sum(p in repair for p in records)
            await self._fill(unit, info, records)
            return
        assert send is not None
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
            self._fail(unit, UnitFailed((unit.type, unit.natural_key), exc))
            return
        await send.send((unit, new))

    async def _fill(
        self, unit: DeclarativeUnit, info: UnitInfo, records: dict[str, ArtifactRecord]
    ) -> None:
        """Give an on-demand unit the artifacts it lacked."""
        try:
            await self.storage.sync()
            await self.store.fill_artifacts({info.id: records})
        except StoreError as exc:
            self._fail(unit, UnitFailed((unit.type, unit.natural_key), exc))
            return
        # membership: one statement for this unit (rare path: on-demand then immediate, or
        # a repaired file)
        await self._reuse([(unit, info.id)], self._version)

    async def _artifact(
        self,
        unit: DeclarativeUnit,
        art: DeclarativeArtifact,
        present: dict[str, ArtifactRecord],
        records: dict[str, ArtifactRecord],
        repair: bool = False,
    ) -> None:
        sha = art.sha256
        if sha is not None:
            # a file to repair is downloaded whatever the records say is there
            known = None if repair else present.get(sha) or self._recent.get(sha)
            if known is not None:
                records[art.relative_path] = known
                self.progress.artifacts_reused += 1
                self._event(
                    "artifact_reused", unit, relative_path=art.relative_path, size=known.size
                )
                return
            while (flight := self._flights.get(sha)) is not None:
                await flight.done.wait()
                if flight.record is not None:
                    records[art.relative_path] = flight.record
                    self.progress.artifacts_reused += 1
                    self._event(
                        "artifact_reused",
                        unit,
                        relative_path=art.relative_path,
                        size=flight.record.size,
                    )
                    return
                if flight.error is not None:
                    raise flight.error
            flight = self._flights[sha] = _Flight()
            try:
                record = await self._download(unit, art)
                flight.record = record
            except TriofetchError as exc:
                flight.error = exc
                raise
            finally:
                del self._flights[sha]
                flight.done.set()
        else:
            record = await self._download(unit, art)
        records[art.relative_path] = record

    async def _download(self, unit: DeclarativeUnit, art: DeclarativeArtifact) -> ArtifactRecord:
        if art.size is not None:
            self.progress.bytes_planned += art.size
        try:
            result = await self.downloader.fetch(
                art.urls,
                expected_digests=art.digests,
                expected_size=art.size,
                temp_dir=self.storage.temp_dir,
            )
        except OSError as exc:
            # writing the temp file failed (the downloader removed it): a full disk stops
            # the run (see _unit); any other OSError is a bug, raised as it is
            if StorageWriteError.matches(exc):
                raise StorageWriteError(exc, self.storage.temp_dir) from exc
            raise
        try:
            # no fsync per file: the committer makes the batch durable with one sync
            stored = await self.storage.adopt_result(result, sync=False)
        finally:
            result.path.unlink(missing_ok=True)  # adopted: already moved; failed: cleaned
        record = ArtifactRecord(stored.sha256, stored.size, dict(stored.digests))
        self._recent[record.sha256] = record
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        self.progress.artifacts_downloaded += 1
        self.progress.bytes_downloaded += result.size
        self._event("artifact_downloaded", unit, relative_path=art.relative_path, size=result.size)
        return record

    async def _committer(
        self,
        receive: trio.MemoryReceiveChannel[tuple[DeclarativeUnit, NewUnit]],
        version: VersionHandle | None,
    ) -> None:
        """Commit complete units in batches: whatever is waiting, up to commit_batch."""
        async with receive:
            async for first in receive:
                batch = [first]
                # gather what arrives within a moment: one transaction (and one sync of the
                # storage) for many units, at the cost of a few milliseconds of latency
                with trio.move_on_after(_COMMIT_GATHER):
                    while len(batch) < self.commit_batch:
                        try:
                            batch.append(await receive.receive())
                        except trio.EndOfChannel:
                            break
                try:
                    await self._commit(batch, version)
                except StoreError as exc:
                    # A run stopping on a full disk still commits the units complete; the
                    # database may be on that disk too: then its transaction rolled back
                    # (these units are absent) and the disk error, raised by _run, says so.
                    stopped = self._stopped
                    if stopped is None:
                        raise
                    if exc is not stopped and stopped.database_error is None:
                        stopped.database_error = exc

    async def _commit(
        self, batch: list[tuple[DeclarativeUnit, NewUnit]], version: VersionHandle | None
    ) -> None:
        try:
            await self.storage.sync()  # every file these units refer to is durable first
        except OSError as exc:
            if not StorageWriteError.matches(exc):
                raise
            # the files cannot be made durable (EIO...): nothing may refer to them
            error = StorageWriteError(exc, self.storage.artifacts_dir)
            self._stop(error)
            raise error from exc
        report = await self.store.commit_units([new for _, new in batch], version=version)
        self._took_places(report.replaced)
        progress = self.progress
        for (unit, _), outcome in zip(batch, report.outcomes, strict=True):
            if outcome.status == "committed":
                progress.units_committed += 1
                self._event("committed", unit)
            elif outcome.status == "existing":
                progress.units_existing += 1
                self._event("existing", unit)
            else:
                assert outcome.error is not None
                self._fail(unit, UnitFailed((unit.type, unit.natural_key), outcome.error))


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


def _content_hash(unit: DeclarativeUnit) -> int:
    """A hash of what a unit holds besides its key: its fields, and each artifact's path,
    size and digests (not its URLs: the same file from elsewhere is the same content)."""
    try:
        fields = hash(tuple(sorted(unit.fields.items())))
    except TypeError:  # a list or a dict among the values
        fields = hash(json.dumps(unit.fields, sort_keys=True))
    arts = sorted((a.relative_path, a.size, *sorted(a.digests.items())) for a in unit.artifacts)
    return hash((fields, *arts))


def _remote(art: DeclarativeArtifact) -> RemoteArtifact:
    return RemoteArtifact(tuple(dict.fromkeys(art.urls)), art.size, dict(art.digests))


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
