"""Value types and checks shared by every layer: unit keys, artifact records, sizes, paths.

Owns the rules for what a unit type, a natural key, a size, a relative path and an artifact
record may be, written once for the declarative model, the manifest, the storage and the
store.  It imports only :mod:`triofetch.errors` and the digest helpers; nothing here touches
a file, the network or a database.
"""

from __future__ import annotations

import json.encoder
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from ._digests import DEFAULT_ALGORITHM, normalize_digests
from .errors import InvalidDigest, InvalidInput, InvalidUnit

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "MAX_SIZE",
    "MAX_TYPE_BYTES",
    "MAX_URL_BYTES",
    "ArtifactRecord",
    "UnitKey",
    "check_bool",
    "check_int",
    "check_number",
    "check_relative_path",
    "check_relative_path_fully",
    "check_size",
    "check_text",
    "coerce_key",
    "digests_json",
    "dump_json",
    "fields_text",
    "key_json",
    "listed",
    "make_key",
]

#: Longest unit type, in UTF-8 bytes.
MAX_TYPE_BYTES = 128
#: Longest natural key, in UTF-8 bytes of its JSON form (a PostgreSQL b-tree entry is at most
#: ~2700 bytes, and the same limit applies to SQLite so both backends accept the same units).
MAX_KEY_BYTES = 2048
#: Longest relative path of an artifact in a unit, in UTF-8 bytes.
MAX_PATH_BYTES = 2048
#: Longest URL of a remote artifact, in UTF-8 bytes.
MAX_URL_BYTES = 8192
#: Longest segment (file or directory name) of a relative path, in UTF-8 bytes: the limit
#: of the common file systems (ext4, XFS, btrfs, ZFS, APFS, NTFS), so that every stored path
#: can be exported.
MAX_SEGMENT_BYTES = 255
#: Largest artifact size: sizes are BIGINT columns (SQLite INTEGER and PostgreSQL BIGINT,
#: both signed 64-bit).
MAX_SIZE = 2**63 - 1


class UnitKey(NamedTuple):
    """What identifies a unit: its type and its natural key (a tuple of strings)."""

    type: str
    natural_key: tuple[str, ...]


def check_int(
    value: object,
    what: str,
    *,
    least: int | None = None,
    error: type[InvalidInput] = InvalidInput,
) -> int:
    """*value* if it is an int (a bool is not) of at least *least*, else *error* naming *what*.

    The one place the "an int, but not a bool" rule is written: ``True`` is an ``int`` to
    Python and would otherwise pass as 1 wherever a count is expected.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (least is not None and value < least)
    ):
        wanted = "an integer" if least is None else f"an integer >= {least}"
        raise error(f"{what} must be {wanted}, got {value!r}")
    return value


def listed(value: Any, what: str) -> list[Any]:
    """*value* as a list; a str or bytes (an iterable by accident) is refused."""
    if isinstance(value, str | bytes):
        raise InvalidInput(f"{what} must be a collection, not a single {type(value).__name__}")
    try:
        return list(value)
    except TypeError:
        raise InvalidInput(f"{what} must be an iterable, got {value!r}") from None


def check_bool(value: object, what: str) -> bool:
    """*value* if it is a bool, else :class:`~triofetch.errors.InvalidInput` naming *what*:
    a flag given as ``"no"`` or ``0`` would otherwise be taken for its truth value."""
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be True or False, got {value!r}")
    return value


def check_number(
    value: object,
    what: str,
    *,
    positive: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> float | None:
    """*value* as a float if it is an int or float (not a bool) that is >= 0 (> 0 when
    *positive*) and finite (or infinite, when *allow_inf*: "no limit"), or None when
    *allow_none*; else :class:`~triofetch.errors.InvalidInput` naming *what*."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value  # NaN
        or value < 0
        or (positive and value == 0)
        or (value == float("inf") and not allow_inf)
    ):
        wanted = "a positive number" if positive else "a number >= 0"
        raise InvalidInput(f"{what} must be {wanted}, got {value!r}")
    return float(value)


