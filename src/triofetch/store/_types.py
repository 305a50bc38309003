"""Value types of the store, and the validation of what callers hand to it.

Owns the values the store takes and returns (:class:`NewUnit`, :class:`CommitReport`,
:class:`RepositoryKey`, :class:`Placement`, ...) and their checks.  Everything here is
checked in Python, before any database work, so that bad input gets a typed error
(:class:`~triofetch.InvalidUnit`, :class:`~triofetch.InvalidDigest`) and nothing is written.
Both databases accept exactly the same values, so a unit means the same thing in SQLite and
in PostgreSQL.  It must not touch a database: it imports only the shared model, the errors
and the key hash of ``_schema``.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .._digests import normalize_digests
from .._model import (
    MAX_KEY_BYTES,
    MAX_TYPE_BYTES,
    MAX_URL_BYTES,
    ArtifactRecord,
    UnitKey,
    check_relative_path,
    check_size,
    check_text,
    digests_json,
    dump_json,
    fields_text,
    key_json,
    make_key,
)
from .._urls import redact_url
from ..errors import InvalidDigest, InvalidInput, InvalidUnit, RepositoryKeyConflict
from ._schema import unit_key_hash

__all__ = [
    "DEFAULT_REPOSITORY_KEYS",
    "CommitOutcome",
    "CommitReport",
    "MissingArtifact",
    "NewUnit",
    "NewUnitArtifact",
    "Placement",
    "RemoteArtifact",
    "ReplacedUnit",
    "RepositoryKey",
    "UnitInfo",
    "VersionHandle",
    "check_repository_keys",
    "check_unit_body",
    "load_json",
]

# -- checks -----------------------------------------------------------------------------


_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]
)


def load_json(text: str) -> Any:
    """Parse JSON text written by this module (trusted: straight to the C scanner)."""
    if text == "{}":
        return {}
    return _scan(text, 0)[0]


# -- value types ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, init=False)
class RepositoryKey:
    """The fields that give units of one type their place in a repository version.

    A version holds at most one unit per repository key: adding a unit removes from the
    version the unit carried over from the previous version at the same key (it is
    *replaced*), and two units added at one key are refused.  With ``path=True`` the key is
    one field holding a relative path, and a file and a directory cannot share a path either
    (a unit at ``a`` and one at ``a/b``).  Declared per unit type with
    ``open_store(repository_keys={type: RepositoryKey(...)})``; ``file`` units (what the
    command line creates) are keyed by their ``relative_path`` field.

    ::

        RepositoryKey("relative_path", path=True)     # files
        RepositoryKey("name", "arch")                 # one package per name and arch
    """

    fields: tuple[str, ...]
    path: bool

    def __init__(self, *fields: str, path: bool = False) -> None:
        if not fields or not all(isinstance(f, str) and f for f in fields):
            raise InvalidInput(f"a repository key needs field names (str), got {fields!r}")
        if len(set(fields)) != len(fields):
            raise InvalidInput(f"a repository key names a field twice: {fields!r}")
        if not isinstance(path, bool):
            raise InvalidInput(f"path must be a bool, got {path!r}")
        if path and len(fields) != 1:
            raise InvalidInput(f"a path key is one field, got {fields!r}")
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "path", path)

    def of(self, unit_type: str, fields: Mapping[str, Any]) -> str:
        """The key of a unit with these *fields*, as stored (see ``_schema``, version 4).

        Raises :class:`~triofetch.InvalidUnit` when a field is missing or unfit.
        """
        values = []
        for name in self.fields:
            if name not in fields:
                raise InvalidUnit(
                    f"a {unit_type!r} unit needs the field {name!r}: it is its repository key"
                )
            values.append(fields[name])
        if self.path:
            value = values[0]
            if not isinstance(value, str):
                raise InvalidUnit(
                    f"the field {self.fields[0]!r} of a {unit_type!r} unit is a path, got {value!r}"
                )
            try:
                return check_relative_path(value)
            except InvalidUnit as exc:
                raise InvalidUnit(f"{self.fields[0]}: {exc}") from None
        text = dump_json([unit_type, values], "repository key")
        size = len(text.encode("utf-8"))
        if size > MAX_KEY_BYTES:
            raise InvalidUnit(
                f"the repository key of a {unit_type!r} unit is {size} bytes long, at most "
                f"{MAX_KEY_BYTES} allowed"
            )
        return "/" + text


#: The repository keys every store knows unless told otherwise: ``file`` units (the
#: manifest's, and the command line's) are placed by their relative path.
DEFAULT_REPOSITORY_KEYS: Mapping[str, RepositoryKey] = MappingProxyType(
    {"file": RepositoryKey("relative_path", path=True)}
)


def check_repository_keys(value: object) -> dict[str, RepositoryKey]:
    """The declarations a store uses: the defaults, updated with *value* (None: none more)."""
    keys = dict(DEFAULT_REPOSITORY_KEYS)
    if value is None:
        return keys
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"repository_keys must be a mapping of type to RepositoryKey, got {value!r}"
        )
    for type_, key in value.items():
        check_text(type_, "unit type", MAX_TYPE_BYTES)
        if key is not None and not isinstance(key, RepositoryKey):
            raise InvalidInput(
                f"repository_keys[{type_!r}] must be a RepositoryKey or None, got {key!r}"
            )
        if key is None:
            keys.pop(type_, None)
        else:
            keys[type_] = key
    return keys


@dataclass(frozen=True, slots=True)
class ReplacedUnit:
    """A unit carried over from the previous version that new content replaced.

    Attributes:
        key: the unit dropped from the new version (it stays in the store and in older
            versions).
        repository_key: the repository key at which it was replaced (a relative path for
            files).
        by: the unit that replaced it.
    """

    key: UnitKey
    repository_key: str
    by: UnitKey

    @property
    def relative_path(self) -> str | None:
        """The path of a path-keyed unit (files), else None."""
        return None if self.repository_key.startswith("/") else self.repository_key


@dataclass(slots=True)
class Placement:
    """What placing units in a version did (see :meth:`Store.place_units`).

    Attributes:
        added: units that were not in the version and now are.
        replaced: the units of the version that new content took the place of.
        refused: the units refused, by unit id (:meth:`Store.place_units`).
    """

    added: int = 0
    replaced: list[ReplacedUnit] = field(default_factory=list)
    refused: dict[int, RepositoryKeyConflict] = field(default_factory=dict)


def _shown(urls: tuple[str, ...]) -> tuple[str, ...]:
    """*urls* as they may be shown: their credentials redacted."""
    return tuple(redact_url(url) for url in urls)


@dataclass(frozen=True, slots=True)
class RemoteArtifact:
    """Where an artifact can be fetched later: URL(s), and the expected size and digests.

    ``streamed`` marks the file of a unit created with the ``streamed`` policy: served from
    these URLs on every request, never stored (see :mod:`triofetch.serve`).
    """

    urls: tuple[str, ...]
    size: int | None = None
    digests: Mapping[str, str] = field(default_factory=dict)
    streamed: bool = False
    _json: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        urls = (self.urls,) if isinstance(self.urls, str) else self.urls
        if not isinstance(urls, tuple | list) or not urls:
            raise InvalidUnit(f"a remote artifact needs at least one URL, got {self.urls!r}")
        checked = tuple(sorted(check_text(u, "URL", MAX_URL_BYTES) for u in urls))
        if len(set(checked)) != len(checked):
            raise InvalidUnit(f"a remote artifact lists a URL twice: {checked!r}")
        if self.size is not None:
            check_size(self.size, "expected size")
        if not isinstance(self.streamed, bool):
            raise InvalidUnit(f"streamed must be a bool, got {self.streamed!r}")
        object.__setattr__(self, "urls", checked)
        object.__setattr__(
            self, "digests", MappingProxyType(dict(sorted(normalize_digests(self.digests).items())))
        )
        object.__setattr__(self, "_json", digests_json(self.digests))

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteArtifact, (self.urls, self.size, dict(self.digests), self.streamed))

    def __repr__(self) -> str:
        # (credentials in a URL are not shown: a record may be logged)
        return (
            f"RemoteArtifact(urls={_shown(self.urls)!r}, size={self.size!r}, "
            f"digests={dict(self.digests)!r}, streamed={self.streamed!r})"
        )

    def digests_json(self) -> str:
        return self._json


@dataclass(frozen=True, slots=True)
class NewUnitArtifact:
    """One file of a unit to commit: the downloaded artifact, a remote, or both."""

    relative_path: str
    artifact: ArtifactRecord | None = None
    remote: RemoteArtifact | None = None

    def __post_init__(self) -> None:
        check_relative_path(self.relative_path)
        if self.artifact is not None and not isinstance(self.artifact, ArtifactRecord):
            raise InvalidUnit(f"artifact must be an ArtifactRecord, got {self.artifact!r}")
        if self.remote is not None and not isinstance(self.remote, RemoteArtifact):
            raise InvalidUnit(f"remote must be a RemoteArtifact, got {self.remote!r}")
        if self.artifact is None and self.remote is None:
            raise InvalidUnit(
                f"{self.relative_path!r}: an artifact needs a downloaded file or a remote"
            )
        if self.artifact is not None and self.remote is not None:
            expected = self.remote.digests
            for name, value in expected.items():
                got = self.artifact.digests.get(name)
                if got is not None and got != value:
                    raise InvalidDigest(name, got, f"the remote expects {value}")
            if self.remote.size is not None and self.remote.size != self.artifact.size:
                raise InvalidUnit(
                    f"{self.relative_path!r}: size {self.artifact.size}, "
                    f"the remote expects {self.remote.size}"
                )


@dataclass(frozen=True, slots=True)
class NewUnit:
    """A unit to commit: type, natural key, JSON fields, and its artifacts.

    Everything is checked here, when the unit is made; the fields are captured as JSON text
    at that moment too (changing the ``fields`` dict afterwards changes nothing stored).
    """

    type: str
    natural_key: tuple[str, ...]
    fields: Mapping[str, Any] = field(default_factory=dict)
    artifacts: tuple[NewUnitArtifact, ...] = ()
    fields_json: str = field(default="", init=False, repr=False, compare=False)
    key_json: str = field(default="", init=False, repr=False, compare=False)
    # the key's hash (see _schema.unit_key_hash), made here rather than by the writer
    key_hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = make_key(self.type, self.natural_key)
        object.__setattr__(self, "natural_key", key.natural_key)
        text = key_json(key.natural_key)
        object.__setattr__(self, "key_json", text)
        object.__setattr__(self, "key_hash", unit_key_hash(self.type, text))
        arts = tuple(self.artifacts)
        object.__setattr__(self, "artifacts", arts)
        object.__setattr__(self, "fields_json", check_unit_body(self))

    @property
    def key(self) -> UnitKey:
        return UnitKey(self.type, self.natural_key)


def check_unit_body(unit: NewUnit) -> str:
    """Check fields and artifacts; return the fields' JSON text."""
    if not isinstance(unit.fields, Mapping):
        raise InvalidUnit(f"fields must be a mapping, got {type(unit.fields).__name__}")
    text = fields_text(unit.fields, "fields")
    seen: set[str] = set()
    for a in unit.artifacts:
        if not isinstance(a, NewUnitArtifact):
            raise InvalidUnit(f"artifacts must be NewUnitArtifact, got {a!r}")
        if a.relative_path in seen:
            raise InvalidUnit(f"relative_path {a.relative_path!r} given twice")
        seen.add(a.relative_path)
    return text


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """A unit in the database.

    ``artifacts`` maps each relative path to its artifact, or to None when the file has not
    been downloaded (a unit created with the on-demand policy).
    """

    id: int
    key: UnitKey
    fields: Mapping[str, Any]
    artifacts: Mapping[str, ArtifactRecord | None]

    @property
    def missing(self) -> tuple[str, ...]:
        """Relative paths without a downloaded artifact, sorted."""
        return tuple(sorted(p for p, a in self.artifacts.items() if a is None))

    @property
    def complete(self) -> bool:
        return all(a is not None for a in self.artifacts.values())


