"""Plain descriptions of test repositories and cancellation points, without Hypothesis.

:class:`RepositorySpec` describes a repository before any server exists: a pool of file
contents and units whose files point into that pool (so units share artifacts).  It becomes
:class:`~triofetch.DeclarativeUnit` objects once the contents are served
(:meth:`RepositorySpec.serve` on a :class:`~triofetch.testing.FaultServer`, or
:meth:`RepositorySpec.declare` with URLs of your own).  :class:`CancelPoint` cancels a
creator run at the n-th event of a kind.  :mod:`triofetch.testing.strategies` draws both.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FunctionType

import trio

from triofetch import CreatorEvent, CreatorEventKind, DeclarativeArtifact, DeclarativeUnit, UnitKey

from ._faultserver import Fault, FaultServer

__all__ = ["CREATOR_EVENT_KINDS", "CancelPoint", "FileSpec", "RepositorySpec", "UnitSpec"]

CREATOR_EVENT_KINDS: tuple[CreatorEventKind, ...] = typing.get_args(CreatorEventKind)
"""The ``kind`` of every :class:`~triofetch.CreatorEvent` a creator run emits."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a unit: its relative path, and which content of the pool it holds."""

    relative_path: str
    content: int


@dataclass(frozen=True)
class UnitSpec:
    """One unit of a :class:`RepositorySpec`: its type, a name, and its files.

    The natural key is the name followed by ``path=content`` for each file, so two units
    of one name with other files are two units (a key always means the same files).
    """

    type: str
    name: str
    files: tuple[FileSpec, ...] = ()

    @property
    def natural_key(self) -> tuple[str, ...]:
        """``(name, "path=content", ...)``, files in path order."""
        return (self.name, *(f"{f.relative_path}={f.content}" for f in _sorted_files(self)))

    @property
    def key(self) -> UnitKey:
        """The key the store knows the unit by."""
        return UnitKey(self.type, self.natural_key)


def _sorted_files(unit: UnitSpec) -> tuple[FileSpec, ...]:
    return tuple(sorted(unit.files, key=lambda f: f.relative_path))


@dataclass(frozen=True)
class RepositorySpec:
    """A repository to create in a test: a pool of contents, and units whose files point
    into the pool (a content used by several units is one shared artifact).

    Units may repeat (the same key twice in the input is allowed, and happens in real
    repositories).  Nothing here knows a URL: :meth:`serve` or :meth:`declare` make the
    :class:`~triofetch.DeclarativeUnit` objects.

    Attributes:
        fields: the ``fields`` every declared unit gets, beside ``{"name": ...}``.
    """

    contents: tuple[bytes, ...]
    units: tuple[UnitSpec, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for unit in self.units:
            for f in unit.files:
                if not 0 <= f.content < len(self.contents):
                    raise ValueError(f"{unit.name}: content {f.content} is not in the pool")

    @property
    def keys(self) -> set[UnitKey]:
        """The distinct keys of the units."""
        return {u.key for u in self.units}

    def sha256(self, content: int) -> str:
        """The sha256 of content number *content*."""
        return hashlib.sha256(self.contents[content]).hexdigest()

    def declare(self, url_for: Callable[[int], str | Sequence[str]]) -> list[DeclarativeUnit]:
        """The declarative units, in order; *url_for(content)* gives the URL (or mirror
        URLs) of each content.  Every artifact declares its sha256 and size."""
        declared = []
        for unit in self.units:
            artifacts = [
                DeclarativeArtifact(
                    url_for(f.content),
                    f.relative_path,
                    {"sha256": self.sha256(f.content)},
                    len(self.contents[f.content]),
                )
                for f in _sorted_files(unit)
            ]
            fields = {**self.fields, "name": unit.name}
            declared.append(DeclarativeUnit(unit.type, unit.natural_key, fields, artifacts))
        return declared

    @staticmethod
    def path(prefix: str, content: int) -> str:
        """The path :meth:`serve` serves content *content* at: ``/<prefix>/c<content>``."""
        return f"/{prefix.strip('/')}/c{content}"

    def serve(
        self,
        server: FaultServer,
        prefix: str,
        faults: Mapping[int, Iterable[Fault]] | None = None,
    ) -> list[DeclarativeUnit]:
        """Serve every content on *server* under ``/<prefix>/`` (replacing what was there),
        content *i* after the faults ``faults[i]`` (keys outside the pool are ignored), and
        return the declarative units pointing there.

        Give each test (each Hypothesis example) its own *prefix* on a shared server.
        """
        plans = dict(faults or {})
        for index, data in enumerate(self.contents):
            server.add_file(self.path(prefix, index), data, faults=list(plans.get(index, ())))
        return self.declare(lambda content: server.url(self.path(prefix, content)))

    def heal(self, server: FaultServer, prefix: str) -> None:
        """Serve every content under ``/<prefix>/`` again, without a fault left."""
        for index, data in enumerate(self.contents):
            server.add_file(self.path(prefix, index), data)


@dataclass(frozen=True)
class CancelPoint:
    """Where to cancel a creator run: at its *nth* :class:`~triofetch.CreatorEvent` of
    *kind* (``"committed"``, 2: just after the second unit committed).

    ::

        scope = trio.CancelScope()
        creator = triofetch.ContentUnitCreator(store, dl, on_event=point.watch(scope))
        with scope:
            report = await creator.run(units, repository="r")
        cancelled = scope.cancelled_caught

    A run that emits fewer such events finishes normally.
    """

    kind: CreatorEventKind
    nth: int = 1

    def __post_init__(self) -> None:
        if self.kind not in CREATOR_EVENT_KINDS:
            raise ValueError(f"not a creator event kind: {self.kind!r}")
        if self.nth < 1:
            raise ValueError("nth counts from 1")

    def watch(
        self,
        scope: trio.CancelScope,
        then: Callable[[CreatorEvent], object] | None = None,
    ) -> Callable[[CreatorEvent], None]:
        """An ``on_event`` callback that cancels *scope* at this point (and passes every
        event on to *then*, if given)."""
        seen = 0

        def on_event(event: CreatorEvent) -> None:
            nonlocal seen
            if then is not None:
                then(event)
            if event.kind == self.kind:
                seen += 1
                if seen == self.nth:
                    scope.cancel()

        return on_event


# The public home of every class and function above, for reprs, pickling and the docs.
for _name in __all__:
    if isinstance(globals()[_name], type | FunctionType):
        globals()[_name].__module__ = "triofetch.testing"
del _name
