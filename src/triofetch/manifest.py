"""Repository formats: a reader turns a repository's index into declarative content units.

This module owns reading and validating a repository's index (today ``PULP_MANIFEST``) and
the URLs around it: where a manifest's files are fetched from
(:func:`~triofetch.manifest.manifest_base_url`), the ``file://`` URL of a local manifest
(:func:`~triofetch.manifest.local_source`), the credentials a manifest URL carries
(:func:`~triofetch.manifest.split_source`).  It fetches through a
:class:`~triofetch.Downloader` it is given and must not touch the store or the storage: a
reader only says what the units are; the creator decides what to download and commit.

A :class:`RepositoryReader` fetches and validates a repository's whole index *before*
anything else happens, and returns a :class:`RepositoryIndex`: how many units there are,
their total size, and the :class:`~triofetch.DeclarativeUnit` of each (produced lazily).
Adding a format means writing one reader; the command line and the creator stay the same.

:class:`PulpManifestReader` reads Pulp's file-repository manifest (``PULP_MANIFEST``)::

    relative_path,sha256,size

one line per file.  Every file becomes one unit of type ``file`` with the natural key
``(relative_path, sha256)``, fetched from the manifest's URL with its last path segment
replaced by the URL-encoded relative path.  Blank lines, lines starting with ``#``, CRLF
line endings and a UTF-8 byte order mark at the very start are accepted; anything else that
is wrong raises :class:`~triofetch.ManifestError` naming the line.

The manifest is parsed as it arrives (:meth:`~triofetch.Downloader.stream`): it is never
written to disk, and it may be at most ``max_size`` bytes long
(:data:`~triofetch.DEFAULT_MAX_MANIFEST_SIZE` by default), so that a server sending an endless body
costs a bounded amount of memory and time.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit, urlunsplit

import trio

from ._model import (
    MAX_KEY_BYTES,
    MAX_PATH_BYTES,
    MAX_URL_BYTES,
    check_int,
    check_size,
    key_json,
)
from ._urls import redact_url, split_userinfo
from .declarative import DeclarativeArtifact, DeclarativeUnit, check_relative_path
from .downloader import Downloader
from .errors import DownloadError, InvalidInput, InvalidUnit, ManifestError, describe_error

__all__ = [
    "DEFAULT_MAX_MANIFEST_SIZE",
    "MANIFEST_NAME",
    "ManifestEntry",
    "PulpManifest",
    "PulpManifestReader",
    "RepositoryIndex",
    "RepositoryReader",
    "local_source",
    "manifest_base_url",
    "parse_pulp_manifest",
    "read_manifest",
    "split_source",
]

#: The file name of a Pulp file repository's manifest.
MANIFEST_NAME = "PULP_MANIFEST"

#: The unit type of a file of a file repository.
FILE_TYPE = "file"

#: The most bytes a manifest may have unless told otherwise: room for millions of files,
#: far beyond the file repositories we know of, while a parsed manifest (held in memory,
#: several times its size in bytes) still fits in the memory of any machine that mirrors
#: that many files.  (See docs/cli.rst, ``--max-manifest-size``.)
DEFAULT_MAX_MANIFEST_SIZE = 256 * 1024 * 1024

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SIZE = re.compile(r"[+-]?[0-9]+")
_BOM = "\ufeff"
#: lines parsed between two checkpoints: a cancel or Ctrl-C is noticed promptly, without
#: the cost of a checkpoint per line
_LINES_PER_CHECKPOINT = 1000


@runtime_checkable
class RepositoryIndex(Protocol):
    """What a :class:`RepositoryReader` found: a validated list of content units."""

    #: where the index was read from (credentials redacted)
    source: str

    def __len__(self) -> int:
        """The number of distinct units."""
        ...

    @property
    def total_size(self) -> int | None:
        """The bytes of every artifact of every unit, when known."""
        ...

    def unit_size(self, natural_key: tuple[str, ...]) -> int:
        """The bytes of the artifacts of the unit with this natural key (0 if unknown)."""
        ...

    def units(self) -> Iterator[DeclarativeUnit]:
        """The units, produced lazily (each call starts again from the first)."""
        ...


class RepositoryReader(ABC):
    """Reads one repository format.

    Subclasses set :attr:`format` and implement :meth:`read`, which must fetch and validate
    the *whole* index before returning (so that a bad index stops a sync before anything is
    downloaded or written) and raise :class:`~triofetch.ManifestError` for a bad one.
    """

    #: a short name of the format, e.g. ``"pulp-manifest"``
    format: ClassVar[str]

    @abstractmethod
    async def read(self, source: str, downloader: Downloader) -> RepositoryIndex:
        """Fetch the index at *source* with *downloader* and return its units.

        Raises:
            ManifestError: the index cannot be fetched, or is malformed.
        """


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file listed in a ``PULP_MANIFEST``."""

    relative_path: str
    sha256: str
    size: int
    #: the line it was read from (1-based)
    line_number: int


