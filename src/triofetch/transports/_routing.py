"""Where a request goes: the host name as it is sent (IDNA), and the proxy it goes through.

Owns, for the transports that open their own connections (``trio``, and ``asks`` to refuse
what it cannot do):

- :func:`ascii_host`: a host name in the ASCII form that DNS, the ``Host`` header, TLS's
  SNI and certificate checks use: IDNA with UTS-46 mapping (as Trio's resolver and
  browsers do) for a name that is not ASCII.
- :class:`ProxyRoutes`: the proxy configuration (``proxy=``, or with ``trust_env`` the
  environment's ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``, in either
  case) read once, and the proxy an origin's requests go through, chosen by httpx's rules
  (``httpx._utils.get_environment_proxies`` and ``URLPattern``, reproduced here and checked
  against httpx by ``tests/test_proxies.py``), so that choosing another transport never
  changes where a request goes.  An explicit ``proxy=`` takes every request, as in httpx
  (``NO_PROXY`` applies to the environment's proxies only).

It must not open connections, nor import httpx (the trio transport does without it).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .._urls import basic_authorization, redact_url, split_userinfo
from ..errors import InvalidInput

__all__ = ["Proxy", "ProxyRoutes", "ascii_host"]

#: the proxy URL schemes httpx knows (the trio transport speaks to ``http`` ones)
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_PROXY_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
#: ports httpx drops from a URL as the scheme's default (``normalize_port``)
_DEFAULT_PORTS = {"ftp": 21, "http": 80, "https": 443, "ws": 80, "wss": 443}


def ascii_host(host: str) -> str:
    """*host* as it goes on the wire: lower-case, IDNA-encoded (UTS-46 mapping) when it is
    not ASCII.  Raises :class:`ValueError` for a name IDNA refuses."""
    if host.isascii():
        if ":" not in host:  # (not an IPv6 literal) labels of 1 to 63 characters
            labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
            if not all(0 < len(label) <= 63 for label in labels):
                raise ValueError(f"invalid host name {host!r}: a label is empty or too long")
        return host.lower()
    import idna  # (a dependency of Trio and httpx; imported only for such names)

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid international host name {host!r}: {exc}") from None


@dataclass(frozen=True)
class Proxy:
    """A proxy server: where to connect, and the ``Proxy-Authorization`` its URL's user
    info makes (never shown: :attr:`shown` is the URL with its user info redacted)."""

    scheme: str
    host: str  #: ASCII (see :func:`ascii_host`), without brackets
    port: int
    shown: str  #: the URL for messages: user info replaced by ``***``
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """The proxy of *url* (``scheme://[user[:password]@]host[:port]``); InvalidInput
        naming it, redacted, when it cannot be one."""
        shown = redact_url(url)
        try:
            bare, userinfo = split_userinfo(url)
            parts = urlsplit(bare)
            port = parts.port
            host = ascii_host(parts.hostname or "")
        except ValueError as exc:
            raise InvalidInput(f"invalid proxy URL {shown}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in PROXY_SCHEMES:
            raise InvalidInput(
                f"invalid proxy URL {shown}: the scheme must be one of {', '.join(PROXY_SCHEMES)}"
            )
        if not host:
            raise InvalidInput(f"invalid proxy URL {shown}: it has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            # (most often a password with a raw "/", "?" or "#": the host read is wrong)
            raise InvalidInput(
                f"invalid proxy URL {shown}: a proxy URL has no path, query or fragment "
                "(percent-encode a '/', '?' or '#' in its user name or password)"
            )
        authorization = None
        if userinfo is not None and (userinfo[0] or userinfo[1]):
            authorization = basic_authorization(*userinfo)
        return cls(scheme, host, port or _PROXY_PORTS[scheme], shown, authorization)


@dataclass(frozen=True)
class _Pattern:
    """httpx's ``URLPattern``: a scheme (empty: any), a host (empty: any; ``*`` prefix:
    the domain and its subdomains; ``*.`` prefix: its subdomains only), a port (None: any)."""

    scheme: str
    host: str
    port: int | None
    regex: re.Pattern[str] | None

    @classmethod
    def parse(cls, key: str) -> _Pattern:
        scheme, sep, rest = key.partition("://")
        if not sep:
            raise InvalidInput(f"invalid proxy rule {key!r}")
        scheme = scheme.lower()
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if "@" in netloc:
            netloc = netloc.rsplit("@", 1)[1]
        port_text = ""
        if netloc.startswith("["):
            host, _, after = netloc[1:].partition("]")
            port_text = after[1:] if after.startswith(":") else ""
        else:
            host, _, port_text = netloc.partition(":")
        if port_text and not (port_text.isascii() and port_text.isdigit()):
            raise InvalidInput(f"invalid port in the proxy rule {key!r}")
        port = int(port_text) if port_text else None
        if port is not None and port > 65535:
            raise InvalidInput(f"invalid port in the proxy rule {key!r}")
        if port is not None and port == _DEFAULT_PORTS.get(scheme):
            port = None  # (httpx normalises a URL's default port away)
        if scheme == "all":
            scheme = ""
        host = "" if host == "*" else host
        regex: re.Pattern[str] | None = None
        if host:
            if host.startswith("*."):
                regex = re.compile(rf"^.+\.{re.escape(_rule_host(host[2:], key))}$")
                host = "*." + _rule_host(host[2:], key)
            elif host.startswith("*"):
                regex = re.compile(rf"^(.+\.)?{re.escape(_rule_host(host[1:], key))}$")
                host = "*" + _rule_host(host[1:], key)
            else:
                host = _rule_host(host, key)
                regex = re.compile(rf"^{re.escape(host)}$")
        return cls(scheme, host, port, regex)

    @property
    def priority(self) -> tuple[int, int, int]:
        """httpx's order: rules with a port first, then longer hosts, then longer schemes."""
        return (0 if self.port is not None else 1, -len(self.host), -len(self.scheme))

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        """*port*: None when it is the scheme's default (as httpx sees a URL)."""
        if self.scheme and self.scheme != scheme:
            return False
        if self.regex is not None and not self.regex.match(host):
            return False
        return self.port is None or self.port == port


