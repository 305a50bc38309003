"""Repair: hash the stored files the database records, fetch the bad ones again.

A stored file can go missing or bad long after its unit was committed (a disk error, a
person's ``rm``, a restore from an old backup).  :func:`~triofetch.repair` hashes every file
the database records (or those of one repository's units), page by page so that memory
stays flat however large the store is, and downloads each missing or corrupted one again
from the URLs recorded for it, tried as mirrors, with the sha256 and size the database
knows.  The new copy replaces the bad one atomically
(:meth:`ArtifactStorage.adopt <triofetch.ArtifactStorage.adopt>`): a reader sees the old
file or the whole new one.  A download that fails leaves the damaged file as it was and no
temp file behind.

Owns :func:`~triofetch.repair` and its report.  It reads and writes the database only
through the :class:`~triofetch.store.Store`, the files only through the
:class:`~triofetch.storage.ArtifactStorage`; it must not create units or versions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .downloader import Downloader
from .errors import (
    InvalidInput,
    StorageWriteError,
    TriofetchError,
    WrongContext,
    describe_error,
)
from .storage import ArtifactStorage
from .store import Store

__all__ = ["RepairReport", "RepairedFile", "UnrepairableFile", "repair"]

#: artifacts read from the database and hashed per page
_PAGE = 500

#: a WARNING for each file repaired (see docs/downloader.rst, "Logging")
_log = logging.getLogger("triofetch.repair")

#: the reason of a file that has no URL to fetch it from
NO_URL = "no URL recorded"


@dataclass(frozen=True, slots=True)
class RepairedFile:
    """A stored file that was missing or corrupted and was downloaded again."""

    sha256: str
    #: where the file is stored
    path: Path
    #: what was wrong with it (``missing``, ``size 3, expected 5``, ``sha256 is ...``)
    reason: str


@dataclass(frozen=True, slots=True)
class UnrepairableFile:
    """A stored file that is missing or corrupted and could not be downloaded again.

    The damaged file (if any) is left as it was.
    """

    sha256: str
    path: Path
    #: what is wrong with the file, and why it could not be fetched
    reason: str
    #: the URLs tried, in order (none when no URL is recorded for it)
    urls: tuple[str, ...] = ()


@dataclass(slots=True)
class RepairReport:
    """What :func:`repair` did."""

    #: stored files hashed
    checked: int = 0
    repaired: list[RepairedFile] = field(default_factory=list)
    failed: list[UnrepairableFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every file checked is intact now (none could not be repaired)."""
        return not self.failed


async def repair(
    store: Store, downloader: Downloader, *, repository: str | None = None
) -> RepairReport:
    """Hash every stored file the database records; download the bad ones again.

    Every artifact the database records (with *repository*, those of the units of any of
    its versions) is read back and hashed in worker threads under the storage's limiter,
    a page of artifacts at a time.  Each file that is missing, unreadable, or not of its
    recorded size and sha256 is fetched with *downloader* from the URLs recorded for the
    units' files that are that artifact (tried in order, as mirrors), checked against the
    recorded sha256 and size, and moved into the storage in place of the bad file, in one
    atomic rename.  The downloads and the replacement run under the store's writer lease
    (:meth:`Store.lease`), so that ``gc`` does not remove what is being repaired.

    A file that cannot be repaired (no URL recorded, every URL failed, a wrong body) is
    listed in the report's ``failed`` and left as it was; the others are still repaired.
    Artifacts that no unit refers to any more (orphans, which ``gc`` removes) are hashed but
    never fetched.

    Args:
        store: an open store with an artifact storage (``open_store(..., root=...)``).
        downloader: an open :class:`Downloader` (inside ``async with``).
        repository: only the files of this repository's units.

    Raises:
        RepositoryNotFound: there is no repository named *repository*.
        StorageWriteError: no file descriptor was left to read a stored file with
            (``too_many_open_files``): the repair stops rather than take the
            file for damaged.
        InvalidInput: the store has no artifact storage.
        WrongContext: the downloader is not open (outside its ``async with``).
    """
    if not isinstance(store, Store):
        raise InvalidInput(f"store must be a Store (from open_store), got {store!r}")
    if not isinstance(downloader, Downloader):
        raise InvalidInput(f"downloader must be a Downloader, got {downloader!r}")
    storage = store.storage
    if storage is None:
        raise InvalidInput("repair needs a store opened with a root (its artifact storage)")
    if not downloader.is_open:  # (or every damaged file would fail, after hashing them all)
        raise WrongContext("repair's Downloader is not open: repair inside its 'async with'")
    started = time.monotonic()
    report = RepairReport()
    cursor: int | None = 0
    while cursor is not None:
        page, cursor = await store.stored_artifacts(repository, after=cursor, limit=_PAGE)
        report.checked += len(page)
        damaged = await _check_page(storage, page)
        if damaged:
            async with store.lease():
                await _repair_page(store, storage, downloader, damaged, report)
    report.repaired.sort(key=lambda r: r.sha256)
    report.failed.sort(key=lambda f: f.sha256)
    report.seconds = time.monotonic() - started
    return report


