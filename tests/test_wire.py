"""The trio transport's HTTP/1.1 framing against a raw loopback server that says exactly
what each test scripts (including what a polite server never would)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import triofetch
from triofetch.transports._trio._wire import (
    ProtocolError,
    _parse_head,
    encode_headers,
    request_line,
)


async def fetch(
    port: int, tmp_path: Path, path: str = "/f", **kw: object
) -> triofetch.DownloadResult:
    async with triofetch.Downloader(
        transport="trio", temp_dir=tmp_path, retries=0, read_timeout=2.0, connect_timeout=2.0
    ) as dl:
        return await dl.fetch(f"http://127.0.0.1:{port}{path}", **kw)  # type: ignore[arg-type]


BODY = b"hello, world\n" * 100


async def test_content_length_and_keep_alive(raw: Callable[..., object], tmp_path: Path) -> None:
    server = await raw(
        lambda r: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY), BODY]
    )  # type: ignore[operator]
    async with triofetch.Downloader(transport="trio", temp_dir=tmp_path) as dl:
        for _ in range(3):
            result = await dl.fetch(f"http://127.0.0.1:{server.port}/f")
            assert result.path.read_bytes() == BODY
    assert server.connections == 1  # one keep-alive connection for all three
    assert server.requests[0].startswith(b"GET /f HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in server.requests[0].lower()


async def test_idle_connections_are_bounded_across_origins(
    raw: Callable[..., object], tmp_path: Path
) -> None:
    """A downloader keeps at most ``connections`` idle connections in all, however many
    origins it has fetched from.  The pool was bounded per origin only, and a connection
    left only when its own origin was asked again: a long-lived downloader that visited
    300 origins held 1,200 sockets (its process ran out of file descriptors)."""
    servers = [
        await raw(lambda r: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY), BODY])  # type: ignore[operator]
        for _ in range(8)
    ]
    async with triofetch.Downloader(transport="trio", connections=4, temp_dir=tmp_path) as dl:

        async def one(port: int) -> None:
            result = await dl.fetch(f"http://127.0.0.1:{port}/f")
            assert result.path.read_bytes() == BODY
            result.path.unlink()

        for server in servers:  # four at once: four connections to each origin
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(one, server.port)
        await trio.testing.wait_all_tasks_blocked()
        assert sum(s.connections for s in servers) == 32
        assert sum(s.open for s in servers) <= 4
        # (the latest origin's are the ones kept: used again, no new connection)
        await one(servers[-1].port)
        assert servers[-1].connections == 4


async def test_chunked_with_extensions_and_trailers(
    raw: Callable[..., object], tmp_path: Path
) -> None:
    server = await raw(
        lambda r: [  # type: ignore[operator]
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5;name=value\r\nhello\r\n",
            b"7\r\n, world\r\n",
            b"0\r\nX-Trailer: yes\r\n\r\n",
        ]
    )
    result = await fetch(server.port, tmp_path)
    assert result.path.read_bytes() == b"hello, world"


async def test_informational_then_final(raw: Callable[..., object], tmp_path: Path) -> None:
    server = await raw(
        lambda r: [  # type: ignore[operator]
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]
    )
    assert (await fetch(server.port, tmp_path)).path.read_bytes() == b"ok"


async def test_http10_body_until_close(raw: Callable[..., object], tmp_path: Path) -> None:
    server = await raw(lambda r: [b"HTTP/1.0 200 OK\r\n\r\n", BODY, b"<close>"])  # type: ignore[operator]
    result = await fetch(
        server.port, tmp_path, expected_digests={"sha256": hashlib.sha256(BODY).hexdigest()}
    )
    assert result.size == len(BODY)


async def test_connection_close_is_not_reused(raw: Callable[..., object], tmp_path: Path) -> None:
    server = await raw(
        lambda r: [  # type: ignore[operator]
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            b"<close>",
        ]
    )
    async with triofetch.Downloader(transport="trio", temp_dir=tmp_path) as dl:
        for _ in range(2):
            await dl.fetch(f"http://127.0.0.1:{server.port}/f")
    assert server.connections == 2


@pytest.mark.parametrize(
    ("response", "error", "text"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            triofetch.TruncatedBody,
            "5 of 10 body bytes missing",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            triofetch.TruncatedBody,
            "chunked",
        ),
        (b"HTTP/2 200 OK\r\n\r\n", triofetch.ConnectionFailed, "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", triofetch.ConnectionFailed, "status line"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            triofetch.ConnectionFailed,
            "Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            triofetch.ConnectionFailed,
            "Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
            triofetch.ConnectionFailed,
            "header line",
        ),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", triofetch.ConnectionFailed, "header line"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            triofetch.ConnectionFailed,
            "chunk size",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, triofetch.ConnectionFailed, "larger than"),
        (  # the same head, whole: it was taken when it came in one or two receives
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\nContent-Length: 2\r\n\r\nok",
            triofetch.ConnectionFailed,
            "larger than",
        ),
        (b"HTTP/1.1 200 O", triofetch.ConnectionFailed, "middle of a response head"),
        (b"", triofetch.ConnectionFailed, "without answering"),
    ],
)
async def test_broken_responses(
    raw: Callable[..., object], tmp_path: Path, response: bytes, error: type[Exception], text: str
) -> None:
    server = await raw(lambda r: [response, b"<close>"])  # type: ignore[operator]
    with pytest.raises(error, match=text):
        await fetch(server.port, tmp_path)
    assert os.listdir(tmp_path) == []


async def test_no_body_statuses(raw: Callable[..., object], tmp_path: Path) -> None:
    server = await raw(lambda r: [b"HTTP/1.1 204 No Content\r\n\r\n"])  # type: ignore[operator]
    result = await fetch(server.port, tmp_path)
    assert result.size == 0


def test_parse_head_joins_repeated_headers() -> None:
    head = _parse_head(b"HTTP/1.1 200 OK\r\nVary: a\r\nVary: b\r\nContent-Length: 0")
    assert head.headers["vary"] == "a, b"
    assert head.keep_alive and head.length == 0


def test_encode_request_refuses_injection() -> None:
    with pytest.raises(ValueError, match="invalid header"):
        encode_headers([("x-a", "1\r\nx-evil: 1")])
    request = request_line("/p") + encode_headers([("host", "h")])
    assert request == b"GET /p HTTP/1.1\r\nhost: h\r\n\r\n"
    with pytest.raises(ValueError, match="invalid request target"):
        request_line("/a b\r\nx-evil: 1")
    assert ProtocolError is not None


# -- the plain socket and the whole-body fast path -----------------------------------------


async def test_body_with_the_head_or_after_it(raw: Callable[..., object], tmp_path: Path) -> None:
    """The same bytes whether the body comes in the head's segment (taken whole from the
    buffer) or in pieces later (read by the streaming loop); both keep the connection."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    plans = iter([[head + BODY], [head, BODY[:7], BODY[7:]], [head + BODY[:10], BODY[10:]]])
    server = await raw(lambda r: next(plans))  # type: ignore[operator]
    digest = hashlib.sha256(BODY).hexdigest()
    async with triofetch.Downloader(transport="trio", temp_dir=tmp_path) as dl:
        for _ in range(3):
            result = await dl.fetch(
                f"http://127.0.0.1:{server.port}/f", expected_digests={"sha256": digest}
            )
            assert result.path.read_bytes() == BODY
    assert server.connections == 1


