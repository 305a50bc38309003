"""Declarative units and artifacts: what a caller describes before anything is fetched."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._digests import normalize_digests
from .errors import InvalidUnit
from .store._types import MAX_PATH_BYTES, MAX_SEGMENT_BYTES, check_size, make_key

__all__ = ["DeclarativeArtifact", "DeclarativeUnit", "check_relative_path"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_relative_path(path: object) -> str:
    """Return *path* if it is a safe relative path, else raise :class:`InvalidUnit`.

    Safe: a non-empty str, relative (no leading ``/``), no ``..`` or ``.`` or empty
    segment, no NUL, no backslash, no control characters, at most ``MAX_PATH_BYTES`` (2048)
    bytes of UTF-8 in all and ``MAX_SEGMENT_BYTES`` (255, the file systems' limit on a name)
    in each segment.
    """
    if not isinstance(path, str) or not path:
        raise InvalidUnit(f"relative path must be a non-empty string, got {path!r}")
    if "\x00" in path:
        raise InvalidUnit(f"unsafe relative path {path!r}: contains NUL")
    if "\\" in path:
        raise InvalidUnit(f"unsafe relative path {path!r}: contains a backslash")
    if path.startswith("/"):
        raise InvalidUnit(f"unsafe relative path {path!r}: absolute")
    if _CONTROL.search(path):
        raise InvalidUnit(f"unsafe relative path {path!r}: contains a control character")
    size = len(path.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise InvalidUnit(
            f"relative path too long: {size} bytes, at most {MAX_PATH_BYTES}: {path[:60]!r}..."
        )
    for segment in path.split("/"):
        if segment == "..":
            raise InvalidUnit(f"unsafe relative path {path!r}: '..' segment")
        if segment in ("", "."):
            raise InvalidUnit(f"unsafe relative path {path!r}: empty or '.' segment")
        if len(segment) * 4 > MAX_SEGMENT_BYTES:  # (else short enough in any encoding)
            length = len(segment.encode("utf-8", "surrogatepass"))
            if length > MAX_SEGMENT_BYTES:
                raise InvalidUnit(
                    f"relative path segment too long: {length} bytes, at most "
                    f"{MAX_SEGMENT_BYTES} (a file system's limit on a name): {segment[:60]!r}..."
                )
    return path


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
        url_tuple = (urls,) if isinstance(urls, str) else tuple(urls)
        if not url_tuple or not all(isinstance(u, str) and u for u in url_tuple):
            raise InvalidUnit(f"an artifact needs at least one URL, got {urls!r}")
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
        InvalidUnit: bad type or key, fields that are not JSON, two artifacts at one path.
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
        raw = (natural_key,) if isinstance(natural_key, str) else tuple(natural_key)
        for part in raw:
            if not isinstance(part, str):
                raise InvalidUnit(f"natural key parts must be strings, got {part!r}")
        # the store's own rules (type and key lengths in bytes, no NUL): a unit valid here is
        # one the store accepts
        key = make_key(type, raw).natural_key
        fields = dict(fields or {})
        try:
            json.dumps(fields, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidUnit(f"unit {key!r}: fields are not JSON: {exc}") from None
        arts = tuple(artifacts)
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
        """``(type, natural_key)``: unique among units."""
        return (self.type, self.natural_key)
