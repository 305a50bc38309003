"""The Downloader against real servers that no one in this project wrote, on 127.0.0.1.

Three servers (see tests/_fixtures_servers.py), each over HTTP and HTTPS, and both HTTP
transports (``trio``, ``httpx``):

- nginx: static files with Content-Length, persistent connections that nginx closes after
  ``keepalive_requests`` (5) requests, absolute and relative redirects;
- hypercorn on Trio (h11): chunked bodies in pieces of 1 byte to 64 KiB, Content-Length
  bodies, bodies cut mid-way by the app failing;
- Python's ``http.server`` (HTTP/1.0): static files with Content-Length, close-delimited
  bodies (the connection's end ends the body), a Content-Length body cut mid-way.

Conformance: every size of tests.servers.data (0 B to 5 MiB) in every framing the server
has, with expected digest and size (and the framing checked in the response headers);
keep-alive reuse, sequential and concurrent, counted by the server (nginx's access log, the
client ports the Python servers saw); a connection the server closed while idle is not reused;
301, 302, 307, 308 and a chain of redirects; 404; TLS to an IP address and to ``localhost``,
and a certificate from another CA refused; bodies cut mid-way.  Each error is a
``DownloadError`` of the right kind, with no temp file left and no destination made.  Every
test runs with ``retries=0``: nothing is papered over by a second attempt.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

import triofetch
from tests._fixtures_servers import (  # noqa: F401  (the fixture_* are found by pytest)
    NGINX_KEEPALIVE_REQUESTS,
    QUICK_CLOSE,
    RealServer,
    TLSFiles,
    fixture_hypercorn_server,
    fixture_hypercorn_server_quick_close,
    fixture_nginx_server,
    fixture_stdlib_server,
    fixture_tls_files,
    fixture_www,
)
from tests.servers import data

SERVERS = ("nginx", "hypercorn", "http.server")
SCHEMES = ("http", "https")
TRANSPORTS = ("trio", "httpx")
FIXTURE = {"nginx": "nginx_server", "hypercorn": "hypercorn_server", "http.server": "stdlib_server"}

#: server -> framing -> the path of the body of a size
FRAMINGS: dict[str, dict[str, str]] = {
    "nginx": {"content-length": "/files/f-{size}.bin"},
    "hypercorn": {"chunked": "/chunked/{size}", "content-length": "/fixed/{size}"},
    "http.server": {
        "content-length": "/files/f-{size}.bin",
        "close-delimited": "/close-delimited/{size}",
    },
}
#: server -> a path whose body is cut mid-way (half of the body, then the connection closes)
CUTS: dict[str, list[str]] = {
    "nginx": [],  # (nothing in a stock nginx cuts a static file short)
    "hypercorn": ["/cut-chunked/{size}", "/cut-fixed/{size}"],
    "http.server": ["/cut/{size}"],
}
SMALL = 16 * data.KiB


@dataclass(frozen=True)
class Endpoint:
    server: RealServer
    scheme: str

    def url(self, path: str) -> str:
        return self.server.url(self.scheme, path)

    def path(self, framing: str, size: int) -> str:
        return FRAMINGS[self.server.name][framing].format(size=size)

    def body_path(self, size: int) -> str:
        """The path of the body of *size* in the server's first framing."""
        return next(iter(FRAMINGS[self.server.name].values())).format(size=size)


