"""Retries that make sense (#17, item 3): a digest or size mismatch is retried at most
``mismatch_retries`` times per URL before the next mirror, ``file://`` failures are never
retried, and the final error lists each distinct cause once, with its count and URLs.

Against a real loopback server that counts the GETs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import triofetch
from tests.test_downloader import downloader, leftovers
from triofetch.testing import FaultServer, Status

DATA = os.urandom(50_000)
SHA256 = hashlib.sha256(DATA).hexdigest()
WRONG = "0" * 64


async def test_digest_mismatch_is_retried_once_per_url(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA)
    async with downloader(transport, temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.DigestMismatch) as info:
            await dl.fetch(http_server.url("/a.bin"), expected_digests={"sha256": WRONG})
    assert http_server.count("/a.bin") == 2  # not 4: the same bytes come back every time
    assert len(info.value.attempts) == 2
    assert leftovers(temp_dir) == []


async def test_size_mismatch_is_retried_once_per_url(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA)
    async with downloader(transport, temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.SizeMismatch):
            await dl.fetch(http_server.url("/a.bin"), expected_size=len(DATA) + 1)
    assert http_server.count("/a.bin") == 2


async def test_mismatch_moves_on_to_the_next_mirror(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/a.bin", DATA)
    http_server.add_file("/b.bin", DATA)
    urls = [http_server.url("/a.bin"), http_server.url("/b.bin")]
    async with downloader(transport, temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.DigestMismatch) as info:
            await dl.fetch(urls, expected_digests={"sha256": WRONG})
    assert http_server.count("/a.bin") == 2
    assert http_server.count("/b.bin") == 2
    assert [a.url for a in info.value.attempts] == [urls[0]] * 2 + [urls[1]] * 2


async def test_mismatch_then_good_mirror(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/bad.bin", os.urandom(len(DATA)))
    http_server.add_file("/good.bin", DATA)
    urls = [http_server.url("/bad.bin"), http_server.url("/good.bin")]
    async with downloader(transport, temp_dir, retries=3) as dl:
        result = await dl.fetch(urls, expected_digests={"sha256": SHA256})
    assert result.url == urls[1] and result.attempts == 3
    assert http_server.count("/bad.bin") == 2 and http_server.count("/good.bin") == 1


@pytest.mark.parametrize(("mismatch_retries", "gets"), [(0, 1), (1, 2), (2, 3), (10, 4)])
async def test_mismatch_retries_option(
    http_server: FaultServer, temp_dir: Path, mismatch_retries: int, gets: int
) -> None:
    http_server.add_file("/a.bin", DATA)
    async with downloader("trio", temp_dir, retries=3, mismatch_retries=mismatch_retries) as dl:
        with pytest.raises(triofetch.DigestMismatch):
            await dl.fetch(http_server.url("/a.bin"), expected_digests={"sha256": WRONG})
    assert http_server.count("/a.bin") == gets  # (never more than retries + 1)


async def test_other_failures_keep_their_retries(http_server: FaultServer, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA, faults=[Status(503)] * 10)
    async with downloader("trio", temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.HTTPStatusError):
            await dl.fetch(http_server.url("/a.bin"))
    assert http_server.count("/a.bin") == 4


@pytest.mark.parametrize("value", [-1, 1.5, True, "1"])
def test_mismatch_retries_is_checked(value: object) -> None:
    with pytest.raises(triofetch.InvalidInput, match="mismatch_retries"):
        triofetch.Downloader(mismatch_retries=value)  # type: ignore[arg-type]


async def test_file_url_mismatch_is_not_retried(tmp_path: Path, temp_dir: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(DATA)
    async with downloader("trio", temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.DigestMismatch) as info:
            await dl.fetch(source.as_uri(), expected_digests={"sha256": WRONG})
    assert len(info.value.attempts) == 1


async def test_missing_file_url_is_tried_once(tmp_path: Path, temp_dir: Path) -> None:
    async with downloader("trio", temp_dir, retries=3) as dl:
        with pytest.raises(triofetch.DownloadError) as info:
            await dl.fetch((tmp_path / "missing.bin").as_uri())
    assert len(info.value.attempts) == 1


async def test_file_url_failure_moves_on_to_the_next_mirror(
    http_server: FaultServer, tmp_path: Path, temp_dir: Path
) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(len(DATA)))
    http_server.add_file("/a.bin", DATA)
    async with downloader("trio", temp_dir, retries=3) as dl:
        result = await dl.fetch(
            [source.as_uri(), http_server.url("/a.bin")], expected_digests={"sha256": SHA256}
        )
    assert result.attempts == 2 and result.url == http_server.url("/a.bin")


async def test_final_error_lists_each_cause_once(http_server: FaultServer, temp_dir: Path) -> None:
    http_server.add_file("/a.bin", DATA)
    http_server.add_file("/b.bin", DATA, faults=[Status(503)] * 10)
    urls = [http_server.url("/a.bin"), http_server.url("/b.bin")]
    async with downloader("trio", temp_dir, retries=1) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(urls, expected_digests={"sha256": WRONG})
    text = str(info.value)
    mismatch = info.value.attempts[0].message
    assert mismatch.startswith("sha256 mismatch")
    assert text.count(mismatch) == 1
    assert text.count("HTTP 503") == 1
    assert "failed after 4 attempts" in text
    assert f"{mismatch} (2x, {urls[0]})" in text
    assert f"(2x, {urls[1]})" in text
    assert len(info.value.attempts) == 4  # every attempt is still there


async def test_final_error_names_every_url_of_a_cause(
    http_server: FaultServer, temp_dir: Path
) -> None:
    urls = [http_server.url("/m1"), http_server.url("/m2")]
    async with downloader("trio", temp_dir) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(urls)
    text = str(info.value)
    assert text.count("HTTP 404") == 1
    assert f"(2x, {urls[0]}, {urls[1]})" in text


async def test_single_attempt_message_is_unchanged(
    http_server: FaultServer, temp_dir: Path
) -> None:
    async with downloader("trio", temp_dir) as dl:
        with pytest.raises(triofetch.HTTPStatusError) as info:
            await dl.fetch(http_server.url("/missing"))
    assert str(info.value) == (
        f"server answered HTTP 404 Not Found, expected 200 ({http_server.url('/missing')})"
    )
