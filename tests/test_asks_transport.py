"""The asks transport against a real loopback server (triofetch.testing.FaultServer).

Run with asks installed beside anyio 4 (``nox -s asks``); skipped when asks is missing.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest
import trio

from tests._cli_helpers import self_signed_cert
from triofetch.errors import (
    ConnectionFailed,
    InvalidInput,
    InvalidURL,
    TooManyRedirects,
    TruncatedBody,
)
from triofetch.testing import FaultServer, Hang, Redirect, Reset, Slow, Status, Truncate
from triofetch.transports import Transport, TransportOptions

pytest.importorskip("asks")

from triofetch.transports import _asks
from triofetch.transports._asks import AsksTransport

pytestmark = pytest.mark.asks

DATA = os.urandom(200_000)


@pytest.fixture
async def transport() -> AsyncIterator[AsksTransport]:
    t = AsksTransport(TransportOptions(max_connections=4))
    try:
        yield t
    finally:
        await t.aclose()


async def get(t: AsksTransport, url: str, headers: dict[str, str] | None = None) -> bytes:
    async with t.stream(url, headers or {}) as response:
        return b"".join([chunk async for chunk in response.iter_bytes()])


async def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll the server's state (kept by its threads: there is no Trio event to wait on)."""
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


# -- construction ---------------------------------------------------------------------


def test_missing_asks_gives_install_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_asks, "_IMPORT_ERROR", ImportError("No module named 'asks'"))
    with pytest.raises(InvalidInput, match=r"pip install --no-deps asks"):
        AsksTransport(TransportOptions())


def test_proxy_is_refused_at_construction() -> None:
    with pytest.raises(InvalidInput, match="no proxy support") as info:
        AsksTransport(TransportOptions(proxy="http://user:secret@proxy.invalid:3128"))
    assert "secret" not in str(info.value)


async def test_is_a_transport(transport: AsksTransport) -> None:
    assert isinstance(transport, Transport)


# -- responses --------------------------------------------------------------------------


