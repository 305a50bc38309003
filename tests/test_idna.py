"""International host names go out in their IDNA (ASCII) form, on every HTTP transport.

Trio's custom hostname resolver hook (``trio.socket.set_custom_hostname_resolver``, restored
after each test) maps a few test names to 127.0.0.1 and records what was asked; origins on
127.0.0.1 (``RecordingServer``, tests/_fixtures_proxy.py) record what they received.  For
each transport (``trio``, ``httpx``, and ``asks`` where installed):

- ``bücher.test``, ``BÜCHER.test`` (UTS-46 maps it to lower case) and the CJK ``例え.test``
  are looked up, and sent in the ``Host`` header, as ``xn--bcher-kva.test`` and
  ``xn--r8jz45g.test`` (before: the trio transport sent ``bücher`` as Latin-1 bytes and
  refused the CJK name as an invalid URL);
- over TLS, the server name (SNI) is the IDNA name and a certificate issued for it (trustme)
  is accepted, while one issued for another name is refused;
- a name IDNA refuses is an ``InvalidURL`` (not retried), and nothing is looked up.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import triofetch
from tests._fixtures_proxy import RecordingServer, recording_server, server_context
from tests.servers import data

TRANSPORTS = ["trio", "httpx", pytest.param("asks", marks=pytest.mark.asks)]

BUECHER = "xn--bcher-kva.test"
REI = "xn--r8jz45g.test"
OTHER = "other.test"


class LoopbackNames(trio.abc.HostnameResolver):
    """Resolves a few test names to 127.0.0.1 (nothing else); records each name asked."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, Any, int, str, tuple[str, int]]]:
        await trio.lowlevel.checkpoint()
        name = host.decode("ascii") if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: not a test name")
        number = int(port) if port is not None else 0
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", number))]

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise NotImplementedError


@pytest.fixture
async def names() -> AsyncIterator[LoopbackNames]:
    resolver = LoopbackNames({BUECHER, REI, OTHER})
    previous = trio.socket.set_custom_hostname_resolver(resolver)
    try:
        yield resolver
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("idna-ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


def _tls_server(authority: trustme.CA, directory: Path, *names: str) -> Iterator[RecordingServer]:
    cert = authority.issue_cert(*names)  # (trustme writes the names in their IDNA form)
    chain, key = directory / "cert.pem", directory / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    with recording_server(server_context(chain, key)) as server:
        yield server


@pytest.fixture(scope="module")
def plain() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


@pytest.fixture(scope="module")
def tls_idna(
    ca: tuple[trustme.CA, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RecordingServer]:
    """A TLS origin whose certificate is for bücher.test and 例え.test."""
    yield from _tls_server(ca[0], tmp_path_factory.mktemp("idna"), "bücher.test", "例え.test")


@pytest.fixture(scope="module")
def tls_other(
    ca: tuple[trustme.CA, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RecordingServer]:
    """A TLS origin whose certificate (from the same CA) is for other.test only."""
    yield from _tls_server(ca[0], tmp_path_factory.mktemp("other"), OTHER)


def downloader(transport: str, tmp_path: Path, **options: Any) -> triofetch.Downloader:
    if transport == "asks":
        pytest.importorskip("asks")
    return triofetch.Downloader(
        transport=transport,  # type: ignore[arg-type]
        temp_dir=tmp_path,
        retries=0,
        trust_env=False,
        **options,
    )


def tagged(server: RecordingServer, tag: str) -> list[str]:
    """The Host headers of the requests whose target carries *tag*."""
    return [s.headers.get("host", "") for s in server.requests() if tag in s.request_line]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("name", "ascii_name"),
    [("bücher.test", BUECHER), ("BÜCHER.test", BUECHER), ("例え.test", REI)],
)
async def test_a_unicode_host_goes_out_in_idna_form(
    names: LoopbackNames,
    plain: RecordingServer,
    tmp_path: Path,
    transport: str,
    name: str,
    ascii_name: str,
) -> None:
    tag = f"idna-{transport}-{name.encode('punycode').decode('ascii')}"
    url = plain.url(f"/body/{16 * data.KiB}?{tag}", host=name)
    async with downloader(transport, tmp_path) as dl:
        result = await dl.fetch(url, expected_digests={"sha256": data.sha256(16 * data.KiB)})
    assert result.size == 16 * data.KiB
    assert tagged(plain, tag) == [f"{ascii_name}:{plain.port}"]
    assert ascii_name in names.asked
    assert not any(not asked.isascii() for asked in names.asked)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("name", "ascii_name"), [("bücher.test", BUECHER), ("例え.test", REI)])
async def test_tls_to_a_unicode_host_checks_the_certificate_of_its_idna_name(
    names: LoopbackNames,
    tls_idna: RecordingServer,
    ca: tuple[trustme.CA, Path],
    tmp_path: Path,
    transport: str,
    name: str,
    ascii_name: str,
) -> None:
    tag = f"tls-{transport}-{ascii_name}"
    size = data.MiB + 7
    async with downloader(transport, tmp_path, verify=str(ca[1])) as dl:
        result = await dl.fetch(tls_idna.url(f"/body/{size}?{tag}", host=name))
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == data.sha256(size)
    assert tagged(tls_idna, tag) == [f"{ascii_name}:{tls_idna.port}"]
    assert ascii_name in tls_idna.server_names  # the SNI


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_certificate_for_another_name_is_refused(
    names: LoopbackNames,
    tls_other: RecordingServer,
    ca: tuple[trustme.CA, Path],
    tmp_path: Path,
    transport: str,
) -> None:
    tag = f"other-{transport}"
    async with downloader(transport, tmp_path, verify=str(ca[1])) as dl:
        with pytest.raises(triofetch.ConnectionFailed):
            await dl.fetch(tls_other.url(f"/body/1?{tag}", host="bücher.test"))
        # the same server under the name of its certificate: verification passes
        result = await dl.fetch(tls_other.url(f"/body/1?{tag}-ok", host=OTHER))
    assert result.size == 1
    assert tagged(tls_other, tag) == [f"{OTHER}:{tls_other.port}"]  # (only the second)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", ["☃.test", "a\u200db.test"])
async def test_a_name_idna_refuses_is_an_invalid_url(
    names: LoopbackNames, plain: RecordingServer, tmp_path: Path, transport: str, name: str
) -> None:
    async with downloader(transport, tmp_path) as dl:
        with pytest.raises(triofetch.InvalidURL) as info:
            await dl.fetch(plain.url("/body/1", host=name))
    assert not info.value.retryable
    assert names.asked == []
