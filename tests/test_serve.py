"""The content app (``triofetch.serve``) on a real server: hypercorn's Trio worker on
127.0.0.1, a port of its own, over a store filled by ``triofetch sync`` from a loopback
FaultServer.

Clients: a raw socket client written here (so that no client library normalises a hostile
target before it is sent), curl (a client no one in this project wrote: ranges, HEAD,
conditional requests, redirects), and ``triofetch sync`` from the served ``PULP_MANIFEST``
into another store (the chain: the copy equals the source version).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import logging
import os
import resource
import shutil
import subprocess
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import trio

import triofetch
from tests._cli_helpers import Result, publish, run_cli, run_cli_in_process
from triofetch import (
    ContentUnitCreator,
    DeclarativeArtifact,
    DeclarativeUnit,
    Downloader,
    open_store,
)
from triofetch.errors import InvalidInput
from triofetch.serve import ContentApp, _app as _app_module, _ondemand, make_app, serve_app
from triofetch.store import Store
from triofetch.testing import FaultServer

BIG = os.urandom(2 * 1024 * 1024 + 123)  # body pieces of 256 KiB, 512 KiB, 1 MiB and the rest
FILES: dict[str, bytes] = {
    "a.txt": b"hello\n",
    "dir/sub/big.bin": BIG,
    "dir/c.tar.gz": b"\x1f\x8b not really gzip",
    "<b>&amp;'x\".html": b"<p>escaped?</p>\n",
    "with space/été.txt": "ü\n".encode(),
    "empty.txt": b"",
    "versions/notes.txt": b"a top-level directory named versions\n",
    "100%.txt": b"percent\n",
}
#: what version 2 adds
NEW = {"new.txt": b"only in version 2\n"}
OTHER = {"o.txt": b"another repository\n"}
LAZY = {"lazy.bin": b"recorded, never fetched\n"}

SECRET = b"outside the storage: must never be served\n"
#: the directory of triofetch's own modules (what tracemalloc attributes to triofetch)
TRIOFETCH_SOURCE = os.path.dirname(os.path.abspath(triofetch.__file__))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def root(http_server_module: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store: repository r (version 1: FILES, version 2: FILES + NEW), repository other,
    repository lazy (on_demand: recorded, not stored)."""
    where = tmp_path_factory.mktemp("serve") / "root"
    server = http_server_module

    def sync(files: Mapping[str, bytes], prefix: str, repository: str, *more: str) -> None:
        # (the command's main() in process: the store is what the tests are about)
        url = publish(server, files, prefix=prefix)
        result = run_cli_in_process("sync", url, "--root", where, "--repository", repository, *more)
        assert result.code == 0, result

    sync(FILES, "/v1", "r")
    sync({**FILES, **NEW}, "/v2", "r")
    sync(OTHER, "/other", "other")
    sync(LAZY, "/lazy", "lazy", "--policy", "on_demand")
    return where


@dataclass
class Served:
    url: str
    port: int
    store: Store
    app: ContentApp


@pytest.fixture
async def served(root: Path) -> AsyncIterator[Served]:
    async with await open_store(None, root=root, create=False, readonly=True) as store:
        app = make_app(store)
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, app, host="127.0.0.1", port=0))
            url = urls[0]
            yield Served(url, int(url.rsplit(":", 1)[1]), store, app)
            nursery.cancel_scope.cancel()


# -- a raw client ----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw(
    port: int, target: bytes | str, method: str = "GET", headers: Mapping[str, str] = {}
) -> Reply:
    """Send one request with *target* exactly as given; read the reply until the server
    closes (``Connection: close``)."""
    if isinstance(target, str):
        target = target.encode("utf-8")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
    lines.append(b"Connection: close")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
            data = bytearray()
            while chunk := await stream.receive_some(1 << 16):
                data += chunk
    return parse_reply(bytes(data))