async def test_get_status_headers_and_body(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    http_server.add_file("/a.bin", DATA, headers={"X-Thing": "Yes"})
    async with transport.stream(http_server.url("/a.bin"), {}) as response:
        assert response.status_code == 200
        assert response.reason == "OK"
        assert response.url == http_server.url("/a.bin")
        assert response.headers["content-length"] == str(len(DATA))
        assert response.headers["x-thing"] == "Yes"
        assert all(name == name.lower() for name in response.headers)
        body = b"".join([chunk async for chunk in response.iter_bytes()])
    assert body == DATA


async def test_error_statuses_are_responses(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    http_server.add_file("/e", b"ok", faults=[Status(500, body=b"boom"), Status(429)])
    async with transport.stream(http_server.url("/e"), {}) as response:
        assert (response.status_code, response.reason) == (500, "Internal Server Error")
        assert b"".join([c async for c in response.iter_bytes()]) == b"boom"
    async with transport.stream(http_server.url("/e"), {}) as response:
        assert response.status_code == 429
        assert [c async for c in response.iter_bytes()] == []
    async with transport.stream(http_server.url("/missing"), {}) as response:
        assert response.status_code == 404
    assert await get(transport, http_server.url("/e")) == b"ok"


async def test_empty_body(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/empty", b"")
    assert await get(transport, http_server.url("/empty")) == b""
    assert await get(transport, http_server.url("/empty")) == b""
    assert http_server.connections_accepted == 1


async def test_request_headers(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/h", b"x")
    await get(transport, http_server.url("/h"), {"X-Custom": "1", "User-Agent": "tf/1"})
    sent = http_server.requests[-1].headers
    assert sent["accept-encoding"] == "identity"  # not asks' "gzip, deflate"
    assert sent["connection"] == "keep-alive"  # not asks' "close"
    assert sent["x-custom"] == "1"
    assert sent["user-agent"] == "tf/1"
    assert sent["host"] == f"127.0.0.1:{http_server.port}"
    await get(transport, http_server.url("/h"), {"accept-encoding": "gzip"})
    assert http_server.requests[-1].headers["accept-encoding"] == "gzip"


async def test_compressed_body_stays_raw(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    packed = gzip.compress(DATA)
    http_server.add_file("/z", packed, headers={"Content-Encoding": "gzip"})
    async with transport.stream(http_server.url("/z"), {"Accept-Encoding": "gzip"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        assert b"".join([c async for c in r.iter_bytes()]) == packed


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
async def test_large_body(
    http_server: FaultServer, transport: AsksTransport, content_length: bool
) -> None:
    size = 20 * 1024 * 1024 + 3
    http_server.add_generated("/big", size, byte=b"q", content_length=content_length)
    total = 0
    async with transport.stream(http_server.url("/big"), {}) as response:
        assert ("transfer-encoding" in response.headers) is not content_length
        async for chunk in response.iter_bytes():
            assert chunk == b"q" * len(chunk)
            total += len(chunk)
    assert total == size


async def test_chunked_body_and_reuse(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/c", DATA, content_length=False)
    for _ in range(3):
        assert await get(transport, http_server.url("/c")) == DATA
    assert http_server.connections_accepted == 1


async def test_body_delimited_by_close(transport: AsksTransport) -> None:
    """A response without Content-Length or chunking ends when the server closes."""

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + DATA)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        assert await get(transport, f"http://127.0.0.1:{port}/x") == DATA
        assert await get(transport, f"http://127.0.0.1:{port}/y") == DATA
        nursery.cancel_scope.cancel()


# -- connections ------------------------------------------------------------------------


async def test_connection_reuse(http_server: FaultServer, transport: AsksTransport) -> None:
    for i in range(5):
        http_server.add_file(f"/f{i}", DATA[: 1000 * (i + 1)])
    for i in range(5):
        assert await get(transport, http_server.url(f"/f{i}")) == DATA[: 1000 * (i + 1)]
    assert http_server.connections_accepted == 1
    assert {r.connection for r in http_server.requests} == {1}


async def test_concurrent_requests_keep_at_most_max_idle(http_server: FaultServer) -> None:
    http_server.add_file("/p", DATA)
    transport = AsksTransport(TransportOptions(max_connections=3))
    try:
        results: list[bytes] = []

        async def one() -> None:
            results.append(await get(transport, http_server.url("/p")))

        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
        assert results == [DATA] * 12
        await wait_for(lambda: http_server.live_connections <= 3)
        accepted = http_server.connections_accepted
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        assert http_server.connections_accepted - accepted <= 3
    finally:
        await transport.aclose()
    await wait_for(lambda: http_server.live_connections == 0)


async def test_connection_closed_by_server_while_idle_is_not_reused() -> None:
    with FaultServer(idle_timeout=0.2) as server:
        server.add_file("/a", DATA)
        transport = AsksTransport(TransportOptions())
        try:
            assert await get(transport, server.url("/a")) == DATA
            await wait_for(lambda: server.live_connections == 0)
            assert await get(transport, server.url("/a")) == DATA
            assert server.connections_accepted == 2
        finally:
            await transport.aclose()


async def test_aclose_closes_pooled_connections(http_server: FaultServer) -> None:
    http_server.add_file("/a", b"abc")
    transport = AsksTransport(TransportOptions())
    assert await get(transport, http_server.url("/a")) == b"abc"
    assert http_server.live_connections == 1
    await transport.aclose()
    await wait_for(lambda: http_server.live_connections == 0)
    with pytest.raises(ConnectionFailed, match="closed"):
        await get(transport, http_server.url("/a"))


# -- redirects --------------------------------------------------------------------------


async def test_redirects_are_followed(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/final", DATA)
    http_server.add_file("/r1", b"", faults=[Redirect("/r2", code=301)])
    http_server.add_file("/r2", b"", faults=[Redirect("/r3", code=307)])
    http_server.add_file("/r3", b"", faults=[Redirect("final", code=308)])  # relative
    async with transport.stream(http_server.url("/r1"), {}) as response:
        assert response.status_code == 200
        assert response.url == http_server.url("/final")
        assert b"".join([c async for c in response.iter_bytes()]) == DATA
    assert [r.path for r in http_server.requests] == ["/r1", "/r2", "/r3", "/final"]
    assert http_server.connections_accepted == 1


async def test_redirect_with_a_body(http_server: FaultServer, transport: AsksTransport) -> None:
    """asks' own redirect handling fails here (it leaves the body on the connection)."""
    http_server.add_file("/final", DATA)
    moved = Status(302, headers={"Location": "/final"}, body=b"moved\n" * 100)
    http_server.add_file("/r", b"", faults=[moved, moved])
    for _ in range(2):
        assert await get(transport, http_server.url("/r")) == DATA
    assert http_server.connections_accepted == 1


async def test_too_many_redirects(http_server: FaultServer) -> None:
    http_server.add_file("/final", b"ok")
    for i in range(3):
        http_server.add_file(f"/r{i}", b"", faults=[Redirect(f"/r{i + 1}")] * 2)
    http_server.add_file("/r3", b"", faults=[Redirect("/final")] * 2)
    transport = AsksTransport(TransportOptions(max_redirects=3))
    try:
        assert await get(transport, http_server.url("/r1")) == b"ok"  # 3 redirects
        with pytest.raises(TooManyRedirects, match="more than 3 redirects") as info:
            await get(transport, http_server.url("/r0"))  # 4 redirects
        assert info.value.url == http_server.url("/r0")
        assert not info.value.retryable
    finally:
        await transport.aclose()


async def test_redirect_to_another_server_drops_authorization(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    with FaultServer() as other:
        other.add_file("/there", DATA)
        http_server.add_file("/r", b"", faults=[Redirect(other.url("/there"))])
        headers = {"Authorization": "Bearer secret", "X-Keep": "1"}
        async with transport.stream(http_server.url("/r"), headers) as response:
            assert response.url == other.url("/there")
            assert b"".join([c async for c in response.iter_bytes()]) == DATA
        assert http_server.requests[0].headers["authorization"] == "Bearer secret"
        assert "authorization" not in other.requests[0].headers
        assert other.requests[0].headers["x-keep"] == "1"


async def test_redirect_to_unsupported_scheme(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    http_server.add_file("/r", b"", faults=[Redirect("ftp://127.0.0.1/x")])
    with pytest.raises(InvalidURL, match="not ftp"):
        await get(transport, http_server.url("/r"))


async def test_credentials_in_url_become_basic_auth(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    http_server.add_file("/s", b"secret data")
    http_server.require_basic_auth("me", "p@ss")
    url = http_server.url("/s").replace("http://", "http://me:p%40ss@")
    assert await get(transport, url) == b"secret data"
    assert http_server.requests[-1].headers["host"] == f"127.0.0.1:{http_server.port}"


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x", "http:///nohost", "http://127.0.0.1:99999/x", "no url at all", ""],
)
async def test_invalid_urls(transport: AsksTransport, url: str) -> None:
    with pytest.raises(InvalidURL) as info:
        await get(transport, url)
    assert not info.value.retryable


async def test_connection_refused(transport: AsksTransport) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ConnectionFailed, match="connection failed") as info:
            await get(transport, f"http://127.0.0.1:{port}/x")
    assert info.value.url == f"http://127.0.0.1:{port}/x"


async def test_truncated_body(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/t", DATA, faults=[Truncate(1000)])
    with pytest.raises(TruncatedBody, match=f"after 1000 of {len(DATA)} bytes"):
        await get(transport, http_server.url("/t"))
    assert await get(transport, http_server.url("/t")) == DATA


async def test_truncated_chunked_body(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/t", DATA, faults=[Truncate(1000)], content_length=False)
    with pytest.raises(TruncatedBody, match="before its last chunk"):
        await get(transport, http_server.url("/t"))
    assert await get(transport, http_server.url("/t")) == DATA


async def test_reset_during_body(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/x", DATA, faults=[Reset(after_bytes=5000)])
    with pytest.raises((ConnectionFailed, TruncatedBody)):
        await get(transport, http_server.url("/x"))
    assert await get(transport, http_server.url("/x")) == DATA


async def test_reset_before_headers(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/x", DATA, faults=[Reset(before_headers=True)])
    with pytest.raises(ConnectionFailed, match="connection failed"):
        await get(transport, http_server.url("/x"))
    assert http_server.count("/x") == 1  # asks' own retry is off: the downloader retries
    assert await get(transport, http_server.url("/x")) == DATA


async def test_reused_connection_reset_by_server(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    http_server.add_file("/x", DATA, faults=[Reset(after_bytes=len(DATA))])
    # the whole body arrives, then the connection is reset: the next request must not
    # fail on the dead pooled connection
    with contextlib.suppress(ConnectionFailed):
        assert await get(transport, http_server.url("/x")) == DATA
    await wait_for(lambda: http_server.live_connections == 0)
    assert await get(transport, http_server.url("/x")) == DATA


# -- cancellation and early exit ------------------------------------------------------


async def test_cancelled_body_does_not_leak_the_connection(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    http_server.add_file("/slow", DATA, faults=[Slow(delay=0.05, chunk=1000)])
    http_server.add_file("/fast", DATA)
    received = 0
    with trio.move_on_after(0.3) as scope:
        async with transport.stream(http_server.url("/slow"), {}) as response:
            async for chunk in response.iter_bytes():
                received += len(chunk)
    assert scope.cancelled_caught
    assert 0 < received < len(DATA)
    await wait_for(lambda: http_server.live_connections == 0)  # closed, not pooled
    assert await get(transport, http_server.url("/fast")) == DATA
    assert await get(transport, http_server.url("/slow")) == DATA


async def test_cancelled_before_headers(http_server: FaultServer, transport: AsksTransport) -> None:
    http_server.add_file("/hang", DATA, faults=[Hang(30)])
    with trio.move_on_after(0.2) as scope:
        await get(transport, http_server.url("/hang"))
    assert scope.cancelled_caught
    assert len(transport._session._conn_pool) == 0  # the cancelled connection was closed
    assert await get(transport, http_server.url("/hang")) == DATA
    assert http_server.connections_accepted == 2


async def test_leaving_early_closes_the_connection(
    http_server: FaultServer, transport: AsksTransport
) -> None:
    http_server.add_generated("/big", 10 * 1024 * 1024)
    http_server.add_file("/small", b"small")
    async with (
        transport.stream(http_server.url("/big"), {}) as response,
        contextlib.aclosing(response.iter_bytes()) as chunks,  # type: ignore[type-var]
    ):
        async for _ in chunks:
            break
    assert await get(transport, http_server.url("/small")) == b"small"
    assert http_server.connections_accepted == 2
    assert http_server.bytes_sent("/big") < 10 * 1024 * 1024


async def test_many_cancellations_leave_the_session_usable(http_server: FaultServer) -> None:
    http_server.add_generated("/g", 2 * 1024 * 1024, faults=[Slow(0.01, 4096)] * 20)
    transport = AsksTransport(TransportOptions(max_connections=2))
    try:
        for _ in range(10):
            with trio.move_on_after(0.05):
                await get(transport, http_server.url("/g"))
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.cancel_scope.deadline = trio.current_time() + 0.05
                nursery.start_soon(get, transport, http_server.url("/g"))
        http_server.add_file("/ok", DATA)
        for _ in range(3):
            assert await get(transport, http_server.url("/ok")) == DATA
    finally:
        await transport.aclose()
    await wait_for(lambda: http_server.live_connections == 0)


# -- environment proxies --------------------------------------------------------------


async def test_environment_proxy_is_not_silently_ignored(
    http_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.add_file("/a", b"abc")
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    transport = AsksTransport(TransportOptions())
    direct = AsksTransport(TransportOptions(trust_env=False))
    try:
        with pytest.raises(InvalidURL, match="cannot use proxies"):
            await get(transport, http_server.url("/a"))
        assert await get(direct, http_server.url("/a")) == b"abc"
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert await get(transport, http_server.url("/a")) == b"abc"
    finally:
        await transport.aclose()
        await direct.aclose()


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself: (cert+key PEM path, cert PEM path)."""
    server_pem, ca_pem = self_signed_cert(tmp_path_factory.mktemp("tls"))
    return str(server_pem), str(ca_pem)


async def test_tls_verification(self_signed: tuple[str, str]) -> None:
    import ssl

    server_pem, ca_pem = self_signed
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(server_pem)
    connections = 0

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while await stream.receive_some(65536):
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(DATA)
                await stream.send_all(head + DATA)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handler, 0, server_context, host="127.0.0.1")
        )
        url = f"https://127.0.0.1:{listeners[0].transport_listener.socket.getsockname()[1]}/f"
        options = [
            TransportOptions(verify=ca_pem),
            TransportOptions(verify=ssl.create_default_context(cafile=ca_pem)),
            TransportOptions(verify=False),
        ]
        for option in options:
            transport = AsksTransport(option)
            try:
                assert await get(transport, url) == DATA
                assert await get(transport, url) == DATA
            finally:
                await transport.aclose()
        assert connections == len(options)  # one kept-alive connection each
        strict = AsksTransport(TransportOptions(verify=True, trust_env=False))
        try:
            with pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await get(strict, url)
        finally:
            await strict.aclose()
        nursery.cancel_scope.cancel()