async def _check_page(
    storage: ArtifactStorage, page: list[tuple[int, str, int]]
) -> list[tuple[int, str, int, str]]:
    """The artifacts of *page* whose files are not intact: (id, sha256, size, reason)."""
    damaged: list[tuple[int, str, int, str]] = []
    stopped: list[StorageWriteError] = []

    async def check(artifact_id: int, sha256: str, size: int, scope: trio.CancelScope) -> None:
        try:
            reason = await storage.check(sha256, size=size)
        except StorageWriteError as exc:  # no file descriptor left: stop, ungrouped
            stopped.append(exc)
            scope.cancel()
            return
        if reason is not None:
            damaged.append((artifact_id, sha256, size, reason))

    async with trio.open_nursery() as nursery:
        for artifact_id, sha256, size in page:
            nursery.start_soon(check, artifact_id, sha256, size, nursery.cancel_scope)
    if stopped:
        raise stopped[0]
    damaged.sort()
    return damaged


async def _repair_page(
    store: Store,
    storage: ArtifactStorage,
    downloader: Downloader,
    damaged: list[tuple[int, str, int, str]],
    report: RepairReport,
) -> None:
    urls = await store.artifact_urls([d[0] for d in damaged])
    async with trio.open_nursery() as nursery:
        for artifact_id, sha256, size, reason in damaged:
            sources = urls.get(artifact_id)
            if sources is None:
                continue  # an orphan: no unit needs it
            path = storage.path_for(sha256)
            if not sources:
                report.failed.append(UnrepairableFile(sha256, path, f"{reason}; {NO_URL}"))
                continue
            nursery.start_soon(
                _refetch, storage, downloader, sha256, size, reason, tuple(sources), report
            )


async def _refetch(
    storage: ArtifactStorage,
    downloader: Downloader,
    sha256: str,
    size: int,
    reason: str,
    urls: tuple[str, ...],
    report: RepairReport,
) -> None:
    path = storage.path_for(sha256)
    try:
        result = await downloader.fetch(
            urls,
            expected_digests={"sha256": sha256},
            expected_size=size,
            temp_dir=storage.temp_dir,
        )
    except TriofetchError as exc:
        report.failed.append(
            UnrepairableFile(sha256, path, f"{reason}; {describe_error(exc)}", urls)
        )
        return
    try:
        await storage.adopt_result(result)
    except TriofetchError as exc:
        report.failed.append(
            UnrepairableFile(sha256, path, f"{reason}; {describe_error(exc)}", urls)
        )
    else:
        report.repaired.append(RepairedFile(sha256, path, reason))
        _log.warning("repaired %s (%s): downloaded again", path, reason)
    finally:
        # adopted: the temp file is gone already; otherwise it must not stay
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(result.path.unlink, True)
