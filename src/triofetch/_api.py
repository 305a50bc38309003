"""The public names of :mod:`triofetch`, imported from their modules.

``triofetch/__init__`` lists them in ``__all__`` and loads this module when one of them is
first used, so that ``import triofetch`` alone is cheap (see its docstring).  A new public
name is imported here and listed in ``__all__`` there.
"""

# ruff: noqa: F401

from ._digests import PULP_ALGORITHMS
from .blocking import fetch
from .creator import (
    ContentUnitCreator,
    CreateReport,
    CreatorEvent,
    CreatorProgress,
    Policy,
    UnitFailure,
)
from .declarative import DeclarativeArtifact, DeclarativeUnit
from .downloader import Downloader, DownloadResult, FetchPlan, TokenProvider
from .errors import (
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
from .manifest import (
    DEFAULT_MAX_MANIFEST_SIZE,
    ManifestEntry,
    PulpManifest,
    PulpManifestReader,
    RepositoryIndex,
    RepositoryReader,
    parse_pulp_manifest,
    read_manifest,
)
from .repairing import RepairedFile, RepairReport, UnrepairableFile, repair
from .storage import (
    ArtifactMismatch,
    ArtifactMissing,
    ArtifactStorage,
    CorruptArtifact,
    StoredArtifact,
    VerifyReport,
)
from .store import (
    DEFAULT_REPOSITORY_KEYS,
    ArtifactConflict,
    ArtifactRecord,
    CommitOutcome,
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
from .transports import Response, Transport, TransportOptions
from .units import (
    DownloadedUnit,
    FailedUnit,
    UnitDownloader,
    UnitOutcome,
    UnitStream,
    download_units,
)
