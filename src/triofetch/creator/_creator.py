"""The content unit creator's public class: its settings, a run, and ``fill_missing``.

Owns :class:`ContentUnitCreator`: checking its arguments, and the frame of a run: the
writers' lease, the repository version opened first and completed or discarded last
(:mod:`._versions`), the slice pipeline in between (:mod:`._pipeline`), and the report
(:mod:`._reports`), also when a full disk stops the run.  The single-flight downloads
(:mod:`._flights`) live as long as the creator; what they adopted is trusted within a run
(under its lease) only.  It must not process units itself: every unit goes through the pipeline or
:mod:`._fill`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import trio

from .._groups import collapse_single, leaves
from .._model import check_bool, check_int
from ..declarative import DeclarativeUnit
from ..downloader import Downloader
from ..errors import InvalidInput, StorageWriteError, UnitFailed, WrongContext
from ..store import Store
from ..units import check_units_input
from ._downloads import UnitDownloads
from ._fill import fill_missing
from ._flights import Flights
from ._pipeline import SlicePipeline
from ._reports import CreateReport, CreatorEvent, CreatorProgress, Policy, Tally
from ._versions import discard_version, finish_version, open_version

__all__ = ["ContentUnitCreator"]


@contextmanager
def _first_unit_failed() -> Iterator[None]:
    """With ``fail_fast``, several units' tasks may fail before the run's cancellation
    reaches the others: the run raises the first one's :class:`UnitFailed`, not a group of
    them (which an ``except UnitFailed`` would miss)."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if all(isinstance(exc, UnitFailed) for exc in found):
            raise found[0] from found[0].__cause__
        raise


