"""Transports: how bytes are fetched.  The downloader knows only :class:`Transport`."""

from .._public import publish
from ._base import Response, Transport, TransportOptions, make_ssl_context

__all__ = ["Response", "Transport", "TransportOptions", "make_ssl_context"]

publish(__name__, globals())
