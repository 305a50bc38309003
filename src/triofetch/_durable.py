"""Durability of directory entries: the one place that fsyncs a directory.

A rename, create or unlink is durable only once the directory holding the entry is
fsynced.  The storage needs that to hold (its callers get the error); the SQLite store's
rename of a newly made database into place tolerates file systems that cannot do it (the
database it renames was only just made: losing the rename loses nothing anyone had).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory"]


def fsync_directory(path: str | os.PathLike[str] | Path) -> None:
    """fsync the directory *path*, making the entries changed in it durable.

    Raises the :class:`OSError` of the open or the fsync.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
