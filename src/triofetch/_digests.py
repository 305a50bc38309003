"""Digest algorithms: validation of names and values, and hashing many algorithms at once.

Owns which algorithms triofetch accepts, the form of a digest value, and feeding the same
bytes to several hashers (from worker threads: hashlib releases the GIL).  It must not
touch files or know where the bytes come from.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import InvalidDigest, InvalidInput, UnsupportedAlgorithm

__all__ = [
    "DEFAULT_ALGORITHM",
    "PULP_ALGORITHMS",
    "MultiHasher",
    "check_algorithm",
    "normalize_digests",
    "resolve_algorithms",
    "update_all",
]

DEFAULT_ALGORITHM = "sha256"
#: The digests Pulp computes for every artifact.
PULP_ALGORITHMS = ("sha224", "sha256", "sha384", "sha512")

_HEX_DIGITS = re.compile("[0-9a-f]*")
# Algorithms whose output length is not fixed cannot be compared against an expected value.
_VARIABLE = {"shake_128", "shake_256"}
_KNOWN = sorted(a.lower() for a in hashlib.algorithms_available if a.lower() not in _VARIABLE)
_SIZES: dict[str, int] = {}


def check_algorithm(name: object) -> str:
    """Return the canonical (lower-case) name of *name*, or raise UnsupportedAlgorithm."""
    if not isinstance(name, str):
        raise UnsupportedAlgorithm(repr(name), _KNOWN)
    canonical = name.lower()
    if canonical not in _SIZES:
        if canonical in _VARIABLE or canonical not in _KNOWN:
            raise UnsupportedAlgorithm(name, _KNOWN)
        try:
            _SIZES[canonical] = hashlib.new(canonical).digest_size
        except ValueError:  # listed by OpenSSL but not usable (FIPS, ...)
            raise UnsupportedAlgorithm(name, _KNOWN) from None
    return canonical


def normalize_digests(digests: Mapping[str, Any] | None) -> dict[str, str]:
    """Validate expected digests: known algorithms, hex values of the right length.

    Returns a new dict with canonical algorithm names and lower-case hex values.
    """
    result: dict[str, str] = {}
    if not digests:
        return result
    if not isinstance(digests, Mapping):
        raise InvalidInput(
            f"expected digests must be a mapping of algorithm to hex digest, got {digests!r}"
        )
    for name, value in digests.items():
        algorithm = check_algorithm(name)
        if not isinstance(value, str):
            raise InvalidDigest(algorithm, value, "not a string")
        hexvalue = value.strip().lower()
        want = 2 * _SIZES[algorithm]
        if len(hexvalue) != want:
            raise InvalidDigest(
                algorithm, value, f"expected {want} hex digits, got {len(hexvalue)}"
            )
        if _HEX_DIGITS.fullmatch(hexvalue) is None:
            raise InvalidDigest(algorithm, value, "not a hexadecimal string")
        if algorithm in result and result[algorithm] != hexvalue:
            raise InvalidDigest(algorithm, value, "given twice with different values")
        result[algorithm] = hexvalue
    return result


def resolve_algorithms(
    expected: Mapping[str, str], extra: Iterable[str] | None, default: Iterable[str]
) -> tuple[str, ...]:
    """The algorithms to compute: the defaults, every expected one and any extra ones
    (*extra* may be one name as a string)."""
    if isinstance(extra, str):
        extra = (extra,)
    elif extra is not None and not isinstance(extra, Iterable):
        raise InvalidInput(
            f"digests must be algorithm names (a str or an iterable of str), got {extra!r}"
        )
    names: dict[str, None] = {}
    for group in (default, expected.keys(), extra or ()):
        for name in group:
            names[check_algorithm(name)] = None
    return tuple(names)


@functools.cache
def hash_constructor(name: str) -> Callable[..., Any]:
    """hashlib's own constructor for *name* (``hashlib.sha256``...): cheaper than ``new()``."""
    direct = getattr(hashlib, name, None)
    if callable(direct) and name in hashlib.algorithms_guaranteed:
        return direct  # type: ignore[no-any-return]
    return functools.partial(hashlib.new, name)


class MultiHasher:
    """Feeds the same bytes to several hashlib objects.

    hashlib releases the GIL for updates larger than 2 KiB, so a MultiHasher can be fed from
    a worker thread while the Trio loop goes on.
    """

    __slots__ = ("_hashers", "size")

    def __init__(self, algorithms: Iterable[str]) -> None:
        self._hashers = [(name, hash_constructor(name)()) for name in algorithms]
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        for _, h in self._hashers:
            h.update(data)
        self.size += len(data)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashers}

    def halves(self) -> tuple[list[Any], list[Any]] | None:
        """The hash objects in two groups of about equal cost, or None for a single one.

        Two worker threads can then hash the same bytes at once (hashlib releases the GIL),
        so that a download computing several digests is not held to one core.
        """
        if len(self._hashers) < 2:
            return None
        groups: tuple[list[Any], list[Any]] = ([], [])
        loads = [0.0, 0.0]
        ranked = sorted(self._hashers, key=lambda item: -_COST.get(item[0], _UNKNOWN_COST))
        for name, h in ranked:
            side = 0 if loads[0] <= loads[1] else 1
            groups[side].append(h)
            loads[side] += _COST.get(name, _UNKNOWN_COST)
        return groups


# The relative cost of hashing a byte with each algorithm, on x86-64 with SHA instructions
# (where sha1, sha224 and sha256 are the cheap ones).  Only the ratios matter: they balance
# the two hashing threads of a large download, so that neither waits long for the other.
_COST = {
    "sha1": 0.65,
    "sha224": 0.7,
    "sha256": 0.7,
    "md5": 1.6,
    "blake2s": 1.6,
    "blake2b": 1.0,
    "sha384": 2.2,
    "sha512": 1.9,
}
_UNKNOWN_COST = 2.0


def update_all(hashers: Iterable[Any], chunks: Iterable[bytes]) -> None:
    """Feed *chunks* to each of *hashers* (run in a worker thread)."""
    for chunk in chunks:
        for h in hashers:
            h.update(chunk)