@dataclass(slots=True)
class PulpManifest:
    """A parsed, validated ``PULP_MANIFEST``: one entry per distinct file.

    ``base_url`` is the URL the relative paths are resolved against (the manifest's URL
    without its last path segment, ending with ``/``:
    :func:`~triofetch.manifest.manifest_base_url` gives it); one not ending with ``/`` is
    :class:`~triofetch.InvalidInput`, as the file names would be glued to its last segment.
    """

    source: str
    base_url: str
    entries: list[ManifestEntry] = field(default_factory=list)
    _by_path: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.endswith("/"):
            raise InvalidInput(
                f"base_url must be a URL ending with '/' (the directory of the manifest: "
                f"manifest_base_url(its URL) gives it), got {self.base_url!r}"
            )

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)

    def url_for(self, relative_path: str) -> str:
        """The URL of the file at *relative_path* (URL-encoded, ``/`` kept)."""
        return self.base_url + quote(relative_path, safe="/")

    def unit_size(self, natural_key: tuple[str, ...]) -> int:
        index = self._by_path.get(natural_key[0]) if natural_key else None
        if index is None:
            return 0
        entry = self.entries[index]
        return entry.size if natural_key[1:] == (entry.sha256,) else 0

    def units(self) -> Iterator[DeclarativeUnit]:
        for entry in self.entries:
            yield file_unit(entry, self.url_for(entry.relative_path))


def file_unit(entry: ManifestEntry, url: str) -> DeclarativeUnit:
    """The ``file`` content unit of a manifest entry, fetched from *url*."""
    return DeclarativeUnit(
        FILE_TYPE,
        (entry.relative_path, entry.sha256),
        {"relative_path": entry.relative_path, "size": entry.size},
        [DeclarativeArtifact(url, entry.relative_path, {"sha256": entry.sha256}, entry.size)],
    )


def manifest_base_url(url: str) -> str:
    """*url* without its query, fragment and last path segment: ``.../dir/``.

    The URL a manifest's relative paths are resolved against: the files of the manifest at
    ``https://h/repo/PULP_MANIFEST?x=1`` are under ``https://h/repo/``.
    """
    parts = urlsplit(url)
    path = parts.path
    base = path[: path.rfind("/") + 1] if "/" in path else "/"
    return urlunsplit(parts._replace(path=base, query="", fragment=""))


def _decode(raw: bytes, number: int, source: str | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})",
            line_number=number,
            line=raw.decode("utf-8", "replace"),
            source=source,
        ) from None


def parse_pulp_manifest(
    lines: Iterable[str | bytes],
    *,
    base_url: str,
    source: str | None = None,
    max_size: int | None = None,
) -> PulpManifest:
    """Parse and validate the lines of a ``PULP_MANIFEST``.

    *base_url* is the URL the relative paths are resolved against, ending with ``/``
    (:func:`~triofetch.manifest.manifest_base_url` gives it from the manifest's URL);
    *source* names the manifest in error messages; *max_size* bounds the bytes of all the
    lines (None: no bound).  Identical lines listed twice count once; one relative path
    listed with two different contents is an error.  A UTF-8 byte order mark at the start
    of the first line is skipped.

    Raises:
        ManifestError: the first bad line: not three comma-separated fields, a sha256 that
            is not 64 hex digits, a size that is not an integer from 0 to 2**63-1 (what the
            database holds), an unsafe relative path (absolute, ``..`` or empty segments,
            NUL, backslash, control characters, a segment over 255 bytes), a path listed
            twice with different contents, or a path that is also a directory of another
            path; or more than *max_size* bytes.
        InvalidInput: *base_url* does not end with ``/`` (the files' URLs would be glued to
            its last segment: ``http://h/repoa.txt``), before any line is read.
    """
    parser = _ManifestParser(base_url, source)
    size = 0
    for raw in lines:
        if max_size is not None:
            size += len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "replace"))
            if size > max_size:
                raise parser.too_large(max_size)
        parser.line(raw)
    parser.check_clashes(0, len(parser.manifest.entries))
    return parser.manifest


