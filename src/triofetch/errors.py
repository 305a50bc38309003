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
     │    ├── InvalidURL               a URL no transport can fetch (not retried)
     │    ├── TooManyRedirects         (not retried)
     │    ├── DestinationError         destination: the file could not be put there
     │    └── TransportError           the connection failed or broke off
     │         ├── ConnectionFailed
     │         ├── DownloadTimeout
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
     │    ├── StoreBusy                gc gave up waiting for running writers: waited
     │    ├── StorageWriteError        a full disk, a quota, a read-only or failing file system
     │    │                            under the root: errno, path, report (OSError as cause)
     │    └── ArtifactMissing          reading an artifact that is not stored
     ├── UnitFailed                    unit_key, cause
     └── WrongContext                  fetch() called inside a Trio run

The store and storage errors are defined beside the code that raises them
(``_store/_types.py``, ``_storage.py``) and exported from :mod:`triofetch` like the rest.
Messages say what was expected and what came.  Credentials in URLs never appear in a
message: URLs are passed through :func:`redact_url` first.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from .creator._creator import CreateReport

__all__ = [
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
    "SchemaVersionError",
    "SizeMismatch",
    "StorageWriteError",
    "StoreError",
    "StoreNotFound",
    "TooManyRedirects",
    "TransportError",
    "TriofetchError",
    "TruncatedBody",
    "UnitFailed",
    "UnsupportedAlgorithm",
    "WrongContext",
    "redact_url",
]


def redact_url(url: str) -> str:
    """Return *url* with any user name and password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


class TriofetchError(Exception):
    """Base class of every error raised by triofetch."""


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
    """

    def __init__(self, message: str, *, url: str) -> None:
        self.url = redact_url(url)
        self.attempts: list[DownloadError] = [self]
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.message} ({self.url})"
        if len(self.attempts) > 1:
            earlier = "; ".join(
                f"{i}: {a.message}" + ("" if a.url == self.url else f" ({a.url})")
                for i, a in enumerate(self.attempts[:-1], 1)
            )
            text += f", after {len(self.attempts)} attempts (earlier attempts: {earlier})"
        return text

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


class InvalidURL(DownloadError):
    """A URL that cannot be fetched: malformed, or a scheme no transport handles."""

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

    Nothing is left behind: the temp file is removed and the destination is untouched.
    """

    def __init__(self, destination: str, error: OSError, *, url: str) -> None:
        self.destination = destination
        reason = error.strerror or str(error)
        super().__init__(f"cannot write the file to {destination!r}: {reason}", url=url)

    @property
    def retryable(self) -> bool:
        return False


class TransportError(DownloadError):
    """The connection could not be made, or broke off, or was too slow."""


class ConnectionFailed(TransportError):
    """Connecting, sending or receiving failed (refused, reset, DNS, TLS...)."""


class DownloadTimeout(TransportError):
    """No progress within the configured timeout."""


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

    The disk is full (``ENOSPC``), a quota is exhausted (``EDQUOT``), the file system is
    read-only (``EROFS``) or failing (``EIO``).  :meth:`ContentUnitCreator.run
    <triofetch.ContentUnitCreator.run>` raises it (never inside an exception group) after
    it stopped starting downloads, committed every unit already complete and removed its
    temp files: the store is consistent, and a run started once space is freed goes on
    where this one stopped.

    Attributes:
        errno: the OS error number (compare with :data:`errno.ENOSPC`...).
        path: the directory the write went to: the storage's temp area (a download's temp
            file) or its ``artifacts`` directory (adopting a file).
        report: the run's :class:`~triofetch.CreateReport` so far (units committed, files
            stored), set by ``ContentUnitCreator.run``; None elsewhere.
        database_error: when the database could not record the complete units either (it
            may be on the same full disk): that error.  Its transaction was rolled back;
            the units it held are absent, their files unreferenced until ``gc``.

    ``__cause__`` is the :class:`OSError`.
    """

    #: the error numbers that stop a run: every later write would fail the same way
    ERRNOS = frozenset({_errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EIO})

    def __init__(self, error: OSError, path: str | os.PathLike[str]) -> None:
        self.errno = error.errno if error.errno is not None else _errno.EIO
        self.path = os.fspath(path)
        self.report: CreateReport | None = None
        self.database_error: StoreError | None = None
        reason = os.strerror(self.errno)
        self.reason = reason[:1].lower() + reason[1:]
        super().__init__(f"{self.reason} under {self.path}")
        self.__cause__ = error

    @property
    def full(self) -> bool:
        """A full disk or an exhausted quota: freeing space lets the next run go on."""
        return self.errno in (_errno.ENOSPC, _errno.EDQUOT)

    @classmethod
    def matches(cls, error: BaseException) -> bool:
        """Whether *error* is an OSError that stops a run (a full or failing file system)."""
        return isinstance(error, OSError) and error.errno in cls.ERRNOS


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


class UnitFailed(TriofetchError):
    """A content unit could not be completed; ``cause`` says why."""

    def __init__(self, unit_key: object, cause: BaseException) -> None:
        self.unit_key = unit_key
        self.cause = cause
        super().__init__(f"unit {unit_key!r} failed: {cause}")
        self.__cause__ = cause


class WrongContext(TriofetchError, RuntimeError):
    """A blocking API was called where it would block a Trio run."""
