"""Tests of the fault-injecting HTTP test server itself (plain stdlib clients only)."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import trio

from triofetch.testing import (
    FaultServer,
    Hang,
    Redirect,
    Reset,
    Slow,
    Status,
    Truncate,
    WrongBytes,
)

DATA = bytes(range(256)) * 40  # 10 KiB

# No proxies from the environment: the server is on loopback.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _conn(server: FaultServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def _get(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, resp, body


def _raw_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


# -- basics --------------------------------------------------------------------------


def test_serves_file_with_keepalive(http_server: FaultServer) -> None:
    http_server.add_file("/a/b.bin", DATA, headers={"ETag": '"v1"'})
    assert http_server.url("/a/b.bin") == http_server.base_url + "/a/b.bin"
    assert http_server.base_url.startswith("http://127.0.0.1:")
    conn = _conn(http_server)
    try:
        for _ in range(2):
            status, resp, body = _get(conn, "/a/b.bin", {"X-Test": "yes"})
            assert status == 200
            assert body == DATA
            assert resp.getheader("Content-Length") == str(len(DATA))
            assert resp.getheader("ETag") == '"v1"'
    finally:
        conn.close()
    assert http_server.count("/a/b.bin") == 2
    assert http_server.connections_accepted == 1
    records = http_server.requests
    assert [(r.method, r.path) for r in records] == [("GET", "/a/b.bin")] * 2
    assert records[0].headers["x-test"] == "yes"
    assert records[0].connection == records[1].connection
    assert records[0].time <= records[1].time
    assert http_server.bytes_sent("/a/b.bin") == 2 * len(DATA)


def test_unknown_path_is_404_and_url_validation(http_server: FaultServer) -> None:
    conn = _conn(http_server)
    try:
        status, _, _ = _get(conn, "/nope")
        assert status == 404
    finally:
        conn.close()
    assert http_server.count("/nope") == 1
    with pytest.raises(ValueError):
        http_server.url("relative")


def test_head_and_query_string(http_server: FaultServer) -> None:
    http_server.add_file("/h", DATA)
    conn = _conn(http_server)
    try:
        conn.request("HEAD", "/h")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Length") == str(len(DATA))
        assert resp.read() == b""
        status, _, body = _get(conn, "/h?x=1")
        assert (status, body) == (200, DATA)
    finally:
        conn.close()
    assert http_server.count("/h") == 2
    assert http_server.requests[1].query == "x=1"


def test_chunked_transfer_encoding(http_server: FaultServer) -> None:
    big = DATA * 20
    http_server.add_file("/c", big, content_length=False)
    conn = _conn(http_server)
    try:
        for _ in range(2):  # keep-alive still works after a chunked body
            status, resp, body = _get(conn, "/c")
            assert status == 200
            assert resp.getheader("Transfer-Encoding") == "chunked"
            assert resp.getheader("Content-Length") is None
            assert body == big
    finally:
        conn.close()
    assert http_server.connections_accepted == 1


def test_reset_counters(http_server: FaultServer) -> None:
    http_server.add_file("/r", b"abc")
    with _opener.open(http_server.url("/r")) as resp:
        assert resp.read() == b"abc"
    assert http_server.count("/r") == 1
    http_server.reset_counters()
    assert http_server.count("/r") == 0
    assert http_server.requests == []
    assert http_server.bytes_sent("/r") == 0


# -- faults --------------------------------------------------------------------------


def test_status_faults_consumed_in_order(http_server: FaultServer) -> None:
    http_server.add_file(
        "/s",
        DATA,
        faults=[Status(500), Status(429, headers={"Retry-After": "1"}), Status(404, body=b"gone")],
    )
    conn = _conn(http_server)
    try:
        status, _, body = _get(conn, "/s")
        assert (status, body) == (500, b"")
        status, resp, _ = _get(conn, "/s")
        assert status == 429
        assert resp.getheader("Retry-After") == "1"
        status, _, body = _get(conn, "/s")
        assert (status, body) == (404, b"gone")
        for _ in range(2):
            status, _, body = _get(conn, "/s")
            assert (status, body) == (200, DATA)
    finally:
        conn.close()
    assert http_server.count("/s") == 5
    assert http_server.connections_accepted == 1  # error answers keep the connection alive


def test_reset_before_headers(http_server: FaultServer) -> None:
    http_server.add_file("/x", DATA, faults=[Reset(before_headers=True)])
    conn = _conn(http_server)
    try:
        conn.request("GET", "/x")
        with pytest.raises(ConnectionError):
            conn.getresponse()
    finally:
        conn.close()
    with _opener.open(http_server.url("/x")) as resp:  # fault consumed: served normally
        assert resp.read() == DATA
    assert http_server.count("/x") == 2


def test_reset_after_bytes(http_server: FaultServer) -> None:
    http_server.add_file("/x", DATA, faults=[Reset(after_bytes=100)])
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=5) as sock:
        sock.sendall(_raw_request("/x"))
        received = b""
        with pytest.raises(ConnectionResetError):
            while True:
                data = sock.recv(65536)
                if not data:
                    break  # a FIN would end here and fail the test
                received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"Content-Length: {len(DATA)}".encode() in head
    assert body == DATA[:100]
    assert http_server.bytes_sent("/x") == 100


def test_reset_with_http_client(http_server: FaultServer) -> None:
    http_server.add_file("/x", DATA, faults=[Reset(after_bytes=10)])
    conn = _conn(http_server)
    try:
        conn.request("GET", "/x")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises((ConnectionError, http.client.IncompleteRead)):
            resp.read()
    finally:
        conn.close()


def test_truncate(http_server: FaultServer) -> None:
    http_server.add_file("/t", DATA, faults=[Truncate(1000)])
    conn = _conn(http_server)
    try:
        conn.request("GET", "/t")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == str(len(DATA))
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert info.value.partial == DATA[:1000]
    finally:
        conn.close()
    assert http_server.bytes_sent("/t") == 1000
    with _opener.open(http_server.url("/t")) as r:
        assert r.read() == DATA


def test_truncate_chunked(http_server: FaultServer) -> None:
    http_server.add_file("/t", DATA, faults=[Truncate(10)], content_length=False)
    conn = _conn(http_server)
    try:
        conn.request("GET", "/t")
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_slow_timing(http_server: FaultServer) -> None:
    http_server.add_file("/slow", DATA[:400], faults=[Slow(0.1, chunk=100)])
    start = time.monotonic()
    with _opener.open(http_server.url("/slow"), timeout=5) as resp:
        body = resp.read()
    elapsed = time.monotonic() - start
    assert body == DATA[:400]
    assert 0.28 <= elapsed < 2.0  # 4 pieces: 3 pauses of 0.1 s


def test_slow_stops_when_client_leaves(http_server: FaultServer) -> None:
    http_server.add_file("/slow", DATA, faults=[Slow(0.02, chunk=10)])  # ~20 s if completed
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=5) as sock:
        sock.sendall(_raw_request("/slow"))
        sock.recv(4096)
    time.sleep(0.1)
    assert http_server.wait_idle(timeout=2.0)
    assert 0 < http_server.bytes_sent("/slow") < 500


def test_wrong_bytes(http_server: FaultServer) -> None:
    http_server.add_file("/w", DATA, faults=[WrongBytes()])
    with _opener.open(http_server.url("/w")) as resp:
        body = resp.read()
    assert len(body) == len(DATA)
    assert body != DATA
    assert bytes(b ^ 0xFF for b in body) == DATA
    with _opener.open(http_server.url("/w")) as resp:
        assert resp.read() == DATA


def test_redirect(http_server: FaultServer) -> None:
    http_server.add_file("/target", b"here")
    http_server.add_file("/from", b"never", faults=[Redirect("/target")] * 2)
    http_server.add_file("/abs", b"never", faults=[Redirect(http_server.url("/target"), 301)])
    conn = _conn(http_server)
    try:
        status, resp, _ = _get(conn, "/from")
        assert status == 302
        assert resp.getheader("Location") == http_server.url("/target")
        status, resp, _ = _get(conn, "/abs")
        assert status == 301
        assert resp.getheader("Location") == http_server.url("/target")
    finally:
        conn.close()
    with _opener.open(http_server.url("/from")) as r:  # urllib follows the redirect
        assert r.read() == b"here"
        assert r.geturl() == http_server.url("/target")


def test_hang(http_server: FaultServer) -> None:
    http_server.add_file("/hang", DATA, faults=[Hang(0.3)])
    conn = _conn(http_server, timeout=0.1)
    try:
        conn.request("GET", "/hang")
        with pytest.raises(TimeoutError):
            conn.getresponse()
    finally:
        conn.close()
    with _opener.open(http_server.url("/hang"), timeout=5) as resp:
        assert resp.read() == DATA


def test_hang_is_interrupted_by_stop() -> None:
    server = FaultServer().start()
    server.add_file("/hang", DATA, faults=[Hang(60)])
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(_raw_request("/hang"))
        deadline = time.monotonic() + 2
        while server.count("/hang") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 2.0
        assert sock.recv(100) == b""  # closed, nothing sent
    finally:
        sock.close()
    server.stop()  # idempotent


def test_stop_closes_idle_keepalive_connections() -> None:
    with FaultServer() as server:
        server.add_file("/a", b"a")
        conn = _conn(server)
        try:
            assert _get(conn, "/a")[2] == b"a"
            assert server.live_connections == 1
            start = time.monotonic()
            server.stop()
            assert time.monotonic() - start < 2.0
            assert server.live_connections == 0
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                _get(conn, "/a")
        finally:
            conn.close()


# -- authentication ------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth(http_server: FaultServer) -> None:
    http_server.add_file("/private", b"secret", faults=[Status(500)])
    http_server.add_file("/public", b"open")
    http_server.require_basic_auth("alice", "pw", paths=["/private"])
    conn = _conn(http_server)
    try:
        status, resp, _ = _get(conn, "/private")
        assert status == 401
        assert resp.getheader("WWW-Authenticate", "").startswith("Basic")
        assert _get(conn, "/private", _basic("alice", "bad"))[0] == 401
        assert _get(conn, "/private", {"Authorization": "Basic !!!"})[0] == 401
        # refused requests did not consume the fault
        assert _get(conn, "/private", _basic("alice", "pw"))[0] == 500
        assert _get(conn, "/private", _basic("alice", "pw"))[2] == b"secret"
        assert _get(conn, "/public")[2] == b"open"
        http_server.require_basic_auth("alice", "pw")  # every path
        assert _get(conn, "/public")[0] == 401
        http_server.clear_auth()
        assert _get(conn, "/public")[0] == 200
    finally:
        conn.close()


def test_bearer_auth(http_server: FaultServer) -> None:
    http_server.add_file("/b", b"ok")
    http_server.require_bearer({"t1"})
    conn = _conn(http_server)
    try:
        status, resp, _ = _get(conn, "/b")
        assert status == 401
        assert resp.getheader("WWW-Authenticate") == 'Bearer error="invalid_token"'
        assert _get(conn, "/b", {"Authorization": "Bearer t2"})[0] == 401
        assert _get(conn, "/b", {"Authorization": "Bearer t1"})[2] == b"ok"
        http_server.set_valid_tokens({"t2"})
        assert _get(conn, "/b", {"Authorization": "Bearer t1"})[0] == 401
        assert _get(conn, "/b", {"Authorization": "Bearer t2"})[0] == 200
        http_server.set_valid_tokens(lambda t: t.startswith("good-"))
        assert _get(conn, "/b", {"Authorization": "Bearer good-1"})[0] == 200
        assert _get(conn, "/b", {"Authorization": "Bearer bad-1"})[0] == 401
    finally:
        conn.close()


# -- load and generated bodies -------------------------------------------------------


def test_100_concurrent_keepalive_connections(http_server: FaultServer) -> None:
    http_server.add_file("/f", DATA)
    conns = [_conn(http_server) for _ in range(100)]
    barrier = threading.Barrier(100, timeout=5)

    def two_requests(conn: http.client.HTTPConnection) -> bool:
        conn.connect()
        barrier.wait()  # all 100 connections are open at once
        return all(_get(conn, "/f")[:3:2] == (200, DATA) for _ in range(2))

    try:
        with ThreadPoolExecutor(max_workers=100) as pool:
            results = list(pool.map(two_requests, conns, timeout=10))
    finally:
        for conn in conns:
            conn.close()
    assert all(results)
    assert http_server.count("/f") == 200
    assert http_server.connections_accepted == 100
    assert len({r.connection for r in http_server.requests}) == 100


def test_generated_body(http_server: FaultServer) -> None:
    size = 3 * 1024 * 1024 + 7
    http_server.add_generated("/gen", size, byte=b"z")
    with _opener.open(http_server.url("/gen")) as resp:
        assert resp.headers["Content-Length"] == str(size)
        body = resp.read()
    assert len(body) == size
    assert body.count(b"z") == size
    assert http_server.wait_idle()
    assert http_server.bytes_sent("/gen") == size


def test_generated_bytes_sent_stops_when_client_closes(http_server: FaultServer) -> None:
    size = 8 * 1024**3  # 8 GiB: would take many seconds if the server did not stop
    http_server.add_generated("/huge", size)
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=5) as sock:
        sock.sendall(_raw_request("/huge"))
        got = 0
        while got < 1024 * 1024:
            got += len(sock.recv(65536))
    assert http_server.wait_idle(timeout=3.0)
    sent = http_server.bytes_sent("/huge")
    assert 1024 * 1024 <= sent < 256 * 1024 * 1024


# -- fixtures ------------------------------------------------------------------------


async def test_fixture_serves_trio_tests(http_server: FaultServer) -> None:
    http_server.add_file("/trio", b"hi")

    def fetch() -> bytes:
        with _opener.open(http_server.url("/trio"), timeout=5) as resp:
            return resp.read()

    assert await trio.to_thread.run_sync(fetch) == b"hi"


def test_module_fixture(http_server_module: FaultServer) -> None:
    http_server_module.add_file("/m", b"m")
    with _opener.open(http_server_module.url("/m")) as resp:
        assert resp.read() == b"m"


def test_http_error_from_urllib(http_server: FaultServer) -> None:
    http_server.add_file("/e", b"x", faults=[Status(503, headers={"Retry-After": "2"})])
    with pytest.raises(urllib.error.HTTPError) as info:
        _opener.open(http_server.url("/e"))
    assert info.value.code == 503
    assert info.value.headers["Retry-After"] == "2"
    info.value.close()
