"""HTTP fixtures: a real loopback server with fault injection (triofetch.testing.FaultServer).

Plain synchronous fixtures: the server runs in its own threads, so they serve synchronous
tests and Trio tests alike.  ``transport`` parametrizes a test over the HTTP transports
(asks marked ``asks``); ``temp_dir`` is a fresh directory for downloads' temp files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from triofetch.testing import FaultServer


@pytest.fixture
def http_server(triofetch_fault_server: FaultServer) -> FaultServer:
    """A started FaultServer for one test, stopped (connections closed) at teardown: the
    kit's ``triofetch_fault_server`` (``triofetch.testing.pytest_plugin``)."""
    return triofetch_fault_server


@pytest.fixture(scope="module")
def http_server_module() -> Iterator[FaultServer]:
    """A started FaultServer shared by the tests of one module.

    Its files, faults, auth settings and counters are shared too: give each test its own
    paths, or call ``reset_counters()`` / ``clear_auth()`` as needed.
    """
    with FaultServer() as server:
        yield server


@pytest.fixture(params=["httpx", "trio", pytest.param("asks", marks=pytest.mark.asks)])
def transport(request: pytest.FixtureRequest) -> str:
    """The name of each HTTP transport in turn."""
    return str(request.param)


@pytest.fixture
def temp_dir(tmp_path: Path) -> Path:
    """An empty directory for the temp files of downloads."""
    d = tmp_path / "tmp"
    d.mkdir()
    return d


def held_at_the_gate(
    data: bytes, gate: threading.Event, first: int = 2048
) -> Callable[[], Iterable[bytes]]:
    """A body for ``FaultServer.add_generator``: the *first* bytes of *data*, then the rest
    once *gate* is set (at most 60 s later: a test that never opens it fails, not hangs).
    For a test that needs a download to be still running while something else happens."""

    def make() -> Iterator[bytes]:
        yield data[:first]
        gate.wait(60)
        yield data[first:]

    return make