def parse_reply(data: bytes) -> Reply:
    """A whole response as read to the close: status, headers (lower-case names), body."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), parsed, body)


async def get(served: Served, path: str, **headers: str) -> Reply:
    return await raw(
        served.port, path, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


def url_path(relative: str, prefix: str = "/r/") -> str:
    return prefix + quote(relative)


# -- files -----------------------------------------------------------------------------------


async def test_every_file_of_the_latest_version(served: Served) -> None:
    for path, data in {**FILES, **NEW}.items():
        reply = await get(served, url_path(path))
        assert reply.status == 200, path
        assert reply.body == data, path
        assert reply.headers["content-length"] == str(len(data))
        assert reply.headers["etag"] == f'"{sha(data)}"'
        assert reply.headers["accept-ranges"] == "bytes"


async def test_a_given_version(served: Served) -> None:
    reply = await get(served, "/r/versions/1/a.txt")
    assert (reply.status, reply.body) == (200, FILES["a.txt"])
    assert (await get(served, "/r/versions/1/new.txt")).status == 404  # not in version 1
    assert (await get(served, "/r/versions/2/new.txt")).body == NEW["new.txt"]
    assert (await get(served, "/r/versions/3/a.txt")).status == 404
    # a top-level "versions" directory of the latest version, beside the version routes
    notes = await get(served, "/r/versions/notes.txt")
    assert notes.body == FILES["versions/notes.txt"]


async def test_content_types(served: Served) -> None:
    assert (await get(served, "/r/a.txt")).headers["content-type"] == "text/plain"
    assert (await get(served, "/r/dir/sub/big.bin")).headers[
        "content-type"
    ] == "application/octet-stream"
    # a compressed file is what it is: no Content-Encoding for a client to undo
    gz = await get(served, "/r/dir/c.tar.gz")
    assert gz.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in gz.headers
    html = await get(served, url_path("<b>&amp;'x\".html"))
    assert html.headers["content-type"] == "text/html"


async def test_head_is_get_without_the_body(served: Served) -> None:
    got = await get(served, "/r/dir/sub/big.bin")
    head = await raw(served.port, "/r/dir/sub/big.bin", "HEAD")
    assert head.status == 200 and head.body == b""
    for name in ("content-length", "etag", "content-type", "accept-ranges"):
        assert head.headers[name] == got.headers[name]


async def test_if_none_match(served: Served) -> None:
    etag = f'"{sha(FILES["a.txt"])}"'
    reply = await get(served, "/r/a.txt", if_none_match=etag)
    assert (reply.status, reply.body, reply.headers["etag"]) == (304, b"", etag)
    weak_in_a_list = f'"nope", W/{etag}'
    assert (await get(served, "/r/a.txt", if_none_match=weak_in_a_list)).status == 304
    assert (await get(served, "/r/a.txt", if_none_match="*")).status == 304
    other = await get(served, "/r/a.txt", if_none_match=f'"{"0" * 64}"')
    assert (other.status, other.body) == (200, FILES["a.txt"])


async def test_if_match(served: Served, http_server_module: FaultServer) -> None:
    """``If-Match`` (RFC 9110, 13.1.1: an origin server must evaluate it): another entity
    tag (or a weak one: strong comparison) is ``412 Precondition Failed`` without the
    content, before ``If-None-Match`` and ``Range`` are looked at; ``*`` or the file's own
    tag goes on.  It was ignored: the whole file, 200, whatever it named."""
    data = FILES["a.txt"]
    etag = f'"{sha(data)}"'
    other = f'"{"0" * 64}"'
    for if_match in (etag, "*", f"{other}, {etag}"):
        reply = await get(served, "/r/a.txt", if_match=if_match)
        assert (reply.status, reply.body) == (200, data), if_match
    part = await get(served, "/r/dir/sub/big.bin", if_match=f'"{sha(BIG)}"', range="bytes=0-9")
    assert (part.status, part.body) == (206, BIG[:10])
    for if_match in (other, f"W/{etag}"):
        for path, content in (("/r/a.txt", data), ("/r/dir/sub/big.bin", BIG)):
            reply = await get(served, path, if_match=if_match, if_none_match="*", range="bytes=0-")
            assert reply.status == 412, (path, if_match)
            assert content[:6] not in reply.body
            assert reply.headers["etag"] == f'"{sha(content)}"'
        head = await raw(served.port, "/r/a.txt", "HEAD", {"If-Match": if_match})
        assert (head.status, head.body) == (412, b"")
    manifest = await get(served, "/r/PULP_MANIFEST", if_match=other)
    assert manifest.status == 412
    # a file not stored: its declared digest, nothing fetched when it fails
    lazy = LAZY["lazy.bin"]
    before = http_server_module.count("/lazy/lazy.bin")
    assert (await get(served, "/lazy/lazy.bin", if_match=other)).status == 412
    assert http_server_module.count("/lazy/lazy.bin") == before
    reply = await get(served, "/lazy/lazy.bin", if_match=f'"{sha(lazy)}"')
    assert (reply.status, reply.body) == (200, lazy)


async def test_if_match_on_index_pages(served: Served) -> None:
    """An index page has no entity tag: ``If-Match`` naming any tag is ``412`` (RFC 9110
    13.1.1: no current representation's tag matches), ``*`` goes on (there is one).  It was
    ignored there (200).  A redirect or a 404 ignores it (13.2.1: preconditions count only
    where the answer would be a 2xx)."""
    pages = ("/", "/r/", "/r/dir/", "/r/dir/sub/", "/r/versions/", "/r/versions/1/")
    other = f'"{sha(FILES["a.txt"])}"'
    for page in pages:
        for method in ("GET", "HEAD"):
            for tag in (other, "W/" + other, '"x", "y"'):
                reply = await raw(served.port, page, method, {"If-Match": tag})
                assert reply.status == 412, (page, method, tag)
                assert b"Index of" not in reply.body
                assert "etag" not in reply.headers
            passes = await raw(served.port, page, method, {"If-Match": "*"})
            assert passes.status == 200, (page, method)
            assert passes.headers["content-type"] == "text/html; charset=utf-8"
    # checked before If-None-Match (RFC 9110 13.2.2)
    both = await get(served, "/r/", if_match=other, if_none_match="*")
    assert both.status == 412
    for redirect in ("/r", "/r/dir", "/r/versions", "/r/versions/1"):
        reply = await get(served, redirect, if_match=other)
        assert reply.status == 301, redirect
    assert (await get(served, "/r/nothing/", if_match=other)).status == 404
    assert (await get(served, "/nothing/", if_match=other)).status == 404


async def test_if_none_match_on_index_pages(served: Served) -> None:
    """``If-None-Match: *`` is false where the page exists (RFC 9110 13.1.2, which an
    origin server must evaluate): ``304``; it was ignored (200).  A list of tags never
    matches a page, which has none: 200."""
    for page in ("/", "/r/", "/r/dir/", "/r/versions/", "/r/versions/1/"):
        for method in ("GET", "HEAD"):
            reply = await raw(served.port, page, method, {"If-None-Match": "*"})
            assert (reply.status, reply.body) == (304, b""), (page, method)
        tags = await get(served, page, if_none_match=f'"{sha(FILES["a.txt"])}", W/"x"')
        assert tags.status == 200 and b"Index of" in tags.body
        both = await get(served, page, if_match="*", if_none_match="*")
        assert both.status == 304
    assert (await get(served, "/r/dir", if_none_match="*")).status == 301


async def test_if_match_on_the_page_of_a_repository_without_a_version(tmp_path: Path) -> None:
    """The page of a repository with no complete version yet is an index page too."""
    async with await open_store(None, root=tmp_path / "root") as store:
        await store.create_repository("empty")
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, make_app(store), port=0))
            port = int(urls[0].rsplit(":", 1)[1])
            failed = await raw(port, "/empty/", headers={"If-Match": '"x"'})
            assert failed.status == 412
            passes = await raw(port, "/empty/", headers={"If-Match": "*"})
            assert passes.status == 200 and b"has no complete version yet" in passes.body
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, len(BIG) - 1),
        ("bytes=-500", len(BIG) - 500, len(BIG) - 1),
        ("bytes=262140-262150", 262140, 262150),  # across the first piece's end
        ("bytes=5-99999999", 5, len(BIG) - 1),  # the end clipped to the file
        ("bytes=-99999999", 0, len(BIG) - 1),
        ("bytes=5-" + "9" * 20, 5, len(BIG) - 1),  # past 19 digits too (was the whole file)
        ("bytes=-" + "9" * 20, 0, len(BIG) - 1),
        ("BYTES = 7 - 7", 7, 7),
        # leading zeros, more digits than any size (were a 416, the whole file, the whole
        # file as a "range")
        ("bytes=" + "0" * 20 + "5-9", 5, 9),
        ("bytes=5-" + "0" * 20 + "9", 5, 9),
        ("bytes=-" + "0" * 20 + "500", len(BIG) - 500, len(BIG) - 1),
    ],
)
async def test_single_ranges(served: Served, spec: str, start: int, end: int) -> None:
    reply = await get(served, "/r/dir/sub/big.bin", range=spec)
    assert reply.status == 206
    assert reply.body == BIG[start : end + 1]
    assert reply.headers["content-range"] == f"bytes {start}-{end}/{len(BIG)}"
    assert reply.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=99999999-",
        "bytes=-0",
        f"bytes={len(BIG)}-",
        "bytes=" + "9" * 20 + "-",
        "bytes=-" + "0" * 30,
    ],
)
async def test_unsatisfiable_ranges(served: Served, spec: str) -> None:
    reply = await get(served, "/r/dir/sub/big.bin", range=spec)
    assert reply.status == 416
    assert reply.headers["content-range"] == f"bytes */{len(BIG)}"
    assert reply.body == b""
    empty = await get(served, "/r/empty.txt", range="bytes=0-")
    assert (empty.status, empty.headers["content-range"]) == (416, "bytes */0")


@pytest.mark.parametrize(
    "spec", ["bytes=0-1,5-6", "items=0-5", "bytes=5-1", "bytes=x-y", "bytes=-", "bytes"]
)
async def test_ranges_answered_with_the_whole_file(served: Served, spec: str) -> None:
    reply = await get(served, "/r/a.txt", range=spec)
    assert (reply.status, reply.body) == (200, FILES["a.txt"])
    assert "content-range" not in reply.headers


@pytest.mark.parametrize("spec", ["bytes=2-3", "bytes=-2", "bytes=1-"])
async def test_a_range_of_a_small_file_not_kept_yet(served: Served, spec: str) -> None:
    """The first request for a small stored file (kept in memory from then on) asking
    for a range that does not start at 0: it was read from the range's start for the
    whole file's length, the read came up short, and the answer was a 500 "damaged"."""
    data = FILES["a.txt"]
    reply = await get(served, "/r/a.txt", range=spec)
    first, _, last = spec.removeprefix("bytes=").partition("-")
    start = len(data) - int(last) if not first else int(first)
    end = int(last) if first and last else len(data) - 1
    assert (reply.status, reply.body) == (206, data[start : end + 1])
    assert (await get(served, "/r/a.txt")).body == data  # (and what it kept is whole)


async def test_redirects_keep_the_prefix_the_app_is_mounted_under(served: Served) -> None:
    """Mounted under ``/mirror`` (ASGI ``root_path``), ``/mirror/r`` was redirected to
    ``/r/``, outside the mount."""
    for path, expected in (("/mirror/r", b"/mirror/r/"), ("/mirror/r/dir", b"/mirror/r/dir/")):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "/mirror",
            "headers": [],
            "query_string": b"",
        }
        with trio.fail_after(10):
            await served.app(scope, receive, send)
        assert sent[0]["status"] == 301
        assert dict(sent[0]["headers"])[b"location"] == expected