class ContentUnitCreator:
    """Creates content units in a store: every unit complete or absent.

    ::

        async with open_store(root=root) as store, Downloader() as dl:
            creator = ContentUnitCreator(store, dl)
            report = await creator.run(units, repository="fedora")

    Args:
        store: an open :class:`Store` with an artifact storage (``open_store(root=...)``).
        downloader: an open :class:`Downloader`; its limiters bound the connections.
        policy: ``"immediate"`` (download now), ``"on_demand"`` (record remote artifacts;
            the content app stores a file when first asked for it) or ``"streamed"``
            (record remote artifacts the content app streams and never stores); see
            :class:`Policy`.
        slice_size: units read, deduplicated and looked up together (one query each).
        slices_in_flight: slices processed at once (the next slice's queries overlap the
            current one's downloads).
        units_in_flight: units downloading at once (default: twice the connections).
        commit_batch: most units in one commit transaction.
        fail_fast: stop the run at the first failed unit (raises :class:`UnitFailed`).
        on_event: called with a :class:`CreatorEvent` for each unit and artifact event.

    Attributes:
        progress (CreatorProgress): the live counters of the current run (or the last one).
    """

    def __init__(
        self,
        store: Store,
        downloader: Downloader,
        *,
        policy: Policy | Literal["immediate", "on_demand", "streamed"] = Policy.IMMEDIATE,
        slice_size: int = 500,
        slices_in_flight: int = 2,
        units_in_flight: int | None = None,
        commit_batch: int = 500,
        fail_fast: bool = False,
        on_event: Callable[[CreatorEvent], None] | None = None,
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidInput(f"store must be a Store (from open_store), got {store!r}")
        if not isinstance(downloader, Downloader):
            raise InvalidInput(f"downloader must be a Downloader, got {downloader!r}")
        try:
            self.policy = Policy(policy)
        except ValueError:
            raise InvalidInput(
                f"policy must be 'immediate', 'on_demand' or 'streamed', got {policy!r}"
            ) from None
        for name, value in (
            ("slice_size", slice_size),
            ("slices_in_flight", slices_in_flight),
            ("commit_batch", commit_batch),
            ("units_in_flight", units_in_flight),
        ):
            if value is not None:
                check_int(value, name, least=1)
        if on_event is not None and (
            not callable(on_event) or inspect.iscoroutinefunction(on_event)
        ):
            # (an async callback would only make coroutines never awaited, not one event)
            raise InvalidInput(
                "on_event must be a plain (not async) function taking a CreatorEvent, "
                f"called on the Trio loop, got {on_event!r}"
            )
        if store.storage is None:
            raise InvalidInput("the store has no artifact storage: open it with a root")
        self.store = store
        self.storage = store.storage
        self.downloader = downloader
        self.slice_size = slice_size
        self.slices_in_flight = slices_in_flight
        self.units_in_flight = units_in_flight or 2 * int(downloader.limiter.total_tokens)
        self.commit_batch = commit_batch
        self.fail_fast = check_bool(fail_fast, "fail_fast")
        self.on_event = on_event
        self.progress = CreatorProgress()
        self._running = 0  # runs and fill_missing calls of this creator going on
        self._flights = Flights(downloader, self.storage)

    def _check_downloader(self) -> None:
        """A run that downloads needs the downloader open: every unit would fail else."""
        if not self.downloader.is_open:
            raise WrongContext(
                "the creator's Downloader is not open: run the creator inside the "
                "Downloader's 'async with'"
            )

    @contextmanager
    def _started(self) -> Iterator[UnitDownloads]:
        """A new tally and its units' downloads, for one run or ``fill_missing``.

        The tally counts into :attr:`progress` itself, zeroed first, so that a reference to
        it taken before the run (by a task drawing progress bars) shows the run.  A run
        started while another of this creator is going counts into a new
        :class:`CreatorProgress` (each run's report is its own), which :attr:`progress` is
        from then on.
        """
        if self._running:
            self.progress = CreatorProgress()
        tally = Tally(self.on_event, self.fail_fast, self.progress)
        self._running += 1
        try:
            yield UnitDownloads(self._flights, tally, self.units_in_flight)
        finally:
            self._running -= 1

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
        discarded, while the committed units stay for reuse.  "Changed" is decided when
        the run finishes, under the repository's lock: a version holding the units of a
        complete version next to it in number order then (the latest, or the nearest below
        or above it: the version it started from, or one another run of the same content
        completed meanwhile) is not made; nor, without *mirror*, one holding the units of
        the version it started from when the latest holds all its units (other runs added
        to it meanwhile: the run's input is there).

        Returns a :class:`CreateReport`; failed units are listed there (not raised) unless
        ``fail_fast`` is set.  Cancelling the run stops it promptly: a commit that started
        finishes, nothing else is written, no temp file remains.

        Raises:
            StorageWriteError: a write under the storage root failed with a full disk, a
                quota, a read-only or failing file system.  No download started after it,
                the units complete by then were committed, no temp file remains, and no
                version was made; the error's ``report`` counts what was done.
            WrongContext: the policy is ``immediate`` and the downloader is not open
                (outside its ``async with``); nothing was read or written.
        """
        if check_bool(mirror, "mirror") and repository is None:
            raise InvalidInput("mirror=True needs a repository")
        check_units_input(units)
        if self.policy is Policy.IMMEDIATE:
            self._check_downloader()
        with self._started() as downloads:
            return await self._run(downloads, units, repository, mirror)

    async def _run(
        self,
        downloads: UnitDownloads,
        units: Iterable[DeclarativeUnit] | AsyncIterable[DeclarativeUnit],
        repository: str | None,
        mirror: bool,
    ) -> CreateReport:
        tally = downloads.tally
        store = self.store
        # the lease keeps gc away from what this run finds and is about to commit
        async with store.lease():
            self._flights.forget_adopted()  # (gc may have run since the last run)
            previous = version = None
            if repository is not None:
                previous, version = await open_version(store, repository, mirror=mirror)
            pipeline = SlicePipeline(
                store,
                self.storage,
                downloads,
                version,
                immediate=self.policy is Policy.IMMEDIATE,
                streamed=self.policy is Policy.STREAMED,
                slice_size=self.slice_size,
                slices_in_flight=self.slices_in_flight,
                commit_batch=self.commit_batch,
            )
            created = False
            holding: int | None = None
            try:
                with collapse_single(), _first_unit_failed():
                    await pipeline.run(units)
                if version is not None:
                    kept = await finish_version(
                        store, version, previous, failed=bool(tally.failures), mirror=mirror
                    )
                    # (not made: the same content is there, in the version kept)
                    holding = None if kept is None else kept.number
                    created = kept is not None and kept.id == version.id
                    if created:
                        tally.version_made()
            except BaseException as exc:
                if version is not None:
                    with trio.CancelScope(shield=True):
                        await discard_version(store, version, exc)
                if isinstance(exc, StorageWriteError):
                    # what was done before the disk filled: the caller says so
                    exc.report = tally.report(repository, None, None)
                raise
        latest = await store.latest_version(repository) if repository else None
        number = latest.number if latest else None
        return tally.report(repository, holding, number, created=created)

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
        disk stops it as it stops :meth:`run` (:class:`StorageWriteError`); a downloader
        that is not open raises :class:`WrongContext` before anything is read.
        """
        self._check_downloader()
        with self._started() as downloads:
            async with self.store.lease():
                self._flights.forget_adopted()
                try:
                    await fill_missing(
                        self.store,
                        self.storage,
                        downloads,
                        repository,
                        version_number,
                        self.slice_size,
                    )
                except StorageWriteError as exc:  # a full disk: as in run()
                    exc.report = downloads.tally.report(repository, None, None)
                    raise
            return downloads.tally.report(repository, None, None)
