"""HTTP fixtures: a real loopback server with fault injection (see tests/faultserver.py).

Plain synchronous fixtures: the server runs in its own threads, so they serve synchronous
tests and Trio tests alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faultserver import FaultServer


@pytest.fixture
def http_server() -> Iterator[FaultServer]:
    """A started FaultServer for one test, stopped (connections closed) at teardown."""
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def http_server_module() -> Iterator[FaultServer]:
    """A started FaultServer shared by the tests of one module.

    Its files, faults, auth settings and counters are shared too: give each test its own
    paths, or call ``reset_counters()`` / ``clear_auth()`` as needed.
    """
    with FaultServer() as server:
        yield server