async def test_one_segment_holding_more_than_a_plain_response(
    raw: Callable[..., object], tmp_path: Path
) -> None:
    """Head and body in the segment the response starts with, in the cases the whole-body
    path must leave to the buffer: an informational head before the final one, a redirect's
    body (drained, the connection kept), and bytes after the body (the connection dropped)."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    answers = {
        b"/info": [b"HTTP/1.1 100 Continue\r\n\r\n" + ok],
        b"/moved": [b"HTTP/1.1 302 Found\r\nLocation: /info\r\nContent-Length: 5\r\n\r\nhello"],
        b"/extra": [ok + b"HTTP/1.1 200 OK"],
    }
    server = await raw(lambda r: answers[r.split(b" ")[1]])  # type: ignore[operator]
    base = f"http://127.0.0.1:{server.port}"
    async with triofetch.Downloader(transport="trio", temp_dir=tmp_path, retries=0) as dl:
        assert (await dl.fetch(base + "/info")).path.read_bytes() == b"ok"
        moved = await dl.fetch(base + "/moved")
        assert moved.path.read_bytes() == b"ok" and moved.url == base + "/info"
        assert server.connections == 1  # the redirect's body was read off: reused
        assert (await dl.fetch(base + "/extra")).path.read_bytes() == b"ok"
        assert (await dl.fetch(base + "/info")).path.read_bytes() == b"ok"
    assert server.connections == 2  # bytes after a body: that connection was not reused


async def test_whole_body_larger_than_expected_fails(
    raw: Callable[..., object], tmp_path: Path
) -> None:
    server = await raw(
        lambda r: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)]
    )  # type: ignore[operator]
    with pytest.raises(triofetch.SizeMismatch, match=r"expected 10"):
        await fetch(server.port, tmp_path, expected_size=10)
    assert os.listdir(tmp_path) == []


async def test_plain_socket_keeps_the_loop_fair() -> None:
    """A socket that always has data must not keep its reader from yielding."""
    from triofetch.transports._trio._wire import PlainSocket

    a, b = socket.socketpair()
    b.setblocking(False)
    queued = 0
    with contextlib.suppress(BlockingIOError):
        while queued < 200_000:
            queued += b.send(b"x" * 1000)
    reads = queued // 1000
    assert reads >= 64
    reader = PlainSocket(a)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        ticks = 0
        got = 0
        for _ in range(reads):  # reads that never have to wait
            got += len(await reader.receive_some(1000))
        done = True
    assert got == reads * 1000
    assert ticks >= reads // 16 - 1  # the reader yielded every few reads
    reader.close()
    b.close()


async def test_plain_socket_close_wakes_a_waiting_reader() -> None:
    from triofetch.transports._trio._wire import PlainSocket

    a, b = socket.socketpair()
    reader = PlainSocket(a)
    assert not reader.is_readable()
    raised: list[BaseException] = []

    async def read() -> None:
        try:
            await reader.receive_some(10)
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        reader.close()
    assert len(raised) == 1
    reader.close()  # twice is fine
    b.close()


async def test_plain_socket_readable_when_the_peer_closes() -> None:
    from triofetch.transports._trio._wire import PlainSocket

    a, b = socket.socketpair()
    sock = PlainSocket(a)
    b.close()
    assert sock.is_readable()
    assert await sock.receive_some(10) == b""
    sock.close()


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of TCP sockets on 127.0.0.1 (client, server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


async def _readable(sock: object) -> bool:
    """Whether *sock* turns readable within 5 s (loopback bytes, a FIN or a reset sent just
    now reach the other socket at once, but a loaded machine may take its time)."""
    for _ in range(1000):
        if sock.is_readable():  # type: ignore[attr-defined]
            return True
        await trio.sleep(0.005)
    return False


@pytest.mark.parametrize("ask_the_kernel", [True, False], ids=["tcp-info", "peek"])
async def test_plain_socket_idle_check_over_tcp(ask_the_kernel: bool) -> None:
    """The idle check of a pooled connection over real TCP, both ways it is made (Linux's
    TCP_INFO, compared with the bytes this socket has read; a peeking recv elsewhere):
    nothing pending is not readable; unasked bytes are, until read; a FIN or a reset is."""
    from triofetch.transports._trio._wire import PlainSocket

    if ask_the_kernel and sys.platform != "linux":
        pytest.skip("TCP_INFO is read on Linux only")
    client, server = _tcp_pair()
    sock = PlainSocket(client)
    if ask_the_kernel:
        assert sock._tcp_info  # (TCP on Linux: the default)
    else:
        sock._tcp_info = False
    try:
        assert not sock.is_readable()
        server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert await _readable(sock)  # (unasked: the check must not take them)
        got = b""
        while len(got) < 40:  # read in two pieces: every byte read is counted
            got += await sock.receive_some(40 - len(got) if got else 7)
        assert got.endswith(b"ok")
        assert not sock.is_readable()  # all read: reusable
        server.sendall(b"x")
        assert await _readable(sock)
        assert await sock.receive_waiting(10) == b"x"
        assert not sock.is_readable()
        server.close()  # a FIN
        assert await _readable(sock)
        assert sock._tcp_info is ask_the_kernel  # (the kernel's answer had the byte count)
    finally:
        sock.close()
        server.close()


async def test_plain_socket_idle_check_sees_a_reset() -> None:
    from triofetch.transports._trio._wire import PlainSocket

    client, server = _tcp_pair()
    sock = PlainSocket(client)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()  # a reset
        assert await _readable(sock)
    finally:
        sock.close()


async def test_plain_socket_receive_waiting_yields_first() -> None:
    """receive_waiting (the response to a request just sent) is a schedule point before it
    receives, even when the bytes are there already, and a cancel point."""
    from triofetch.transports._trio._wire import PlainSocket

    a, b = socket.socketpair()
    reader = PlainSocket(a)
    b.sendall(b"there")
    try:
        with trio.testing.assert_checkpoints():
            assert await reader.receive_waiting(10) == b"there"
        b.sendall(b"more")
        with trio.CancelScope() as scope:
            scope.cancel()
            await reader.receive_waiting(10)
        assert scope.cancelled_caught
        assert await reader.receive_waiting(10) == b"more"  # (nothing was taken)
        b.sendall(b"late")

        async def send_later() -> None:
            await trio.sleep(0.05)
            b.sendall(b"!")

        assert await reader.receive_waiting(10) == b"late"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later)
            assert await reader.receive_waiting(10) == b"!"  # (waited for it)
    finally:
        reader.close()
        b.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/a/b.bin",
        "http://h/p?x=1&y=2",
        "http://h?x",
        "http://h",
        "http://h/",
        "https://Example.com/a%20b",
        "http://h/p?",
        "http://h:80/x?q?r",
        "http://h/a b",
        "http://h/a#frag",
        "http://[::1]:80/x",
        "HTTP://h/x",
    ],
)
def test_url_fast_path_agrees_with_urlsplit(url: str) -> None:
    """The regex split of plain URLs gives what the urlsplit path gives."""
    from triofetch.transports._base import TransportOptions
    from triofetch.transports._trio._transport import TrioTransport

    transport = TrioTransport(TransportOptions())
    first = transport._parse(url)  # urlsplit (the origin is not known yet)
    again = transport._parse(url)  # the fast path when the URL is plain
    assert first == again
