"""Progress of a sync: counters fed by the creator's events, drawn as rich progress bars.

Owns what the bars show; it only listens (the creator's events, the manifest's sizes) and
must not change the sync it draws.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..creator import ContentUnitCreator, CreatorEvent
from ..manifest import RepositoryIndex

__all__ = ["SyncTracker", "progress_bars", "progress_console"]

log = logging.getLogger("triofetch.cli.events")

_REFRESH = 0.1


def progress_console(forced: bool | None, quiet: bool) -> Console | None:
    """The console to draw bars on (stderr), or None for no bars.

    *forced*: ``--progress`` (True) or ``--no-progress`` (False); not given (None), bars are
    drawn when stderr is a terminal and not with ``-q``.  stdout is never drawn on: it
    carries the results only (``sync --json > out.json``).
    """
    if forced is None:
        if quiet or not sys.stderr.isatty():
            return None
        return Console(file=sys.stderr)
    return Console(file=sys.stderr, force_terminal=True) if forced else None


def _debug() -> bool:
    return log.isEnabledFor(logging.DEBUG)


class SyncTracker:
    """Counts units done and bytes left to download from the creator's events.

    The bytes bar counts transfers only: units already stored, artifacts reused and units
    recorded without download (on-demand) shrink its total instead of filling it, so that
    its rate and ETA are those of the network.
    """

    def __init__(self, index: RepositoryIndex) -> None:
        self.index = index
        self.units_total = len(index)
        self.units_done = 0
        self.bytes_total = index.total_size or 0
        self.bytes_done = 0
        self._counted: dict[tuple[str, ...], int] = {}

    def _settle(self, key: tuple[str, ...]) -> None:
        """A unit is finished: whatever of its bytes was not transferred will not be."""
        left = self.index.unit_size(key) - self._counted.pop(key, 0)
        if left > 0:
            self.bytes_total -= left

    def on_event(self, event: CreatorEvent) -> None:
        key = event.key.natural_key if event.key is not None else None
        kind = event.kind
        if _debug():
            what = event.relative_path or (key[0] if key else "")
            error = f": {event.error}" if event.error is not None else ""
            log.debug("%s %s%s", kind, what, error)
        if kind == "artifact_downloaded":
            self.bytes_done += event.size
        elif kind == "artifact_reused":
            self.bytes_total -= event.size
        elif kind in ("committed", "existing", "failed"):
            self.units_done += 1
            if key is not None:
                self._settle(key)
            return
        else:
            return
        if key is not None:
            self._counted[key] = self._counted.get(key, 0) + event.size


@asynccontextmanager
async def progress_bars(
    creator: ContentUnitCreator, tracker: SyncTracker, console: Console
) -> AsyncIterator[None]:
    """Draw a files bar and a bytes bar (rate, ETA) while the body runs."""
    progress = Progress(
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=10,
    )
    files = progress.add_task("files", total=tracker.units_total, detail="")
    data = progress.add_task("download", total=max(tracker.bytes_total, 1), detail="")
    speed = TransferSpeedColumn()
    size = DownloadColumn()
    count = MofNCompleteColumn()
    elapsed = TimeElapsedColumn()

    def update() -> None:
        p = creator.progress
        progress.update(files, completed=tracker.units_done)
        progress.update(
            data,
            total=max(tracker.bytes_total, tracker.bytes_done, 1),
            completed=tracker.bytes_done,
        )
        by_id = {t.id: t for t in progress.tasks}
        failed = f", [red]{p.units_failed} failed[/]" if p.units_failed else ""
        progress.update(
            files,
            detail=f"{count.render(by_id[files])} ({p.units_existing} present{failed})",
        )
        progress.update(
            data,
            detail=f"{size.render(by_id[data])} {speed.render(by_id[data])} "
            f"{elapsed.render(by_id[data])}",
        )

    async def refresher() -> None:
        while True:
            update()
            await trio.sleep(_REFRESH)

    with progress:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresher)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
        update()
