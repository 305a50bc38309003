"""The downloads of one unit in a run, and the stop of the whole run on a full disk.

Owns what every unit needing files goes through, in :meth:`ContentUnitCreator.run` as in
``fill_missing``: a slot among ``units_in_flight``, the unit's nursery (the unit
downloader's own, :func:`triofetch.units.fetch_artifacts`) inside a cancel scope the run can
cancel, a failure recorded for that unit alone, and a full disk turned into a stop of the
whole run.  What becomes of the files afterwards (a new unit to commit, a stored unit to
fill) is the caller's; it must not touch the database, read the input or commit anything.
"""

from __future__ import annotations

from pathlib import Path

import trio

from .._groups import first_error
from ..declarative import DeclarativeArtifact, DeclarativeUnit
from ..errors import StorageWriteError, UnitFailed
from ..store import ArtifactRecord
from ..units import fetch_artifacts
from ._flights import Flights
from ._reports import Tally

__all__ = ["NOTHING", "UnitDownloads"]

#: no path to repair
NOTHING: frozenset[str] = frozenset()


class UnitDownloads:
    """The units of one run that are downloading, and whether the run has stopped.

    A full (or failing) disk stops the whole run, not one unit: :meth:`stop` keeps the first
    such error in :attr:`stopped` and cancels the units downloading (their temp files are
    removed); no download starts after it.
    """

    __slots__ = ("_scopes", "_slots", "flights", "stopped", "tally")

    def __init__(self, flights: Flights, tally: Tally, units_in_flight: int) -> None:
        self.flights = flights
        self.tally = tally
        self.stopped: StorageWriteError | None = None
        self._slots = trio.Semaphore(units_in_flight)
        self._scopes: set[trio.CancelScope] = set()

    def stop(self, error: StorageWriteError) -> None:
        """Stop the run: no download starts, those running are cancelled (their temp files
        removed); the units complete already are still committed."""
        if self.stopped is None:
            self.stopped = error
        for scope in self._scopes:
            scope.cancel()

    async def stop_on(self, error: OSError, path: Path) -> StorageWriteError:
        """:meth:`stop` the run on *error* (an OSError that stops a run, writing under
        *path*): its StorageWriteError, made in a worker thread (it asks the file system
        whether it has inodes left: a ``statvfs``, which may block)."""
        stopped = await trio.to_thread.run_sync(StorageWriteError, error, path)
        self.stop(stopped)
        return stopped

    async def admit(self) -> bool:
        """Wait for a slot for one more unit; False (and no slot taken) once the run has
        stopped.  A unit admitted must be passed to :meth:`download`, which frees the slot."""
        await self._slots.acquire()
        if self.stopped is not None:
            self._slots.release()
            return False
        return True

    async def download(
        self,
        unit: DeclarativeUnit,
        todo: tuple[DeclarativeArtifact, ...],
        present: dict[str, ArtifactRecord],
        repair: frozenset[str] = NOTHING,
    ) -> dict[str, ArtifactRecord] | None:
        """Bring the files *todo* of an admitted *unit* into the storage, all at once.

        Returns their records by relative path; None when the unit failed (recorded in
        the tally) or the run stopped (the unit is absent then, and not a failure of its
        own).  *present* and *repair* are as for :meth:`Flights.fetch`.
        """
        tally = self.tally
        progress = tally.progress
        progress.units_downloading += 1
        tally.event("downloading", unit)
        try:
            records: dict[str, ArtifactRecord] = {}
            scope = trio.CancelScope()  # cancelled by stop()
            self._scopes.add(scope)
            try:
                errors = await fetch_artifacts(
                    todo, self.flights.fetch, unit, present, records, repair, tally, scope=scope
                )
            except BaseExceptionGroup as group:
                # a bug or a cancellation beside the errors: raised, but a full disk among
                # them still stops the run
                full, others = group.split(StorageWriteError)
                if full is None:
                    raise
                self._stop_on(full)
                assert others is not None
                raise others from None
            finally:
                self._scopes.discard(scope)
            if errors is not None:
                full, _ = errors.split(StorageWriteError)
                if full is not None:
                    # not this unit's fault: every write under the root fails now
                    self._stop_on(full)
                    return None
                tally.fail(unit, UnitFailed((unit.type, unit.natural_key), first_error(errors)))
                return None
            if scope.cancelled_caught and any(a.relative_path not in records for a in todo):
                return None  # stopped by a full disk while downloading: the unit is absent
        finally:
            progress.units_downloading -= 1
            self._slots.release()
        return records

    def _stop_on(self, full: BaseExceptionGroup[StorageWriteError]) -> None:
        error = first_error(full)
        assert isinstance(error, StorageWriteError)
        self.stop(error)
