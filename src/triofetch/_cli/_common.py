"""What the commands share: exit codes, the error type, output helpers, opening the store."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from .._errors import redact_url
from .._store import DEFAULT_DATABASE_NAME, Store, open_store

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "absolute_path",
    "emit_json",
    "existing_store",
    "human_bytes",
    "log",
    "resolve_root",
    "warn",
]

EXIT_OK = 0
#: some units (or files, or artifacts) failed; the rest is done
EXIT_FAILED = 1
#: bad usage, an unreachable or malformed manifest, a store that cannot be opened
EXIT_USAGE = 2
#: interrupted (Ctrl-C / SIGINT)
EXIT_INTERRUPTED = 130

#: the environment variable giving the default ``--root``
ROOT_ENV = "TRIOFETCH_ROOT"
DEFAULT_ROOT = "triofetch-data"

log = logging.getLogger("triofetch.cli")


class CLIError(Exception):
    """An expected error: one message on stderr, then exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def warn(message: str, file: TextIO | None = None) -> None:
    print(f"triofetch: {message}", file=file or sys.stderr, flush=True)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def absolute_path(text: str) -> Path:
    return Path(text).expanduser().absolute()


def resolve_root(root: str | None) -> Path:
    """``--root``, else ``$TRIOFETCH_ROOT``, else ``./triofetch-data`` (absolute)."""
    return absolute_path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def describe_db(db: str | None, root: Path) -> str:
    return redact_url(db) if db else str(root / DEFAULT_DATABASE_NAME)


@asynccontextmanager
async def existing_store(
    root: Path, db: str | None, *, storage: bool = True
) -> AsyncIterator[Store]:
    """Open a store that must exist already (the read-only commands never create one)."""
    if db is None and not (root / DEFAULT_DATABASE_NAME).is_file():
        raise CLIError(f"no triofetch store at {root} (give --root, or run 'triofetch sync')")
    if storage and not (root / "artifacts").is_dir():
        raise CLIError(f"no artifact storage at {root} (give --root, or run 'triofetch sync')")
    async with open_store(db, root=root if storage or db is None else None) as store:
        yield store
