"""The concurrent downloader: :class:`Downloader`, its results and its plans.

Owns fetching one file (with mirrors, retries, authentication and limits) into a temporary
file or a destination, validated against expected digests and size.  It knows transports
only through :class:`triofetch.transports.Transport` (which follow redirects) and knows
nothing of units, the store or the storage.

Inside, one job per module, imported one way (``_core`` imports the others):
``_result`` (:class:`DownloadResult`), ``_plan`` (:class:`FetchPlan`, a fetch's arguments
checked before any I/O), ``_auth`` (credentials), ``_retry`` (attempts, backoff,
``Retry-After``, rate and per-host limits), ``_sinks`` (writing and hashing in worker
threads), ``_many`` (:meth:`~triofetch.Downloader.fetch_many`: many fetches as outcomes, knowing the
downloader only by a protocol), ``_closing`` (the fetches in flight, ended by ``aclose``),
``_core`` (:class:`Downloader`: lifecycle and requests).
"""

from .._public import publish
from ._auth import TokenProvider
from ._core import BodyConsumer, Downloader, DownloaderOptions
from ._many import FetchFailed, FetchOutcome, FetchOutcomes, FetchRequest, FetchSucceeded
from ._plan import FetchPlan
from ._result import DownloadResult

__all__ = [
    "BodyConsumer",
    "DownloadResult",
    "Downloader",
    "DownloaderOptions",
    "FetchFailed",
    "FetchOutcome",
    "FetchOutcomes",
    "FetchPlan",
    "FetchRequest",
    "FetchSucceeded",
    "TokenProvider",
]

publish(__name__, globals())
