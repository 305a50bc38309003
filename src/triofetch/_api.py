"""The public names of :mod:`triofetch`, imported from their modules.

``triofetch/__init__`` lists them in ``__all__`` and loads this module when one of them is
first used, so that ``import triofetch`` alone is cheap (see its docstring).  A new public
name is imported here and listed in ``__all__`` there.
"""

# ruff: noqa: F401

from ._creator import (
    ContentUnitCreator,
    CreateReport,
    CreatorEvent,
    CreatorProgress,
    Policy,
    UnitFailure,
)
from ._declarative import DeclarativeArtifact, DeclarativeUnit
from ._digests import PULP_ALGORITHMS
from ._downloader import Downloader, DownloadResult, TokenProvider
from ._errors import (
    ConnectionFailed,
    DestinationError,
    DigestMismatch,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    InvalidDigest,
    InvalidInput,
    InvalidUnit,
    InvalidURL,
    ManifestError,
    NotAStore,
    SchemaVersionError,
    SizeMismatch,
    StorageWriteError,
    StoreError,
    StoreNotFound,
    TooManyRedirects,
    TransportError,
    TriofetchError,
    TruncatedBody,
    UnitFailed,
    UnsupportedAlgorithm,
    WrongContext,
)
from ._fetch import fetch
from ._manifest import (
    DEFAULT_MAX_MANIFEST_SIZE,
    ManifestEntry,
    PulpManifest,
    PulpManifestReader,
    RepositoryIndex,
    RepositoryReader,
    parse_pulp_manifest,
    read_manifest,
)
from ._repair import RepairedFile, RepairReport, UnrepairableFile, repair
from ._storage import (
    ArtifactMismatch,
    ArtifactMissing,
    ArtifactStorage,
    CorruptArtifact,
    StoredArtifact,
    VerifyReport,
)
from ._store import (
    DEFAULT_REPOSITORY_KEYS,
    ArtifactConflict,
    ArtifactRecord,
    CommitReport,
    GCReport,
    MissingArtifact,
    NewUnit,
    NewUnitArtifact,
    Placement,
    PruneReport,
    RemoteArtifact,
    ReplacedUnit,
    RepositoryKey,
    RepositoryKeyConflict,
    RepositoryNotFound,
    Store,
    StoreBusy,
    UnitInfo,
    UnitKey,
    VersionHandle,
    VersionInfo,
    VersionNotFound,
    VersionNotWritable,
    open_store,
)
from ._transports import Response, Transport, TransportOptions
from ._units import (
    DownloadedUnit,
    FailedUnit,
    UnitDownloader,
    UnitOutcome,
    UnitStream,
    download_units,
)