def endpoint_params(
    servers: tuple[str, ...] = SERVERS, schemes: tuple[str, ...] = SCHEMES
) -> list[Any]:
    return [pytest.param((s, sc), id=f"{s}-{sc}") for s in servers for sc in schemes]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each HTTP transport in turn (overrides conftest's, which adds asks)."""
    return str(request.param)


def endpoint_of(request: pytest.FixtureRequest, server: str, scheme: str) -> Endpoint:
    return Endpoint(request.getfixturevalue(FIXTURE[server]), scheme)


def downloader(
    transport: str, temp_dir: Path, tls: TLSFiles, ca: Path | None = None, **kw: object
) -> triofetch.Downloader:
    kw.setdefault("retries", 0)
    kw.setdefault("connect_timeout", 10.0)
    kw.setdefault("read_timeout", 10.0)
    kw.setdefault("max_time", 60.0)  # (no fetch hangs the run)
    return triofetch.Downloader(
        transport=transport,  # type: ignore[arg-type]
        temp_dir=temp_dir,
        verify=str(ca or tls.ca),
        trust_env=False,  # (no proxy from the environment between us and 127.0.0.1)
        **kw,  # type: ignore[arg-type]
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize("size", data.SIZES)
@pytest.mark.parametrize(
    "where",
    [
        pytest.param((server, scheme, framing), id=f"{server}-{scheme}-{framing}")
        for server in SERVERS
        for scheme in SCHEMES
        for framing in FRAMINGS[server]
    ],
)
async def test_every_size_in_every_framing(
    request: pytest.FixtureRequest,
    where: tuple[str, str, str],
    size: int,
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
    tmp_path: Path,
) -> None:
    server, scheme, framing = where
    ep = endpoint_of(request, server, scheme)
    url = ep.url(ep.path(framing, size))
    destination = tmp_path / "out.bin"
    async with downloader(transport, temp_dir, tls_files) as dl:
        result = await dl.fetch(
            url,
            expected_digests={"sha256": data.sha256(size)},
            expected_size=size,
            destination=destination,
        )
    assert result.url == url
    assert result.size == size
    assert result.sha256 == data.sha256(size)
    assert result.path == destination
    assert destination.read_bytes() == data.body(size)
    assert leftovers(temp_dir) == []
    # the framing is the one this test is about
    headers = result.headers
    if framing == "content-length":
        assert headers.get("content-length") == str(size)
        assert "transfer-encoding" not in headers
    elif framing == "chunked":
        assert headers.get("transfer-encoding", "").lower() == "chunked"
        assert "content-length" not in headers
    else:
        assert "content-length" not in headers
        assert "transfer-encoding" not in headers


# --------------------------------------------------------------------------- connections


@pytest.mark.parametrize("where", endpoint_params())
async def test_sequential_requests_reuse_the_connection(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
) -> None:
    """One request after another: a persistent connection carries as many as the server lets.

    nginx closes a connection after NGINX_KEEPALIVE_REQUESTS requests (saying
    ``Connection: close`` on the last one): the client must open a new one then, and only
    then; hypercorn keeps one connection for all; http.server (HTTP/1.0) closes every one.
    """
    ep = endpoint_of(request, *where)
    tag = secrets.token_hex(6)
    requests = 12
    async with downloader(transport, temp_dir, tls_files, connections=2) as dl:
        for i in range(requests):
            size = (0, 1, SMALL)[i % 3]
            result = await dl.fetch(
                ep.url(ep.body_path(size) + f"?tag={tag}"),
                expected_digests={"sha256": data.sha256(size)},
                expected_size=size,
            )
            result.path.unlink()
    assert leftovers(temp_dir) == []
    used = ep.server.connections(tag, requests)
    expected = {
        "nginx": math.ceil(requests / NGINX_KEEPALIVE_REQUESTS),
        "hypercorn": 1,
        "http.server": requests,
    }[ep.server.name]
    assert used == expected, f"{requests} requests used {used} connections"


@pytest.mark.parametrize("where", endpoint_params())
async def test_concurrent_requests_over_few_connections(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
) -> None:
    """30 files of mixed sizes, 2 at a time: all right, over fewer connections than requests
    where the server keeps connections alive."""
    ep = endpoint_of(request, *where)
    tag = secrets.token_hex(6)
    sizes = [(0, 1, SMALL, data.MiB + 7, SMALL, 1)[i % 6] for i in range(30)]
    results: dict[int, triofetch.DownloadResult] = {}

    async def one(i: int, size: int) -> None:
        results[i] = await dl.fetch(
            ep.url(ep.body_path(size) + f"?tag={tag}&n={i}"),
            expected_digests={"sha256": data.sha256(size)},
            expected_size=size,
        )

    async with (
        downloader(transport, temp_dir, tls_files, connections=2) as dl,
        trio.open_nursery() as nursery,
    ):
        for i, size in enumerate(sizes):
            nursery.start_soon(one, i, size)
    assert sorted(results) == list(range(len(sizes)))
    for i, size in enumerate(sizes):
        assert results[i].size == size
        assert results[i].path.read_bytes() == data.body(size)
        results[i].path.unlink()
    assert leftovers(temp_dir) == []
    used = ep.server.connections(tag, len(sizes))
    if ep.server.keeps_alive:
        least = math.ceil(len(sizes) / NGINX_KEEPALIVE_REQUESTS) if ep.server.name == "nginx" else 1
        assert least <= used < len(sizes), f"{len(sizes)} requests used {used} connections"
    else:
        assert used == len(sizes)


def established_to(port: int) -> bool:
    """Whether a TCP connection to *port* on 127.0.0.1 is established (``/proc/net/tcp``):
    a client's socket leaves that state once the server's FIN has come (CLOSE_WAIT)."""
    with open("/proc/net/tcp") as table:
        next(table)  # the header line
        for line in table:
            remote, state = line.split()[2:4]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                return True
    return False


#: server -> the fixture and the path of a body on connections closed after QUICK_CLOSE s idle
QUICK_CLOSING = {
    "nginx": ("nginx_server", "/quick-close/f-{size}.bin"),
    "hypercorn": ("hypercorn_server_quick_close", "/chunked/{size}"),
}


@pytest.mark.parametrize("where", endpoint_params(servers=tuple(QUICK_CLOSING)))
async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
) -> None:
    """The server closes an idle persistent connection (its keep-alive timeout): the next
    request, with no retries allowed, goes out on a new connection and succeeds."""
    server, scheme = where
    fixture, template = QUICK_CLOSING[server]
    ep = Endpoint(request.getfixturevalue(fixture), scheme)
    tag = secrets.token_hex(6)
    async with downloader(transport, temp_dir, tls_files) as dl:
        for i in range(2):
            if i:  # until the server has closed the connection (4 x QUICK_CLOSE at most)
                waited = trio.current_time()
                while established_to(ep.server.ports[scheme]):
                    if trio.current_time() - waited > QUICK_CLOSE * 4:
                        break
                    await trio.sleep(0.01)
            result = await dl.fetch(
                ep.url(template.format(size=SMALL) + f"?tag={tag}"),
                expected_digests={"sha256": data.sha256(SMALL)},
                expected_size=SMALL,
            )
            result.path.unlink()
    assert ep.server.connections(tag, 2) == 2
    assert leftovers(temp_dir) == []


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("codes", [(301,), (302,), (307,), (308,), (302, 307, 301)], ids=str)
@pytest.mark.parametrize("where", endpoint_params())
async def test_redirects_are_followed(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    codes: tuple[int, ...],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
) -> None:
    ep = endpoint_of(request, *where)
    target = ep.body_path(SMALL)
    path = target
    for code in reversed(codes):
        path = f"/redirect/{code}{path}"
    async with downloader(transport, temp_dir, tls_files) as dl:
        result = await dl.fetch(
            ep.url(path), expected_digests={"sha256": data.sha256(SMALL)}, expected_size=SMALL
        )
    assert result.url == ep.url(target)
    assert result.path.read_bytes() == data.body(SMALL)
    result.path.unlink()
    assert leftovers(temp_dir) == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("where", endpoint_params())
async def test_not_found(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
    tmp_path: Path,
) -> None:
    ep = endpoint_of(request, *where)
    url = ep.url("/files/no-such-file.bin")
    destination = tmp_path / "out.bin"
    async with downloader(transport, temp_dir, tls_files) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(url, destination=destination)
    assert info.value.status_code == 404
    assert info.value.url == url
    assert not destination.exists()
    assert leftovers(temp_dir) == []


@pytest.mark.parametrize("where", endpoint_params(schemes=("https",)))
async def test_tls_by_host_name(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
) -> None:
    """``https://localhost:PORT``: the certificate is checked against a DNS name (its
    ``localhost`` entry), not only against an IP address as everywhere else here."""
    ep = endpoint_of(request, *where)
    url = f"https://localhost:{ep.server.ports['https']}{ep.body_path(SMALL)}"
    async with downloader(transport, temp_dir, tls_files) as dl:
        result = await dl.fetch(
            url, expected_digests={"sha256": data.sha256(SMALL)}, expected_size=SMALL
        )
    assert result.url == url
    result.path.unlink()
    assert leftovers(temp_dir) == []


@pytest.mark.parametrize("where", endpoint_params(schemes=("https",)))
async def test_a_certificate_from_another_ca_is_refused(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
    tmp_path: Path,
) -> None:
    ep = endpoint_of(request, *where)
    destination = tmp_path / "out.bin"
    async with downloader(transport, temp_dir, tls_files, ca=tls_files.other_ca) as dl:
        with pytest.raises(triofetch.ConnectionFailed, match=r"(?i)certificate"):
            await dl.fetch(ep.url(ep.body_path(SMALL)), destination=destination)
    assert not destination.exists()
    assert leftovers(temp_dir) == []


@pytest.mark.parametrize(
    "where",
    [
        pytest.param((server, scheme, cut), id=f"{server}-{scheme}-{cut.split('/')[1]}")
        for server in SERVERS
        for scheme in SCHEMES
        for cut in CUTS[server]
    ],
)
@pytest.mark.parametrize("expect_size", [True, False], ids=["expected-size", "no-expected-size"])
async def test_a_body_cut_mid_way_fails(
    request: pytest.FixtureRequest,
    where: tuple[str, str, str],
    expect_size: bool,
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
    tmp_path: Path,
) -> None:
    """Half of the body, then the server closes: the framing (Content-Length or chunked)
    says the body is incomplete, even with no expected size to compare with."""
    server, scheme, cut = where
    ep = endpoint_of(request, server, scheme)
    size = data.MiB + 7
    destination = tmp_path / "out.bin"
    async with downloader(transport, temp_dir, tls_files) as dl:
        with pytest.raises(triofetch.TruncatedBody):
            await dl.fetch(
                ep.url(cut.format(size=size)),
                expected_digests={"sha256": data.sha256(size)},
                expected_size=size if expect_size else None,
                destination=destination,
            )
    assert not destination.exists()
    assert leftovers(temp_dir) == []


@pytest.mark.parametrize("where", endpoint_params(servers=("http.server",)))
async def test_a_short_close_delimited_body_fails_its_expected_size(
    request: pytest.FixtureRequest,
    where: tuple[str, str],
    transport: str,
    temp_dir: Path,
    tls_files: TLSFiles,
    tmp_path: Path,
) -> None:
    """Close-delimited framing cannot tell a cut body from a whole one: the expected size
    (and digest) can."""
    ep = endpoint_of(request, *where)
    size = data.MiB + 7
    destination = tmp_path / "out.bin"
    async with downloader(transport, temp_dir, tls_files) as dl:
        with pytest.raises(triofetch.SizeMismatch):
            await dl.fetch(
                ep.url(f"/close-delimited-short/{size}"),
                expected_digests={"sha256": data.sha256(size)},
                expected_size=size,
                destination=destination,
            )
    assert not destination.exists()
    assert leftovers(temp_dir) == []
