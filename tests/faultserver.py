"""The fault-injecting loopback server, now public: :mod:`triofetch.testing` (this module
re-exports it for the tests that import it from here).  See
``src/triofetch/testing/_faultserver.py``."""

from __future__ import annotations

from triofetch.testing import (
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

__all__ = [
    "Fault",
    "FaultServer",
    "Hang",
    "Redirect",
    "RequestRecord",
    "Reset",
    "Slow",
    "Status",
    "Truncate",
    "WrongBytes",
]
