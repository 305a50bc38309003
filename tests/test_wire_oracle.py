"""The trio transport's HTTP/1.1 parser, proven against h11 as the oracle.

Generated responses are delivered to ``transports._trio._wire.Wire`` in arbitrary splits
across receives (one scripted stream, which fails the test if the parser asks for bytes the
server has not sent yet: an over-read would hang a real connection), and to an
``h11.Connection`` in one piece.

* **Valid input** (h11 accepts it): the same status, headers, body and reusability.
* **Invalid or ambiguous input**: wherever h11 refuses, ours refuses too.  Where h11 accepts
  input we refuse (bare LF line ends, obsolete line folding, control characters h11
  tolerates), refusing is allowed; where both accept, the results must agree, and ours may
  be less willing to reuse the connection, never more.

The default run draws a few hundred examples per property; ``nox -s stress`` many more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import h11
import pytest
import trio
from hypothesis import given, settings, strategies as st

from triofetch.transports._trio._wire import ProtocolError, Wire

#: examples per property: many, since each costs well under a millisecond
EXAMPLES = settings().max_examples * 12

MAX_HEAD = 64 * 1024


class OverRead(AssertionError):
    """The parser asked for bytes that the server has not sent."""


class Script:
    """A stream that hands out the pieces of the current response, then EOF or nothing."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.eof = False

    def feed(self, pieces: list[bytes], *, eof: bool) -> None:
        self.pieces = [p for p in pieces if p]
        self.eof = eof

    async def receive_some(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.pieces:
            piece = self.pieces[0]
            if len(piece) > max_bytes:
                self.pieces[0] = piece[max_bytes:]
                return piece[:max_bytes]
            return self.pieces.pop(0)
        if self.eof:
            return b""
        raise OverRead("the parser waited for bytes after the end of the response")

    async def send_all(self, data: bytes) -> None:  # pragma: no cover - never sends
        raise AssertionError("no request is sent")


@dataclass(frozen=True)
class Parsed:
    status: int
    reason: bytes
    headers: dict[str, str]
    body: bytes
    reusable: bool


Outcome = list[Parsed | str]  # a parsed response each, then "error" if one was refused


def _merge(pairs: list[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in pairs:
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


#: headers whose values h11 normalises (framing): compared by meaning, not by text
_FRAMING = ("content-length", "transfer-encoding")


def _comparable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in _FRAMING}


def oracle(responses: list[bytes], *, eof: bool) -> Outcome:
    """What h11 makes of *responses*, each sent after the request before it was answered."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    out: Outcome = []
    for index, raw in enumerate(responses):
        last = index == len(responses) - 1
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "example")]))
        conn.send(h11.EndOfMessage())
        ended_by_close = False
        try:
            conn.receive_data(raw)
            status = 0
            reason = b""
            headers: list[tuple[str, str]] = []
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if last and eof and not ended_by_close:
                        conn.receive_data(b"")  # the server closes the connection
                        ended_by_close = True
                        continue
                    out.append("incomplete")
                    return out
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    status, reason = event.status_code, bytes(event.reason)
                    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed before the end
                    out.append("error")
                    return out
        except h11.RemoteProtocolError:
            out.append("error")
            return out
        # (a body that ended with the connection leaves h11 DONE too, but nothing is left)
        reusable = conn.our_state is conn.their_state is h11.DONE and not ended_by_close
        out.append(Parsed(status, reason, _merge(headers), body, reusable))
        if not reusable:
            return out
        conn.start_next_cycle()
    return out


def ours(responses: list[bytes], cuts: list[list[int]], *, eof: bool) -> Outcome:
    """What the trio transport's parser makes of *responses*, each split at its *cuts*."""

    async def run() -> Outcome:
        script = Script()
        wire = Wire(script)  # type: ignore[arg-type]
        out: Outcome = []
        for index, raw in enumerate(responses):
            last = index == len(responses) - 1
            points = [0, *sorted({c for c in cuts[index] if 0 < c < len(raw)}), len(raw)]
            script.feed([raw[a:b] for a, b in itertools.pairwise(points)], eof=last and eof)
            try:
                head = await wire.read_head()
                if head is None:
                    out.append("error")
                    return out
                body = wire.take_buffered(head)
                if body is None:
                    body = b"".join([piece async for piece in wire.body(head)])
            except ProtocolError:
                out.append("error")
                return out
            reusable = head.keep_alive and not wire.leftover
            out.append(
                Parsed(head.status, head.reason.encode("latin-1"), head.headers, body, reusable)
            )
            if not reusable:
                return out
        return out

    return trio.run(run)


def same(a: Parsed, b: Parsed) -> bool:
    return (a.status, a.reason, _comparable(a.headers), a.body) == (
        b.status,
        b.reason,
        _comparable(b.headers),
        b.body,
    )


# -- generated valid responses ------------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHARS = "".join(chr(c) for c in range(0x21, 0x7F)) + "éü\xa0\xff"

names = st.text(TOKEN_CHARS, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "connection")
)
values = st.one_of(
    st.just(""),
    st.lists(st.text(VCHARS, min_size=1, max_size=10), min_size=1, max_size=3).map(" ".join),
    st.tuples(st.text(VCHARS, min_size=1, max_size=5), st.text(VCHARS, min_size=1, max_size=5)).map(
        "\t".join
    ),
)
header_lists = st.lists(st.tuples(names, values), max_size=6)
ows = st.sampled_from(["", " ", "  ", "\t", " \t"])
reasons = st.one_of(st.just(None), st.text(VCHARS + " \t", max_size=20))


@dataclass
class Plan:
    raw: bytes
    reusable: bool  # what the generator meant: keep-alive and self-delimited


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    out = bytearray()
    at = 0
    while at < len(body):
        size = draw(st.integers(1, len(body) - at))
        digits = format(size, draw(st.sampled_from(["x", "X"])))
        digits = "0" * draw(st.integers(0, max(0, min(3, 20 - len(digits))))) + digits
        ext = draw(st.sampled_from(["", ";a", ";name=value", ';q="x y"', ";a=1;b"]))
        out += f"{digits}{ext}{draw(ows)}\r\n".encode()
        out += body[at : at + size] + b"\r\n"
        at += size
    last_ext = draw(st.sampled_from(["", ";end"]))
    out += f"{'0' * draw(st.integers(1, 3))}{last_ext}\r\n".encode()
    for name, value in draw(st.lists(st.tuples(names, values), max_size=2)):
        out += f"{name}: {value}\r\n".encode("latin-1")
    out += b"\r\n"
    return bytes(out)


@st.composite
def response(draw: st.DrawFn, *, may_close: bool) -> Plan:
    version = draw(st.sampled_from(["HTTP/1.1"] * 5 + ["HTTP/1.0"]))
    out = bytearray()
    for _ in range(draw(st.integers(0, 2))):  # informational responses first
        code = draw(st.sampled_from([100, 102, 103]))
        out += f"{version} {code} Info\r\n".encode()
        for name, value in draw(st.lists(st.tuples(names, values), max_size=2)):
            out += f"{name}:{draw(ows)}{value}{draw(ows)}\r\n".encode("latin-1")
        out += b"\r\n"
    status = draw(st.sampled_from([200, 200, 200, 201, 203, 206, 301, 404, 500, 204, 304]))
    reason = draw(reasons)
    out += f"{version} {status}".encode() + (
        b"" if reason is None else b" " + reason.encode("latin-1")
    )
    out += b"\r\n"
    lines = [(n, v) for n, v in draw(header_lists)]
    connection = draw(st.sampled_from([None, None, "keep-alive", "close", "Keep-Alive, Upgrade"]))
    if connection is not None:
        lines.append(("Connection", connection))
    body = draw(st.binary(max_size=300))
    framings = ["length", "chunked"] + (["close"] if may_close else [])
    framing = draw(st.sampled_from(framings))
    empty = status in (204, 304)
    wire_body = b""
    if framing == "length":
        n = str(0 if empty else len(body))
        form = draw(st.sampled_from(["one", "list", "twice"]))
        if form == "one":
            lines.append(("Content-Length", n))
        elif form == "list":
            lines.append(("Content-Length", f"{n}, {n}"))
        else:
            lines += [("Content-Length", n), ("content-length", n)]
        wire_body = b"" if empty else body
    elif framing == "chunked":
        lines.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked"]))))
        wire_body = b"" if empty else draw(chunked_body(body))
    else:
        wire_body = b"" if empty else body
    lines = draw(st.permutations(lines))
    for name, value in lines:
        out += f"{name}:{draw(ows)}{value}{draw(ows)}\r\n".encode("latin-1")
    out += b"\r\n" + wire_body
    closes = version == "HTTP/1.0" or connection == "close" or (framing == "close" and not empty)
    return Plan(bytes(out), not closes)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[bytes], list[list[int]], bool]:
    plans: list[Plan] = []
    for _ in range(draw(st.integers(1, 3))):
        plan = draw(response(may_close=True))
        plans.append(plan)
        if not plan.reusable:
            break
    raws = [p.raw for p in plans]
    cuts = [draw(st.lists(st.integers(1, max(1, len(r) - 1)), max_size=6)) for r in raws]
    eof = not plans[-1].reusable
    return raws, cuts, eof


