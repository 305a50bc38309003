"""Logging (#17, item 4): one DEBUG line per HTTP request on ``triofetch.http``, INFO for
retries and mirror fall-backs on ``triofetch.downloader``, WARNING for replaced or repaired
content, never a credential; the command line's ``-v/-vv/-vvv``.  Against a real loopback
server on every transport."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import triofetch
from tests._cli_helpers import publish, run_cli
from triofetch import DeclarativeArtifact, DeclarativeUnit
from triofetch.store import open_store
from triofetch.testing import Fault, FaultServer, Redirect, Status

DATA = b"x" * 3000
PASSWORD = "s3cr3t-pw-9731"
TOKEN = "tok-abcdef-123456"


def downloader(transport: str, temp_dir: Path, **kw: object) -> triofetch.Downloader:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("read_timeout", 5.0)
    kw.setdefault("connect_timeout", 5.0)
    return triofetch.Downloader(transport=transport, temp_dir=temp_dir, **kw)  # type: ignore[arg-type]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # the loggers' own levels too: an in-process CLI run may have set them
    for name in ("triofetch", "triofetch.http", "triofetch.downloader"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "triofetch.http"]


def everything(caplog: pytest.LogCaptureFixture) -> str:
    """Every record's message, its unformatted text and its args."""
    parts = [caplog.text]
    for r in caplog.records:
        parts += [r.getMessage(), str(r.msg), repr(r.args)]
    return "\n".join(parts)


