"""The public names of :mod:`triofetch`, imported from their modules.

Each is imported as ``Name as Name``: an explicit re-export, so that type checkers in strict
mode (no implicit re-exports) see every name through ``triofetch/__init__``'s star import.

``triofetch/__init__`` lists them in ``__all__`` and loads this module when one of them is
first used, so that ``import triofetch`` alone is cheap (see its docstring).  A new public
name is imported here and listed in ``__all__`` there.
"""

from ._digests import (
    PULP_ALGORITHMS as PULP_ALGORITHMS,
)
from .blocking import (
    fetch as fetch,
)
from .creator import (
    ContentUnitCreator as ContentUnitCreator,
    CreateReport as CreateReport,
    CreatorEvent as CreatorEvent,
    CreatorEventKind as CreatorEventKind,
    CreatorProgress as CreatorProgress,
    Policy as Policy,
    UnitFailure as UnitFailure,
)
from .declarative import (
    DeclarativeArtifact as DeclarativeArtifact,
    DeclarativeUnit as DeclarativeUnit,
)
from .downloader import (
    Downloader as Downloader,
    DownloadResult as DownloadResult,
    FetchFailed as FetchFailed,
    FetchOutcome as FetchOutcome,
    FetchOutcomes as FetchOutcomes,
    FetchPlan as FetchPlan,
    FetchRequest as FetchRequest,
    FetchSucceeded as FetchSucceeded,
    TokenProvider as TokenProvider,
)
from .errors import (
    ConnectionFailed as ConnectionFailed,
    DestinationError as DestinationError,
    DigestMismatch as DigestMismatch,
    DownloadError as DownloadError,
    DownloadTimeout as DownloadTimeout,
    HTTPStatusError as HTTPStatusError,
    InvalidDigest as InvalidDigest,
    InvalidInput as InvalidInput,
    InvalidUnit as InvalidUnit,
    InvalidURL as InvalidURL,
    ManifestError as ManifestError,
    NotAStore as NotAStore,
    SchemaVersionError as SchemaVersionError,
    SizeMismatch as SizeMismatch,
    StorageWriteError as StorageWriteError,
    StoreError as StoreError,
    StoreNotFound as StoreNotFound,
    TempFileError as TempFileError,
    TooManyRedirects as TooManyRedirects,
    TransportError as TransportError,
    TriofetchError as TriofetchError,
    TruncatedBody as TruncatedBody,
    UnitFailed as UnitFailed,
    UnsupportedAlgorithm as UnsupportedAlgorithm,
    WrongContext as WrongContext,
)
from .manifest import (
    DEFAULT_MAX_MANIFEST_SIZE as DEFAULT_MAX_MANIFEST_SIZE,
    ManifestEntry as ManifestEntry,
    PulpManifest as PulpManifest,
    PulpManifestReader as PulpManifestReader,
    RepositoryIndex as RepositoryIndex,
    RepositoryReader as RepositoryReader,
    parse_pulp_manifest as parse_pulp_manifest,
    read_manifest as read_manifest,
)
from .repairing import (
    RepairedFile as RepairedFile,
    RepairReport as RepairReport,
    UnrepairableFile as UnrepairableFile,
    repair as repair,
)
from .storage import (
    ArtifactMismatch as ArtifactMismatch,
    ArtifactMissing as ArtifactMissing,
    ArtifactStorage as ArtifactStorage,
    CorruptArtifact as CorruptArtifact,
    FileToAdopt as FileToAdopt,
    StoredArtifact as StoredArtifact,
    VerifyReport as VerifyReport,
)
from .store import (
    DEFAULT_REPOSITORY_KEYS as DEFAULT_REPOSITORY_KEYS,
    ArtifactConflict as ArtifactConflict,
    ArtifactRecord as ArtifactRecord,
    CommitOutcome as CommitOutcome,
    CommitReport as CommitReport,
    GCReport as GCReport,
    MissingArtifact as MissingArtifact,
    NewUnit as NewUnit,
    NewUnitArtifact as NewUnitArtifact,
    Placement as Placement,
    PruneReport as PruneReport,
    RemoteArtifact as RemoteArtifact,
    ReplacedUnit as ReplacedUnit,
    RepositoryKey as RepositoryKey,
    RepositoryKeyConflict as RepositoryKeyConflict,
    RepositoryNotFound as RepositoryNotFound,
    Store as Store,
    StoreBusy as StoreBusy,
    UnitInfo as UnitInfo,
    UnitKey as UnitKey,
    VersionHandle as VersionHandle,
    VersionInfo as VersionInfo,
    VersionNotFound as VersionNotFound,
    VersionNotWritable as VersionNotWritable,
    open_store as open_store,
)
from .transports import (
    Response as Response,
    Transport as Transport,
    TransportOptions as TransportOptions,
)
from .units import (
    DownloadedUnit as DownloadedUnit,
    FailedUnit as FailedUnit,
    UnitDownloader as UnitDownloader,
    UnitOutcome as UnitOutcome,
    UnitStream as UnitStream,
    download_units as download_units,
)
