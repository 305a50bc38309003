"""What a creator run tells its caller: the policy, live progress, events, failures, report.

Owns the public report types (:class:`Policy`, :class:`CreatorProgress`,
:class:`CreatorEvent`, :class:`UnitFailure`, :class:`CreateReport`) and :class:`Tally`, the
one place where a run counts, records its failed and replaced units, calls ``on_event`` and
makes its report.  It does no I/O and runs no task: it must not touch the store, the
storage, the downloader or Trio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Literal

from ..declarative import DeclarativeUnit
from ..errors import DownloadError, UnitFailed
from ..store import ReplacedUnit, UnitKey

#: a WARNING for each unit that new content replaced (see docs/downloader.rst, "Logging")
_log = logging.getLogger("triofetch.creator")

__all__ = [
    "CreateReport",
    "CreatorEvent",
    "CreatorEventKind",
    "CreatorProgress",
    "Policy",
    "Tally",
    "UnitFailure",
]


class Policy(StrEnum):
    """When artifacts are downloaded."""

    #: download every missing artifact now; a unit is committed with all of its files
    IMMEDIATE = "immediate"
    #: record units and where their files can be fetched (remote artifacts); download
    #: nothing now: the content app (``triofetch serve``) fetches a file on its first
    #: request and stores it for the next ones
    ON_DEMAND = "on_demand"
    #: record units as for ``ON_DEMAND``, but the content app streams their files from the
    #: remote on every request and never stores them
    STREAMED = "streamed"


@dataclass
class CreatorProgress:
    """Live counters of a run; read them at any time (e.g. to draw progress bars).

    Attributes:
        artifacts_repaired: stored files found missing or of the wrong size, downloaded
            again.
        units_replaced: units the new version no longer holds because new content took
            their place (counted as the run goes; a run that fails makes no version: its
            report says 0).
        bytes_planned: expected bytes of the artifacts the run decided to download (when
            sizes are known).
    """

    units_seen: int = 0
    units_existing: int = 0
    units_downloading: int = 0
    units_committed: int = 0
    units_failed: int = 0
    artifacts_downloaded: int = 0
    artifacts_reused: int = 0
    artifacts_repaired: int = 0
    units_replaced: int = 0
    bytes_downloaded: int = 0
    bytes_planned: int = 0


#: The ``kind`` of a :class:`CreatorEvent`, in the order a unit meets them: ``seen`` (the
#: run took the unit), ``existing`` (the store holds it already: nothing to do),
#: ``downloading`` (its missing files are being fetched), ``artifact_downloaded`` and
#: ``artifact_reused`` (one file fetched, or found stored), then ``committed`` or
#: ``failed``.  ``typing.get_args(CreatorEventKind)`` lists them.
CreatorEventKind = Literal[
    "seen",
    "existing",
    "downloading",
    "artifact_downloaded",
    "artifact_reused",
    "committed",
    "failed",
]


@dataclass(frozen=True, slots=True)
class CreatorEvent:
    """What happened to one unit or artifact (passed to ``on_event``).

    Attributes:
        kind: one of ``seen``, ``existing``, ``downloading``, ``committed``, ``failed``,
            ``artifact_downloaded``, ``artifact_reused`` (typed
            :data:`~triofetch.CreatorEventKind`: a type checker knows a comparison with any
            other string is never true).
        error: why the unit failed (``failed`` events): its ``cause`` is the download's
            error...
    """

    kind: CreatorEventKind
    key: UnitKey | None = None
    relative_path: str | None = None
    size: int = 0
    error: UnitFailed | None = None


@dataclass(frozen=True, slots=True)
class UnitFailure:
    """A unit that is not in the store, and why.

    Attributes:
        error: why; its ``cause`` is the error that failed the unit (a download's, a
            commit's...).
    """

    unit: DeclarativeUnit
    error: UnitFailed

    @property
    def key(self) -> UnitKey:
        return UnitKey(self.unit.type, self.unit.natural_key)

    @property
    def url(self) -> str | None:
        """The URL of the download that failed, when a download failed."""
        cause = self.error.cause
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
    the version already holding it (``created`` False): the latest version the run started
    from, or the one another run of the same content completed meanwhile (then the run made
    no version, as if it had run after that one), or — a run without ``mirror`` that
    changed nothing, when other runs added to the repository meanwhile — the latest
    version, which holds all the run's version would have held.  It is None when some units
    failed (no version holds the input then: check ``ok``) and without a repository.
    ``latest_version`` is the repository's latest complete version after the run (another
    worker's may be newer than ``version``).

    ``replaced`` lists the units of the previous version that new content took the place of
    (same repository key: a file at the same relative path), which the new version no longer
    holds; it is empty when no version was made (a run with failures replaced nothing: the
    latest version still holds those units).  ``artifacts_repaired`` counts stored files
    found missing or damaged and downloaded again.
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


class Tally:
    """What one run (or one ``fill_missing``) did so far: counters, failures, replacements.

    Every part of a run records here, and only here, so that the progress a caller reads,
    the events it receives and the report it gets say the same thing.
    """

    __slots__ = ("fail_fast", "failures", "on_event", "progress", "replaced", "started")

    def __init__(
        self,
        on_event: Callable[[CreatorEvent], None] | None,
        fail_fast: bool,
        progress: CreatorProgress | None = None,
    ) -> None:
        """Count into *progress*, its counters zeroed first (default: a new one)."""
        self.started = time.monotonic()
        if progress is None:
            progress = CreatorProgress()
        else:
            for counter in fields(progress):
                setattr(progress, counter.name, 0)
        self.progress = progress
        self.failures: list[UnitFailure] = []
        self.replaced: list[ReplacedUnit] = []
        self.on_event = on_event
        self.fail_fast = fail_fast

    def event(
        self,
        kind: CreatorEventKind,
        unit: DeclarativeUnit | None = None,
        *,
        relative_path: str | None = None,
        size: int = 0,
        error: UnitFailed | None = None,
    ) -> None:
        if self.on_event is not None:
            key = UnitKey(unit.type, unit.natural_key) if unit is not None else None
            self.on_event(CreatorEvent(kind, key, relative_path, size, error))

    def fail(self, unit: DeclarativeUnit, error: BaseException) -> None:
        """Record *unit* as failed (*error* as the cause of a :class:`UnitFailed`, unless it
        is one); with ``fail_fast``, raise that :class:`UnitFailed` too."""
        if not isinstance(error, UnitFailed):
            error = UnitFailed((unit.type, unit.natural_key), error)
        self.progress.units_failed += 1
        self.failures.append(UnitFailure(unit, error))
        self.event("failed", unit, error=error)
        if self.fail_fast:
            raise error

    def took_places(self, replaced: Iterable[ReplacedUnit]) -> None:
        """Units the version being made no longer holds (counted as the run goes; they are
        replaced only if that version is made: see :meth:`version_made`)."""
        for item in replaced:
            self.replaced.append(item)
            self.progress.units_replaced += 1

    def version_made(self) -> None:
        """The version holding the replacements is complete: log each one (WARNING)."""
        for item in self.replaced:
            _log.warning(
                "replaced %s at %r by %s", _shown(item.key), item.repository_key, _shown(item.by)
            )

    def report(
        self,
        repository: str | None,
        version: int | None,
        latest: int | None,
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
            failures=list(self.failures),
            seconds=time.monotonic() - self.started,
            created=created,
            # (a version not made replaced nothing: the latest one still holds those units)
            units_replaced=p.units_replaced if created else 0,
            replaced=list(self.replaced) if created else [],
            artifacts_repaired=p.artifacts_repaired,
        )


def _shown(key: UnitKey) -> str:
    """A unit's key for a log line: ``type natural-key``."""
    unit_type, natural_key = key
    return f"{unit_type} {natural_key!r}"
