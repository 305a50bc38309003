"""Transports: how bytes are fetched.  The downloader knows only :class:`Transport`.

The protocol (:class:`Transport`, :class:`Response`, :class:`TransportOptions`) and the
transports that come with triofetch, for callers that build one themselves and hand it to
``Downloader(transport=...)``: :class:`TrioTransport`, :class:`HttpxTransport`,
:class:`AsksTransport` (needs the ``asks`` extra) and :class:`FileTransport` (``file://``).
Those four are imported on first use: importing this package imports neither httpx nor asks
nor Trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._public import publish
from ._base import Response, Transport, TransportOptions, make_ssl_context

if TYPE_CHECKING:
    from ._asks import AsksTransport
    from ._file import FileTransport
    from ._httpx import HttpxTransport
    from ._trio import TrioTransport

__all__ = [
    "AsksTransport",
    "FileTransport",
    "HttpxTransport",
    "Response",
    "Transport",
    "TransportOptions",
    "TrioTransport",
    "make_ssl_context",
]

#: the transports imported on first use, and their modules
_LAZY = {
    "AsksTransport": "._asks",
    "FileTransport": "._file",
    "HttpxTransport": "._httpx",
    "TrioTransport": "._trio",
}

publish(__name__, {**globals(), "__all__": [n for n in __all__ if n not in _LAZY]})


def __getattr__(name: str) -> object:
    """A transport class, imported on first use (then kept here)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    publish(__name__, {"__all__": [name], name: value})
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
