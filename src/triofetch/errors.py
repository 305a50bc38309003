"""The exceptions of triofetch.

Every error triofetch raises on purpose is a :class:`TriofetchError`::

    TriofetchError
     ├── InvalidInput                  (also a ValueError: bad arguments, caught before any I/O)
     │    ├── UnsupportedAlgorithm     an unknown digest algorithm name
     │    ├── InvalidDigest            a digest of the wrong length or alphabet
     │    ├── InvalidUnit              a declarative unit/artifact that cannot be valid
     │    └── ArtifactMismatch         a file adopted under the wrong sha256 or size
     ├── DownloadError                 url, attempts
     │    ├── HTTPStatusError          status_code
     │    ├── DigestMismatch           algorithm, expected, actual
     │    ├── SizeMismatch             expected, actual
     │    ├── InvalidURL               a URL no transport can fetch (not retried; also a
     │    │                            ValueError)
     │    ├── TooManyRedirects         (not retried)
     │    ├── DestinationError         destination: the file could not be put there
     │    ├── TempFileError            the body could not be written to its temp file (a full
     │    │                            disk...; not retried): errno, path, full,
     │    │                            inodes_exhausted (OSError as cause)
     │    └── TransportError           the connection failed or broke off
     │         ├── ConnectionFailed    (also a ConnectionError)
     │         ├── DownloadTimeout     (also a TimeoutError)
     │         └── TruncatedBody       the body ended before its Content-Length
     ├── ManifestError                 line, line_number
     ├── StoreError                    database or artifact storage
     │    ├── SchemaVersionError       a store written by a newer triofetch
     │    ├── StoreNotFound            no store there (also a LookupError): location
     │    ├── NotAStore                a database that is not a triofetch store: location
     │    ├── RepositoryNotFound       (also a LookupError)
     │    ├── VersionNotFound          (also a LookupError)
     │    ├── VersionNotWritable       a complete version is immutable
     │    ├── ArtifactConflict         one sha256 recorded with two sizes
     │    ├── RepositoryKeyConflict    two units added at one repository key
     │    ├── StoreBusy                gc gave up waiting for running writers: waited
     │    ├── StorageWriteError        a full disk (or no free inodes), a quota, a read-only or
     │    │                            failing file system under the root, too many open
     │    │                            files: errno, path, inodes_exhausted, report (OSError
     │    │                            as cause)
     │    └── ArtifactMissing          reading an artifact that is not stored
     ├── UnitFailed                    unit_key, cause
     └── WrongContext                  (also a RuntimeError) fetch() called inside a Trio
                                       run, or an async API called outside one (asyncio)

Every one of them is defined here (and exported from :mod:`triofetch` as well); this module
imports nothing of triofetch but the URL helpers (and the naming of public names), so
every layer can raise them.
Messages say what was expected and what came.  Credentials in URLs never appear in a
message: URLs are passed through :func:`redact_url` first.

Where a builtin exception fits, it is a base too (``except TimeoutError`` catches a
:class:`DownloadTimeout`); the ones that are OSErrors by class carry no ``errno``.  Every
error pickles (a process pool can hand it back): its arguments and attributes are kept.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ._public import publish
from ._urls import redact_url


class _Keyed(Protocol):
    """What an error needs of a unit key (:class:`triofetch.UnitKey`, defined above this)."""

    @property
    def type(self) -> str: ...

    @property
    def natural_key(self) -> tuple[str, ...]: ...


__all__ = [
    "ArtifactConflict",
    "ArtifactMismatch",
    "ArtifactMissing",
    "ConnectionFailed",
    "DestinationError",
    "DigestMismatch",
    "DownloadError",
    "DownloadTimeout",
    "HTTPStatusError",
    "InvalidDigest",
    "InvalidInput",
    "InvalidURL",
    "InvalidUnit",
    "ManifestError",
    "NotAStore",
    "RepositoryKeyConflict",
    "RepositoryNotFound",
    "SchemaVersionError",
    "SizeMismatch",
    "StorageWriteError",
    "StoreBusy",
    "StoreError",
    "StoreNotFound",
    "TempFileError",
    "TooManyRedirects",
    "TransportError",
    "TriofetchError",
    "TruncatedBody",
    "UnitFailed",
    "UnsupportedAlgorithm",
    "VersionNotFound",
    "VersionNotWritable",
    "WrongContext",
    "describe_error",
    "error_chain",
    "redact_url",
]


def error_chain(exc: BaseException) -> list[BaseException]:
    """*exc* and the errors behind it, nearest first: each one's ``__cause__`` (or else its
    ``__context__``), stepping into the first error of an exception group; no error twice."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup) and current.exceptions:
            current = current.exceptions[0]
            continue
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def describe_error(exc: BaseException) -> str:
    """``str(exc)``, plus the root cause when it says more (e.g. a TLS verification failure
    behind a bare "connection failed")."""
    text = str(exc) or type(exc).__name__
    root = error_chain(exc)[-1] if not isinstance(exc, BaseExceptionGroup) else exc
    detail = str(root)
    if root is not exc and isinstance(root, OSError) and detail and detail not in text:
        text += f" [{detail}]"
    return text


