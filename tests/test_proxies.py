"""Proxies: which one a request takes (httpx's rules), and requests through a real one.

The rules (no network): for generated environments (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``, in either case) and URLs, ``transports/_routing.py`` picks the
proxy httpx's own code picks (``httpx._utils.get_environment_proxies`` and ``URLPattern``,
the client's ``_transport_for_url`` order), so the trio and httpx transports never send a
request to different places.

Through tinyproxy (tests/_fixtures_proxy.py: a real proxy started on 127.0.0.1), for the
``trio`` and ``httpx`` transports alike:

- ``http://`` URLs go as absolute-form requests (the proxy's log has ``GET http://...``, the
  origin sees tinyproxy's ``Via``), from ``proxy=`` or ``HTTP_PROXY``;
- ``https://`` URLs go through a ``CONNECT`` tunnel (the proxy's log has ``CONNECT
  host:port``), TLS to the origin inside it, checked against the CA the tests made; a wrong
  CA is refused; one tunnel carries several requests, and each origin has its own tunnel;
- real servers (nginx) through the proxy: a 5 MiB file over http and https;
- authentication: the proxy URL's credentials work; missing or wrong ones fail with an error
  that never shows the password (nor does any log record); the credentials go to the proxy
  only in the CONNECT request, never inside the tunnel;
- a refused CONNECT (a port outside tinyproxy's ``ConnectPort``) is a ConnectionFailed
  naming the proxy, and the origin saw no connection (no direct attempt);
- an unreachable proxy fails, naming it (redacted), without any direct attempt;
- ``NO_PROXY`` sends a host straight to it; ``trust_env=False`` ignores ``HTTP_PROXY``; an
  explicit ``proxy=`` overrides the environment (``NO_PROXY`` included, as in httpx);
- host names go to the proxy in their IDNA form (absolute-form and CONNECT).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from httpx._utils import URLPattern, get_environment_proxies
from hypothesis import given, strategies as st

import triofetch
from tests._fixtures_proxy import (  # noqa: F401  (the fixture_* are found by pytest)
    PASSWORD,
    USER,
    RecordingServer,
    Tinyproxy,
    fixture_auth_tinyproxy,
    fixture_tinyproxy,
    recording_server,
    server_context,
    start_tinyproxy,
)
from tests._fixtures_servers import (  # noqa: F401
    RealServer,
    TLSFiles,
    fixture_nginx_server,
    fixture_tls_files,
    fixture_www,
    free_port,
)
from tests.rawserver import RawServer, Script
from tests.servers import data
from triofetch.transports._routing import ProxyRoutes, ascii_host

TRANSPORTS = ["trio", "httpx"]
PROXY_VARIABLES = [
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
]
SMALL = 16 * data.KiB


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """The proxy variables set to *values* (the others removed), restored on the way out."""
    saved = {name: os.environ.get(name) for name in [*PROXY_VARIABLES, "REQUEST_METHOD"]}
    try:
        for name in saved:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable set, in either case (set them with ``env.setenv``)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- the rules, against httpx's own ----------------------------------------------------------

PROXY_VALUES = [
    "http://p1.test:3128",
    "p2.test:8080",
    "http://user:pw@p3.test",
    "socks5://p4.test:1080",
    "https://p5.test",
    "",
]
NO_PROXY_ENTRIES = [
    "example.com",
    ".example.com",
    "*.example.com",
    "*",
    "127.0.0.1",
    "10.0.0.0/8",
    "::1",
    "localhost",
    "sub.example.com:8443",
    "example.com:443",
    "http://example.com",
    "https://",
    "all://*.org",
    "EXAMPLE.org",
    " example.net ",
    "",
]
HOSTS = [
    "example.com",
    "www.example.com",
    "wwwexample.com",
    "sub.example.com",
    "example.org",
    "example.net",
    "127.0.0.1",
    "10.1.2.3",
    "[::1]",
    "localhost",
]

environments = st.dictionaries(
    st.sampled_from([n for n in PROXY_VARIABLES if "no_proxy" not in n.lower()]),
    st.sampled_from(PROXY_VALUES),
    max_size=4,
).flatmap(
    lambda proxies: st.builds(
        lambda names, upper: {
            **proxies,
            **({"NO_PROXY" if upper else "no_proxy": ",".join(names)} if names else {}),
        },
        st.lists(st.sampled_from(NO_PROXY_ENTRIES), max_size=4),
        st.booleans(),
    )
)


def httpx_choice(url: str) -> tuple[str, str, int] | None:
    """The proxy (scheme, host, port) httpx's client takes for *url*, by its own code."""
    mounts = {URLPattern(key): proxy for key, proxy in get_environment_proxies().items()}
    target = httpx.URL(url)
    for pattern, proxy in sorted(mounts.items()):  # (as AsyncClient orders its mounts)
        if pattern.matches(target):
            if proxy is None:
                return None
            parsed = httpx.URL(proxy)
            default = {"http": 80, "https": 443, "socks5": 1080}[parsed.scheme]
            return parsed.scheme, parsed.host, parsed.port or default
    return None