@dataclass(frozen=True, slots=True)
class MissingArtifact:
    """A file of a unit that has not been downloaded: where it goes, where to fetch it.

    ``urls``, ``size`` and ``digests`` come from the unit's remote artifacts (``urls`` is
    empty when none was recorded); ``streamed`` is true for a unit created with the
    ``streamed`` policy (served from its URLs, never stored by the content app).
    """

    unit_id: int
    key: UnitKey
    relative_path: str
    urls: tuple[str, ...]
    size: int | None
    digests: Mapping[str, str]
    streamed: bool = False

    def __repr__(self) -> str:
        # (credentials in a URL are not shown: a record may be logged)
        return (
            f"MissingArtifact(unit_id={self.unit_id!r}, key={self.key!r}, "
            f"relative_path={self.relative_path!r}, urls={_shown(self.urls)!r}, "
            f"size={self.size!r}, digests={dict(self.digests)!r}, streamed={self.streamed!r})"
        )


@dataclass(frozen=True, slots=True)
class VersionHandle:
    """A repository version: ``number`` counts from 1 within its repository."""

    id: int
    repository: str
    number: int
    complete: bool = False


Status = Literal["committed", "existing", "failed"]


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What :meth:`Store.commit_units` did with one unit.

    ``committed``: created now, with all its artifacts; ``existing``: a unit with this key
    was already there (made by an earlier run, another worker, or earlier in the same batch)
    and is reused; ``failed``: nothing of it was written, ``error`` says why.
    """

    unit: NewUnit
    status: Status
    unit_id: int | None = None
    error: Exception | None = None

    @property
    def key(self) -> UnitKey:
        return self.unit.key


@dataclass(frozen=True, slots=True)
class CommitReport:
    """One :class:`CommitOutcome` per unit given, in the same order; with a version, the
    units it replaced there (see :class:`RepositoryKey`)."""

    outcomes: tuple[CommitOutcome, ...]
    replaced: tuple[ReplacedUnit, ...] = ()

    def __iter__(self) -> Iterator[CommitOutcome]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    def _with(self, status: Status) -> tuple[CommitOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status == status)

    @property
    def committed(self) -> tuple[CommitOutcome, ...]:
        return self._with("committed")

    @property
    def existing(self) -> tuple[CommitOutcome, ...]:
        return self._with("existing")

    @property
    def failed(self) -> tuple[CommitOutcome, ...]:
        return self._with("failed")

    @property
    def unit_ids(self) -> dict[UnitKey, int]:
        """The id of every unit now in the database, by key."""
        return {o.key: o.unit_id for o in self.outcomes if o.unit_id is not None}