def _rebuild(cls: type[TriofetchError], args: tuple[Any, ...]) -> TriofetchError:
    """An error of *cls* with *args*, made without its ``__init__`` (its attributes follow:
    see :meth:`TriofetchError.__reduce__`)."""
    exc = cls.__new__(cls, *args)
    exc.args = args  # (OSError's __new__ leaves them out when __init__ is overridden)
    return exc


class TriofetchError(Exception):
    """Base class of every error raised by triofetch."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The constructors take other arguments than the message ``args`` holds: rebuild
        # without them, then restore the attributes (which may refer to the error itself:
        # ``attempts``, so they come as state, after the error exists).
        return (_rebuild, (type(self), self.args), self.__dict__ or None)


class InvalidInput(TriofetchError, ValueError):
    """An argument that can never work; raised before any I/O happens."""


class UnsupportedAlgorithm(InvalidInput):
    """A digest algorithm name that hashlib does not provide (or that has no fixed size)."""

    def __init__(self, algorithm: str, known: Sequence[str] = ()) -> None:
        self.algorithm = algorithm
        hint = f"; known algorithms: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unsupported digest algorithm {algorithm!r}{hint}")


class InvalidDigest(InvalidInput):
    """A digest value that is not a hex string of the algorithm's length."""

    def __init__(self, algorithm: str, value: object, reason: str) -> None:
        self.algorithm = algorithm
        self.value = value
        super().__init__(f"invalid {algorithm} digest {value!r}: {reason}")


class InvalidUnit(InvalidInput):
    """A declarative unit or artifact that cannot be valid (unsafe path, duplicates...)."""


class DownloadError(TriofetchError):
    """A download failed.

    Attributes:
        url: the URL (credentials redacted) of the attempt that failed last.
        attempts: one exception per attempt, in order, the last one being ``self`` when the
            download was tried only once.  Retried downloads raise the last attempt's error
            with every earlier attempt's error in ``attempts``.
        message: what went wrong in that attempt (``str()`` adds the URL).

    After several attempts ``str()`` lists each distinct cause once, in the order they
    first came, with how often it came and the URLs it came from: ``failed after 4
    attempts: sha256 mismatch: expected ..., got ... (2x, http://a/x); server answered
    HTTP 503 Service Unavailable, expected 200 (2x, http://b/x)``.
    """

    def __init__(self, message: str, *, url: str) -> None:
        self.url = redact_url(url)
        self.attempts: list[DownloadError] = [self]
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        if len(self.attempts) < 2:
            return f"{self.message} ({self.url})"
        causes: dict[str, tuple[list[int], list[str]]] = {}
        for attempt in self.attempts:
            count, urls = causes.setdefault(attempt.message, ([0], []))
            count[0] += 1
            if attempt.url not in urls:
                urls.append(attempt.url)
        listed = "; ".join(
            f"{message} ({count[0]}x, {', '.join(urls)})"
            for message, (count, urls) in causes.items()
        )
        return f"failed after {len(self.attempts)} attempts: {listed}"

    @property
    def retryable(self) -> bool:
        """Whether another attempt could succeed."""
        return True


class HTTPStatusError(DownloadError):
    """The server answered with a status other than 2xx."""

    def __init__(
        self, status_code: int, *, url: str, reason: str = "", retry_after: float | None = None
    ) -> None:
        self.status_code = status_code
        #: seconds the server asked us to wait (``Retry-After``), if it said so
        self.retry_after = retry_after
        label = f"HTTP {status_code}" + (f" {reason}" if reason else "")
        super().__init__(f"server answered {label}, expected 200", url=url)

    @property
    def retryable(self) -> bool:
        return self.status_code == 429 or self.status_code >= 500 or self.status_code == 408


class DigestMismatch(DownloadError):
    """The downloaded bytes have another digest than the one expected."""

    def __init__(self, algorithm: str, expected: str, actual: str, *, url: str) -> None:
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(f"{algorithm} mismatch: expected {expected}, got {actual}", url=url)