async def test_a_range_of_spaces_is_answered_at_once(served: Served) -> None:
    """``Range: bytes=<2,500 spaces>-<2,500 spaces>x``: the regex that read ranges
    backtracked for half a minute on it, the server's loop blocked for every client."""
    spec = "bytes=" + " " * 2500 + "-" + " " * 2500 + "x"
    with trio.fail_after(10):  # (a bound, not a measurement: it took 30 s before)
        reply = await get(served, "/r/a.txt", range=spec)
    assert (reply.status, reply.body) == (200, FILES["a.txt"])


async def test_if_range(served: Served) -> None:
    etag = f'"{sha(BIG)}"'
    same = await get(served, "/r/dir/sub/big.bin", range="bytes=0-3", if_range=etag)
    assert (same.status, same.body) == (206, BIG[:4])
    changed = await get(served, "/r/dir/sub/big.bin", range="bytes=0-3", if_range='"other"')
    assert (changed.status, len(changed.body)) == (200, len(BIG))


async def test_the_generated_manifest_lists_exactly_the_version(served: Served) -> None:
    for number, files in ((1, FILES), (2, {**FILES, **NEW})):
        reply = await get(served, f"/r/versions/{number}/PULP_MANIFEST")
        assert reply.status == 200
        expected = "".join(f"{p},{sha(d)},{len(d)}\n" for p, d in sorted(files.items()))
        assert reply.body.decode("utf-8") == expected
        assert reply.headers["etag"] == f'"{sha(reply.body)}"'
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    latest = await get(served, "/r/PULP_MANIFEST")
    assert latest.body == (await get(served, "/r/versions/2/PULP_MANIFEST")).body
    again = await get(served, "/r/PULP_MANIFEST", if_none_match=latest.headers["etag"])
    assert again.status == 304
    part = await get(served, "/r/PULP_MANIFEST", range="bytes=-10")
    assert (part.status, part.body) == (206, latest.body[-10:])
    head = await raw(served.port, "/r/PULP_MANIFEST", "HEAD")
    assert (head.body, head.headers["content-length"]) == (b"", str(len(latest.body)))


async def test_not_found(served: Served) -> None:
    for path in (
        "/nope/",
        "/nope",
        "/nope/versions",
        "/nope/versions/",
        "/nope/versions/1/",
        "/nope/a.txt",
        "/r/missing.txt",
        "/r/a.txt/",
        "/r/dir/sub/nothing/",
        "/r/versions/0/a.txt",
        "/r/versions/99999999999999999999/",
        # a version number is written one way only (it was version 1, served twice over)
        "/r/versions/01/",
        "/r/versions/01/a.txt",
        "/r/versions/001/",
        "/r/versions/00/",
        "/r/versions/+1/",
        "/r/versions/%EF%BC%91/",  # a fullwidth 1
        "/other/a.txt",
        "/favicon.ico",
    ):
        assert (await get(served, path)).status == 404, path


async def test_only_get_and_head(served: Served) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "post", "Put", "FOO"):
        reply = await raw(served.port, "/r/a.txt", method)
        assert reply.status == 405, method
        assert reply.headers["allow"] == "GET, HEAD"


async def test_a_lowercase_method_reaches_the_app_uppercased(served: Served) -> None:
    """What docs/serve.rst says of RFC 9110 9.1 (methods are case-sensitive): hypercorn
    upper-cases the method before the ASGI app sees it, so ``get`` and ``head`` are served
    as ``GET`` and ``HEAD``; the app cannot answer them otherwise.  Should hypercorn pass
    the method as sent one day, this fails, and the app's 405 takes them (the docs then
    change)."""
    for method, body in (("get", FILES["a.txt"]), ("Get", FILES["a.txt"]), ("head", b"")):
        reply = await raw(served.port, "/r/a.txt", method)
        assert (reply.status, reply.body) == (200, body), method


async def test_a_file_not_stored_is_fetched_and_not_stored_on_a_read_only_store(
    served: Served, http_server_module: FaultServer
) -> None:
    """An on-demand file served by an app over a read-only store: streamed from the remote
    every time, never stored (tests/test_serve_ondemand.py: a writable store keeps it)."""
    lazy = LAZY["lazy.bin"]
    before = http_server_module.count("/lazy/lazy.bin")
    for _ in range(2):
        reply = await get(served, "/lazy/lazy.bin")
        assert reply.status == 200 and reply.body == lazy
        assert reply.headers["etag"] == f'"{sha(lazy)}"'
    assert http_server_module.count("/lazy/lazy.bin") == before + 2
    assert [m.relative_path for m in await served.store.missing_artifacts("lazy")] == ["lazy.bin"]
    # still listed: the version holds it
    manifest = await get(served, "/lazy/PULP_MANIFEST")
    assert manifest.body == f"lazy.bin,{sha(lazy)},{len(lazy)}\n".encode()