@settings(max_examples=EXAMPLES)
@given(conversations())
def test_valid_responses_parse_as_h11_parses_them(
    case: tuple[list[bytes], list[list[int]], bool],
) -> None:
    raws, cuts, eof = case
    expected = oracle(raws, eof=eof)
    assert all(isinstance(p, Parsed) for p in expected), (expected, raws)  # a valid case
    got = ours(raws, cuts, eof=eof)
    assert len(got) == len(expected), (got, expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert isinstance(mine, Parsed), (mine, raws)
        assert isinstance(theirs, Parsed)
        assert same(mine, theirs), (mine, theirs)
        assert mine.reusable == theirs.reusable, (mine, theirs, raws)


# -- generated invalid or ambiguous responses ----------------------------------------------

BAD_CHUNK_SIZES = ["0x5", "5_0", "+5", "-5", " 5", "\t5", "", "g", "5 5", "0" * 20 + "5", "²"]
BAD_LENGTHS = ["-5", "+5", "5 5", "0x5", "5.0", "1" * 21, "²", "٥", "5, 6", ""]
BAD_NAMES = ["bad name", "bad(name)", "a/b", "a@b", "é", "", "a\x01b", " lead", "a=b"]
BAD_VALUE_CHARS = ["\x00", "\x0b", "\x0c", "\r", "\x01", "\x7f", "\x1f"]
BAD_TE = ["gzip", "gzip, chunked", "chunked, gzip", "identity", "chunked, chunked", "x"]
BAD_STATUS = [
    "HTTP/1.1 2000 OK",
    "HTTP/1.1 20 OK",
    "HTTP/1.1 ²00 OK",
    "HTTP/1.1  200 OK",
    "HTTP/2 200 OK",
    "HTTP/1.1 200\tOK",
    "http/1.1 200 OK",
    "HTTP/1.1 200 O\x00K",
    "HTTP/1.1 200 O\x0bK",
    "HTTP/1.1 -20 OK",
    " HTTP/1.1 200 OK",
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, list[int], str]:
    body = draw(st.binary(min_size=1, max_size=100))
    kind = draw(
        st.sampled_from(
            [
                "chunk-size",
                "length",
                "name",
                "value",
                "te",
                "te-twice",
                "cl-and-te",
                "status",
                "bare-lf",
                "obs-fold",
                "truncated",
                "chunk-no-crlf",
                "bad-trailer",
                "reason-cr",
            ]
        )
    )
    head = "HTTP/1.1 200 OK\r\n"
    extra = "X-A: b\r\n"
    framing = f"Content-Length: {len(body)}\r\n"
    wire_body = body
    tail = b""
    if kind == "chunk-size":
        bad = draw(st.sampled_from(BAD_CHUNK_SIZES))
        framing = "Transfer-Encoding: chunked\r\n"
        wire_body = bad.encode() + b"\r\n" + body[:5] + b"\r\n0\r\n\r\n"
    elif kind == "length":
        framing = f"Content-Length: {draw(st.sampled_from(BAD_LENGTHS))}\r\n"
    elif kind == "name":
        extra = f"{draw(st.sampled_from(BAD_NAMES))}: v\r\n"
    elif kind == "value":
        char = draw(st.sampled_from(BAD_VALUE_CHARS))
        extra = f"X-A: a{char}b\r\n"
    elif kind == "te":
        framing = f"Transfer-Encoding: {draw(st.sampled_from(BAD_TE))}\r\n"
        wire_body = b"5\r\nhello\r\n0\r\n\r\n"
    elif kind == "te-twice":
        framing = "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
        wire_body = b"5\r\nhello\r\n0\r\n\r\n"
    elif kind == "cl-and-te":
        framing = f"Content-Length: {draw(st.integers(0, 20))}\r\nTransfer-Encoding: chunked\r\n"
        wire_body = b"5\r\nhello\r\n0\r\n\r\n"
    elif kind == "status":
        head = draw(st.sampled_from(BAD_STATUS)) + "\r\n"
    elif kind == "bare-lf":
        head = head.replace("\r\n", "\n") if draw(st.booleans()) else head
        extra = extra.replace("\r\n", "\n")
    elif kind == "obs-fold":
        extra = "X-A: b\r\n" + draw(st.sampled_from([" ", "\t"])) + "folded\r\n"
    elif kind == "truncated":
        wire_body = body[: draw(st.integers(0, len(body) - 1))]
    elif kind == "chunk-no-crlf":
        framing = "Transfer-Encoding: chunked\r\n"
        wire_body = b"5\r\nhelloXX0\r\n\r\n"
    elif kind == "bad-trailer":
        framing = "Transfer-Encoding: chunked\r\n"
        trailer = draw(st.sampled_from([b"no colon", b"bad name: v", b": v", b"X: a\x00b"]))
        wire_body = b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n"
    elif kind == "reason-cr":
        head = "HTTP/1.1 200 O\rK\r\n"
    if kind in ("length", "te", "te-twice") and draw(st.booleans()):
        # the same framing on a response that has no body: as broken (h11 refuses it too)
        bodiless = draw(st.sampled_from(["204 No Content", "304 Not Modified", "100 Continue"]))
        if bodiless.startswith("1"):  # (an informational response, then a good one)
            tail = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        head, wire_body = f"HTTP/1.1 {bodiless}\r\n", b""
    raw = head.encode("utf-8") + extra.encode("utf-8") + framing.encode("utf-8") + b"\r\n"
    raw += wire_body + tail
    cuts = draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=5))
    return raw, cuts, kind