@given(
    values=environments,
    scheme=st.sampled_from(["http", "https"]),
    host=st.sampled_from(HOSTS),
    port=st.sampled_from([None, 80, 443, 8443]),
)
def test_the_proxy_chosen_is_the_one_httpx_chooses(
    values: dict[str, str], scheme: str, host: str, port: int | None
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}/file"
    with environment(values):
        expected = httpx_choice(url)
        proxy = ProxyRoutes(None, True).proxy_for(
            scheme, ascii_host(host.strip("[]")), port or {"http": 80, "https": 443}[scheme]
        )
    got = None if proxy is None else (proxy.scheme, proxy.host, proxy.port)
    assert got == expected, (values, url)


def test_an_explicit_proxy_takes_every_request(env: pytest.MonkeyPatch) -> None:
    env.setenv("NO_PROXY", "example.com")
    env.setenv("HTTP_PROXY", "http://other.test:1")
    routes = ProxyRoutes("http://user:pw@proxy.test:3128", True)
    for scheme, port in (("http", 80), ("https", 443)):
        proxy = routes.proxy_for(scheme, "example.com", port)
        assert proxy is not None and (proxy.host, proxy.port) == ("proxy.test", 3128)
    assert not ProxyRoutes(None, False)
    assert ProxyRoutes(None, False).proxy_for("http", "example.com", 80) is None


def test_a_proxy_never_shows_its_password() -> None:
    routes = ProxyRoutes("http://user:hidden-pw@proxy.test:3128", False)
    (proxy,) = routes.proxies
    assert proxy.authorization is not None and proxy.authorization.startswith("Basic ")
    for text in (proxy.shown, repr(proxy), str(proxy)):
        assert "hidden-pw" not in text


# -- through tinyproxy -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


@pytest.fixture(scope="module")
def tls_origin(tls_files: TLSFiles) -> Iterator[RecordingServer]:
    with recording_server(server_context(tls_files.cert, tls_files.key)) as server:
        yield server


@pytest.fixture(scope="module")
def tls_origin_b(tls_files: TLSFiles) -> Iterator[RecordingServer]:
    with recording_server(server_context(tls_files.cert, tls_files.key)) as server:
        yield server


@pytest.fixture(scope="module")
def strict_tinyproxy(
    tmp_path_factory: pytest.TempPathFactory, tls_origin: RecordingServer
) -> Iterator[Tinyproxy]:
    """tinyproxy that tunnels to ``tls_origin``'s port only (``ConnectPort``)."""
    tmp = tmp_path_factory.mktemp("strict-tinyproxy")
    with start_tinyproxy(tmp, connect_ports=(tls_origin.port,)) as proxy:
        yield proxy


def downloader(transport: str, tmp_path: Path, **options: Any) -> triofetch.Downloader:
    options.setdefault("retries", 0)
    return triofetch.Downloader(
        transport=transport,  # type: ignore[arg-type]
        temp_dir=tmp_path,
        **options,
    )


def tagged(server: RecordingServer, tag: str) -> list[Any]:
    return [seen for seen in server.requests() if f"tag={tag}" in seen.request_line]


def logged(proxy: Tinyproxy, tag: str) -> list[str]:
    return [line for line in proxy.requests() if f"tag={tag}" in line]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("how", ["argument", "HTTP_PROXY", "all_proxy"])