# -- index pages -----------------------------------------------------------------------------


async def test_index_pages_at_every_level(served: Served) -> None:
    top = await get(served, "/")
    assert top.status == 200 and top.headers["content-type"] == "text/html; charset=utf-8"
    for name in ("lazy", "other", "r"):
        assert f'<a href="{name}/">'.encode() in top.body
    latest = await get(served, "/r/")
    for link in ('href="a.txt"', 'href="dir/"', 'href="versions/"', 'href="PULP_MANIFEST"'):
        assert link.encode() in latest.body
    assert b'href="new.txt"' in latest.body
    versions = await get(served, "/r/versions/")
    assert b'href="1/"' in versions.body and b'href="2/"' in versions.body
    v1 = await get(served, "/r/versions/1/")
    assert b'href="a.txt"' in v1.body and b"new.txt" not in v1.body
    sub = await get(served, "/r/versions/1/dir/")
    assert b'href="sub/"' in sub.body and b'href="c.tar.gz"' in sub.body
    assert sub.body.index(b'href="sub/"') < sub.body.index(b'href="c.tar.gz"')  # dirs first
    assert b'href="../"' in sub.body
    spaced = await get(served, "/r/with%20space/")
    assert spaced.status == 200 and b'href="%C3%A9t%C3%A9.txt"' in spaced.body


async def test_a_top_level_versions_directory_is_listed_once(served: Served) -> None:
    """The latest version holds a top-level directory named ``versions``: its index page
    lists ``versions/`` once, the index of every version (the page listed the directory
    too, both rows linking to the same place).  Its files are served by their URL, and the
    directory is listed in the version's own pages."""
    latest = (await get(served, "/r/")).body.decode()
    assert latest.count('href="versions/"') == 1
    assert "every version" in latest
    notes = await get(served, "/r/versions/notes.txt")
    assert (notes.status, notes.body) == (200, FILES["versions/notes.txt"])
    v2 = (await get(served, "/r/versions/2/")).body.decode()
    assert v2.count('href="versions/"') == 1 and "every version" not in v2
    inside = await get(served, "/r/versions/2/versions/")
    assert inside.status == 200 and b'href="notes.txt"' in inside.body


async def test_index_names_are_escaped(served: Served) -> None:
    page = (await get(served, "/r/")).body.decode("utf-8")
    assert "<b>&amp;" not in page
    assert "&lt;b&gt;&amp;amp;&#x27;x&quot;.html" in page
    assert 'href="%3Cb%3E%26amp%3B%27x%22.html"' in page


async def test_a_directory_without_its_slash_is_redirected(served: Served) -> None:
    for path in ("/r", "/r/dir", "/r/versions", "/r/versions/1", "/r/versions/1/dir/sub"):
        reply = await get(served, path)
        assert reply.status == 301, path
        assert reply.headers["location"] == path + "/"


async def test_the_query_is_kept_by_a_redirect_and_in_the_access_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory asked without its slash is redirected with its query (as nginx does),
    and the access log shows the target as sent, query included (the docs say so); the
    query was dropped from both."""
    with caplog.at_level(logging.INFO, logger="triofetch.serve"):
        reply = await get(served, "/r/dir?C=M;O=A")
        assert (reply.status, reply.headers["location"]) == (301, "/r/dir/?C=M;O=A")
        assert (await get(served, "/r/a.txt?v=2")).body == FILES["a.txt"]
    lines = [r.getMessage() for r in caplog.records if r.name == "triofetch.serve"]
    assert any('"GET /r/dir?C=M;O=A" 301 0 ' in line for line in lines), lines
    assert any('"GET /r/a.txt?v=2" 200 6 ' in line for line in lines), lines


# -- hostile targets -------------------------------------------------------------------------

HOSTILE = [
    "/r/../r/a.txt",
    "/r/dir/../a.txt",
    "/r/./a.txt",
    "/r/%2e%2e/r/a.txt",
    "/r/%2E%2E/%2E%2E/etc/passwd",
    "/r/.%2e/a.txt",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/r/dir%2fsub%2fbig.bin",
    "/r/dir%2Fsub/big.bin",
    "/r/..%2f..%2f..%2fetc%2fpasswd",
    "/r/a.txt%00",
    "/r/a.txt%00.html",
    "/r/%00",
    "/r\\a.txt",
    "/r/dir\\sub\\big.bin",
    "/r/%5c..%5ca.txt",
    "/r/dir%5csub/big.bin",
    "//etc/passwd",
    "/r//a.txt",
    "/r/dir//sub/big.bin",
    "http://127.0.0.1/r/a.txt",
    "*",
    "/r/versions/1/../../../etc/passwd",
    "/r/versions/1/%2e%2e/2/new.txt",
    "/r/a.txt/..",
    "/r/%c0%ae%c0%ae/a.txt",  # overlong UTF-8 dots
    "/r/%ff.txt",
    "/etc/passwd",
    "/r/etc/passwd",
    "/r/%252e%252e/a.txt",  # twice encoded: a name with a literal %2e, not a dot
    "/r/dir/sub/big.bin/",
    "/r/dir/sub/big.bin/..",
    "/root/",
    "/r/" + "a" * 9000,
]


@pytest.mark.parametrize("target", HOSTILE)
async def test_hostile_targets_are_refused(served: Served, target: str) -> None:
    reply = await raw(served.port, target)
    assert reply.status in (400, 404), reply
    for data in (FILES["a.txt"], BIG[:100], FILES["dir/sub/big.bin"][:100]):
        assert data not in reply.body


async def test_a_symbolic_link_in_the_storage_is_not_followed(root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "root"
    shutil.copytree(root, copy, symlinks=True)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    # a.txt's file becomes a link to a file outside the storage of the same size...
    target = sha(FILES["a.txt"])
    stored = copy / "artifacts" / target[:2] / target[2:4] / target
    secret_same_size = tmp_path / "secret6"
    secret_same_size.write_bytes(b"SECRT\n")
    os.chmod(stored.parent, 0o755)
    stored.unlink()
    stored.symlink_to(secret_same_size)
    # ... and big.bin's first directory a link to a copy of it outside
    big = sha(BIG)
    first = copy / "artifacts" / big[:2]
    outside = tmp_path / "outside"
    shutil.copytree(first, outside)
    for path in (first, *first.rglob("*")):
        os.chmod(path, 0o755)
    shutil.rmtree(first)
    first.symlink_to(outside, target_is_directory=True)
    store = await open_store(None, root=copy, create=False, readonly=True)
    async with store, trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_app, make_app(store), port=0))
        port = int(urls[0].rsplit(":", 1)[1])
        for path in ("/r/a.txt", "/r/dir/sub/big.bin"):
            reply = await raw(port, path)
            assert reply.status == 404, path
            assert b"SECRT" not in reply.body and BIG[:100] not in reply.body
        # the rest is served
        kept = next(p for p, d in FILES.items() if p != "a.txt" and sha(d)[:2] != big[:2])
        assert (await raw(port, url_path(kept))).body == FILES[kept]
        nursery.cancel_scope.cancel()


async def test_a_damaged_file_is_an_error_not_wrong_bytes(root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    digest = sha(FILES["a.txt"])
    stored = copy / "artifacts" / digest[:2] / digest[2:4] / digest
    os.chmod(stored, 0o644)
    stored.write_bytes(b"truncated")
    store = await open_store(None, root=copy, create=False, readonly=True)
    async with store, trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_app, make_app(store), port=0))
        reply = await raw(int(urls[0].rsplit(":", 1)[1]), "/r/a.txt")
        assert reply.status == 500 and b"truncated" not in reply.body
        stored.unlink()
        assert (await raw(int(urls[0].rsplit(":", 1)[1]), "/r/a.txt")).status == 404
        nursery.cancel_scope.cancel()


async def test_a_file_truncated_while_served_is_cut_short_and_said_once(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored file truncated while a response streams it (its first piece sent, the rest
    not read yet) cannot be completed: the response is cut short of its Content-Length, the
    app logs one ERROR naming the file, and the server goes on.  The read's error used to
    escape the app: hypercorn's "Error in ASGI Framework" with a traceback of threads, and
    nothing saying which file of which path was damaged."""
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    digest = sha(BIG)
    stored = copy / "artifacts" / digest[:2] / digest[2:4] / digest
    os.chmod(stored, 0o644)
    real_read_at = _app_module.read_at

    def truncated_first(fd: int, offset: int, count: int) -> bytes:
        # (the second piece is read while the first is sent: the file shrinks before it)
        os.truncate(stored, 1000)
        return real_read_at(fd, offset, count)

    monkeypatch.setattr(_app_module, "read_at", truncated_first)
    store = await open_store(None, root=copy, create=False, readonly=True)
    with caplog.at_level(logging.DEBUG, logger="hypercorn.error"):
        async with store, trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, make_app(store), port=0))
            port = int(urls[0].rsplit(":", 1)[1])
            reply = await raw(port, "/r/dir/sub/big.bin")
            assert reply.status == 200
            assert reply.headers["content-length"] == str(len(BIG))
            assert 0 < len(reply.body) < len(BIG) and BIG.startswith(reply.body)
            # the server goes on
            assert (await raw(port, "/r/a.txt")).body == FILES["a.txt"]
            nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.exc_info) for r in errors] == [("triofetch.serve", None)], errors
    assert "dir/sub/big.bin" in errors[0].getMessage()
    assert "damaged" in errors[0].getMessage()
    assert "Error in ASGI Framework" not in caplog.text


