"""A plan of faults on the FaultServer of triofetch.testing, seen by a plain HTTP client
and by a Downloader with retries.

A pytest test file; ``triofetch_fault_server`` comes from triofetch's pytest plugin.  Run it
with ``pytest docs/examples/testing_fault_server.py``.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest
import trio

import triofetch
from triofetch.testing import FaultServer, Reset, Status, WrongBytes

DATA = b"0123456789" * 1000


def test_each_request_meets_the_next_fault(triofetch_fault_server: FaultServer) -> None:
    server = triofetch_fault_server
    # --8<-- [plan]
    server.add_file(
        "/a.bin",
        DATA,
        faults=[Status(503, {"Retry-After": "0"}), Reset(after_bytes=100), WrongBytes()],
    )
    url = server.url("/a.bin")  # http://127.0.0.1:<port>/a.bin
    # --8<-- [/plan]
    with httpx.Client() as client:
        assert client.get(url).status_code == 503
        with pytest.raises(httpx.TransportError):  # reset after 100 bytes of the body
            client.get(url)
        wrong = client.get(url)
        assert len(wrong.content) == len(DATA) and wrong.content != DATA
        assert client.get(url).content == DATA  # the plan is used up: served whole
    assert server.count("/a.bin") == 4


def test_a_downloader_retries_through_the_plan(triofetch_fault_server: FaultServer) -> None:
    server = triofetch_fault_server
    server.add_file("/b.bin", DATA, faults=[Status(500), Reset(after_bytes=10)])

    async def main() -> bytes:
        async with triofetch.Downloader(retries=2, backoff=0.001) as downloader:
            result = await downloader.fetch(
                server.url("/b.bin"), expected_digests={"sha256": hashlib.sha256(DATA).hexdigest()}
            )
            return await trio.Path(result.path).read_bytes()

    assert trio.run(main) == DATA
    assert server.count("/b.bin") == 3  # two spoiled answers, then the file


if __name__ == "__main__":
    # run as a script, this file imports pytest plugins' packages (triofetch) before
    # pytest starts, which pytest warns about: harmless, and `pytest <file>` does not
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    raise SystemExit(pytest.main([__file__, "-q", *quiet]))