class _ManifestParser:
    """Validates the lines of a manifest one at a time into a :class:`PulpManifest`."""

    def __init__(self, base_url: str, source: str | None) -> None:
        self.source = source
        self.manifest = PulpManifest(redact_url(source) if source else "", base_url)
        #: the number of the last line parsed
        self.number = 0

    def too_large(self, max_size: int) -> ManifestError:
        return ManifestError(
            f"the manifest is larger than the limit of {max_size} bytes"
            + (f" ({max_size / (1 << 20):g} MiB)" if max_size >= 1 << 20 else "")
            + ": not read",
            source=self.source,
        )

    def line(self, raw: str | bytes) -> None:
        """Parse the next line (its line ending included or not)."""
        self.number = number = self.number + 1
        source = self.source
        text = _decode(raw, number, source) if isinstance(raw, bytes) else raw
        if number == 1 and text.startswith(_BOM):
            text = text[1:]
        text = text.rstrip("\r\n")
        if not text.strip() or text.startswith("#"):
            return

        def bad(message: str) -> ManifestError:
            return ManifestError(message, line_number=number, line=text, source=source)

        manifest = self.manifest
        fields = text.rsplit(",", 2)
        if len(fields) != 3:
            raise bad("expected 'relative_path,sha256,size'")
        path, sha, size_text = fields[0], fields[1].strip(), fields[2].strip()
        if not _SHA256.fullmatch(sha):
            raise bad(f"invalid sha256 {sha!r}: expected 64 hexadecimal digits")
        if not _SIZE.fullmatch(size_text):
            raise bad(f"invalid size {size_text!r}: expected an integer")
        size = int(size_text)
        if size < 0:
            raise bad(f"invalid size {size}: must not be negative")
        try:
            check_size(size, "size")
            check_relative_path(path)
        except InvalidUnit as exc:
            raise bad(str(exc)) from None
        sha = sha.lower()
        encoded = len(path.encode("utf-8", "surrogatepass"))
        key_bytes = len(key_json((path, sha)).encode("utf-8", "replace"))
        if encoded > MAX_PATH_BYTES or key_bytes > MAX_KEY_BYTES:
            # (the unit's key, [path, sha256] as JSON, holds at most MAX_KEY_BYTES: what the
            # path may take is what the sha256 and the JSON leave)
            most = min(MAX_PATH_BYTES, MAX_KEY_BYTES - (key_bytes - encoded))
            raise bad(
                f"relative path too long ({encoded} bytes, at most {most}: a file's key, its "
                f"path and sha256, holds {MAX_KEY_BYTES})"
            )
        if len(manifest.url_for(path).encode("utf-8")) > MAX_URL_BYTES:
            raise bad(f"the file's URL would be longer than {MAX_URL_BYTES} bytes")
        entries = manifest.entries
        seen = manifest._by_path.get(path)
        if seen is not None:
            first = entries[seen]
            if first.sha256 == sha and first.size == size:
                return  # the same file listed twice
            raise bad(
                f"{path!r} is listed twice with different contents "
                f"(line {first.line_number}: sha256 {first.sha256}, size {first.size})"
            )
        manifest._by_path[path] = len(entries)
        entries.append(ManifestEntry(path, sha, size, number))

    def check_clashes(self, start: int, stop: int) -> None:
        """Entries *start* to *stop*: a path that is a file cannot also be a directory of
        another path."""
        manifest = self.manifest
        by_path = manifest._by_path
        for entry in manifest.entries[start:stop]:
            path = entry.relative_path
            cut = path.rfind("/")
            while cut > 0:
                parent = path[:cut]
                index = by_path.get(parent)
                if index is not None:
                    other = manifest.entries[index]
                    raise ManifestError(
                        f"{parent!r} is a file (line {other.line_number}) and also a "
                        f"directory of {path!r}",
                        line_number=entry.line_number,
                        source=self.source,
                    )
                cut = path.rfind("/", 0, cut)


class _ManifestStream:
    """The body consumer given to :meth:`~triofetch.Downloader.stream`: the body cut into
    lines and parsed as it arrives, at most *max_size* bytes of it, a checkpoint every
    ``_LINES_PER_CHECKPOINT`` lines (so a cancel scope or Ctrl-C stops it at once)."""

    def __init__(self, base_url: str, source: str, max_size: int) -> None:
        self._parser = _ManifestParser(base_url, source)
        self._max_size = max_size
        self._size = 0
        #: the pieces of a line not ended yet
        self._partial: list[bytes] = []
        #: lines parsed since the last checkpoint (counted across chunks: a transport may
        #: hand over many chunks without a checkpoint of its own)
        self._unchecked = 0

    async def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._max_size:
            raise self._parser.too_large(self._max_size)
        *ended, rest = chunk.split(b"\n")
        if ended and self._partial:
            self._partial.append(ended[0])
            ended[0] = b"".join(self._partial)
            self._partial = []
        line = self._parser.line
        count = self._unchecked
        for raw in ended:
            line(raw)
            count += 1
            if count >= _LINES_PER_CHECKPOINT:
                count = 0
                await trio.lowlevel.checkpoint()
        self._unchecked = count
        if rest:
            self._partial.append(rest)

    async def finish(self) -> PulpManifest:
        parser = self._parser
        if self._partial:  # a last line without a line ending
            parser.line(b"".join(self._partial))
            self._partial = []
        total = len(parser.manifest.entries)
        for start in range(0, total, _LINES_PER_CHECKPOINT):
            parser.check_clashes(start, start + _LINES_PER_CHECKPOINT)
            await trio.lowlevel.checkpoint()
        return parser.manifest


