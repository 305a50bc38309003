"""HTTP/1.1 on one connection, for the ``trio`` transport: GET requests, framed responses.

A general HTTP/1.1 library such as h11 handles every corner of the protocol through events
and a state machine; on a small response that costs a large share of what the whole
download of a small file may cost.  A downloader needs a narrow slice of HTTP/1.1: send
``GET`` with a few headers; read a status line and headers; frame the body by
``Transfer-Encoding: chunked``, ``Content-Length`` or the connection's end; know whether the
connection can carry the next request.  That slice is implemented here, strictly:
anything outside it (malformed status line or header, conflicting lengths, header folding,
an oversized head) is a :class:`ProtocolError` and the connection is dropped.

This module owns the bytes of one connection; it must not know URLs, pools, redirects or
triofetch's errors (``_transport`` turns its errors into triofetch's).
"""

from __future__ import annotations

import re
import socket
import struct
import sys
from collections.abc import AsyncGenerator, Iterable

import trio

__all__ = ["Head", "PlainSocket", "ProtocolError", "Wire", "encode_headers", "request_line"]

_MAX_HEAD = 64 * 1024
_RECEIVE = 256 * 1024
_CHUNK_LINE_MAX = 4096


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 (or closed the connection in the middle of a message)."""


class Truncated(ProtocolError):
    """The connection ended before the body did."""


class Head:
    """A parsed response head and how its body is framed."""

    __slots__ = ("chunked", "headers", "keep_alive", "length", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str],
        keep_alive: bool,
        chunked: bool,
        length: int | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        #: the body's length, or None for a body that ends with the connection
        self.length = length


def encode_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    """The header lines of a request and the empty line that ends them; refuses CR/LF/NUL
    in names or values (header injection)."""
    lines = []
    for name, value in headers:
        text = f"{name}{value}"
        if "\r" in text or "\n" in text or "\x00" in text or ":" in name or not name:
            # (never the value: it may be a secret, a token...)
            raise ValueError(f"invalid header {name[:100]!r}: a CR, LF or NUL in its name or value")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def request_line(target: str) -> bytes:
    """``GET target HTTP/1.1``; *target* must be quoted already (ASCII, no spaces)."""
    if not target.isascii() or " " in target or "\r" in target or "\n" in target:
        raise ValueError(f"invalid request target {target!r}")
    return b"GET " + target.encode("ascii") + b" HTTP/1.1\r\n"


#: a status line and the line break after it: HTTP/1.0 or 1.1, three digits, an optional
#: reason of visible characters, spaces, tabs and obs-text (h11's grammar, limited to the
#: versions this client speaks)
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: ([ \t\x21-\x7e\x80-\xff]*))?\r\n").match
#: every header line of a block (each ending with CRLF), as ``(name, value)``: a token at
#: the start of a line, a colon, a value without control characters but tabs.  A line that
#: does not match as a whole is skipped by ``findall``, so a block is valid only when it
#: yields one pair per line feed (see _header_fields): one pass in C for the whole block.
#: No control characters (a bare CR or LF inside a line would let two parsers disagree on
#: where a header ends), no obsolete line folding (a line starting with whitespace matches
#: no token).
_HEADER_LINES = re.compile(
    r"(?<![^\n])([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r\n"
).findall
#: a Content-Length: 1 to 20 ASCII digits (``str.isdigit`` would take "²")
_LENGTH = re.compile(r"[0-9]{1,20}").fullmatch
#: a chunk-size line: 1 to 20 hex digits (no sign, prefix, underscore or leading space, all
#: of which ``int(text, 16)`` accepts), optional extensions, optional trailing whitespace
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\r\n]*)?[ \t]*").fullmatch


def _header_fields(block: str, what: str) -> dict[str, str]:
    """The header (or trailer) lines of *block* (each ending with CRLF) as ``{lower-case
    name: value}``, repeated names joined by ``", "``; ProtocolError for a line outside the
    grammar."""
    pairs = _HEADER_LINES(block)
    if len(pairs) != block.count("\n"):
        for line in block.split("\r\n"):  # (the error path: find the line to name it)
            if line and not _HEADER_LINES(line + "\r\n"):
                break
        else:
            line = block
        raise ProtocolError(f"invalid {what} line {line[:100].encode('latin-1')!r}")
    if " \r\n" in block or "\t\r\n" in block:  # (rare) whitespace ends a value: not its own
        pairs = [(name, value.rstrip(" \t")) for name, value in pairs]
    headers = {name.lower(): value for name, value in pairs}
    if len(headers) < len(pairs):  # (rare) a repeated name: its values joined, in order
        headers = {}
        for name, value in pairs:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _head_too_large() -> ProtocolError:
    return ProtocolError(f"response head larger than {_MAX_HEAD} bytes")


def _parse_head(raw: bytes) -> Head:
    text = raw.decode("latin-1") + "\r\n"
    status_line = _STATUS_LINE(text)
    if status_line is None:
        first = text.split("\r\n", 1)[0]
        raise ProtocolError(f"invalid status line {first[:100].encode('latin-1')!r}")
    status = int(status_line[2])
    reason = status_line[3] or ""
    headers = _header_fields(text[status_line.end() :], "header")
    keep_alive = status_line[1] == "1" and not (
        "connection" in headers
        and any(t.strip(" \t").lower() == "close" for t in headers["connection"].split(","))
    )
    # The framing headers are checked whatever the status, as h11 does: a 204 announcing
    # two lengths, or a length in other digits, is as broken as a 200 doing so.
    chunked = False
    length: int | None = None
    if "transfer-encoding" in headers:
        # Only chunked: another coding would hand over bytes this client cannot undo, and
        # two Transfer-Encoding headers are one way to make two parsers frame differently.
        if headers["transfer-encoding"].lower() != "chunked":
            raise ProtocolError(
                f"unsupported Transfer-Encoding {headers['transfer-encoding'][:100]!r}"
            )
        chunked = True
        if "content-length" in headers:
            keep_alive = False  # both framings: trust chunked, never reuse the connection
    elif "content-length" in headers:
        announced = headers["content-length"]
        if _LENGTH(announced):  # the usual case: one number
            length = int(announced)
        else:
            values = {v.strip(" \t") for v in announced.split(",")}
            number = values.pop()
            if values or not _LENGTH(number):
                raise ProtocolError(f"invalid Content-Length {announced[:100]!r}")
            length = int(number)
    elif status >= 200 and status not in (204, 304):
        keep_alive = False  # the body ends when the connection does
    if status < 200 or status in (204, 304):  # no body, whatever the headers announce
        return Head(status, reason, headers, keep_alive, False, 0)
    return Head(status, reason, headers, keep_alive, chunked, length)


#: a PlainSocket yields to the scheduler after this many operations that did not have to wait
_QUICK_OPS = 16

#: ``struct tcp_info`` (Linux): its ``tcpi_state`` is the first byte, and
#: ``tcpi_bytes_received`` (since Linux 4.1) a native-endian u64 at offset 128
#: (0: not on this platform)
_TCP_INFO: int = getattr(socket, "TCP_INFO", 0) if sys.platform == "linux" else 0
_BYTES_RECEIVED_AT = 128
_TCP_INFO_SIZE = _BYTES_RECEIVED_AT + 8
_BYTES_RECEIVED = struct.Struct("=Q").unpack_from
_TCP_ESTABLISHED = 1


class PlainSocket:
    """A connected TCP socket driven directly, for plain-HTTP connections.

    ``trio.SocketStream`` wraps every send and receive in a context manager and a schedule
    point, even when the system call completes at once; a small download makes few calls,
    so those wrappers were a large share of its CPU time.  This tries the call first and
    waits for readiness (``trio.lowlevel.wait_readable`` / ``wait_writable``) only when the
    socket is not ready.  Calls that did not wait still yield to the scheduler, and notice
    cancellation, every few operations (so a fast sender cannot starve the other tasks).
    """

    __slots__ = ("_quick", "_received", "_sock", "_tcp_info")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._quick = 0
        #: bytes received so far (compared with the kernel's count in is_readable)
        self._received = 0
        #: is_readable may ask the kernel with TCP_INFO (see there)
        self._tcp_info = _TCP_INFO != 0 and sock.family in (
            socket.AF_INET,
            socket.AF_INET6,
        )

    def fileno(self) -> int:
        return self._sock.fileno()

    async def send_all(self, data: bytes) -> None:
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            await self._send_waiting(memoryview(data)[sent:])
        else:  # all sent at once (a request): the count of _quick_op, inline
            self._quick += 1
            if self._quick >= _QUICK_OPS:
                self._quick = 0
                await trio.lowlevel.checkpoint()

    async def _send_waiting(self, rest: memoryview) -> None:
        """Send *rest*, waiting for the socket to take it."""
        self._quick = 0
        sock = self._sock
        while rest:
            await trio.lowlevel.wait_writable(sock)
            try:
                rest = rest[sock.send(rest) :]
            except BlockingIOError:  # pragma: no cover - a spurious wakeup
                continue

    async def receive_some(self, max_bytes: int) -> bytes:
        sock = self._sock
        try:
            data = sock.recv(max_bytes)
        except BlockingIOError:
            pass
        else:
            self._received += len(data)
            await self._quick_op()
            return data
        return await self._receive_when_readable(max_bytes)

    async def receive_waiting(self, max_bytes: int) -> bytes:
        """Like :meth:`receive_some`, for bytes that cannot be there yet (the response to a
        request just sent): yields to the other tasks first, then receives, and waits for
        readability only if nothing came meanwhile.

        While the other connections' tasks run, the response usually arrives: one system
        call gets it, where waiting for readability at once takes two (registering with
        the I/O manager, then receiving) and a pass through the I/O manager's wakeups."""
        self._quick = 0
        await trio.lowlevel.checkpoint()
        try:
            data = self._sock.recv(max_bytes)
        except BlockingIOError:
            return await self._receive_when_readable(max_bytes)
        self._received += len(data)
        return data

    async def _receive_when_readable(self, max_bytes: int) -> bytes:
        self._quick = 0
        sock = self._sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:  # pragma: no cover - a spurious wakeup
                continue
            self._received += len(data)
            return data

    async def _quick_op(self) -> None:
        self._quick += 1
        if self._quick >= _QUICK_OPS:
            self._quick = 0
            await trio.lowlevel.checkpoint()

    def is_readable(self) -> bool:
        """Readable while idle: the peer closed the connection, or sent unasked bytes.

        On Linux the kernel's TCP_INFO answers: the connection's state (anything but
        ESTABLISHED means the peer closed or reset it) and the count of bytes it received,
        beyond those this socket has read (a FIN counts one).  ``getsockopt`` keeps the GIL,
        where a peeking ``recv`` gives it up: with a worker thread busy beside the loop,
        every system call that gives up the GIL costs the loop a wait to get it back, and
        this check is made on every reuse of a connection.  Elsewhere (or on a kernel whose
        TCP_INFO has no byte count), one ``recv`` with ``MSG_PEEK``.
        """
        if self._tcp_info:
            try:
                info = self._sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
            except OSError:
                return True
            if len(info) >= _TCP_INFO_SIZE:
                return (
                    info[0] != _TCP_ESTABLISHED
                    or _BYTES_RECEIVED(info, _BYTES_RECEIVED_AT)[0] != self._received
                )
            self._tcp_info = False  # (an old kernel: peek from now on)
        try:
            self._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        """Close at once; a task waiting on the socket gets ``trio.ClosedResourceError``."""
        if self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()


