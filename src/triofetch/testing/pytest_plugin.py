"""The pytest plugin of :mod:`triofetch.testing`: ``triofetch_*`` fixtures.

Registered by an entry point (``pytest11``), so installing triofetch makes the fixtures
available to every test suite; their names all start with ``triofetch_`` so that they never
shadow a fixture of yours.

``triofetch_fault_server``
    a started :class:`~triofetch.testing.FaultServer` for one test.
``triofetch_fault_server_session``
    one started :class:`~triofetch.testing.FaultServer` shared by the whole session (with
    Hypothesis: serve each example under its own path prefix).
``triofetch_sqlite_store``
    an open SQLite :class:`~triofetch.Store` with its artifact storage in a temporary
    root (an async fixture: needs pytest-trio).
``triofetch_postgres_server``
    a :class:`~triofetch.testing.PostgresServer` started once for the session
    (``initdb`` and ``pg_ctl`` on a loopback port; the test fails when PostgreSQL's server
    binaries are missing), stopped and deleted at the end of the session, or when pytest
    is stopped by SIGTERM.
``triofetch_postgres_url``
    the URL of a new, empty database on that server, dropped after the test.
``triofetch_postgres_store``
    an open :class:`~triofetch.Store` on such a database, with its artifact storage in a
    temporary root (an async fixture: needs pytest-trio and psycopg).

The store fixtures take options of :func:`~triofetch.open_store` from the marker
``@pytest.mark.triofetch_store(...)`` on the test (or its class or module):
``repository_keys``, ``pool_size``, ``cache_mib`` and ``connect_timeout``.

This module imports nothing heavy when pytest loads it: no Trio, no store, no Hypothesis,
no psycopg; each fixture imports what it needs when it runs.

pytest rewrites the ``assert`` statements of every package that ships a plugin, which would
be all of triofetch: the library's own checks, not a test's.  Loading this plugin takes
triofetch off that list (best effort, through pytest's import hook; a pytest that works
otherwise simply rewrites it), so the library runs under pytest as it runs everywhere.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from triofetch.store import Store

    from ._faultserver import FaultServer
    from ._pgserver import PostgresServer

__all__ = [
    "triofetch_fault_server",
    "triofetch_fault_server_session",
    "triofetch_postgres_server",
    "triofetch_postgres_store",
    "triofetch_postgres_url",
    "triofetch_sqlite_store",
]

_databases = itertools.count(1)

#: the options of open_store() the marker ``triofetch_store`` may set (where the store is
#: and whether it is made or read-only are the fixtures' own business)
_STORE_OPTIONS = ("repository_keys", "pool_size", "cache_mib", "connect_timeout")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "triofetch_store(repository_keys=..., pool_size=..., cache_mib=..., connect_timeout=...):"
        " options of open_store() for the triofetch_sqlite_store and"
        " triofetch_postgres_store fixtures",
    )


def _store_options(request: pytest.FixtureRequest) -> dict[str, object]:
    """The ``triofetch_store`` marker's options (the closest marker wins), checked."""
    marker = request.node.get_closest_marker("triofetch_store")
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(
            f"@pytest.mark.triofetch_store takes keywords only ({', '.join(_STORE_OPTIONS)}),"
            f" got positional {marker.args!r}"
        )
    unknown = sorted(set(marker.kwargs) - set(_STORE_OPTIONS))
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.triofetch_store: unknown option {', '.join(unknown)};"
            f" it takes {', '.join(_STORE_OPTIONS)}"
        )
    return dict(marker.kwargs)


def _leave_the_library_unrewritten() -> None:
    """Undo pytest's marking of the whole ``triofetch`` package for assertion rewriting
    (done for any distribution with a ``pytest11`` entry point, before it loads the plugin)."""
    for finder in sys.meta_path:
        marked = getattr(finder, "_must_rewrite", None)
        if type(finder).__name__ == "AssertionRewritingHook" and isinstance(marked, set):
            marked.discard("triofetch")


_leave_the_library_unrewritten()


@pytest.fixture
def triofetch_fault_server() -> Iterator[FaultServer]:
    """A started :class:`~triofetch.testing.FaultServer` for one test, stopped (its
    connections closed) at teardown."""
    from ._faultserver import FaultServer

    with FaultServer() as server:
        yield server


@pytest.fixture(scope="session")
def triofetch_fault_server_session() -> Iterator[FaultServer]:
    """One started :class:`~triofetch.testing.FaultServer` for the whole session.

    Its files, faults, authentication and counters are shared by every test using it:
    give each test (and each Hypothesis example) its own paths.
    """
    from ._faultserver import FaultServer

    with FaultServer() as server:
        yield server


@pytest.fixture
async def triofetch_sqlite_store(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """An open SQLite store with its artifact storage, both in a new temporary root.

    ``@pytest.mark.triofetch_store(repository_keys=...)`` passes options to
    :func:`~triofetch.open_store` (see the module's docstring)."""
    from triofetch.store import open_store

    options: Any = _store_options(request)
    async with open_store(root=tmp_path / "triofetch-store", **options) as store:
        yield store


@contextlib.contextmanager
def _sigterm_interrupts(server: PostgresServer) -> Iterator[None]:
    """While in the block, SIGTERM interrupts pytest as Ctrl-C does (its teardown, and so
    ``server.stop()``, runs); a second SIGTERM stops *server* at once and ends the process
    by SIGTERM.  Nothing changes outside the main thread, or when SIGTERM has a handler
    already (of the test suite, of another plugin)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    received = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if received:  # teardown is taking too long, or hangs: end it
            try:
                server.stop()
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
            return
        received = True
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint) and on_sigint is not signal.default_int_handler:
            on_sigint(signal.SIGINT, frame)  # Trio's in a Trio test: it raises when it is safe
        else:
            raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def triofetch_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server started for the session on 127.0.0.1 (durability off), stopped
    and deleted at the end (also when pytest is interrupted by Ctrl-C or SIGTERM, or when
    the process exits without a teardown).  Fails the test when it cannot start."""
    from ._pgserver import POSTGRES_FAST_SETTINGS, PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer(settings=POSTGRES_FAST_SETTINGS)
    except PostgresUnavailable as exc:
        pytest.fail(f"triofetch_postgres_server: {exc}")
    atexit.register(server.stop)
    try:
        with _sigterm_interrupts(server):
            try:
                server.start()
            except PostgresUnavailable as exc:
                pytest.fail(f"triofetch_postgres_server: PostgreSQL could not start: {exc}")
            yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)


@pytest.fixture
def triofetch_postgres_url(triofetch_postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on :func:`triofetch_postgres_server`, dropped
    after the test."""
    name = f"triofetch_test_{os.getpid()}_{next(_databases)}"
    url = triofetch_postgres_server.create_database(name)
    try:
        yield url
    finally:
        triofetch_postgres_server.drop_database(name)


@pytest.fixture
async def triofetch_postgres_store(
    triofetch_postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """An open store on a new PostgreSQL database, with its artifact storage in a new
    temporary root.

    ``@pytest.mark.triofetch_store(repository_keys=...)`` passes options to
    :func:`~triofetch.open_store` (see the module's docstring)."""
    from triofetch.store import open_store

    options: Any = _store_options(request)
    async with open_store(
        triofetch_postgres_url, root=tmp_path / "triofetch-store", **options
    ) as store:
        yield store