async def test_plain_http_goes_through_the_proxy(
    env: pytest.MonkeyPatch,
    tinyproxy: Tinyproxy,
    origin: RecordingServer,
    tmp_path: Path,
    transport: str,
    how: str,
) -> None:
    tag = f"plain-{transport}-{how}"
    options: dict[str, Any] = {}
    if how == "argument":
        options["proxy"] = tinyproxy.url()
    else:
        env.setenv(how, tinyproxy.url())
    urls = [origin.url(f"/body/{SMALL}?tag={tag}&n={n}") for n in range(4)]
    async with downloader(transport, tmp_path, **options) as dl:
        assert dl.transport_name == transport
        async with trio.open_nursery() as nursery:
            for url in urls:
                nursery.start_soon(
                    lambda u: dl.fetch(u, expected_digests={"sha256": data.sha256(SMALL)}), url
                )
    seen = tagged(origin, tag)
    assert len(seen) == 4
    assert all("tinyproxy" in s.headers.get("via", "") for s in seen)
    assert sorted(logged(tinyproxy, tag)) == sorted(
        f"GET {url} HTTP/1.1" for url in urls
    )  # absolute-form


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_https_goes_through_a_connect_tunnel(
    env: pytest.MonkeyPatch,
    tinyproxy: Tinyproxy,
    tls_origin: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
) -> None:
    tag = f"tunnel-{transport}"
    env.setenv("HTTPS_PROXY", tinyproxy.url())
    async with downloader(transport, tmp_path, verify=str(tls_files.ca)) as dl:
        for n in range(3):
            result = await dl.fetch(
                tls_origin.url(f"/body/{data.MiB + 7}?tag={tag}&n={n}"),
                expected_digests={"sha256": data.sha256(data.MiB + 7)},
            )
            assert result.size == data.MiB + 7
    seen = tagged(tls_origin, tag)
    assert [s.request_line.split(" ")[1][:6] for s in seen] == ["/body/"] * 3  # origin-form
    assert len({s.connection for s in seen}) == 1  # one tunnel carried the three
    assert not any("via" in s.headers or "proxy-authorization" in s.headers for s in seen)
    tunnels = [line for line in tinyproxy.requests() if f":{tls_origin.port} " in line]
    assert tunnels and all(
        line.startswith(f"CONNECT 127.0.0.1:{tls_origin.port}") for line in tunnels
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_origin_has_its_own_tunnel(
    tinyproxy: Tinyproxy,
    tls_origin: RecordingServer,
    tls_origin_b: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
) -> None:
    tag = f"two-tunnels-{transport}"
    async with downloader(
        transport, tmp_path, proxy=tinyproxy.url(), verify=str(tls_files.ca)
    ) as dl:
        for n in range(3):
            for server in (tls_origin, tls_origin_b):
                await dl.fetch(server.url(f"/body/{n + 1}?tag={tag}&n={n}"))
    for server in (tls_origin, tls_origin_b):
        seen = tagged(server, tag)
        assert [s.headers["host"] for s in seen] == [f"127.0.0.1:{server.port}"] * 3
        assert len({s.connection for s in seen}) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_origin_certificate_is_checked_through_the_tunnel(
    tinyproxy: Tinyproxy,
    tls_origin: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
) -> None:
    tag = f"wrong-ca-{transport}"
    async with downloader(
        transport, tmp_path, proxy=tinyproxy.url(), verify=str(tls_files.other_ca)
    ) as dl:
        with pytest.raises(triofetch.ConnectionFailed):
            await dl.fetch(tls_origin.url(f"/body/1?tag={tag}"))
    assert tagged(tls_origin, tag) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_real_server_through_the_proxy(
    tinyproxy: Tinyproxy,
    nginx_server: RealServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
    scheme: str,
) -> None:
    # One retry: tinyproxy closes the client's connection after each response without
    # saying so (no "Connection: close"), and a request httpx sends on that connection
    # before its end arrives fails with "Server disconnected without sending a response"
    # (seen once in a full run on a loaded machine); the trio transport sends such a
    # request again itself.  Every file is still checked whole.
    async with downloader(
        transport, tmp_path, proxy=tinyproxy.url(), verify=str(tls_files.ca), retries=1
    ) as dl:
        for size in (0, 5 * data.MiB):
            url = nginx_server.url(scheme, f"/files/{data.file_name(size)}")
            result = await dl.fetch(
                url, expected_size=size, expected_digests={"sha256": data.sha256(size)}
            )
            assert result.size == size
    port = nginx_server.ports[scheme]
    assert any(f"127.0.0.1:{port}" in line for line in tinyproxy.requests())


# -- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_proxy_authentication(
    auth_tinyproxy: Tinyproxy,
    origin: RecordingServer,
    tls_origin: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
    scheme: str,
) -> None:
    server = origin if scheme == "http" else tls_origin
    tag = f"auth-{transport}-{scheme}"
    async with downloader(
        transport, tmp_path, proxy=auth_tinyproxy.url(), verify=str(tls_files.ca)
    ) as dl:
        result = await dl.fetch(server.url(f"/body/{SMALL}?tag={tag}"))
    assert result.size == SMALL
    (seen,) = tagged(server, tag)
    if scheme == "https":  # (the credentials went in the CONNECT request only)
        assert "proxy-authorization" not in seen.headers
    else:
        assert "tinyproxy" in seen.headers["via"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("credentials", ["missing", "wrong"])
async def test_missing_or_wrong_proxy_credentials_fail_without_showing_them(
    auth_tinyproxy: Tinyproxy,
    origin: RecordingServer,
    tls_origin: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    transport: str,
    scheme: str,
    credentials: str,
) -> None:
    server = origin if scheme == "http" else tls_origin
    tag = f"bad-auth-{transport}-{scheme}-{credentials}"
    wrong = "Wr0ng-secret-pw"
    proxy = f"http://127.0.0.1:{auth_tinyproxy.port}"
    if credentials == "wrong":
        proxy = auth_tinyproxy.url(USER, wrong)
    caplog.set_level(logging.DEBUG)
    async with downloader(
        transport, tmp_path, proxy=proxy, verify=str(tls_files.ca), retries=1, backoff=0
    ) as dl:
        with pytest.raises(triofetch.DownloadError) as info:
            await dl.fetch(server.url(f"/body/1?tag={tag}"))
    error = info.value
    text = f"{error} {error!r} " + " ".join(f"{a} {a!r}" for a in error.attempts)
    assert wrong not in text and PASSWORD not in text
    assert wrong not in caplog.text and PASSWORD not in caplog.text
    assert tagged(server, tag) == []
    if credentials == "wrong" and scheme == "http":
        # tinyproxy 1.11 answers a wrong password with 401 (a missing one with 407): an
        # answer like an origin's, which no client can tell from one
        assert isinstance(error, triofetch.HTTPStatusError) and error.status_code == 401
    else:
        assert isinstance(error, triofetch.ConnectionFailed)
        assert f"127.0.0.1:{auth_tinyproxy.port}" in error.message
        assert ("407" if credentials == "missing" else "401") in error.message


# -- refusals: never a direct connection -----------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_connect_fails_and_nothing_goes_direct(
    strict_tinyproxy: Tinyproxy,
    tls_origin: RecordingServer,
    tls_origin_b: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
) -> None:
    tag = f"refused-{transport}"
    connections = tls_origin_b.connections
    async with downloader(
        transport, tmp_path, proxy=strict_tinyproxy.url(), verify=str(tls_files.ca)
    ) as dl:
        with pytest.raises(triofetch.ConnectionFailed) as info:
            await dl.fetch(tls_origin_b.url(f"/body/1?tag={tag}"))
        # the allowed port: tunnelled
        result = await dl.fetch(tls_origin.url(f"/body/1?tag={tag}"))
    assert result.size == 1
    assert f"127.0.0.1:{strict_tinyproxy.port}" in info.value.message
    assert "403" in info.value.message
    assert tls_origin_b.connections == connections  # the origin saw nothing
    assert tagged(tls_origin_b, tag) == []
    assert f"CONNECT 127.0.0.1:{tls_origin_b.port} HTTP/1.1" in strict_tinyproxy.requests()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_an_unreachable_proxy_fails_and_nothing_goes_direct(
    env: pytest.MonkeyPatch,
    origin: RecordingServer,
    tls_origin: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
    scheme: str,
) -> None:
    server = origin if scheme == "http" else tls_origin
    tag = f"unreachable-{transport}-{scheme}"
    dead = f"http://user:hidden-pw@127.0.0.1:{free_port()}"  # (nothing listens there)
    env.setenv(f"{scheme.upper()}_PROXY", dead)
    async with downloader(transport, tmp_path, verify=str(tls_files.ca)) as dl:
        with pytest.raises(triofetch.ConnectionFailed) as info:
            await dl.fetch(server.url(f"/body/1?tag={tag}"))
    assert "hidden-pw" not in str(info.value)
    assert f"proxy http://***@127.0.0.1:{dead.rsplit(':', 1)[1]})" in str(info.value)
    assert tagged(server, tag) == []


