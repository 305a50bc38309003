"""Names of temp files.

Every temp file triofetch writes is named ``tf-<pid>-<random>.part`` so that a cleanup can
tell the files of a live process (never touched) from those a killed process left behind.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["TEMP_PREFIX", "TEMP_SUFFIX", "new_temp_path", "temp_file_pid"]

TEMP_PREFIX = "tf-"
TEMP_SUFFIX = ".part"


def new_temp_path(directory: Path) -> Path:
    """A fresh, unused name for a temp file in *directory* (the file is not created)."""
    return directory / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{TEMP_SUFFIX}"


def temp_file_pid(name: str) -> int | None:
    """The pid of the process that wrote temp file *name*, or None if it is not ours."""
    if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
        return None
    middle = name[len(TEMP_PREFIX) : -len(TEMP_SUFFIX)]
    pid, _, token = middle.partition("-")
    if not pid.isdigit() or not token:
        return None
    return int(pid)
