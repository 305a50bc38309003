"""What a broken or hostile server (or a careless caller) must never get out of a fetch: an
untyped exception, a response meant for another request, a secret in a message.

Every case here was found by a review from outside (2026-12-07) and failed on the code
before its fix.  Each runs against a raw loopback server that sends exactly the bytes a
test scripts, on every transport the case concerns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import triofetch

#: asks: marked, so that the sessions without it (`nox -s stress`: `-m "not asks"`) leave it out
TRANSPORTS = ["trio", "httpx", pytest.param("asks", marks=pytest.mark.asks)]


def downloader(transport: str, tmp_path: Path, **kw: object) -> triofetch.Downloader:
    options: dict[str, object] = {
        "transport": transport,
        "temp_dir": tmp_path,
        "retries": 0,
        "backoff": 0.01,
        "read_timeout": 5.0,
        "connect_timeout": 5.0,
        "trust_env": False,
    }
    options.update(kw)
    return triofetch.Downloader(**options)  # type: ignore[arg-type]


def no_temp_files(tmp_path: Path) -> None:
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# -- numbers written with other digits than 0-9 -------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_retry_after_in_other_digits_is_no_retry_after(
    raw: Callable[..., object], tmp_path: Path, transport: str
) -> None:
    """``Retry-After: ²`` (a digit to ``str.isdigit``, not to ``float``) raised a bare
    ValueError out of ``fetch_many``: no outcome, the whole batch lost.  It is a failed
    outcome now, the header read as absent."""
    server = await raw(  # type: ignore[operator]
        lambda r: [b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n"]
    )
    url = f"http://127.0.0.1:{server.port}/f"
    async with downloader(transport, tmp_path, retries=1) as dl, dl.fetch_many([url]) as outcomes:
        (outcome,) = [o async for o in outcomes]
    assert not outcome.ok
    assert len(server.requests) == 2  # (retried after the usual backoff)
    if transport == "asks":  # (asks decodes headers as UTF-8: it cannot read this one)
        assert isinstance(outcome.error, triofetch.ConnectionFailed)
        return
    assert isinstance(outcome.error, triofetch.HTTPStatusError)
    assert outcome.error.status_code == 503 and outcome.error.retry_after is None
    no_temp_files(tmp_path)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_content_length_in_other_digits_is_never_a_bare_value_error(
    raw: Callable[..., object], tmp_path: Path, transport: str
) -> None:
    """A 204 with ``Content-Length: ²`` and an expected size: the early size check took
    "²" for a number and raised a bare ValueError.  Any transport refuses the response
    with a typed error now."""
    server = await raw(  # type: ignore[operator]
        lambda r: [b"HTTP/1.1 204 No Content\r\nContent-Length: \xb2\r\n\r\n"]
    )
    async with downloader(transport, tmp_path) as dl:
        with pytest.raises(triofetch.DownloadError) as caught:
            await dl.fetch(f"http://127.0.0.1:{server.port}/f", expected_size=0)
    assert caught.value.url == f"http://127.0.0.1:{server.port}/f"
    no_temp_files(tmp_path)


def test_numbers_in_other_digits_are_refused_by_the_command_line() -> None:
    from triofetch._cli._parser import byte_size, listen_address
    from triofetch._tempfiles import temp_file_pid

    for text in ("\u0663M", "\xb2"):  # (ARABIC-INDIC DIGIT THREE: int() takes it)
        with pytest.raises(Exception, match="expected a number of bytes"):
            byte_size(text)
    with pytest.raises(Exception, match="expected HOST:PORT"):
        listen_address("127.0.0.1:\u0663")
    assert temp_file_pid("tf-\u0663-abc.part") is None


# -- URLs that cannot be fetched: InvalidURL, never a bare ValueError or UnicodeError ---------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_redirect_to_a_malformed_location_is_invalid_url(
    raw: Callable[..., object], tmp_path: Path, transport: str
) -> None:
    """``Location: http://[::1`` raised the bare ValueError of ``urljoin``."""
    server = await raw(  # type: ignore[operator]
        lambda r: [b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n"]
    )
    url = f"http://127.0.0.1:{server.port}/start"
    async with downloader(transport, tmp_path) as dl:
        with pytest.raises(triofetch.DownloadError) as caught:
            await dl.fetch(url)
    if transport != "httpx":  # (httpx's own redirects: its RemoteProtocolError, typed)
        assert isinstance(caught.value, triofetch.InvalidURL)
    assert caught.value.url == url
    no_temp_files(tmp_path)


BAD_URLS = [
    "http://example..test/f",  # an empty label
    "http://" + "a" * 64 + ".test/f",  # a label over 63 characters
    "http://./f",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_host_names_the_resolver_refuses_are_invalid_urls(
    tmp_path: Path, transport: str, url: str
) -> None:
    """Host names IDNA refuses even in ASCII raised the resolver codec's bare
    UnicodeError (trio and httpx transports); they are refused before any lookup now."""
    async with downloader(transport, tmp_path) as dl:
        with pytest.raises(triofetch.InvalidURL) as caught:
            await dl.fetch(url)
    assert caught.value.url == url


@pytest.mark.parametrize("transport", ["trio", "httpx"])
async def test_a_lone_surrogate_in_the_path_is_an_invalid_url(
    tmp_path: Path, transport: str
) -> None:
    """A path no UTF-8 can encode: the trio transport raised the bare UnicodeEncodeError
    of ``quote``."""
    async with downloader(transport, tmp_path) as dl:
        with pytest.raises(triofetch.InvalidURL):
            await dl.fetch("http://127.0.0.1:9/\ud800")


async def test_per_host_with_a_malformed_url_is_an_invalid_url(tmp_path: Path) -> None:
    """With ``per_host``, the origin of a URL whose IPv6 literal is not closed raised the
    bare ValueError of ``urlsplit``; without it, the same URL was an InvalidURL."""
    for per_host in (None, 2):
        async with downloader("trio", tmp_path, per_host=per_host) as dl:
            with pytest.raises(triofetch.InvalidURL):
                await dl.fetch("http://[::1/x")


# -- request headers that cannot be sent: refused before any I/O, never shown -------------------


BAD_HEADERS = [
    {"X A": "v"},  # a name that is not a token: the trio transport sent it
    {"": "v"},
    {"X-A": "secret\n"},  # a line feed: header injection
    {"X-A": "a\x01secret"},  # another control character: sent by trio and httpx
    {"X-A": " secret "},  # whitespace at an end: sent by trio, refused by h11
    {"X-A": "s\u00e9cret"},  # not ASCII: sent by trio as Latin-1, a bare error from asks
    {"X-A": "s\u2713cret"},
]


@pytest.mark.parametrize("headers", BAD_HEADERS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_headers_that_cannot_be_sent_are_refused_before_any_request(
    raw: Callable[..., object], tmp_path: Path, transport: str, headers: dict[str, str]
) -> None:
    """The same refusal on every transport, before any I/O (the transports refused some
    with the value in the message, retried others as connection failures, sent others, or
    raised a bare UnicodeEncodeError); the message names the header, never its value."""
    server = await raw(  # type: ignore[operator]
        lambda r: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    )
    url = f"http://127.0.0.1:{server.port}/f"
    async with downloader(transport, tmp_path, retries=2) as dl:
        with pytest.raises(triofetch.InvalidInput) as caught:
            await dl.fetch(url, headers=headers)
    with pytest.raises(triofetch.InvalidInput):
        downloader(transport, tmp_path, headers=headers)
    assert server.requests == []
    ((name, _value),) = headers.items()
    assert repr(name) in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_token_that_cannot_go_in_a_header_is_refused_and_never_shown(
    raw: Callable[..., object], tmp_path: Path, transport: str
) -> None:
    """A token read from a file with its line feed: the trio transport put the token in
    its error message, httpx's did and retried the request three times."""
    server = await raw(  # type: ignore[operator]
        lambda r: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    )

    async def token() -> str:
        return "SECRET-TOKEN\n"

    async with downloader(transport, tmp_path, retries=2, token_provider=token) as dl:
        with pytest.raises(triofetch.InvalidInput) as caught:
            await dl.fetch(f"http://127.0.0.1:{server.port}/f")
    assert "SECRET" not in str(caught.value) and "token" in str(caught.value)
    assert server.requests == []


def test_the_trio_transports_own_header_check_never_shows_the_value() -> None:
    from triofetch.transports._trio._wire import encode_headers

    with pytest.raises(ValueError) as caught:
        encode_headers([("authorization", "Bearer SECRET\r\nX-Injected: 1")])
    assert "SECRET" not in str(caught.value) and "'authorization'" in str(caught.value)


# -- proxies: their passwords never shown, their refusals never retried -------------------------


async def test_a_proxy_password_with_a_raw_slash_hash_or_question_mark_is_never_shown() -> None:
    """Such a password ends the netloc early (the URL is not valid, but typed so), and
    redact_url showed it whole; the httpx transport raised httpx.InvalidURL quoting part
    of it; TransportOptions' repr showed any proxy password."""
    from triofetch._urls import redact_url
    from triofetch.transports import TransportOptions

    for password in ("pa/ss#w0rd", "pa?ss", "12/34", "p#w"):
        url = f"http://alice:{password}@127.0.0.1:3128"
        assert redact_url(url) == "http://***@127.0.0.1:3128"
        for transport in ("auto", "trio", "httpx"):
            with pytest.raises(triofetch.InvalidInput) as caught:  # (made, or opened)
                async with triofetch.Downloader(transport=transport, proxy=url):  # type: ignore[arg-type]
                    pass
            assert password not in str(caught.value) and "alice" not in str(caught.value)
    assert redact_url("https://registry.test/@scope/pkg") == "https://registry.test/@scope/pkg"
    shown = repr(TransportOptions(proxy="http://alice:S3CRET@127.0.0.1:3128"))
    assert "S3CRET" not in shown and "proxy='http://***@127.0.0.1:3128'" in shown


async def test_a_proxys_407_on_a_reused_connection_is_not_sent_again(
    raw: Callable[..., object], tmp_path: Path
) -> None:
    """The refusal (a ConnectionFailed, which is an OSError) was caught as a broken
    keep-alive connection: the request went to the proxy again, credentials and all, and
    the message named the URL twice."""

    def proxy(request: bytes) -> list[bytes]:
        if b" http://origin.invalid/deny " in request.split(b"\r\n")[0]:
            return [b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"]
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    server = await raw(proxy)  # type: ignore[operator]
    proxy_url = f"http://alice:pw@127.0.0.1:{server.port}"
    async with downloader("trio", tmp_path, proxy=proxy_url) as dl:
        await dl.fetch("http://origin.invalid/a")
        with pytest.raises(triofetch.ConnectionFailed) as caught:
            await dl.fetch("http://origin.invalid/deny")
    assert [r.split(b"\r\n")[0] for r in server.requests] == [
        b"GET http://origin.invalid/a HTTP/1.1",
        b"GET http://origin.invalid/deny HTTP/1.1",
    ]
    assert str(caught.value).count("http://origin.invalid/deny") == 1
    assert "HTTP 407" in str(caught.value)


# -- bytes no request asked for ---------------------------------------------------------------


async def test_bytes_sent_after_a_response_are_never_the_next_response(
    raw: Callable[..., object], tmp_path: Path
) -> None:
    """A server that sends a second response, unasked, just after a 204: a pooled
    connection was only checked after a second of idleness, so the next request took those
    bytes for its answer (a response meant for no one: the stuff of response smuggling)."""

    def script(request: bytes) -> list[bytes | float]:
        if request.startswith(b"GET /first "):
            stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE"
            return [b"HTTP/1.1 204 No Content\r\n\r\n", 0.05, stray]
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nREAL"]

    server = await raw(script)  # type: ignore[operator]
    async with downloader("trio", tmp_path) as dl:
        await dl.fetch(f"http://127.0.0.1:{server.port}/first")
        await trio.sleep(0.2)  # (the stray bytes are there, on the pooled connection)
        result = await dl.fetch(f"http://127.0.0.1:{server.port}/second")
    assert result.path.read_bytes() == b"REAL"
    assert server.connections == 2  # (the connection with stray bytes was dropped)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_location_in_raw_utf8_is_followed_as_utf8(
    raw: Callable[..., object], tmp_path: Path, transport: str
) -> None:
    """``Location: /café`` sent as raw UTF-8 bytes (as servers do): the trio transport
    read the head as Latin-1 and requested ``/caf%C3%83%C2%A9``."""

    def script(request: bytes) -> list[bytes]:
        path = request.split(b" ")[1]
        if path == b"/start":
            return ["HTTP/1.1 302 Found\r\nLocation: /café\r\nContent-Length: 0\r\n\r\n".encode()]
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)]

    server = await raw(script)  # type: ignore[operator]
    async with downloader(transport, tmp_path) as dl:
        result = await dl.fetch(f"http://127.0.0.1:{server.port}/start")
    assert result.path.read_bytes() == b"/caf%C3%A9"
