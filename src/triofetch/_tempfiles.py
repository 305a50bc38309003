"""Names of temp files.

Every temp file triofetch writes is named ``tf-<pid>-<random>.part`` so that a cleanup can
tell the files of a live process (never touched) from those a killed process left behind.
This module owns that naming; it must not create, remove or look at any file.
"""

from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path

__all__ = [
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "new_temp_name",
    "new_temp_path",
    "temp_file_pid",
]

TEMP_PREFIX = "tf-"
TEMP_SUFFIX = ".part"


# A random run id once per process, then a counter: no urandom() syscall per download.
_RUN = secrets.token_hex(6)
_COUNTER = itertools.count()
_PID = os.getpid()


def _after_fork() -> None:
    global _RUN, _COUNTER, _PID
    _RUN, _COUNTER, _PID = secrets.token_hex(6), itertools.count(), os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def new_temp_path(directory: Path) -> Path:
    """A fresh, unused name for a temp file in *directory* (the file is not created)."""
    return directory / new_temp_name()


def new_temp_name() -> str:
    """A fresh file name for a temp file (no directory; cheaper than a Path per file)."""
    return f"{TEMP_PREFIX}{_PID}-{_RUN}{next(_COUNTER):x}{TEMP_SUFFIX}"


def temp_file_pid(name: str) -> int | None:
    """The pid of the process that wrote temp file *name*, or None if it is not ours."""
    if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
        return None
    middle = name[len(TEMP_PREFIX) : -len(TEMP_SUFFIX)]
    pid, _, token = middle.partition("-")
    if not (pid.isascii() and pid.isdigit()) or not token:
        return None
    return int(pid)
