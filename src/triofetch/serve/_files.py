"""Reading stored files for the content app, in worker threads, never out of the storage.

Owns opening a stored file by its sha256 so that no symbolic link is ever followed below
the storage's ``artifacts`` directory (each directory and the file are opened relative to
their parent with ``O_NOFOLLOW``), checking that it is a regular file of the recorded size,
and reading it in pieces.  Every function here blocks: the app calls them through
``trio.to_thread.run_sync`` under its limiter.  It must not know HTTP, ASGI or the database.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["Damaged", "Refused", "open_stored", "read_at"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class Refused(OSError):
    """The stored file, or a directory on its way, is a symbolic link (not followed) or
    not what the storage makes."""


class Damaged(OSError):
    """The stored file is not of its recorded size (a truncated or replaced file)."""


def _open_below(artifacts: Path, sha256: str) -> int:
    parent = os.open(artifacts / sha256[:2], _DIR)
    try:
        sub = os.open(sha256[2:4], _DIR, dir_fd=parent)
        try:
            return os.open(sha256, _FILE, dir_fd=sub)
        finally:
            os.close(sub)
    finally:
        os.close(parent)


def open_stored(
    artifacts: Path, sha256: str, size: int, offset: int, count: int
) -> tuple[int, bytes]:
    """Open the file of *sha256* under *artifacts* (``ab/cd/abcd...``) and read *count*
    bytes at *offset*: ``(fd, data)``, the caller closing *fd*.

    Raises FileNotFoundError (not stored), :class:`Refused` (a symbolic link on the way, or
    not a regular file) or :class:`Damaged` (not *size* bytes long).
    """
    try:
        fd = _open_below(artifacts, sha256)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise Refused(exc.errno, "a symbolic link in the storage (not followed)") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(errno.EINVAL, "not a regular file")
        if info.st_size != size:
            raise Damaged(errno.EIO, f"{info.st_size} bytes stored, {size} recorded")
        data = read_at(fd, offset, count) if count else b""
    except BaseException:
        os.close(fd)
        raise
    return fd, data


def read_at(fd: int, offset: int, count: int) -> bytes:
    """Exactly *count* bytes of *fd* at *offset* (:class:`Damaged` if the file ends first)."""
    data = os.pread(fd, count, offset)
    if len(data) == count:
        return data
    parts = [data]
    got = len(data)
    while got < count:
        more = os.pread(fd, count - got, offset + got)
        if not more:
            raise Damaged(errno.EIO, "the stored file ended early (truncated while served)")
        parts.append(more)
        got += len(more)
    return b"".join(parts)
