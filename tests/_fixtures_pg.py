"""PostgreSQL fixtures: a real server started for the session, a fresh database per test.

- ``postgres_server``: session-scoped :class:`triofetch.testing.PostgresServer` (``initdb``
  into a temp dir, ``pg_ctl`` on a free loopback port, as an unprivileged user when root):
  the kit's ``triofetch_postgres_server`` fixture, so one server serves both.
- ``postgres_server_dsn``: its DSN (the ``postgres`` maintenance database).
- ``postgres_dsn``: a DSN to a new, empty database for this test (dropped afterwards).
- ``store_url``: parametrized over ``sqlite`` and ``postgresql``: one behavioural suite runs
  on both backends.  The PostgreSQL case is marked ``postgres``.

When the PostgreSQL binaries are missing these fixtures FAIL, they never skip: CI installs
PostgreSQL with ``scripts/ensure-postgres.sh``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from triofetch.store import Store, open_store
from triofetch.testing import PostgresServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server(triofetch_postgres_server: PostgresServer) -> PostgresServer:
    """The session's PostgreSQL server (it fails the test when it cannot start)."""
    return triofetch_postgres_server


@pytest.fixture(scope="session")
def postgres_server_dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.dsn()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"tf_test_{next(_counter)}"
    dsn = postgres_server.create_database(name)
    try:
        yield dsn
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for a new, empty store: SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


@pytest.fixture
async def store(tmp_path: Path, store_url: str) -> AsyncIterator[Store]:
    """A new store on each backend (SQLite, PostgreSQL) with its storage root."""
    async with open_store(store_url, root=tmp_path / "root") as s:
        yield s