def split_source(source: str) -> tuple[str, tuple[str, str] | None]:
    """*source* without credentials, and the ``(user, password)`` it carried, if any.

    ``split_source("https://u%40x:pw@h/M")`` is ``("https://h/M", ("u@x", "pw"))``: the
    user and password percent-decoded, the password ``""`` when only a user was given.
    Give the URL to a reader and the pair to the downloader's ``auth=``, so that the
    credentials never reach the units' URLs (nor the store).

    Raises:
        ValueError: *source* is not a well-formed URL (an unbalanced ``[`` in its host, for
            one).
    """
    return split_userinfo(source)


class PulpManifestReader(RepositoryReader):
    """Reads a file repository from its ``PULP_MANIFEST`` (http, https or file URL).

    A URL ending with ``/`` means the ``PULP_MANIFEST`` in that directory.  Credentials in
    the URL are not handled here: give the downloader ``auth=`` and a URL without them
    (:func:`~triofetch.manifest.split_source` separates them) so they never reach the
    units' URLs.

    The manifest is parsed as it streams in, never written to disk; *max_size* bounds its
    bytes (:data:`~triofetch.DEFAULT_MAX_MANIFEST_SIZE` by default): a longer one is a
    :class:`~triofetch.ManifestError` naming the URL and the limit.

    Raises:
        InvalidInput: *max_size* is not an integer >= 1; from :meth:`read`, a *source* that
            is not a URL string or a *downloader* that is not a Downloader.
    """

    format = "pulp-manifest"

    def __init__(self, *, max_size: int = DEFAULT_MAX_MANIFEST_SIZE) -> None:
        self.max_size = check_int(max_size, "max_size", least=1)

    async def read(self, source: str, downloader: Downloader) -> PulpManifest:
        _check_read(source, downloader)
        url = source + MANIFEST_NAME if urlsplit(source).path.endswith("/") else source
        base_url = manifest_base_url(url)
        try:
            return await downloader.stream(
                url, lambda: _ManifestStream(base_url, url, self.max_size)
            )
        except DownloadError as exc:
            raise ManifestError(f"cannot fetch the manifest: {describe_error(exc)}") from None


async def read_manifest(
    source: str, downloader: Downloader, reader: RepositoryReader | None = None
) -> RepositoryIndex:
    """Read the repository index at *source* (default format: ``PULP_MANIFEST``).

    *source* is a URL (a str): ``http(s)://`` or ``file://``;
    :func:`~triofetch.manifest.local_source` gives the URL of a local file or directory.  A
    *source* that is not a str, a *downloader* that is not a :class:`~triofetch.Downloader`
    or a *reader* that is not a :class:`RepositoryReader` is :class:`~triofetch.InvalidInput`.
    """
    _check_read(source, downloader)
    if reader is not None and not isinstance(reader, RepositoryReader):
        raise InvalidInput(f"reader must be a RepositoryReader or None, got {reader!r}")
    return await (reader or PulpManifestReader()).read(source, downloader)


def _check_read(source: object, downloader: object) -> None:
    """Refuse a *source* that is not a URL string, or a *downloader* that is not one."""
    if not isinstance(source, str):
        local = isinstance(source, os.PathLike)
        hint = "; local_source(path) gives the URL of a local one" if local else ""
        raise InvalidInput(
            f"a manifest source must be a URL (a str: http://, https:// or file://), "
            f"got {source!r}{hint}"
        )
    if not isinstance(downloader, Downloader):
        raise InvalidInput(f"downloader must be a Downloader, got {downloader!r}")


def local_source(path: str | os.PathLike[str]) -> str:
    """The ``file://`` URL of a local manifest (a directory means its ``PULP_MANIFEST``).

    A relative *path* is taken from the current directory; ``local_source("mirror")`` is
    ``file:///.../mirror/PULP_MANIFEST`` when ``mirror`` is a directory.
    """
    where = Path(path).absolute()
    if where.is_dir():
        where = where / MANIFEST_NAME
    return where.as_uri()