async def test_one_debug_line_per_request(
    http_server: FaultServer, transport: str, temp_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    http_server.add_file("/a.bin", DATA)
    async with downloader(transport, temp_dir) as dl:
        await dl.fetch(http_server.url("/a.bin"))
    lines = request_lines(logs)
    assert len(lines) == 1 == http_server.count("/a.bin"), lines
    assert re.fullmatch(
        rf"GET {re.escape(http_server.url('/a.bin'))} -> 200, {len(DATA)} bytes, [0-9.]+ s",
        lines[0],
    ), lines
    assert all(r.levelno == logging.DEBUG for r in logs.records if r.name == "triofetch.http")


async def test_a_redirect_is_two_requests(
    http_server: FaultServer, transport: str, temp_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    http_server.add_file("/final.bin", DATA)
    http_server.add_file("/hop", b"", faults=[Redirect("/final.bin")])
    async with downloader(transport, temp_dir) as dl:
        await dl.fetch(http_server.url("/hop"))
    lines = request_lines(logs)
    assert len(lines) == 2, lines
    hop, final = lines
    assert hop.startswith(f"GET {http_server.url('/hop')} -> 302, ")
    assert hop.endswith(f"(redirect to {http_server.url('/final.bin')})")
    assert final.startswith(f"GET {http_server.url('/final.bin')} -> 200, {len(DATA)} bytes, ")


async def test_a_failed_status_and_a_stream_are_logged(
    http_server: FaultServer, transport: str, temp_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    http_server.add_file("/gone", b"", faults=[Status(404)])
    http_server.add_file("/index", DATA)

    class Counter:
        def __init__(self) -> None:
            self.n = 0

        async def feed(self, chunk: bytes) -> None:
            self.n += len(chunk)

        async def finish(self) -> int:
            return self.n

    async with downloader(transport, temp_dir) as dl:
        with pytest.raises(triofetch.HTTPStatusError):
            await dl.fetch(http_server.url("/gone"))
        assert await dl.stream(http_server.url("/index"), Counter) == len(DATA)
    lines = request_lines(logs)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"GET {http_server.url('/gone')} -> 404, failed after ")
    assert lines[1].startswith(f"GET {http_server.url('/index')} -> 200, {len(DATA)} bytes, ")


async def test_file_urls_are_logged_too(temp_dir: Path, logs: pytest.LogCaptureFixture) -> None:
    source = temp_dir.parent / "source.bin"
    source.write_bytes(DATA)
    async with downloader("trio", temp_dir) as dl:
        await dl.fetch(source.as_uri())
    lines = request_lines(logs)
    assert len(lines) == 1 and lines[0].startswith(f"GET {source.as_uri()} -> "), lines
    assert f"{len(DATA)} bytes" in lines[0]


async def test_nothing_is_formatted_unless_debug_is_on(
    http_server: FaultServer, transport: str, temp_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triofetch")
    caplog.set_level(logging.INFO, logger="triofetch.http")
    http_server.add_file("/a.bin", DATA)
    async with downloader(transport, temp_dir) as dl:
        await dl.fetch(http_server.url("/a.bin"))
    assert request_lines(caplog) == []


async def test_a_retry_is_info_with_its_cause_and_delay(
    http_server: FaultServer, transport: str, temp_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(503)])
    async with downloader(transport, temp_dir, retries=2) as dl:
        result = await dl.fetch(http_server.url("/a.bin"))
    assert result.attempts == 2
    retries = [
        r for r in logs.records if r.name == "triofetch.downloader" and r.levelno == logging.INFO
    ]
    assert len(retries) == 1, [r.getMessage() for r in retries]
    message = retries[0].getMessage()
    assert re.fullmatch(
        rf"retrying {re.escape(http_server.url('/a.bin'))} \(attempt 2\) in [0-9.]+ s after: "
        r".*503.*",
        message,
    ), message
    assert len(request_lines(logs)) == 2  # the 503, then the 200


async def test_a_mirror_fall_back_is_info(
    http_server: FaultServer, transport: str, temp_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    http_server.add_file("/good.bin", DATA)
    urls = [http_server.url("/missing"), http_server.url("/good.bin")]
    async with downloader(transport, temp_dir) as dl:
        await dl.fetch(urls)
    infos = [
        r.getMessage()
        for r in logs.records
        if r.name == "triofetch.downloader" and r.levelno == logging.INFO
    ]
    cause = "server answered HTTP 404 Not Found, expected 200"
    assert infos == [f"falling back to mirror {urls[1]} after {urls[0]} failed: {cause}"]


async def test_no_credential_or_token_is_ever_logged(
    http_server: FaultServer, transport: str, temp_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(503)])
    http_server.add_file("/hop", b"", faults=[Redirect("/a.bin")])
    http_server.add_file("/b.bin", DATA)
    http_server.require_basic_auth("alice", PASSWORD, paths=["/a.bin", "/hop"])
    secret = http_server.url("/hop").replace("http://", f"http://alice:{PASSWORD}@")
    async with downloader(transport, temp_dir, retries=2) as dl:
        await dl.fetch([secret.replace("/hop", "/missing"), secret])
    async with downloader(transport, temp_dir, headers={"Authorization": f"Bearer {TOKEN}"}) as dl:
        await dl.fetch(http_server.url("/b.bin"))
    assert len(request_lines(logs)) == 5  # 404, 302 + 503, 302 + 200... and b.bin
    text = everything(logs)
    for secret_text in (PASSWORD, "alice", TOKEN, "Bearer", "Basic"):
        assert secret_text not in text, secret_text


async def test_replaced_content_is_a_warning(
    http_server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="triofetch")
    files = {"a.txt": b"one"}
    url = publish(http_server, files)
    root = tmp_path / "root"
    assert run_cli("sync", url, "--root", root, "--repository", "r").code == 0
    url = publish(http_server, {"a.txt": b"two"})
    result = run_cli("-v", "sync", url, "--root", root, "--repository", "r")
    assert result.code == 0, result
    assert re.search(r"triofetch.creator WARNING: replaced .* at 'a.txt' by ", result.err), (
        result.err
    )


async def test_a_repaired_file_is_a_warning(
    http_server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="triofetch")
    http_server.add_file("/repo/f", DATA)
    digest = hashlib.sha256(DATA).hexdigest()
    art = DeclarativeArtifact(http_server.url("/repo/f"), "f", {"sha256": digest}, len(DATA))
    unit = DeclarativeUnit("file", ("f", digest), {"relative_path": "f"}, [art])
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    async with (
        open_store(url, root=tmp_path / "root") as store,
        triofetch.Downloader(backoff=0.01) as dl,
    ):
        assert (await triofetch.ContentUnitCreator(store, dl).run([unit], repository="r")).ok
        assert store.storage is not None
        path = store.storage.path_for(digest)
        path.unlink()
        report = await triofetch.repair(store, dl)
    assert report.ok and len(report.repaired) == 1
    warnings = [r for r in caplog.records if r.name == "triofetch.repair"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert warnings[0].getMessage() == f"repaired {path} (missing): downloaded again"


def test_cli_verbosity_maps_onto_the_loggers(http_server: FaultServer, tmp_path: Path) -> None:
    files = {"a.txt": b"a", "b.txt": b"bb"}
    faults: dict[str, list[Fault]] = {"b.txt": [Status(503)]}
    url = publish(http_server, files, faults=faults)
    http_server.require_basic_auth("alice", PASSWORD)
    secret = url.replace("http://", f"http://alice:{PASSWORD}@")
    outputs = {}
    for flag in ("-v", "-vv", "-vvv"):
        http_server.add_faults("/repo/b.txt", [Status(503)])
        root = tmp_path / flag
        result = run_cli(flag, "sync", secret, "--root", root, "--repository", "r")
        assert result.code == 0, result
        assert PASSWORD not in result.err and "alice" not in result.err
        outputs[flag] = result.err
    # -v: the retry (INFO), no request line
    for flag in ("-v", "-vv", "-vvv"):
        assert "triofetch.downloader INFO: retrying " in outputs[flag], outputs[flag]
    assert "triofetch.http" not in outputs["-v"] + outputs["-vv"]
    assert "triofetch.downloader DEBUG: transport" in outputs["-vv"]
    # -vvv: one line per request (the manifest, a.txt, b.txt twice)
    lines = [line for line in outputs["-vvv"].splitlines() if " triofetch.http DEBUG: " in line]
    assert len(lines) == 4, outputs["-vvv"]
    assert any(re.search(r"GET http://127\.0\.0\.1:\d+/repo/b\.txt -> 503, ", x) for x in lines)
    assert any(re.search(r"/repo/a\.txt -> 200, 1 bytes, ", x) for x in lines)
