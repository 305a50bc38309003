"""Reading a request's target into path segments, refusing every hostile form.

Owns the one rule by which a URL path becomes the segments the content app looks up: it
works on the raw bytes of the target (``raw_path``), so that an encoded slash (``%2F``) or
an encoded dot segment (``%2E%2E``) is seen as what it is, and decodes each segment on its
own.  It must not know repositories, versions or the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = ["BadTarget", "Target", "parse_target"]

#: the longest target read (longer ones are refused)
MAX_TARGET_BYTES = 8192


class BadTarget(ValueError):
    """A request target that is refused (400): it tries to leave the tree or is malformed."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed request path: its decoded segments, and whether it ended with ``/``."""

    segments: tuple[str, ...]
    directory: bool


#: a byte no target may hold raw: controls, space, backslash, DEL and non-ASCII
_BAD_BYTE = re.compile(rb"[\x00-\x20\x5c\x7f-\xff]")


def _segment(raw: bytes) -> str:
    if not raw:
        raise BadTarget("empty path segment (double slash)")
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget("path segment is not UTF-8") from None
    if text in (".", ".."):
        raise BadTarget("dot segment")
    for char in text:
        if char in "/\\" or ord(char) < 0x20 or ord(char) == 0x7F:
            raise BadTarget("encoded slash, backslash or control character")
    return text


def parse_target(raw_path: bytes) -> Target:
    """The segments of *raw_path* (the target without its query), each percent-decoded.

    Refused (:class:`BadTarget`): a target that does not start with one ``/`` (absolute
    URLs, ``*``, ``//host``), an empty segment (``a//b``), a ``.`` or ``..`` segment (raw
    or encoded), a segment that decodes to a slash, backslash, NUL or other control
    character, a raw backslash, space, control or non-ASCII byte, invalid UTF-8, or a
    target longer than :data:`MAX_TARGET_BYTES`.
    """
    if len(raw_path) > MAX_TARGET_BYTES:
        raise BadTarget("target too long")
    if not raw_path.startswith(b"/") or _BAD_BYTE.search(raw_path):
        raise BadTarget("not an origin-form path")
    if raw_path == b"/":
        return Target((), True)
    body = raw_path[1:]
    directory = body.endswith(b"/")
    if directory:
        body = body[:-1]
    return Target(tuple(_segment(part) for part in body.split(b"/")), directory)