# -- what the environment says -----------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_no_proxy_sends_a_host_straight_to_it(
    env: pytest.MonkeyPatch,
    tinyproxy: Tinyproxy,
    origin: RecordingServer,
    tls_origin: RecordingServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    transport: str,
    scheme: str,
) -> None:
    server = origin if scheme == "http" else tls_origin
    tag = f"no-proxy-{transport}-{scheme}"
    env.setenv("ALL_PROXY", tinyproxy.url())
    env.setenv("no_proxy", "example.invalid, 127.0.0.1")
    async with downloader(transport, tmp_path, verify=str(tls_files.ca)) as dl:
        await dl.fetch(server.url(f"/body/1?tag={tag}"))
    (seen,) = tagged(server, tag)
    assert "via" not in seen.headers
    assert logged(tinyproxy, tag) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_without_trust_env_the_environment_proxy_is_ignored(
    env: pytest.MonkeyPatch,
    tinyproxy: Tinyproxy,
    origin: RecordingServer,
    tmp_path: Path,
    transport: str,
) -> None:
    tag = f"no-trust-{transport}"
    env.setenv("HTTP_PROXY", tinyproxy.url())
    async with downloader(transport, tmp_path, trust_env=False) as dl:
        await dl.fetch(origin.url(f"/body/1?tag={tag}"))
    (seen,) = tagged(origin, tag)
    assert "via" not in seen.headers
    assert logged(tinyproxy, tag) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_explicit_proxy_overrides_the_environment(
    env: pytest.MonkeyPatch,
    tinyproxy: Tinyproxy,
    origin: RecordingServer,
    tmp_path: Path,
    transport: str,
) -> None:
    tag = f"explicit-{transport}"
    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # (nothing listens there)
    env.setenv("NO_PROXY", "127.0.0.1")  # (for the environment's proxies only, as in httpx)
    async with downloader(transport, tmp_path, proxy=tinyproxy.url()) as dl:
        await dl.fetch(origin.url(f"/body/1?tag={tag}"))
    (seen,) = tagged(origin, tag)
    assert "tinyproxy" in seen.headers["via"]
    assert len(logged(tinyproxy, tag)) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_host_names_go_to_the_proxy_in_idna_form(
    tinyproxy: Tinyproxy, tmp_path: Path, transport: str
) -> None:
    """The client never looks the name up itself: the proxy gets it (and, having no DNS
    for ``.test``, fails to reach it)."""
    async with downloader(transport, tmp_path, proxy=tinyproxy.url()) as dl:
        for url in ("http://bücher.test:8123/a?tag=idna", "https://bücher.test:8124/a"):
            with pytest.raises(triofetch.DownloadError):
                await dl.fetch(url)
    lines = tinyproxy.requests()
    assert "GET http://xn--bcher-kva.test:8123/a?tag=idna HTTP/1.1" in lines
    assert "CONNECT xn--bcher-kva.test:8124 HTTP/1.1" in lines