@settings(max_examples=EXAMPLES)
@given(mutated())
def test_ours_refuses_wherever_h11_refuses(case: tuple[bytes, list[int], str]) -> None:
    raw, cuts, kind = case
    expected = oracle([raw], eof=True)
    try:
        got = ours([raw], [cuts], eof=True)
    except OverRead:  # pragma: no cover - eof=True: the script never runs dry
        raise
    if expected[-1] in ("error", "incomplete"):
        assert got[-1] == "error", (kind, raw, got)
    elif got[-1] != "error":
        mine, theirs = got[-1], expected[-1]
        assert isinstance(mine, Parsed) and isinstance(theirs, Parsed)
        assert same(mine, theirs), (kind, raw, mine, theirs)
        assert not (mine.reusable and not theirs.reusable), (kind, raw)


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        # chunk sizes int(text, 16) used to accept
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5_0\r\n"
        + b"x" * 80
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"0" * 21
        + b"5\r\nhello\r\n0\r\n\r\n",
        # a Unicode digit in a length or status (str.isdigit() says yes, int() then fails)
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",
        b"HTTP/1.1 2\xb20 OK\r\nContent-Length: 0\r\n\r\n",
        # header names outside the token grammar, and a value with a NUL
        b"HTTP/1.1 200 OK\r\nbad name: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        # a bare LF inside a CRLF line: two header lines to h11, one value with an LF to us
        b"HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello",
        # transfer codings the transport cannot undo, and two Transfer-Encoding headers
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        # more than 20 digits of Content-Length
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 21 + b"\r\n\r\n",
        # a trailer that is not a header line
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno colon\r\n\r\n",
        # broken framing on responses without a body (the parser skipped the check there)
        b"HTTP/1.1 204 No Content\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: \xb2\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: x\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    ],
)
def test_known_smuggling_shapes_are_refused(raw: bytes) -> None:
    assert oracle([raw], eof=True)[-1] == "error"
    assert ours([raw], [[]], eof=True)[-1] == "error"


def test_the_connection_header_is_read_by_tokens() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, enclosed\r\nContent-Length: 2\r\n\r\nok"
    (theirs,) = oracle([raw], eof=False)
    (mine,) = ours([raw], [[]], eof=False)
    assert isinstance(theirs, Parsed) and isinstance(mine, Parsed)
    assert theirs.reusable and mine.reusable
