"""Transports: how bytes are fetched.  The downloader knows only :class:`Transport`."""

from .base import Response, Transport, TransportOptions

__all__ = ["Response", "Transport", "TransportOptions"]