class SizeMismatch(DownloadError):
    """The downloaded body has another size than the one expected.

    ``actual`` is the size received, or for a body that was cut short because it grew past
    the expected size, the number of bytes read when reading stopped (``exceeded`` is True).
    """

    def __init__(self, expected: int, actual: int, *, url: str, exceeded: bool = False) -> None:
        self.expected = expected
        self.actual = actual
        self.exceeded = exceeded
        got = f"more than {expected} (stopped reading at {actual})" if exceeded else str(actual)
        super().__init__(f"size mismatch: expected {expected} bytes, got {got}", url=url)


class InvalidURL(DownloadError, ValueError):
    """A URL that cannot be fetched: malformed, or a scheme no transport handles (also a
    :class:`ValueError`)."""

    @property
    def retryable(self) -> bool:
        return False


class TooManyRedirects(DownloadError):
    """The server redirected more times than allowed."""

    @property
    def retryable(self) -> bool:
        return False


class DestinationError(DownloadError):
    """A downloaded and validated file could not be moved to the destination asked for.

    Nothing is left behind: the temp file is removed and the destination is untouched.  Not
    retried, and no mirror is tried: the move would fail the same way.
    """

    def __init__(self, destination: str, error: OSError, *, url: str) -> None:
        self.destination = destination
        reason = error.strerror or str(error)
        super().__init__(f"cannot write the file to {destination!r}: {reason}", url=url)

    @property
    def retryable(self) -> bool:
        return False


class TempFileError(DownloadError):
    """The body could not be written to its temp file, in the ``temp_dir`` of the download.

    The disk is full (``ENOSPC``), a quota is exhausted (``EDQUOT``), the file system is
    read-only (``EROFS``) or failing (``EIO``), or the directory may not be written.  Not
    retried, and no mirror is tried: the next attempt would write to the same place.  The
    temp file is removed.

    Attributes:
        errno: the OS error number (compare with :data:`errno.ENOSPC`...).
        path: the directory of the temp file.
        inodes_exhausted: ``ENOSPC`` from a file system with no free inode left, as seen
            when the write failed (see :class:`StorageWriteError`).

    ``__cause__`` is the :class:`OSError`; :attr:`full` says whether freeing space lets a
    later download work.
    """

    def __init__(self, error: OSError, path: str | os.PathLike[str], *, url: str) -> None:
        self.errno = error.errno if error.errno is not None else _errno.EIO
        self.path = os.fspath(path)
        self.inodes_exhausted = self.errno == _errno.ENOSPC and _no_free_inodes(self.path)
        reason = error.strerror or str(error)
        reason = reason[:1].lower() + reason[1:]
        super().__init__(f"cannot write the temp file in {self.path}: {reason}", url=url)
        self.__cause__ = error

    @property
    def full(self) -> bool:
        """A full disk or an exhausted quota."""
        return self.errno in (_errno.ENOSPC, _errno.EDQUOT)

    @property
    def retryable(self) -> bool:
        return False


class TransportError(DownloadError):
    """The connection could not be made, or broke off, or was too slow."""


class ConnectionFailed(TransportError, ConnectionError):
    """Connecting, sending or receiving failed (refused, reset, DNS, TLS...).

    Also a :class:`ConnectionError` (an OSError without an ``errno``: the OS error, when
    there was one, is its ``__cause__``).
    """


class DownloadTimeout(TransportError, TimeoutError):
    """No progress within the configured timeout.

    Also a :class:`TimeoutError` (an OSError without an ``errno``).
    """


class TruncatedBody(TransportError):
    """The body ended before the length the server announced."""


class ManifestError(TriofetchError):
    """A repository manifest that cannot be read; names the line."""

    def __init__(
        self,
        message: str,
        *,
        line_number: int | None = None,
        line: str | None = None,
        source: str | None = None,
    ) -> None:
        self.line_number = line_number
        self.line = line
        self.source = redact_url(source) if source else None
        parts = [self.source] if self.source else []
        if line_number is not None:
            parts.append(f"{line_number}" if source else f"line {line_number}")
        where = ":".join(p for p in parts if p)
        text = f"{where}: {message}" if where else message
        if line is not None:
            text += f": {line!r}"
        self.message = message
        super().__init__(text)


class StoreError(TriofetchError):
    """The database or the artifact storage refused an operation."""


