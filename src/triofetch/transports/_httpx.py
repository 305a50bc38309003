"""The default transport: httpx's AsyncClient, one connection pool for all requests.

Owns the adaptation of httpx to the :class:`~triofetch.transports.Transport` protocol:
requests, raw (undecoded) bodies, httpx's errors mapped to triofetch's, and a DEBUG line on
``triofetch.http`` for each redirect httpx followed.  Redirects,
proxies, IDNA host names and the connection pool are httpx's own; a proxy's refusal (a
``CONNECT`` answered other than 2xx, or a 407) is a :class:`~triofetch.ConnectionFailed`
naming the proxy (redacted), as with the trio transport.  It must not sleep, retry or time
out (timeouts are the downloader's cancel scopes).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx

from .._urls import redact_url
from ..errors import ConnectionFailed, InvalidInput, InvalidURL, TooManyRedirects, TruncatedBody
from ._base import Response, TransportOptions, describe_failure, make_ssl_context
from ._routing import Proxy, ProxyRoutes

__all__ = ["HttpxTransport"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: one DEBUG line per redirect hop (the downloader logs the request that ends the chain)
_http_log = logging.getLogger("triofetch.http")


class _HttpxResponse:
    __slots__ = ("_response", "headers", "reason", "status_code", "url")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.reason = response.reason_phrase
        self.url = str(response.url)
        self.headers: Mapping[str, str] = response.headers

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.RemoteProtocolError as exc:
            raise TruncatedBody(f"body cut short: {exc}", url=self.url) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(describe_failure(exc), url=self.url) from exc


class HttpxTransport:
    """Fetches ``http://`` and ``https://`` URLs with one shared ``httpx.AsyncClient``."""

    def __init__(self, options: TransportOptions) -> None:
        if options.proxy is not None:  # (refused as on every transport; httpx would
            Proxy.parse(options.proxy)  # take some of them, and connect elsewhere)
        # the same choice of proxy as httpx's, to name the proxy in its errors (a setting
        # only httpx understands is left to httpx)
        try:
            routes: ProxyRoutes | None = ProxyRoutes(options.proxy, options.trust_env)
        except InvalidInput:
            routes = None
        self._routes = routes if routes else None
        limits = httpx.Limits(
            max_connections=options.max_connections,
            max_keepalive_connections=options.max_connections,
            keepalive_expiry=30.0,
        )
        try:
            self._client = httpx.AsyncClient(
                limits=limits,
                timeout=None,  # timeouts are Trio cancel scopes in the downloader
                follow_redirects=True,
                max_redirects=options.max_redirects,
                verify=make_ssl_context(options),
                proxy=options.proxy,
                trust_env=options.trust_env,
            )
        except ImportError as exc:  # a SOCKS proxy without httpx's 'socks' extra
            raise InvalidInput(f"the httpx transport cannot use this proxy: {exc}") from exc
        except (httpx.InvalidURL, ValueError):  # (its message may quote the password)
            shown = redact_url(options.proxy) if options.proxy else "from the environment"
            raise InvalidInput(f"invalid proxy URL {shown}") from None

    @asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Response]:
        try:
            request = self._client.build_request("GET", url, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise InvalidURL(f"cannot fetch this URL: {exc}", url=url) from exc
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TooManyRedirects as exc:
            raise TooManyRedirects(f"too many redirects: {exc}", url=url) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise InvalidURL(f"cannot fetch this URL: {exc}", url=url) from exc
        except UnicodeError as exc:  # (a host name the resolver's IDNA codec refuses)
            raise InvalidURL(f"cannot fetch this URL: invalid host name ({exc})", url=url) from exc
        except httpx.ProxyError as exc:
            try:
                failed = exc.request.url  # (the hop that failed, after redirects)
            except RuntimeError:  # pragma: no cover - httpx sets the request
                failed = request.url
            proxy = self._proxy_for(failed)
            shown = f"the proxy {proxy.shown}" if proxy is not None else "the proxy"
            where = f"{failed.host}:{failed.port or _DEFAULT_PORTS.get(failed.scheme, 0)}"
            raise ConnectionFailed(
                f"{shown} refused the tunnel to {where}: {exc}", url=url
            ) from exc
        except httpx.TransportError as exc:
            proxy = self._proxy_for(request.url) if isinstance(exc, httpx.ConnectError) else None
            through = f" (through the proxy {proxy.shown})" if proxy is not None else ""
            raise ConnectionFailed(describe_failure(exc) + through, url=url) from exc
        if response.status_code == 407:
            proxy = self._proxy_for(response.url)
            if proxy is not None:
                await response.aclose()
                raise ConnectionFailed(
                    f"the proxy {proxy.shown} refused the request: HTTP 407 "
                    f"{response.reason_phrase}".rstrip(),
                    url=url,
                )
        if response.history and _http_log.isEnabledFor(logging.DEBUG):
            _log_hops(response)
        try:
            yield _HttpxResponse(response)
        finally:
            await response.aclose()

    def _proxy_for(self, url: httpx.URL) -> Proxy | None:
        """The proxy httpx sends *url* through (by the same rules), or None."""
        routes = self._routes
        if routes is None:
            return None
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
        return routes.proxy_for(url.scheme, url.raw_host.decode("ascii").lower(), port)

    async def aclose(self) -> None:
        await self._client.aclose()


def _log_hops(response: httpx.Response) -> None:
    """One DEBUG line per redirect httpx followed on the way to *response*."""
    hops = response.history
    for hop, after in zip(hops, [*hops[1:], response], strict=True):
        try:
            elapsed = hop.elapsed.total_seconds()
        except RuntimeError:  # pragma: no cover - httpx sets it once the body is read
            elapsed = 0.0
        _http_log.debug(
            "%s %s -> %d, %d bytes, %.3f s (redirect to %s)",
            hop.request.method,
            redact_url(str(hop.url)),
            hop.status_code,
            hop.num_bytes_downloaded,
            elapsed,
            redact_url(str(after.url)),
        )
