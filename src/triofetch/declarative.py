"""Declarative units and artifacts: what a caller describes before anything is fetched.

Owns :class:`DeclarativeUnit` and :class:`DeclarativeArtifact`, checked at construction
with the rules the store applies (so that a unit valid here is one the store accepts).
Values only: it must not touch the network, a file or the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._digests import normalize_digests
from ._model import check_relative_path, check_size, fields_text, make_key
from ._public import publish
from ._urls import redact_url
from .errors import InvalidUnit

__all__ = ["DeclarativeArtifact", "DeclarativeUnit", "check_relative_path"]


def _as_tuple(value: object, wanted: str) -> tuple[Any, ...]:
    """*value* (one str standing for itself) as a tuple, or InvalidUnit saying *wanted*."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise InvalidUnit(f"{wanted}, got {value!r}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class DeclarativeArtifact:
    """One file of a unit, as described before it is fetched.

    Args:
        urls: one URL, or several mirror URLs serving the same bytes (tried in order).
        relative_path: where the file sits inside its unit (safe relative path).
        digests: expected ``{algorithm: hexdigest}``; with a ``sha256`` the artifact can be
            recognised as already stored without downloading it.
        size: the expected size in bytes (0 to 2**63-1, the database's range), or None.

    Raises:
        InvalidUnit, UnsupportedAlgorithm, InvalidDigest: at construction.
    """

    urls: tuple[str, ...]
    relative_path: str
    digests: Mapping[str, str] = field(default_factory=dict)
    size: int | None = None

    def __init__(
        self,
        urls: str | Sequence[str],
        relative_path: str,
        digests: Mapping[str, str] | None = None,
        size: int | None = None,
    ) -> None:
        wanted = "an artifact needs at least one URL: a str or a sequence of str"
        url_tuple = _as_tuple(urls, wanted)
        if not url_tuple or not all(isinstance(u, str) and u for u in url_tuple):
            raise InvalidUnit(f"{wanted}, got {urls!r}")
        if size is not None:
            check_size(size, "artifact size")
        object.__setattr__(self, "urls", url_tuple)
        object.__setattr__(self, "relative_path", check_relative_path(relative_path))
        object.__setattr__(self, "digests", normalize_digests(digests))
        object.__setattr__(self, "size", size)

    @property
    def url(self) -> str:
        """The first (preferred) URL."""
        return self.urls[0]

    def __repr__(self) -> str:
        # (credentials in a URL are not shown: a unit or a failure may be logged)
        urls = tuple(redact_url(url) for url in self.urls)
        return (
            f"DeclarativeArtifact(urls={urls!r}, relative_path={self.relative_path!r}, "
            f"digests={self.digests!r}, size={self.size!r})"
        )

    @property
    def sha256(self) -> str | None:
        """The expected sha256, when known."""
        return self.digests.get("sha256")


@dataclass(frozen=True, slots=True)
class DeclarativeUnit:
    """A content unit as described before anything is fetched.

    Args:
        type: the unit type, e.g. ``"file"``.
        natural_key: the strings that identify the unit within its type, e.g.
            ``(relative_path, sha256)`` for a file.
        fields: free-form JSON-serialisable fields.
        artifacts: its files, at distinct relative paths.

    Raises:
        InvalidUnit: bad type or key, fields that are not a mapping or not JSON, artifacts
            that are not DeclarativeArtifacts, two artifacts at one path.
    """

    type: str
    natural_key: tuple[str, ...]
    fields: Mapping[str, Any] = field(default_factory=dict)
    artifacts: tuple[DeclarativeArtifact, ...] = ()

    def __init__(
        self,
        type: str,
        natural_key: Sequence[str] | str,
        fields: Mapping[str, Any] | None = None,
        artifacts: Iterable[DeclarativeArtifact] = (),
    ) -> None:
        raw = _as_tuple(natural_key, "a natural key is a str or a sequence of str")
        for part in raw:
            if not isinstance(part, str):
                raise InvalidUnit(f"natural key parts must be strings, got {part!r}")
        # the store's own rules (type and key lengths in bytes, no NUL): a unit valid here is
        # one the store accepts
        key = make_key(type, raw).natural_key
        if fields is not None and not isinstance(fields, Mapping):
            raise InvalidUnit(
                f"unit {key!r}: fields must be a mapping of names to JSON values, got {fields!r}"
            )
        fields = dict(fields or {})
        fields_text(fields, f"unit {key!r}: fields")  # (the store's rule: refused here already)
        arts = _as_tuple(artifacts, f"unit {key!r}: artifacts must be DeclarativeArtifacts")
        seen: set[str] = set()
        for art in arts:
            if not isinstance(art, DeclarativeArtifact):
                raise InvalidUnit(
                    f"unit {key!r}: artifacts must be DeclarativeArtifact, got {art!r}"
                )
            if art.relative_path in seen:
                raise InvalidUnit(f"unit {key!r}: two artifacts at {art.relative_path!r}")
            seen.add(art.relative_path)
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "natural_key", key)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "artifacts", arts)

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """``(type, natural_key)``, unique among units."""
        return (self.type, self.natural_key)


publish(__name__, globals())  # check_relative_path, from ._model: its home is here
