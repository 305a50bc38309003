"""Single-flight downloads: one download per sha256 at a time, and the files adopted lately.

Owns getting one declared artifact into the storage and its :class:`ArtifactRecord`:
reusing a stored file (found by the slice's query, or adopted lately by this creator),
waiting for the download of the same sha256 that another unit started, or downloading it
with the :class:`~triofetch.downloader.Downloader` and adopting the file into the
:class:`~triofetch.storage.ArtifactStorage`.  A full disk while writing the temp file
becomes a :class:`StorageWriteError`, for the run to stop on; so does a connection (or a
``file://`` source) that got no file descriptor.  It must not touch the
database, decide which artifacts a unit needs, or know what a unit's failure means.
"""

from __future__ import annotations

from collections import OrderedDict

import trio

from ..declarative import DeclarativeArtifact, DeclarativeUnit
from ..downloader import Downloader
from ..errors import (
    ArtifactConflict,
    StorageWriteError,
    TempFileError,
    TransportError,
    TriofetchError,
    error_chain,
)
from ..storage import ArtifactStorage
from ..store import ArtifactRecord
from ._reports import Tally

__all__ = ["Flights"]

#: adopted artifacts remembered (sha256 → record), so that a file a slice brought is reused
#: by the next slices without asking the database again
_RECENT = 16384


def _out_of_descriptors(error: BaseException) -> OSError | None:
    """The ``EMFILE`` or ``ENFILE`` among the causes of *error* (a transport's failure to
    open its socket, where trio groups the attempts, or its ``file://`` source), if any."""
    for cause in error_chain(error)[1:]:
        if isinstance(cause, OSError) and StorageWriteError.out_of_descriptors(cause):
            return cause
    return None


def _as_declared(art: DeclarativeArtifact, record: ArtifactRecord) -> ArtifactRecord:
    """*record*, the stored file of *art*'s sha256, if it has the size *art* declares; else
    :class:`ArtifactConflict`: the unit fails as its download would have (a size mismatch),
    rather than being committed with a file of another size than it says."""
    if art.size is not None and art.size != record.size:
        raise ArtifactConflict(record.sha256, record.size, art.size)
    return record


class _Flight:
    """One download of one sha256, awaited by every unit that needs it."""

    __slots__ = ("done", "error", "record", "urls")

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.done = trio.Event()
        self.record: ArtifactRecord | None = None
        self.error: TriofetchError | None = None
        #: the URLs it fetches from (those of the unit that started it)
        self.urls = frozenset(urls)


class Flights:
    """The downloads of one creator: each sha256 fetched once at a time, then remembered."""

    __slots__ = ("_downloader", "_flights", "_recent", "_storage")

    def __init__(self, downloader: Downloader, storage: ArtifactStorage) -> None:
        self._downloader = downloader
        self._storage = storage
        self._flights: dict[str, _Flight] = {}
        self._recent: OrderedDict[str, ArtifactRecord] = OrderedDict()

    def forget_adopted(self) -> None:
        """Forget the files adopted so far: called when a run takes the writers' lease.
        Between two runs (no lease held) gc may have removed them, a file adopted for a
        unit that then failed first of all (it has no row); trusting them then committed
        units whose files were gone."""
        self._recent.clear()

    async def fetch(
        self,
        art: DeclarativeArtifact,
        unit: DeclarativeUnit,
        present: dict[str, ArtifactRecord],
        records: dict[str, ArtifactRecord],
        repair: frozenset[str],
        tally: Tally,
    ) -> None:
        """Store the record of *art* (of *unit*) in ``records[art.relative_path]``.

        *present* holds the records the database has for the slice's sha256s; the paths in
        *repair* are downloaded whatever the records say is there (their stored files are
        missing or damaged).  A task of the unit's nursery: it raises when the download
        fails.
        """
        sha = art.sha256
        if sha is not None:
            # a file to repair is downloaded whatever the records say is there
            known = (
                None if art.relative_path in repair else present.get(sha) or self._recent.get(sha)
            )
            if known is not None:
                records[art.relative_path] = _as_declared(art, known)
                tally.progress.artifacts_reused += 1
                tally.event(
                    "artifact_reused", unit, relative_path=art.relative_path, size=known.size
                )
                return
            while (flight := self._flights.get(sha)) is not None:
                await flight.done.wait()
                if flight.record is not None:
                    records[art.relative_path] = _as_declared(art, flight.record)
                    tally.progress.artifacts_reused += 1
                    tally.event(
                        "artifact_reused",
                        unit,
                        relative_path=art.relative_path,
                        size=flight.record.size,
                    )
                    return
                if flight.error is not None and flight.urls.issuperset(art.urls):
                    raise flight.error
                # (it failed on other URLs than this unit's: this unit tries its own)
            flight = self._flights[sha] = _Flight(art.urls)
            try:
                record = await self._download(unit, art, tally)
                flight.record = record
            except TriofetchError as exc:
                flight.error = exc
                raise
            finally:
                del self._flights[sha]
                flight.done.set()
        else:
            record = await self._download(unit, art, tally)
        records[art.relative_path] = record

    async def _download(
        self, unit: DeclarativeUnit, art: DeclarativeArtifact, tally: Tally
    ) -> ArtifactRecord:
        progress = tally.progress
        if art.size is not None:
            progress.bytes_planned += art.size
        storage = self._storage
        try:
            result = await self._downloader.fetch(
                art.urls,
                expected_digests=art.digests,
                expected_size=art.size,
                temp_dir=storage.temp_dir,
            )
        except TempFileError as exc:
            # writing the temp file failed (the downloader removed it): a full disk stops
            # the run (see _downloads); another cause (no permission...) fails the unit
            cause = exc.__cause__
            if isinstance(cause, OSError) and StorageWriteError.matches(cause):
                # (the inodes as the write found them: other tasks may have freed some since)
                raise StorageWriteError(
                    cause, storage.temp_dir, inodes_exhausted=exc.inodes_exhausted
                ) from cause
            raise
        except TransportError as exc:
            # no descriptor for the connection (or the file:// source), after its retries:
            # a want of the whole process as when the temp file gets none, so it stops the
            # run alike, rather than failing every unit in turn
            cause = _out_of_descriptors(exc)
            if cause is not None:
                raise StorageWriteError(cause, storage.temp_dir) from cause
            raise
        try:
            # no fsync per file: the committer makes the batch durable with one sync
            stored = await storage.adopt_result(result, sync=False)
        finally:
            result.path.unlink(missing_ok=True)  # adopted: already moved; failed: cleaned
        record = ArtifactRecord(stored.sha256, stored.size, dict(stored.digests))
        self._recent[record.sha256] = record
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        progress.artifacts_downloaded += 1
        progress.bytes_downloaded += result.size
        tally.event("artifact_downloaded", unit, relative_path=art.relative_path, size=result.size)
        return record
