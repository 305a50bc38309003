"""The content unit creator: every declared unit ends complete in the store, or absent.

Owns turning a stream of :class:`~triofetch.declarative.DeclarativeUnit` into committed units
and a repository version: deduplication, downloads through a
:class:`~triofetch.downloader.Downloader`, adoption into the storage, batched commits and the
report.  It reaches the database only through :class:`~triofetch.store.Store`.

Its modules, each importing only those above it in this list:

- ``_reports``: the report types and the run's tally (counters, failures, events).
- ``_versions``: the repository version of a run (open, place stored units, finish).
- ``_flights``: single-flight downloads of one sha256, and the files adopted lately.
- ``_downloads``: one unit's downloads (the unit downloader's nursery), the full-disk stop.
- ``_fill``: giving stored units their missing files (``fill_missing``).
- ``_pipeline``: the slices of a run, the per-unit decisions and the committer.
- ``_creator``: :class:`ContentUnitCreator`, the frame of a run around the pipeline.
"""

from .._public import publish
from ._creator import ContentUnitCreator
from ._reports import (
    CreateReport,
    CreatorEvent,
    CreatorEventKind,
    CreatorProgress,
    Policy,
    UnitFailure,
)

__all__ = [
    "ContentUnitCreator",
    "CreateReport",
    "CreatorEvent",
    "CreatorEventKind",
    "CreatorProgress",
    "Policy",
    "UnitFailure",
]

publish(__name__, globals())