def _rule_host(host: str, key: str) -> str:
    try:
        return ascii_host(host)
    except ValueError as exc:
        raise InvalidInput(f"invalid host in the proxy rule {key!r}: {exc}") from None


def _is_ip(text: str, version: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        version(text.split("/")[0])
    except ValueError:
        return False
    return True


def environment_rules() -> dict[str, str | None]:
    """httpx's ``get_environment_proxies()``: rule -> proxy URL, or None for no proxy."""
    info = urllib.request.getproxies()
    rules: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if info.get(scheme):
            value = info[scheme]
            rules[f"{scheme}://"] = value if "://" in value else f"http://{value}"
    for name in (name.strip() for name in info.get("no", "").split(",")):
        if name == "*":
            return {}
        if not name:
            continue
        if "://" in name:
            rules[name] = None
        elif _is_ip(name, ipaddress.IPv4Address) or name.lower() == "localhost":
            rules[f"all://{name}"] = None
        elif _is_ip(name, ipaddress.IPv6Address):
            rules[f"all://[{name}]"] = None
        else:
            rules[f"all://*{name}"] = None
    return rules


class ProxyRoutes:
    """The proxy configuration of one transport: which proxy an origin's requests take.

    Read once (the environment when the transport is made, as httpx does); consulted once
    per origin by the trio transport, not per request.
    """

    __slots__ = ("_routes", "proxies")

    def __init__(self, proxy: str | None, trust_env: bool) -> None:
        rules: dict[str, str | None]
        if proxy is not None:
            rules = {"all://": proxy}
        elif trust_env:
            rules = environment_rules()
        else:
            rules = {}
        parsed: dict[str, Proxy] = {}
        routes = [
            (_Pattern.parse(key), None if url is None else parsed.setdefault(url, Proxy.parse(url)))
            for key, url in rules.items()
        ]
        routes.sort(key=lambda route: route[0].priority)  # (stable, as httpx's sort)
        self._routes = routes
        #: the proxies that some http:// or https:// URL may go through
        self.proxies: tuple[Proxy, ...] = tuple(
            dict.fromkeys(p for i, (_, p) in enumerate(routes) if p and self._reachable(i))
        )

    def _reachable(self, index: int) -> bool:
        """Whether an http or https URL can meet route *index* before an earlier route
        that takes every URL of its scheme (``all://`` after ``http://`` and ``https://``)."""
        pattern = self._routes[index][0]
        schemes = {pattern.scheme} if pattern.scheme else {"http", "https"}
        schemes &= {"http", "https"}
        for earlier, _ in self._routes[:index]:
            if not earlier.host and earlier.port is None:
                schemes -= {earlier.scheme} if earlier.scheme else {"http", "https"}
        return bool(schemes)

    def __bool__(self) -> bool:
        """Whether any request may go through a proxy."""
        return bool(self.proxies)

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy of the origin (*host* as :func:`ascii_host` gives it), or None for a
        direct connection."""
        shown_port = None if port == _DEFAULT_PORTS.get(scheme) else port
        for pattern, proxy in self._routes:
            if pattern.matches(scheme, host, shown_port):
                return proxy
        return None
