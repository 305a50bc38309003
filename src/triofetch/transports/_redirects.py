"""Following redirects: the one loop of the transports that do not have their own.

Owns the rules of a redirect, for the trio and asks transports: which statuses are
redirects (301, 302, 303, 307 and 308, with a ``Location``), how the next URL is made (the
``Location`` resolved against the current URL), reading off a redirect's small body so
that its connection can be reused, the ``max_redirects`` count and
:class:`~triofetch.TooManyRedirects`, and dropping the ``Authorization`` header when a
redirect leaves the origin, and the DEBUG line of each hop on ``triofetch.http`` (the
downloader logs the request that ends the chain).  (The httpx transport leaves redirects
to httpx's client, which keeps the same rules.)  It must not open connections or parse
HTTP: a transport hands it a :class:`Requester` that makes one request and releases a
response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import aclosing
from typing import Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import trio

from .._urls import redact_url
from ..errors import ConnectionFailed, InvalidURL, TooManyRedirects, TruncatedBody
from ._base import Response

__all__ = ["REDIRECT_STATUSES", "Requester", "follow_redirects"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: a redirect body up to this size is read off, so that its connection can be reused
_MAX_DRAIN = 1 << 16
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: one DEBUG line per redirect hop (the downloader logs the request that ends the chain)
_http_log = logging.getLogger("triofetch.http")

_R = TypeVar("_R", bound=Response)


class Requester(Protocol[_R]):
    """What :func:`follow_redirects` needs of a transport."""

    async def request(self, url: str, headers: Mapping[str, str]) -> _R:
        """Send one GET for *url* with exactly *headers*; the response, its body unread
        (redirects are not followed here)."""
        ...

    async def release(self, response: _R) -> None:
        """Be done with a redirect's *response*: its connection goes back to the pool if
        its body was read to the end, else it is closed."""
        ...


async def follow_redirects(
    requester: Requester[_R], url: str, headers: Mapping[str, str], max_redirects: int
) -> _R:
    """The response to a GET for *url*, after following up to *max_redirects* redirects.

    Raises :class:`~triofetch.TooManyRedirects` (naming *url*) when the response to the
    last request allowed is a redirect too.
    """
    first = url
    start = 0.0
    for _ in range(max_redirects + 1):
        debug = _http_log.isEnabledFor(logging.DEBUG)
        if debug:
            start = trio.current_time()
        response = await requester.request(url, headers)
        if response.status_code not in REDIRECT_STATUSES:
            return response
        location = response.headers.get("location", "").strip()
        if not location:
            return response  # nowhere to go: the caller gets the 3xx as it is
        if not location.isascii():
            location = _as_utf8(location)
        seen = 0
        try:
            seen = await _read_off(response)
        except (ConnectionFailed, TruncatedBody):
            pass  # the body of a redirect means nothing: followed anyway, not reused
        finally:
            await requester.release(response)
        try:
            target = urljoin(url, location)
        except ValueError as exc:  # (an IPv6 literal without its closing bracket...)
            raise InvalidURL(
                f"the redirect's Location {location[:200]!r} is not a URL: {exc}", url=url
            ) from None
        if debug:
            _http_log.debug(
                "GET %s -> %d, %d bytes, %.3f s (redirect to %s)",
                redact_url(url),
                response.status_code,
                seen,
                trio.current_time() - start,
                redact_url(target),
            )
        origin = _origin(target)
        if origin is None or origin != _origin(url):
            # credentials given for one server are not sent to another
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        url = target
    raise TooManyRedirects(f"more than {max_redirects} redirects", url=first)


def _as_utf8(location: str) -> str:
    """A ``Location`` with raw UTF-8 bytes, as servers send them, read as UTF-8: a
    transport that decodes heads as Latin-1 (the trio transport) hands over ``cafÃ©`` for
    ``café``, which would be requested as ``caf%C3%83%C2%A9``.  (Text that is not UTF-8
    read as Latin-1 is left as it is.)"""
    try:
        return location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return location


async def _read_off(response: Response) -> int:
    """Read and drop a redirect's body, up to a small limit (a larger one is left unread,
    and its connection closed); the bytes read."""
    seen = 0
    async with aclosing(response.iter_bytes()) as body:
        async for chunk in body:
            seen += len(chunk)
            if seen > _MAX_DRAIN:
                break
    return seen


def _origin(url: str) -> tuple[str, str | None, int | None] | None:
    """(scheme, host, port) of *url*, the port defaulted; None for a malformed URL (which
    never matches: the transport refuses it when asked to fetch it)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, port or _DEFAULT_PORTS.get(scheme)
