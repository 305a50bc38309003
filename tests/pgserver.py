"""The throw-away PostgreSQL server, now public: :class:`triofetch.testing.PostgresServer`
(this module re-exports it under its former names for the tests and benchmarks that import
it from here).  See ``src/triofetch/testing/_pgserver.py``."""

from __future__ import annotations

from triofetch.testing import (
    POSTGRES_FAST_SETTINGS as FAST_SETTINGS,
    PostgresServer as PostgresServer,
    PostgresUnavailable as PostgresUnavailable,
    find_postgres_bin_dir as find_bin_dir,
    running_postgres as running_postgres,
)

__all__ = [
    "FAST_SETTINGS",
    "PostgresServer",
    "PostgresUnavailable",
    "find_bin_dir",
    "running_postgres",
]