class StorageWriteError(StoreError):
    """Writing under the storage root failed for a reason no retry fixes: the run stopped.

    The disk is full (``ENOSPC``: no free blocks, or no free inodes), a quota is exhausted
    (``EDQUOT``), the file system is read-only (``EROFS``) or failing (``EIO``), or the
    process is out of file descriptors (``EMFILE``: its ``ulimit -n``; ``ENFILE``: the
    system's table).  :meth:`ContentUnitCreator.run <triofetch.ContentUnitCreator.run>`
    raises it (never inside an exception group) after it stopped starting downloads,
    committed every unit already complete and removed its temp files: the store is
    consistent, and a run started once space is freed (or with a higher open-file limit,
    or fewer connections) goes on where this one stopped.

    Attributes:
        errno: the OS error number (compare with :data:`errno.ENOSPC`...).
        path: the directory the write went to: the storage's temp area (a download's temp
            file; also when the download's connection or ``file://`` source got no file
            descriptor) or its ``artifacts`` directory (adopting a file).
        inodes_exhausted: ``ENOSPC`` from a file system out of inodes (it holds as many
            files as it can, however much space is free): fewer of its inodes were free
            than of its blocks when the error was made, or as the *inodes_exhausted*
            argument says (what a :class:`TempFileError` saw); False for the other errors,
            and where the file system has no fixed number of inodes (btrfs).
        report: the run's :class:`~triofetch.CreateReport` so far (units committed, files
            stored), set by ``ContentUnitCreator.run``; None elsewhere.
        database_error: when the database could not record the complete units either (it
            may be on the same full disk): that error.  Its transaction was rolled back;
            the units it held are absent, their files unreferenced until ``gc``.

    ``__cause__`` is the :class:`OSError`.
    """

    #: the error numbers that stop a run, as every later write would fail the same way (a
    #: file descriptor too is a resource of the process, not of one unit)
    ERRNOS = frozenset(
        {_errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EIO, _errno.EMFILE, _errno.ENFILE}
    )

    def __init__(
        self,
        error: OSError,
        path: str | os.PathLike[str],
        *,
        inodes_exhausted: bool | None = None,
    ) -> None:
        self.errno = error.errno if error.errno is not None else _errno.EIO
        self.path = os.fspath(path)
        self.report: Any = None
        self.database_error: StoreError | None = None
        if inodes_exhausted is None:  # seen now, while the file system is as the write found it
            inodes_exhausted = self.errno == _errno.ENOSPC and _no_free_inodes(self.path)
        self.inodes_exhausted = inodes_exhausted
        reason = os.strerror(self.errno)
        self.reason = reason[:1].lower() + reason[1:]
        inodes = " (no free inodes)" if self.inodes_exhausted else ""
        super().__init__(f"{self.reason}{inodes} under {self.path}")
        self.__cause__ = error

    @property
    def full(self) -> bool:
        """A full disk (no free blocks, or no free inodes) or an exhausted quota; freeing
        space (or removing files) lets the next run go on."""
        return self.errno in (_errno.ENOSPC, _errno.EDQUOT)

    @property
    def too_many_open_files(self) -> bool:
        """The process (``EMFILE``) or the whole system (``ENFILE``) is out of file
        descriptors: a higher limit (``ulimit -n``) or fewer connections let the next run
        go on."""
        return self.errno in _DESCRIPTOR_ERRNOS

    @classmethod
    def matches(cls, error: BaseException) -> bool:
        """Whether *error* is an OSError that stops a run (a full or failing file system,
        too many open files): its ``errno`` is in :attr:`ERRNOS`."""
        return isinstance(error, OSError) and error.errno in cls.ERRNOS

    @staticmethod
    def out_of_descriptors(error: BaseException) -> bool:
        """Whether *error* is an OSError for want of a file descriptor (``EMFILE``,
        ``ENFILE``): a want of the process (or system), which says nothing of the file,
        socket or directory that could not be opened."""
        return isinstance(error, OSError) and error.errno in _DESCRIPTOR_ERRNOS


#: the error numbers of a process (EMFILE) or system (ENFILE) out of file descriptors
_DESCRIPTOR_ERRNOS = frozenset({_errno.EMFILE, _errno.ENFILE})