class Wire:
    """One connection's byte stream with a receive buffer."""

    __slots__ = ("_buf", "_receive_waiting", "_whole", "stream")

    def __init__(self, stream: trio.abc.Stream | PlainSocket) -> None:
        self.stream = stream
        self._buf = bytearray()
        #: the body of the last head read, when it came whole in the head's segment and
        #: nothing after it (see read_head); otherwise the body is in _buf
        self._whole: bytes | None = None
        self._receive_waiting = getattr(stream, "receive_waiting", stream.receive_some)

    @property
    def leftover(self) -> bool:
        """Bytes received beyond the last message (the connection must not be reused)."""
        return bool(self._buf) or self._whole is not None

    async def _fill(self, waiting: bool = False) -> bool:
        """Receive more bytes into the buffer; False at the end of the stream.  *waiting*:
        nothing can be there yet (see ``PlainSocket.receive_waiting``)."""
        receive = self._receive_waiting if waiting else self.stream.receive_some
        data = await receive(_RECEIVE)
        if not data:
            return False
        self._buf += data
        return True

    async def read_head(self) -> Head | None:
        """The next final response's head; None if the peer closed before sending a byte."""
        buf = self._buf
        if not buf and self._whole is None:
            # The usual case: nothing buffered, and the response (a small one: head and
            # body) arrives in one segment.  Parsed from the received bytes as they are:
            # the body is copied once (not into the buffer, shifted, and out again).
            data = await self._receive_waiting(_RECEIVE)
            if not data:
                return None
            end = data.find(b"\r\n\r\n")
            if end < 0:  # not the whole head yet: read on below
                buf += data
            else:
                if end > _MAX_HEAD:
                    raise _head_too_large()
                head = _parse_head(bytes(data[:end]))  # (bytes(b) is b itself)
                start = end + 4
                if 100 <= head.status < 200 and head.status != 101:
                    buf += data[start:]  # informational: the final head follows
                elif head.length is not None and len(data) - start == head.length > 0:
                    self._whole = bytes(data[start:])
                    return head
                else:
                    buf += data[start:]
                    return head
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise _head_too_large()
                # nothing yet: right after the request, wait before trying to receive
                # (what _fill does, inline: this runs for every response)
                data = await (self.stream.receive_some if buf else self._receive_waiting)(_RECEIVE)
                if not data:
                    if not buf:
                        return None
                    raise ProtocolError("connection closed in the middle of a response head")
                buf += data
                continue
            if end > _MAX_HEAD:  # (it came whole in one receive larger than the limit)
                raise _head_too_large()
            head = _parse_head(bytes(buf[:end]))
            del buf[: end + 4]
            if 100 <= head.status < 200 and head.status != 101:
                continue  # informational: the final response follows
            return head

    def take_buffered(self, head: Head) -> bytes | None:
        """The body of *head* if all of it is in the buffer already (Content-Length framing)."""
        whole = self._whole
        if whole is not None:
            self._whole = None
            return whole
        length = head.length
        if head.chunked or length is None or len(self._buf) < length:
            return None
        buf = self._buf
        if len(buf) == length:  # the usual case: one copy, not two
            body = bytes(buf)
            buf.clear()
        else:
            body = bytes(buf[:length])
            del buf[:length]
        return body

    async def body(self, head: Head) -> AsyncGenerator[bytes, None]:
        """The body's bytes as they arrive.  Raises Truncated if the connection ends early."""
        if self._whole is not None:  # (not taken with take_buffered: read it from the buffer)
            self._buf += self._whole
            self._whole = None
        if head.chunked:
            async for piece in self._chunked():
                yield piece
            return
        if head.length is None:  # until the connection closes
            if self._buf:
                yield bytes(self._buf)
                self._buf.clear()
            while True:
                data = await self.stream.receive_some(_RECEIVE)
                if not data:
                    return
                yield bytes(data)
        left = head.length
        if self._buf and left:
            take = min(left, len(self._buf))
            piece = bytes(self._buf[:take])
            del self._buf[:take]
            left -= take
            yield piece
        while left:
            data = await self.stream.receive_some(min(left, _RECEIVE))
            if not data:
                raise Truncated(
                    f"connection closed with {left} of {head.length} body bytes missing"
                )
            left -= len(data)
            yield bytes(data)

    async def _line(self) -> bytes:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                line = bytes(buf[:end])
                del buf[: end + 2]
                return line
            if len(buf) > _CHUNK_LINE_MAX:
                raise ProtocolError("chunk header line too long")
            if not await self._fill():
                raise Truncated("connection closed in the middle of a chunked body")

    async def _chunked(self) -> AsyncGenerator[bytes, None]:
        buf = self._buf
        while True:
            line = await self._line()
            match = _CHUNK_LINE(line)
            if match is None:
                raise ProtocolError(f"invalid chunk size line {line[:40]!r}")
            size = int(match[1], 16)
            if size == 0:
                trailers = []
                while trailer := await self._line():  # up to the empty line
                    trailers.append(trailer.decode("latin-1") + "\r\n")
                _header_fields("".join(trailers), "trailer")  # checked, not kept
                return
            while size:
                if not buf and not await self._fill():
                    raise Truncated("connection closed in the middle of a chunked body")
                take = min(size, len(buf))
                piece = bytes(buf[:take])
                del buf[:take]
                size -= take
                yield piece
            if await self._line() != b"":
                raise ProtocolError("chunk not followed by CRLF")
