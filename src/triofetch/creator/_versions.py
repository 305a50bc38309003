"""The repository version a run makes: opened first, completed or discarded at the end.

Owns the version bookkeeping of :meth:`ContentUnitCreator.run`: creating the repository and
an incomplete version of it (on the latest version, or empty for a mirror), placing units
already stored into that version, and at the end completing it when the run succeeded and
changed something, or else discarding it.  It reaches the database only through the
:class:`~triofetch.store.Store`, and records in the run's :class:`._reports.Tally`; it
downloads nothing, touches no file and does not commit new units (the store's
``commit_units`` places those itself).
"""

from __future__ import annotations

import trio

from ..declarative import DeclarativeUnit
from ..errors import StorageWriteError, StoreError, UnitFailed
from ..store import Store, VersionHandle
from ._reports import Tally

__all__ = ["discard_version", "finish_version", "open_version", "place_stored"]


async def open_version(
    store: Store, repository: str, *, mirror: bool
) -> tuple[VersionHandle | None, VersionHandle]:
    """The latest complete version of *repository* (None at first) and a new, incomplete
    one: holding the latest's units, or none with *mirror*.  Creates the repository."""
    await store.create_repository(repository)
    previous = await store.latest_version(repository)
    version = await store.new_version(
        repository, base=None if mirror else "latest", create_repository=True
    )
    return previous, version


async def finish_version(
    store: Store,
    version: VersionHandle,
    previous: VersionHandle | None,
    *,
    failed: bool,
    mirror: bool,
) -> VersionHandle | None:
    """Complete *version* if the run succeeded and changed something, else discard it.

    Returns the complete version that holds the run's content: *version* when it was
    completed; else the one it turned out the same as (*previous*, or a version another run
    completed meanwhile next to it in number order; or, without *mirror*, the latest when
    the run changed nothing and the latest holds all it holds); None after a failure.
    Whether it changed something is decided by the store under the repository's lock
    (:meth:`Store.complete_if_changed`), so runs finishing the same content at once make one
    version.  The first version of a repository is completed even
    when empty: it is where the (empty) content is.
    """
    kept = None
    with trio.CancelScope(shield=True):
        if failed:
            await store.discard_version(version)
        else:
            kept = await store.complete_if_changed(version, previous, additive=not mirror)
    return kept


async def discard_version(store: Store, version: VersionHandle, error: BaseException) -> None:
    """Discard *version* after the run failed with *error*."""
    try:
        await store.discard_version(version)
    except StoreError as exc:
        if not isinstance(error, StorageWriteError):
            raise
        # the database is on the full disk too: the version stays incomplete (no reader
        # sees it; gc removes it), and the disk error is the one to report
        if error.database_error is None:
            error.database_error = exc


async def place_stored(
    store: Store,
    tally: Tally,
    stored: list[tuple[DeclarativeUnit, int]],
    version: VersionHandle | None,
) -> None:
    """Units already in the store (unit, id): into *version* (one statement), counted as
    existing; a unit the version refuses is a failure."""
    refused: dict[int, BaseException] = {}
    if version is not None and stored:
        placement = await store.place_units(version, [uid for _, uid in stored])
        refused = dict(placement.refused)
        tally.took_places(placement.replaced)
    progress = tally.progress
    for unit, uid in stored:
        error = refused.get(uid)
        if error is not None:
            tally.fail(unit, UnitFailed((unit.type, unit.natural_key), error))
            continue
        progress.units_existing += 1
        tally.event("existing", unit)