@pytest.mark.asks
async def test_the_asks_transport_refuses_an_environment_proxy(
    env: pytest.MonkeyPatch, tinyproxy: Tinyproxy, origin: RecordingServer, tmp_path: Path
) -> None:
    """asks has no proxy support: a URL the environment sends through a proxy (httpx's
    rules: here ALL_PROXY) fails, and nothing goes direct; NO_PROXY still lets one through."""
    pytest.importorskip("asks")
    env.setenv("all_proxy", f"http://user:hidden-pw@127.0.0.1:{tinyproxy.port}")
    async with downloader("asks", tmp_path) as dl:
        with pytest.raises(triofetch.InvalidURL, match="cannot use proxies") as info:
            await dl.fetch(origin.url("/body/1?tag=asks-refused"))
        assert "hidden-pw" not in str(info.value)
        env.setenv("NO_PROXY", "127.0.0.1")
        await dl.fetch(origin.url("/body/1?tag=asks-direct"))
    assert tagged(origin, "asks-refused") == []
    assert len(tagged(origin, "asks-direct")) == 1


# -- the pool: servers that close without saying so ----------------------------------------------


async def test_a_request_after_several_silently_closed_connections_takes_a_new_one(
    raw: Callable[[Script], Awaitable[RawServer]], tmp_path: Path
) -> None:
    """tinyproxy answers ``HTTP/1.1`` without ``Connection: close`` and closes anyway: the
    pool holds several such connections.  A request that finds its pooled connection closed
    is sent again on a new connection, not on the next pooled one (before: on the next one,
    closed too, and the fetch failed with "the server keeps closing connections")."""
    body = b"x" * 100
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = await raw(lambda request: [answer, b"<close>"])
    url = f"http://127.0.0.1:{server.port}/f"
    async with downloader("trio", tmp_path, connections=4) as dl:
        for _ in range(3):
            async with trio.open_nursery() as nursery:  # four pooled, all closed
                for _ in range(4):
                    nursery.start_soon(dl.fetch, url)
            await trio.testing.wait_all_tasks_blocked()
            assert (await dl.fetch(url)).size == len(body)
