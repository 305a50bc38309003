"""triofetch.testing: a kit for testing code built on triofetch, as triofetch tests itself.

- :class:`FaultServer` and its faults (:class:`Status`, :class:`Reset`, :class:`Truncate`,
  :class:`Slow`, :class:`Hang`, :class:`WrongBytes`, :class:`Redirect`): a real HTTP/1.1
  server on 127.0.0.1 with a plan of faults per path, authentication and request counts;
- :func:`check_store`: the "complete or absent" invariant checked from outside, returning
  the :class:`StoreProblem` objects found;
- :class:`RepositorySpec` and :class:`CancelPoint`: repositories and cancellations to
  draw, which :mod:`triofetch.testing.strategies` (Hypothesis) draws;
- :class:`PostgresServer`: a throw-away PostgreSQL server on a loopback port;
- a pytest plugin (``triofetch.testing.pytest_plugin``, registered by an entry point) with
  ``triofetch_*`` fixtures.

Import it explicitly (``from triofetch.testing import FaultServer``): it is not part of
``import triofetch``.  It uses triofetch's public API only.  Names are loaded on first use,
so the pytest plugin costs nothing to load; Hypothesis is imported by
:mod:`triofetch.testing.strategies` alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._check import (
        ProblemKind as ProblemKind,
        StoreProblem as StoreProblem,
        assert_store_ok as assert_store_ok,
        check_store as check_store,
    )
    from ._faultserver import (
        BearerTokens as BearerTokens,
        Fault as Fault,
        FaultServer as FaultServer,
        Hang as Hang,
        Redirect as Redirect,
        RequestRecord as RequestRecord,
        Reset as Reset,
        Slow as Slow,
        Status as Status,
        Truncate as Truncate,
        WrongBytes as WrongBytes,
    )
    from ._pgserver import (
        POSTGRES_FAST_SETTINGS as POSTGRES_FAST_SETTINGS,
        PostgresServer as PostgresServer,
        PostgresUnavailable as PostgresUnavailable,
        find_postgres_bin_dir as find_postgres_bin_dir,
        running_postgres as running_postgres,
    )
    from ._specs import (
        CREATOR_EVENT_KINDS as CREATOR_EVENT_KINDS,
        CancelPoint as CancelPoint,
        FileSpec as FileSpec,
        RepositorySpec as RepositorySpec,
        UnitSpec as UnitSpec,
    )

#: public name -> the private module defining it
_HOMES = {
    "ProblemKind": "_check",
    "StoreProblem": "_check",
    "assert_store_ok": "_check",
    "check_store": "_check",
    "BearerTokens": "_faultserver",
    "Fault": "_faultserver",
    "FaultServer": "_faultserver",
    "Hang": "_faultserver",
    "Redirect": "_faultserver",
    "RequestRecord": "_faultserver",
    "Reset": "_faultserver",
    "Slow": "_faultserver",
    "Status": "_faultserver",
    "Truncate": "_faultserver",
    "WrongBytes": "_faultserver",
    "POSTGRES_FAST_SETTINGS": "_pgserver",
    "PostgresServer": "_pgserver",
    "PostgresUnavailable": "_pgserver",
    "find_postgres_bin_dir": "_pgserver",
    "running_postgres": "_pgserver",
    "CREATOR_EVENT_KINDS": "_specs",
    "CancelPoint": "_specs",
    "FileSpec": "_specs",
    "RepositorySpec": "_specs",
    "UnitSpec": "_specs",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