def _no_free_inodes(path: str) -> bool:
    """Whether the ``ENOSPC`` of a write under *path* was for want of inodes: its file
    system has fewer of its inodes free than of its blocks (False when that cannot be
    told, or when it has no fixed number of inodes: btrfs reports none at all).

    Compared, not "no inode free": other threads of the run remove temp files between the
    failed write and this look, freeing an inode or two (a failure seen about once in 15
    runs under load), while the scarcer of the two stays the scarcer."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    if stats.f_files <= 0 or stats.f_blocks <= 0:
        return False
    return stats.f_favail / stats.f_files < stats.f_bavail / stats.f_blocks


class SchemaVersionError(StoreError):
    """The store was created by a newer version of triofetch than this one."""


class StoreNotFound(StoreError, LookupError):
    """There is no store where one must already exist.

    Raised by ``open_store(create=False)`` or ``open_store(readonly=True)`` when the SQLite
    file does not exist, or the PostgreSQL database holds no triofetch schema.  ``location``
    is the SQLite file's path or the database URL (credentials redacted).
    """

    def __init__(self, location: str, message: str | None = None) -> None:
        self.location = location
        super().__init__(message or f"no triofetch store at {location}")


class NotAStore(StoreError):
    """A database is there, but it is not a triofetch store, and is never made into one.

    An empty (zero-byte) file, a file that is not SQLite, an SQLite database without
    triofetch's ``triofetch_schema`` table, a PostgreSQL database holding tables of its own
    and no triofetch schema.  ``location`` is the file's path or the database URL
    (credentials redacted); ``reason`` says what was found.
    """

    def __init__(self, location: str, reason: str = "") -> None:
        self.location = location
        self.reason = reason
        super().__init__(
            f"{location} is not a triofetch database" + (f" ({reason})" if reason else "")
        )


class RepositoryNotFound(StoreError, LookupError):
    """No repository of that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no repository named {name!r}")


class VersionNotFound(StoreError, LookupError):
    """No such repository version (never created, or discarded)."""


class VersionNotWritable(StoreError):
    """The repository version is complete: complete versions are immutable."""


class ArtifactConflict(StoreError):
    """The database already holds this sha256 with another size: one of them is wrong."""

    def __init__(self, sha256: str, recorded_size: int, given_size: int) -> None:
        self.sha256 = sha256
        self.recorded_size = recorded_size
        self.given_size = given_size
        super().__init__(
            f"artifact {sha256} is recorded with size {recorded_size}, got size {given_size}"
        )


class RepositoryKeyConflict(StoreError):
    """Two units added to one version have the same repository key (or, for path keys, one
    is a file where the other needs a directory).

    ``key`` is the unit refused, ``other`` the unit already added at ``repository_key``.
    """

    def __init__(self, key: _Keyed, repository_key: str, other: _Keyed, *, how: str) -> None:
        self.key = key
        self.repository_key = repository_key
        self.other = other
        super().__init__(
            f"unit {key.type} {list(key.natural_key)!r} {how} unit {other.type} "
            f"{list(other.natural_key)!r} (repository key {repository_key!r}), and both are "
            "added to the same version: one input cannot hold both"
        )


class ArtifactMismatch(InvalidInput):
    """What the caller said about a file to adopt is not what the file is.

    ``field`` is ``"sha256"`` or ``"size"``; ``expected`` is what the caller passed and
    ``actual`` what the download computed (or the size on disk).  The temp file is left in
    place: it still belongs to the caller.  ``path`` is None for bytes given to
    :meth:`ArtifactStorage.adopt_many <triofetch.ArtifactStorage.adopt_many>`.
    """

    def __init__(self, field: str, expected: object, actual: object, *, path: Path | None) -> None:
        self.field = field
        self.expected = expected
        self.actual = actual
        self.path = path
        what = "the bytes given" if path is None else path
        super().__init__(f"cannot adopt {what}: {field} expected {expected}, got {actual}")


class ArtifactMissing(StoreError, LookupError):
    """No stored file for this sha256."""

    def __init__(self, sha256: str, path: Path) -> None:
        self.sha256 = sha256
        self.path = path
        super().__init__(f"artifact {sha256} is not in the storage (no file {path})")


class StoreBusy(StoreError):
    """A writer held its lease for longer than the collector would wait: nothing removed.

    ``waited`` is how long the collector waited, in seconds.
    """

    def __init__(self, waited: float) -> None:
        self.waited = waited
        super().__init__(
            f"a sync (or another writer) is still running after waiting {waited:g} s: "
            "garbage collection gave up and removed nothing; run it again later, or with a "
            "longer wait"
        )


# -- the lease ------------------------------------------------------------------------------


class UnitFailed(TriofetchError):
    """A content unit could not be completed; ``cause`` says why."""

    def __init__(self, unit_key: tuple[str, tuple[str, ...]], cause: BaseException) -> None:
        #: the unit's ``(type, natural_key)``
        self.unit_key = unit_key
        self.cause = cause
        super().__init__(f"unit {unit_key!r} failed: {cause}")
        self.__cause__ = cause


class WrongContext(TriofetchError, RuntimeError):
    """A blocking API was called where it would block a Trio run, or an async one outside
    a Trio run (from asyncio, say): triofetch runs under Trio only.  Also a
    :class:`Downloader` or :class:`UnitDownloader` used outside its ``async with`` (not
    open yet, or closed already), or opened twice."""


publish(__name__, globals())  # redact_url, from ._urls: its home is here
