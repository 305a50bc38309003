"""The HTTP rules of a static file response: conditional requests, ranges, content types.

Owns reading ``If-Match``, ``If-None-Match``, ``If-Range`` and ``Range`` (RFC 9110, sections
13 and 14) and choosing a content type by file name; pure functions of header values, with
no I/O and nothing of ASGI, the store or the storage.  And :class:`CutShort`, what a request
raises when a response it has begun cannot be completed.
"""

from __future__ import annotations

import functools
import mimetypes

__all__ = [
    "CutShort",
    "RangeResult",
    "content_type",
    "etag_of",
    "if_match",
    "if_range_matches",
    "none_match",
    "parse_range",
]


class CutShort(Exception):
    """A response already begun cannot be completed (the bytes to send failed after the
    status line went out): the request task raises it, and the server closes the connection
    short of the response's length, so that the client sees an incomplete response, never
    a complete wrong one.  What failed has been logged by the app already: the server logs
    it as one DEBUG line, not an ERROR with a traceback (see ``serve_app``)."""


#: the types of the standard library's own table only: the same answer on every machine
#: (a system's /etc/mime.types is not read)
_TYPES = mimetypes.MimeTypes(filenames=())
#: a compressed file is served as what it is, never with a Content-Encoding (a client would
#: otherwise unpack it on the way in and find the digest wrong)
_ENCODED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}
DEFAULT_TYPE = "application/octet-stream"

#: more digits than any file size has: refused before int() is asked to read them
_MAX_DIGITS = 19


@functools.lru_cache(maxsize=1024)
def _by_extension(extension: str) -> str:
    kind, encoding = _TYPES.guess_type("x" + extension, strict=False)
    if encoding is not None:
        return _ENCODED.get(encoding, DEFAULT_TYPE)
    return kind or DEFAULT_TYPE


def content_type(name: str) -> str:
    """The ``Content-Type`` of a file called *name*, by its extension."""
    dot = name.find(".", 1)
    if dot < 0:
        return DEFAULT_TYPE
    # the extensions (the last 24 characters of them: the cache's keys stay short)
    return _by_extension(name[dot:][-24:])


def etag_of(sha256: str) -> str:
    """The strong entity tag of content with this sha256: the digest, quoted."""
    return f'"{sha256}"'


def _tags(value: str) -> list[str]:
    """The entity tags of a comma-separated list, each without ``W/`` (weak comparison)."""
    tags = []
    for part in value.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            tags.append(tag)
    return tags


def if_match(header: str | None, etag: str | None) -> bool:
    """Whether the request may go on under ``If-Match: header`` (else the answer is 412):
    no header, ``*``, or the same strong entity tag (strong comparison: a weak tag never
    matches).  *etag* None: the content has no entity tag, only ``*`` matches."""
    if header is None:
        return True
    tags = [part.strip() for part in header.split(",")]
    return "*" in tags or (etag is not None and etag in tags)


def none_match(header: str | None, etag: str | None) -> bool:
    """Whether ``If-None-Match: header`` matches *etag* (then the answer is 304).  *etag*
    None: the content has no entity tag, only ``*`` matches."""
    if header is None:
        return False
    tags = _tags(header)
    return "*" in tags or (etag is not None and etag in tags)


def if_range_matches(header: str | None, etag: str) -> bool:
    """Whether a ``Range`` may be honoured under ``If-Range: header``: no header, or the
    same strong entity tag.  A date (or a weak tag) never matches: the whole file is sent."""
    if header is None:
        return True
    return header.strip() == etag


class RangeResult:
    """What a ``Range`` header asks of a file of ``size`` bytes.

    ``whole``: send the whole file (no header, another unit, several ranges, or a header
    that cannot be read: RFC 9110 allows ignoring it); ``unsatisfiable``: 416;
    otherwise ``start`` and ``end`` (inclusive) of the one range to send (206).
    """

    __slots__ = ("end", "start", "unsatisfiable", "whole")

    def __init__(
        self, *, whole: bool = False, unsatisfiable: bool = False, start: int = 0, end: int = -1
    ) -> None:
        self.whole = whole
        self.unsatisfiable = unsatisfiable
        self.start = start
        self.end = end

    @property
    def length(self) -> int:
        return self.end - self.start + 1


WHOLE = RangeResult(whole=True)
UNSATISFIABLE = RangeResult(unsatisfiable=True)


def _digits(text: str) -> bool:
    """Whether *text* is empty or ASCII digits only."""
    return not text or (text.isascii() and text.isdigit())


def _unpadded(digits: str) -> str:
    """*digits* without leading zeros ("0" for zeros only; "" stays "")."""
    return (digits.lstrip("0") or "0") if digits else digits


def parse_range(header: str | None, size: int) -> RangeResult:
    """Read ``Range: header`` for a file of *size* bytes (single byte ranges only)."""
    if header is None:
        return WHOLE
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return WHOLE
    if "," in spec:
        return WHOLE  # several ranges: the whole file, 200 (allowed by RFC 9110)
    # (no regex: "\s*(\d*)\s*-\s*(\d*)\s*" backtracked for seconds on a header of spaces,
    # blocking the server, and \d took digits other than 0-9)
    first, dash, last = spec.partition("-")
    first, last = first.strip(" \t"), last.strip(" \t")
    if not dash or not (_digits(first) and _digits(last)):
        return WHOLE
    # (leading zeros say nothing: "bytes=000...05-09" is bytes 5-9, however many zeros,
    # before the number of digits is compared with the longest file size)
    first, last = _unpadded(first), _unpadded(last)
    if not first:
        if not last:
            return WHOLE  # "bytes=-": not a range
        if len(last) > _MAX_DIGITS:  # a suffix longer than any file: all of it
            return RangeResult(start=0, end=size - 1) if size else UNSATISFIABLE
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return RangeResult(start=max(0, size - suffix), end=size - 1)
    if len(first) > _MAX_DIGITS:
        return UNSATISFIABLE  # a start past the end of any file
    start = int(first)
    end = int(last) if last and len(last) <= _MAX_DIGITS else size - 1
    if last and end < start:
        return WHOLE  # invalid: ignored
    if start >= size:
        return UNSATISFIABLE
    return RangeResult(start=start, end=min(end, size - 1))
