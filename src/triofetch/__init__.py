"""triofetch: download content units with Trio; every unit complete or absent."""

from ._declarative import DeclarativeArtifact, DeclarativeUnit
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
from ._units import (
    DownloadedUnit,
    FailedUnit,
    UnitDownloader,
    UnitOutcome,
    UnitStream,
    download_units,
)
from ._version import __version__

__all__ = [
    "PULP_ALGORITHMS",
    "ConnectionFailed",
    "DeclarativeArtifact",
    "DeclarativeUnit",
    "DigestMismatch",
    "DownloadError",
    "DownloadResult",
    "DownloadTimeout",
    "DownloadedUnit",
    "Downloader",
    "FailedUnit",
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
    "UnitDownloader",
    "UnitFailed",
    "UnitOutcome",
    "UnitStream",
    "UnsupportedAlgorithm",
    "WrongContext",
    "__version__",
    "download_units",
    "fetch",
]
