"""triofetch: download content units with Trio; every unit complete or absent.

The public names are loaded on first use (:pep:`562`): ``import triofetch`` imports none of
Trio, the store or the downloader until one of its names is asked for.  That keeps the
command line's start-up short and lets ``python -m triofetch`` take Ctrl-C and SIGTERM
before the heavy imports (see ``triofetch._cli._startup``).
"""

# ruff: noqa: F405  (the names of __all__ come from the star import, or __getattr__)

from ._version import __version__

#: typing.TYPE_CHECKING, without importing typing (a few milliseconds of start-up)
TYPE_CHECKING = False

if TYPE_CHECKING:  # for type checkers, every name of __all__ (from triofetch._api)
    from ._api import *  # noqa: F403

__all__ = [
    "DEFAULT_MAX_MANIFEST_SIZE",
    "DEFAULT_REPOSITORY_KEYS",
    "PULP_ALGORITHMS",
    "ArtifactConflict",
    "ArtifactMismatch",
    "ArtifactMissing",
    "ArtifactRecord",
    "ArtifactStorage",
    "CommitOutcome",
    "CommitReport",
    "ConnectionFailed",
    "ContentUnitCreator",
    "CorruptArtifact",
    "CreateReport",
    "CreatorEvent",
    "CreatorEventKind",
    "CreatorProgress",
    "DeclarativeArtifact",
    "DeclarativeUnit",
    "DestinationError",
    "DigestMismatch",
    "DownloadError",
    "DownloadResult",
    "DownloadTimeout",
    "DownloadedUnit",
    "Downloader",
    "FailedUnit",
    "FetchFailed",
    "FetchOutcome",
    "FetchOutcomes",
    "FetchPlan",
    "FetchRequest",
    "FetchSucceeded",
    "FileToAdopt",
    "GCReport",
    "HTTPStatusError",
    "InvalidDigest",
    "InvalidInput",
    "InvalidURL",
    "InvalidUnit",
    "ManifestEntry",
    "ManifestError",
    "MissingArtifact",
    "NewUnit",
    "NewUnitArtifact",
    "NotAStore",
    "Placement",
    "Policy",
    "PruneReport",
    "PulpManifest",
    "PulpManifestReader",
    "RemoteArtifact",
    "RepairReport",
    "RepairedFile",
    "ReplacedUnit",
    "RepositoryIndex",
    "RepositoryKey",
    "RepositoryKeyConflict",
    "RepositoryNotFound",
    "RepositoryReader",
    "Response",
    "SchemaVersionError",
    "SizeMismatch",
    "StorageWriteError",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreNotFound",
    "StoredArtifact",
    "TempFileError",
    "TokenProvider",
    "TooManyRedirects",
    "Transport",
    "TransportError",
    "TransportOptions",
    "TriofetchError",
    "TruncatedBody",
    "UnitDownloader",
    "UnitFailed",
    "UnitFailure",
    "UnitInfo",
    "UnitKey",
    "UnitOutcome",
    "UnitStream",
    "UnrepairableFile",
    "UnsupportedAlgorithm",
    "VerifyReport",
    "VersionHandle",
    "VersionInfo",
    "VersionNotFound",
    "VersionNotWritable",
    "WrongContext",
    "__version__",
    "download_units",
    "fetch",
    "open_store",
    "parse_pulp_manifest",
    "read_manifest",
    "repair",
]

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """A public name, imported with all the others on first use (then kept here)."""
        if name in __all__:
            from . import _api

            value = getattr(_api, name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
