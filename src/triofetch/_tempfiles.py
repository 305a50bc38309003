"""Names of temp files.

Every temp file triofetch writes is named ``tf-<pid>-<space>-<random>.part`` so that a
cleanup can tell the files of a live process (never touched) from those a killed process left
behind.  A pid names one process only within its *pid space*: one boot of one machine's
kernel, one PID namespace (a container has its own; ``pid 1`` is in every one of them).
``<space>`` (8 hex digits, :func:`pid_space`) says which, so that writers on other machines
or in other containers sharing one storage root are never taken for this machine's
processes, alive or dead.  Names without a space (``tf-<pid>-<random>.part``) were written
by a triofetch older than that.

Other writers may use other prefixes and suffixes (``export``'s ``.tf-export-``) with the
same middle part.  This module owns that naming, and whether the process a name names is
alive; it must not create, remove or look at any temp file.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import socket
from pathlib import Path

__all__ = [
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "new_temp_name",
    "new_temp_path",
    "pid_space",
    "temp_file_pid",
    "temp_file_writer",
    "writer_alive",
]

TEMP_PREFIX = "tf-"
TEMP_SUFFIX = ".part"


def _find_pid_space() -> str:
    """This process's pid space: a hash of the kernel's boot id (random for every boot of
    every machine; the host name where there is none) and of its PID namespace."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except (OSError, ValueError):
        boot = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.blake2b(f"{boot}\0{namespace}".encode(), digest_size=4).hexdigest()


# A random run id once per process, then a counter: no urandom() syscall per download.
_RUN = secrets.token_hex(6)
_COUNTER = itertools.count()
_PID = os.getpid()
_SPACE = _find_pid_space()


def _after_fork() -> None:
    global _RUN, _COUNTER, _PID, _SPACE
    _RUN, _COUNTER, _PID = secrets.token_hex(6), itertools.count(), os.getpid()
    _SPACE = _find_pid_space()  # (a child may be in a PID namespace of its own)


os.register_at_fork(after_in_child=_after_fork)


def pid_space() -> str:
    """The pid space of this process, as temp names carry it."""
    return _SPACE


def new_temp_path(directory: Path) -> Path:
    """A fresh, unused name for a temp file in *directory* (the file is not created)."""
    return directory / new_temp_name()


def new_temp_name(prefix: str = TEMP_PREFIX, suffix: str = TEMP_SUFFIX) -> str:
    """A fresh file name for a temp file (no directory; cheaper than a Path per file)."""
    return f"{prefix}{_PID}-{_SPACE}-{_RUN}{next(_COUNTER):x}{suffix}"


def temp_file_writer(
    name: str, prefix: str = TEMP_PREFIX, suffix: str = TEMP_SUFFIX
) -> tuple[int, str] | None:
    """The pid and the pid space (``""`` for a name without one) of the process that wrote
    temp file *name* (named with *prefix* and *suffix*), or None if it is not ours."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    middle = name[len(prefix) : len(name) - len(suffix)]
    pid, _, token = middle.partition("-")
    if not (pid.isascii() and pid.isdigit()) or not token:
        return None
    space, dash, rest = token.partition("-")
    if not dash:
        return int(pid), ""
    if not rest or len(space) != 8 or not all(c in "0123456789abcdef" for c in space):
        return None
    return int(pid), space


def writer_alive(pid: int, space: str) -> bool | None:
    """Whether the process that wrote a temp file (its pid and pid space, as
    :func:`temp_file_writer` gives them) is alive: this process, or another of this pid
    space that exists; None for another pid space's, whose pid says nothing here."""
    if space not in ("", _SPACE):
        return None
    if pid == _PID:
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def temp_file_pid(name: str) -> int | None:
    """The pid of the process that wrote temp file *name*, or None if it is not ours."""
    writer = temp_file_writer(name)
    return None if writer is None else writer[0]
