"""The concurrent downloader: :class:`Downloader`, its results and its plans.

Owns fetching one file (with mirrors, retries, redirects, authentication and limits) into a
temporary file or a destination, validated against expected digests and size.  It knows
transports only through :class:`triofetch.transports.Transport` and knows nothing of units,
the store or the storage.
"""

from .._public import publish
from ._auth import TokenProvider
from ._core import BodyConsumer, Downloader
from ._plan import FetchPlan
from ._result import DownloadResult

__all__ = ["BodyConsumer", "DownloadResult", "Downloader", "FetchPlan", "TokenProvider"]

publish(__name__, globals())