@contextlib.contextmanager
def no_file_descriptor_left() -> Iterator[None]:
    """For the block: every file descriptor this process may open is taken (the next open
    fails with EMFILE), as under a low ``ulimit -n`` with many clients connected."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    taken: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
    try:
        while True:  # (at most highest + 16 of them)
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def read_one_reply(stream: trio.SocketStream) -> Reply:
    """One response of a keep-alive connection (it has a Content-Length)."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(1 << 16)
        assert chunk, bytes(data)
        data += chunk
    reply = parse_reply(bytes(data))
    while len(reply.body) < int(reply.headers["content-length"]):
        chunk = await stream.receive_some(1 << 16)
        assert chunk
        reply.body += chunk
    return reply


async def reply_without_descriptors(stream: trio.SocketStream, request: bytes) -> Reply:
    """Send *request* on *stream* and read its reply while no descriptor is left."""
    with no_file_descriptor_left():
        await stream.send_all(request)
        return await read_one_reply(stream)


def assert_out_of_descriptors(reply: Reply) -> None:
    """*reply* is the 503 of a server out of file descriptors."""
    assert reply.status == 503, reply
    assert reply.headers["retry-after"] == "1"
    assert b"too many open files" in reply.body


async def test_out_of_file_descriptors_is_a_503_and_the_server_lives_on(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored file that cannot be opened for want of file descriptors (EMFILE) is
    answered 503 with Retry-After by the app.  The OSError used to escape the app:
    hypercorn's own 500 for it could collide with another send on the connection and end
    the whole server (``triofetch serve`` died with an internal error under a low
    ``ulimit -n`` and many clients)."""
    store = await open_store(None, root=root, create=False, readonly=True)
    async with store, trio.open_nursery() as nursery:
        # (no memory cache: every request opens the stored file)
        urls = await nursery.start(partial(serve_app, make_app(store, memory_cache=0), port=0))
        port = int(urls[0].rsplit(":", 1)[1])
        request = b"GET /r/a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)  # accepted, the version's table built
                assert (await read_one_reply(stream)).body == FILES["a.txt"]
                reply = await reply_without_descriptors(stream, request)
                assert_out_of_descriptors(reply)
        # and the server goes on
        assert (await raw(port, "/r/a.txt")).body == FILES["a.txt"]
        nursery.cancel_scope.cancel()
    assert "Error in ASGI Framework" not in caplog.text
    assert "cannot open file" in caplog.text


async def test_a_store_out_of_file_descriptors_is_a_503_too(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A request whose store read needs a new SQLite connection when no descriptor is left
    (several requests at once: the pool holds one) is a 503 with Retry-After, as a stored
    file is, and one WARNING; SQLite says only "unable to open database file", which was
    a 500 "the store cannot be read" and an ERROR (1-3 of 100 requests under a low
    ``ulimit -n``).  Rounds of 8 requests at once, until one needed a connection."""
    store = await open_store(None, root=root, create=False, readonly=True)
    statuses: list[int] = []
    async with store, trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_app, make_app(store), port=0))
        port = int(urls[0].rsplit(":", 1)[1])
        # (/r/versions/ reads the store on every request)
        request = b"GET /r/versions/ HTTP/1.1\r\nHost: x\r\n\r\n"
        replies: list[Reply] = []

        async def ask(stream: trio.SocketStream) -> None:
            await stream.send_all(request)
            replies.append(await read_one_reply(stream))

        with trio.fail_after(30):
            streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(8)]
            for stream in streams:  # (accepted, before the descriptors are taken)
                await ask(stream)
            for _ in range(20):
                if 503 in statuses:
                    break
                replies.clear()
                with no_file_descriptor_left():
                    async with trio.open_nursery() as asking:
                        for stream in streams:
                            asking.start_soon(ask, stream)
                statuses += [reply.status for reply in replies]
                for reply in replies:
                    if reply.status == 503:
                        assert reply.headers["retry-after"] == "1"
                        assert b"too many open files" in reply.body
            for stream in streams:
                await stream.aclose()
        assert (await raw(port, "/r/a.txt")).body == FILES["a.txt"]  # and it goes on
        nursery.cancel_scope.cancel()
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses, "no request needed a new connection"
    said = [r for r in caplog.records if "cannot read the store" in r.getMessage()]
    assert len(said) == statuses.count(503)
    assert {r.levelno for r in said} == {logging.WARNING}
    assert "too many open files" in said[0].getMessage()
    assert "ulimit -n" in said[0].getMessage()