def check_text(value: object, what: str, max_bytes: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidUnit(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    if not value and not empty:
        raise InvalidUnit(f"{what} must not be empty")
    if "\x00" in value:
        raise InvalidUnit(f"{what} must not contain NUL characters: {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidUnit(f"{what} is not valid Unicode text: {value!r}") from None
    if size > max_bytes:
        raise InvalidUnit(f"{what} is {size} bytes long, at most {max_bytes} allowed")
    return value


def check_size(value: object, what: str) -> int:
    """*value* if it is an int (not a bool) from 0 to :data:`MAX_SIZE`, else
    :class:`~triofetch.InvalidUnit` naming *what*."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidUnit(f"{what} must be a non-negative int, got {value!r}")
    if value > MAX_SIZE:
        raise InvalidUnit(
            f"{what} {value} is larger than the database can hold (at most 2**63-1 = {MAX_SIZE})"
        )
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


#: A relative path that check_relative_path accepts, recognised by one regular expression
#: (the common case, checked for every declared artifact and every unit committed):
#: segments of 1 to 255 printable ASCII characters but '/' and the backslash, none of them
#: '.' or '..'.  It accepts nothing the full rule refuses (``tests/test_structure_store.py``
#: checks it); what it does not match goes through the full rule.
_PLAIN_SEGMENT = r"(?!\.\.?(?:/|$))[\x20-\x2e\x30-\x5b\x5d-\x7e]{1,255}"
_PLAIN_PATH = re.compile(f"{_PLAIN_SEGMENT}(?:/{_PLAIN_SEGMENT})*").fullmatch


def check_relative_path(path: object) -> str:
    """Return *path* if it is a safe relative path, else raise :class:`~triofetch.InvalidUnit`.

    Safe: a non-empty str of valid Unicode text (no lone surrogate, which no database
    column nor file name can hold), relative (no leading ``/``), no ``..`` or ``.`` or empty
    segment, no NUL, no backslash, no control characters, at most ``MAX_PATH_BYTES`` (2048)
    bytes of UTF-8 in all and ``MAX_SEGMENT_BYTES`` (255, the file systems' limit on a name)
    in each segment.  The one rule for relative paths: the declarative model, the manifest
    and the store all call it.
    """
    if type(path) is str and len(path) <= MAX_PATH_BYTES and _PLAIN_PATH(path):
        return path  # plain ASCII: one regular expression says all of what follows
    return check_relative_path_fully(path)


def check_relative_path_fully(path: object) -> str:
    """:func:`check_relative_path` without its shortcut for plain paths (the rule itself,
    against which the shortcut is tested)."""
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
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidUnit(f"relative path {path!r} is not valid Unicode text") from None
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
            length = len(segment.encode("utf-8"))
            if length > MAX_SEGMENT_BYTES:
                raise InvalidUnit(
                    f"relative path segment too long: {length} bytes, at most "
                    f"{MAX_SEGMENT_BYTES} (a file system's limit on a name): {segment[:60]!r}..."
                )
    return path


_quote: Callable[[str], str] = json.encoder.encode_basestring


def key_json(natural_key: tuple[str, ...]) -> str:
    """The JSON array text of a natural key (the form stored in the database)."""
    return "[" + ",".join(map(_quote, natural_key)) + "]"


def digests_json(digests: Mapping[str, str]) -> str:
    # algorithm names and hex values need no escaping
    return "{" + ",".join(f'"{k}":"{v}"' for k, v in digests.items()) + "}"


def make_key(type_: object, natural_key: object) -> UnitKey:
    """Validate and build a :class:`UnitKey` (lists are accepted for the natural key)."""
    t = check_text(type_, "unit type", MAX_TYPE_BYTES)
    if not isinstance(natural_key, tuple | list) or not natural_key:
        raise InvalidUnit(f"natural key must be a non-empty tuple of str, got {natural_key!r}")
    parts = tuple(
        check_text(p, f"natural key part {i}", MAX_KEY_BYTES, empty=True)
        for i, p in enumerate(natural_key)
    )
    size = len(key_json(parts).encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidUnit(f"natural key is {size} bytes long, at most {MAX_KEY_BYTES} allowed")
    return UnitKey(t, parts)


def coerce_key(key: object) -> UnitKey:
    if isinstance(key, UnitKey):
        return make_key(key.type, key.natural_key)
    if isinstance(key, tuple | list) and len(key) == 2:
        return make_key(key[0], key[1])
    raise InvalidUnit(f"a unit key is (type, natural_key), got {key!r}")


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """An artifact: its sha256, size and every digest known for it (``sha256`` included)."""

    sha256: str
    size: int
    digests: Mapping[str, str] = field(default_factory=dict)
    _json: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digests = normalize_digests(self.digests)
        sha = normalize_digests({DEFAULT_ALGORITHM: self.sha256})[DEFAULT_ALGORITHM]
        if digests.setdefault(DEFAULT_ALGORITHM, sha) != sha:
            raise InvalidDigest(
                DEFAULT_ALGORITHM, digests[DEFAULT_ALGORITHM], f"differs from sha256 {sha}"
            )
        check_size(self.size, "artifact size")
        object.__setattr__(self, "sha256", sha)
        object.__setattr__(self, "digests", MappingProxyType(dict(sorted(digests.items()))))
        object.__setattr__(self, "_json", digests_json(self.digests))

    def __reduce__(self) -> tuple[Any, ...]:  # MappingProxyType does not pickle
        return (ArtifactRecord, (self.sha256, self.size, dict(self.digests)))

    @classmethod
    def _from_db(cls, sha256: str, size: int, digests: dict[str, str]) -> ArtifactRecord:
        """A record read back from the database: valid already, so not checked again."""
        record = object.__new__(cls)
        object.__setattr__(record, "sha256", sha256)
        object.__setattr__(record, "size", size)
        object.__setattr__(record, "digests", MappingProxyType(digests))
        object.__setattr__(record, "_json", "")
        return record

    def digests_json(self) -> str:
        return self._json or digests_json(self.digests)


# -- JSON values of units (their fields, repository keys): the store's rules ----------------

_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def dump_json(value: object, what: str) -> str:
    """Canonical JSON text of *value*, or InvalidUnit if it is not JSON."""
    if not value and isinstance(value, dict):
        return "{}"
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidUnit(f"{what} is not JSON: {exc}") from None
    if "\\u0000" in text:
        raise InvalidUnit(f"{what} must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidUnit(f"{what} is not valid Unicode text") from None
    return text


def _check_json_keys(value: object, what: str) -> None:
    # json.dumps quietly turns int/float/bool/None keys into strings; refuse them instead so
    # that what is read back equals what was written.
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidUnit(f"{what} has a non-string key {k!r}")
            _check_json_keys(v, what)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_json_keys(v, what)


def fields_text(fields: Mapping[str, Any], what: str) -> str:
    """The JSON text the store keeps for a unit's *fields*, or InvalidUnit naming *what*
    (not JSON, a non-string key, a NUL, text that is not Unicode): one rule for
    declarations and the store, so that a unit declared is one the store accepts."""
    _check_json_keys(fields, what)
    return dump_json(dict(fields), what)
