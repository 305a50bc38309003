"""The content unit creator: every declared unit ends complete in the store, or absent.

Owns turning a stream of :class:`~triofetch.declarative.DeclarativeUnit` into committed units
and a repository version: deduplication, downloads through a
:class:`~triofetch.downloader.Downloader`, adoption into the storage, batched commits and the
report.  It reaches the database only through :class:`~triofetch.store.Store`.
"""

from .._public import publish
from ._creator import ContentUnitCreator
from ._reports import CreateReport, CreatorEvent, CreatorProgress, Policy, UnitFailure

__all__ = [
    "ContentUnitCreator",
    "CreateReport",
    "CreatorEvent",
    "CreatorProgress",
    "Policy",
    "UnitFailure",
]

publish(__name__, globals())