async def test_an_on_demand_file_out_of_file_descriptors_is_a_503(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """An on-demand file whose upstream connection gets no descriptor is the server's own
    overload, a 503 with Retry-After like a stored file's; it was a 502 Bad Gateway,
    blaming the upstream for the server's ``ulimit -n``."""
    request = b"GET /lazy/lazy.bin HTTP/1.1\r\nHost: x\r\n\r\n"
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        async with stream:
            await stream.send_all(b"GET /lazy/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_one_reply(stream)).status == 200  # (accepted, table built)
            reply = await reply_without_descriptors(stream, request)
    assert_out_of_descriptors(reply)
    assert "Too many open files" in caplog.text  # (the flight's WARNING says why)
    again = await get(served, "/lazy/lazy.bin")
    assert (again.status, again.body) == (200, LAZY["lazy.bin"])


# -- the app's options -----------------------------------------------------------------------


async def test_only_the_repositories_asked_for(root: Path) -> None:
    async with await open_store(None, root=root, create=False, readonly=True) as store:
        app = make_app(store, repositories=["other"])
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, app, port=0))
            port = int(urls[0].rsplit(":", 1)[1])
            assert (await raw(port, "/other/o.txt")).body == OTHER["o.txt"]
            assert (await raw(port, "/r/a.txt")).status == 404
            assert (await raw(port, "/r/")).status == 404
            top = await raw(port, "/")
            assert b"other/" in top.body and b'"r/"' not in top.body
            nursery.cancel_scope.cancel()


