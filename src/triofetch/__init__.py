"""triofetch: download content units with Trio; every unit complete or absent."""

from ._digests import PULP_ALGORITHMS
from ._downloader import Downloader, DownloadResult, TokenProvider
from ._errors import (
    ConnectionFailed,
    DigestMismatch,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    InvalidDigest,
    InvalidInput,
    InvalidUnit,
    InvalidURL,
    ManifestError,
    SchemaVersionError,
    SizeMismatch,
    StoreError,
    TooManyRedirects,
    TransportError,
    TriofetchError,
    TruncatedBody,
    UnitFailed,
    UnsupportedAlgorithm,
    WrongContext,
)
from ._fetch import fetch
from ._transports import Response, Transport, TransportOptions
from ._version import __version__

__all__ = [
    "PULP_ALGORITHMS",
    "ConnectionFailed",
    "DigestMismatch",
    "DownloadError",
    "DownloadResult",
    "DownloadTimeout",
    "Downloader",
    "HTTPStatusError",
    "InvalidDigest",
    "InvalidInput",
    "InvalidURL",
    "InvalidUnit",
    "ManifestError",
    "Response",
    "SchemaVersionError",
    "SizeMismatch",
    "StoreError",
    "TokenProvider",
    "TooManyRedirects",
    "Transport",
    "TransportError",
    "TransportOptions",
    "TriofetchError",
    "TruncatedBody",
    "UnitFailed",
    "UnsupportedAlgorithm",
    "WrongContext",
    "__version__",
    "fetch",
]