async def test_a_path_two_units_of_a_type_of_ones_own_hold_is_not_served(
    tmp_path: Path, http_server_module: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two packages (a type without a path key) each with a README, in a version made now:
    the README is not served, the rest is, and the warning says why (it blamed a store made
    before schema 4)."""
    import triofetch

    server = http_server_module
    units = []
    for name in ("bash", "zsh"):
        files = {f"{name}.tar": name.encode() * 100, "README": f"about {name}\n".encode()}
        artifacts = []
        for path, data in files.items():
            server.add_file(f"/own-type/{name}/{path}", data)
            url = server.url(f"/own-type/{name}/{path}")
            artifacts.append(triofetch.DeclarativeArtifact(url, path, {"sha256": sha(data)}))
        units.append(triofetch.DeclarativeUnit("package", (name,), {}, artifacts))
    async with (
        open_store(root=tmp_path / "root") as store,
        triofetch.Downloader() as downloader,
    ):
        report = await triofetch.ContentUnitCreator(store, downloader).run(units, repository="p")
        assert report.ok and report.version == 1
        caplog.set_level("WARNING", logger="triofetch.serve")
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, make_app(store), port=0))
            port = int(urls[0].rsplit(":", 1)[1])
            assert (await raw(port, "/p/bash.tar")).body == b"bash" * 100
            assert (await raw(port, "/p/README")).status == 404
            index = (await raw(port, "/p/")).body
            assert b"held twice: not served" in index
            manifest = (await raw(port, "/p/PULP_MANIFEST")).body.decode()
            assert sorted(line.split(",")[0] for line in manifest.split()) == [
                "bash.tar",
                "zsh.tar",
            ]
            nursery.cancel_scope.cancel()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "triofetch.serve"]
    assert "holds 1 paths in more than one unit" in warning, warning
    assert "repository key is not their path" in warning and warning.endswith(": README")


async def test_make_app_checks_its_arguments(root: Path) -> None:
    async with await open_store(None, root=root, create=False, readonly=True) as store:
        for bad in (
            {"repositories": "r"},
            {"refresh": -1},
            {"chunk_size": 0},
            {"file_threads": True},
            {"cached_versions": 1.5},
            {"memory_cache": -1},
        ):
            with pytest.raises(InvalidInput):
                make_app(store, **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        make_app("not a store")  # type: ignore[arg-type]


@pytest.mark.parametrize("memory_cache", [0, 20, 64 << 20])
async def test_small_files_with_and_without_the_memory_cache(root: Path, memory_cache: int) -> None:
    store = await open_store(None, root=root, create=False, readonly=True)
    async with store, trio.open_nursery() as nursery:
        app = make_app(store, memory_cache=memory_cache)
        urls = await nursery.start(partial(serve_app, app, port=0))
        port = int(urls[0].rsplit(":", 1)[1])
        for _ in range(3):  # read, then (with a cache) from memory
            for path, data in FILES.items():
                reply = await raw(port, url_path(path))
                assert reply.body == data, path
                part = await raw(port, url_path(path), headers={"Range": "bytes=1-2"})
                assert part.body == data[1:3] or (not data and part.status == 416)
        nursery.cancel_scope.cancel()


async def test_the_memory_cache_counts_what_its_entries_take(
    http_server_module: FaultServer, tmp_path: Path
) -> None:
    """``memory_cache`` bounds the memory the kept files take, not their bytes alone: for
    files of a few bytes the key, the bytes object and the cache's entry are most of it.
    Only the bytes were counted: 20,000 files of 10 bytes, counted as 200 kB, took 4.7 MB
    (a full 64 MiB cache of them, about 1.5 GB)."""
    tiny = {f"t/{i}.txt": b"%08d\n" % i for i in range(500)}
    publish(http_server_module, tiny, prefix="/tiny")
    units = [
        DeclarativeUnit(
            "file",
            (path, sha(data)),
            {"relative_path": path},
            [DeclarativeArtifact(http_server_module.url(f"/tiny/{path}"), path)],
        )
        for path, data in tiny.items()
    ]
    limit = 8 * 1024
    async with open_store(root=tmp_path / "root") as store, trio.open_nursery() as nursery:
        async with Downloader() as downloader:
            report = await ContentUnitCreator(store, downloader).run(units, repository="r")
            assert report.ok, report.failures
        urls = await nursery.start(partial(serve_app, make_app(store, memory_cache=limit), port=0))
        port = int(urls[0].rsplit(":", 1)[1])
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                names = sorted(tiny)
                await stream.send_all(f"GET /r/{names[0]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await read_one_reply(stream)  # (the version's table, built once)
                gc.collect()
                tracemalloc.start()
                try:
                    for name in names:
                        await stream.send_all(f"GET /r/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                        assert (await read_one_reply(stream)).body == tiny[name]
                    gc.collect()
                    snapshot = tracemalloc.take_snapshot()
                    everything, _ = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
        nursery.cancel_scope.cancel()
    # What triofetch's own code allocated and still holds: the cache and what serving the
    # requests leaves, 9-11 kB in all on Python 3.11 to 3.13.  Not the process's whole traced
    # memory: from Python 3.12 on, that also counts up to some 25 kB that CPython keeps for
    # reuse once trio's memory channels (hypercorn opens one per request) are gone, bounded
    # and varying from run to run (the whole was 40-53 kB on 3.13, 27-33 kB on 3.11).
    ours = snapshot.filter_traces([tracemalloc.Filter(True, f"{TRIOFETCH_SOURCE}{os.sep}*")])
    held = sum(stat.size for stat in ours.statistics("filename"))
    # counting the bytes alone, the 500 files of 9 bytes were all kept: 80 kB in all
    assert held < limit + 20_000, (held, everything)


async def test_a_new_version_is_served_after_refresh(
    root: Path, tmp_path: Path, http_server_module: FaultServer
) -> None:
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    async with await open_store(None, root=copy, create=False, readonly=True) as store:
        app = make_app(store, refresh=0.2)
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, app, port=0))
            port = int(urls[0].rsplit(":", 1)[1])
            assert (await raw(port, "/other/o.txt")).status == 200
            url = publish(http_server_module, {"o2.txt": b"two\n"}, prefix="/other2")
            result = await trio.to_thread.run_sync(
                partial(run_cli, "sync", url, "--root", copy, "--repository", "other")
            )
            assert result.code == 0, result
            for _ in range(100):  # at most 5 s
                if (await raw(port, "/other/o2.txt")).status == 200:
                    break
                await trio.sleep(0.05)
            else:
                pytest.fail("the new version was not served")
            nursery.cancel_scope.cancel()


async def test_a_version_removed_while_remembered_is_not_called_damaged(
    root: Path, tmp_path: Path, http_server_module: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """prune and gc remove versions the app still remembers (for ``refresh`` seconds; an
    hour here, so that it surely does): their files are 404 saying the version was removed,
    with no repair advice and nothing above INFO in the log, and the app forgets them at
    once; a path of the latest version it remembered is answered from the version that took
    its place.  A file missing from a live version still gets the repair advice.  The app said
    "the stored file is missing (run triofetch repair)", a WARNING, and kept listing the
    removed version (for a second, by default)."""
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    async with await open_store(None, root=copy, create=False, readonly=True) as store:
        app = make_app(store, refresh=3600, memory_cache=0)
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, app, port=0))
            port = int(urls[0].rsplit(":", 1)[1])
            # remembered: the latest version (2) and version 1, with their tables
            assert b"new.txt" in (await raw(port, "/r/")).body
            assert b"c.tar.gz" in (await raw(port, "/r/versions/1/dir/")).body
            # version 3 holds n.txt and a new a.txt; versions 1 and 2 are pruned, their
            # files collected
            new = {"n.txt": b"only n\n", "a.txt": b"a new a\n"}
            url = publish(http_server_module, new, prefix="/mirror")
            result = await trio.to_thread.run_sync(
                partial(run_cli, "sync", url, "--root", copy, "--repository", "r", "--mirror")
            )
            assert result.code == 0, result
            async with await open_store(None, root=copy, create=False) as writer:
                assert (await writer.prune("r", keep=1)).deleted == (1, 2)
                assert (await writer.collect_garbage(wait=10)).files >= len(FILES)
            with caplog.at_level(logging.DEBUG, logger="triofetch.serve"):
                reply = await raw(port, "/r/versions/1/dir/c.tar.gz")
                assert (reply.status, reply.body.decode()) == (
                    404,
                    "404 Not Found\nversion 1 of r was removed (prune and gc): "
                    "it is no longer served\n",
                )
                # the latest it remembered (2) is gone: the latest now (3) answers
                reply = await raw(port, "/r/a.txt")
                assert (reply.status, reply.body) == (200, b"a new a\n")
                loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
                assert loud == [], [r.getMessage() for r in loud]
                # forgotten at once: the next requests read the store
                assert (await raw(port, "/r/versions/1/")).status == 404
                assert (await raw(port, "/r/versions/2/a.txt")).status == 404
                listing = await raw(port, "/r/")
                assert b"n.txt" in listing.body and b"new.txt" not in listing.body
                assert (await raw(port, "/r/n.txt")).body == b"only n\n"
                # a file missing from a version that is still there: repair it
                digest = sha(b"only n\n")
                (copy / "artifacts" / digest[:2] / digest[2:4] / digest).unlink()
                reply = await raw(port, "/r/n.txt")
            assert (reply.status, reply.body) == (
                404,
                b"404 Not Found\nthe stored file is missing (run triofetch repair)\n",
            )
            assert [r.levelno for r in caplog.records if "not in the storage" in r.message] == [
                logging.WARNING
            ]
            nursery.cancel_scope.cancel()


async def test_a_client_going_away_mid_file(served: Served) -> None:
    """The server stops sending and goes on serving the others."""
    for _ in range(5):
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await stream.send_all(b"GET /r/dir/sub/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.receive_some(1000)
        await stream.aclose()
    assert (await get(served, "/r/dir/sub/big.bin")).body == BIG


async def test_keep_alive_many_requests_on_one_connection(served: Served) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        async with stream:
            request = b"GET /r/a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            await stream.send_all(request * 20)
            data = bytearray()
            while data.count(FILES["a.txt"]) < 20:
                chunk = await stream.receive_some(1 << 16)
                assert chunk
                data += chunk
    assert data.count(b"HTTP/1.1 200") == 20


# -- real clients ----------------------------------------------------------------------------


F = TypeVar("F", bound=Callable[..., Any])


def needs_curl(test: F) -> F:
    """The test runs curl: missing, it fails (``scripts/ensure-test-servers.sh`` installs it
    with the other real peers); it never skips."""
    return pytest.mark.usefixtures("curl_installed")(test)


@pytest.fixture
def curl_installed() -> None:
    _installed("curl")


def _installed(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (scripts/ensure-test-servers.sh installs it)")


async def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            ["curl", "-sS", "--max-time", "20", *args], capture_stdout=True, capture_stderr=True
        )


@needs_curl
async def test_curl(served: Served, tmp_path: Path) -> None:
    base = served.url
    assert (await curl(f"{base}/r/dir/sub/big.bin")).stdout == BIG
    assert (await curl(f"{base}{url_path('with space/été.txt')}")).stdout == "ü\n".encode()
    part = await curl("--range", "1000-1999", f"{base}/r/dir/sub/big.bin")
    assert part.stdout == BIG[1000:2000]
    head = (await curl("-I", f"{base}/r/dir/sub/big.bin")).stdout.decode().lower()
    assert head.startswith("http/1.1 200")
    assert f"content-length: {len(BIG)}" in head and f'etag: "{sha(BIG)}"' in head
    code = await curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        f'If-None-Match: "{sha(BIG)}"',
        f"{base}/r/dir/sub/big.bin",
    )
    assert code.stdout == b"304"
    code = await curl(
        "-o", "/dev/null", "-w", "%{http_code}", "-r", "99999999-", f"{base}/r/dir/sub/big.bin"
    )
    assert code.stdout == b"416"
    followed = await curl("-L", f"{base}/r/dir")
    assert b"Index of /r/dir/" in followed.stdout
    # curl resumes a partial download with a range
    partial_file = tmp_path / "big.bin"
    partial_file.write_bytes(BIG[:300_000])
    await curl("-C", "-", "-o", str(partial_file), f"{base}/r/dir/sub/big.bin")
    assert partial_file.read_bytes() == BIG
    # --path-as-is: curl sends the dot segments as they are
    hostile = await curl(
        "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/r/dir/../../r/a.txt"
    )
    assert hostile.stdout in (b"400", b"404")


@needs_curl
async def test_curl_with_the_hostile_list(served: Served) -> None:
    """The hostile targets again, sent by curl as they are (``--path-as-is``, ``-g``)."""
    sent = [t for t in HOSTILE if t.startswith("/")]
    for target in sent:
        reply = await curl(
            "--path-as-is", "-g", "-o", "/dev/null", "-w", "%{http_code}", served.url + target
        )
        assert reply.stdout in (b"400", b"404"), (target, reply)
    assert len(sent) >= 30


@needs_curl
async def test_curl_parallel_with_keep_alive(served: Served) -> None:
    urls = [f"{served.url}{url_path(p)}" for p in sorted(FILES)] * 4
    args = ["--parallel", "--parallel-max", "8"]
    for u in urls:
        args += ["-o", "/dev/null", "-w", "%{http_code}\\n", u]
    result = await curl(*args)
    assert result.stdout.decode().split() == ["200"] * len(urls)


async def test_triofetch_syncs_from_the_served_manifest(served: Served, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    for number in (1, 2):
        url = f"{served.url}/r/versions/{number}/PULP_MANIFEST"
        result: Result = await trio.to_thread.run_sync(
            partial(run_cli, "sync", url, "--root", copy, "--repository", "copy", "--mirror")
        )
        assert result.code == 0, result
        listing = await trio.to_thread.run_sync(
            partial(run_cli, "list", "--root", copy, "--repository", "copy", "--json")
        )
        files = FILES if number == 1 else {**FILES, **NEW}
        assert [(r["relative_path"], r["sha256"], r["size"]) for r in listing.json()] == [
            (p, sha(d), len(d)) for p, d in sorted(files.items())
        ]
    # and the copy's files are the bytes
    exported = tmp_path / "exported"
    result = await trio.to_thread.run_sync(
        partial(run_cli, "export", "--root", copy, "--repository", "copy", exported)
    )
    assert result.code == 0, result
    for path, data in {**FILES, **NEW}.items():
        assert (exported / path).read_bytes() == data


async def test_aria2c(served: Served, tmp_path: Path) -> None:
    _installed("aria2c")
    with trio.fail_after(30):
        await trio.run_process(
            [
                "aria2c",
                "-q",
                "-x",
                "4",
                "-s",
                "4",
                "--min-split-size=1M",
                "-d",
                str(tmp_path),
                "-o",
                "big.bin",
                f"{served.url}/r/dir/sub/big.bin",
            ],
        )
    assert (tmp_path / "big.bin").read_bytes() == BIG


async def test_a_long_index_page_is_the_same_made_in_a_thread() -> None:
    from triofetch.serve._app import _ROWS_ON_THE_LOOP, _render
    from triofetch.serve._index import Listing, render_index

    rows = [Listing(f"f{i:05d}.bin", False, i) for i in range(_ROWS_ON_THE_LOOP * 2)]
    page = await _render("/r/", rows, "")
    assert page == render_index("/r/", rows, parent=True)
    assert page.count(b"<tr>") == len(rows) + 2  # the heading and ../


# -- the server's log ------------------------------------------------------------------------


async def _cut_app(exc: BaseException, scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that begins a response of 10 bytes, sends 3, then raises *exc*."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
    )
    await send({"type": "http.response.body", "body": b"abc", "more_body": True})
    raise exc


@pytest.mark.parametrize(
    ("exc", "quiet"),
    [
        (_ondemand.UpstreamFailed("dir/big.bin: the upstream broke off"), True),
        (ExceptionGroup("cuts", [_ondemand.UpstreamFailed("x.bin: bad bytes")]), True),
        (RuntimeError("a bug in the app"), False),
        (ExceptionGroup("mixed", [_ondemand.UpstreamFailed("y"), KeyError("z")]), False),
    ],
)
async def test_only_a_deliberate_cut_is_kept_out_of_the_error_log(
    exc: BaseException, quiet: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A response the app cuts short on purpose is one DEBUG line of ``hypercorn.error``;
    any other exception of an app stays an ERROR with its traceback.  Either way the client
    gets a response short of its length and the connection closes."""
    with caplog.at_level(logging.DEBUG, logger="hypercorn.error"):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_app, partial(_cut_app, exc), port=0))
            reply = await raw(int(urls[0].rsplit(":", 1)[1]), "/any")
            nursery.cancel_scope.cancel()
    assert reply.status == 200 and reply.body == b"abc"
    records = [r for r in caplog.records if r.name == "hypercorn.error"]
    errors = [r for r in records if r.levelno >= logging.ERROR]
    if quiet:
        assert errors == [] and not any(r.exc_info for r in records)
        assert [r.levelno for r in records if "cut short" in r.getMessage()] == [logging.DEBUG]
    else:
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert errors[0].exc_info[1] is exc
