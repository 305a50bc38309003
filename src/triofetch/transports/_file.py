"""``file://`` URLs: a local file read in worker threads, answered like a web server would.

Owns turning a ``file://`` URL into a local path and a response (200, 404 or 403) whose
body is the file's bytes.  It must not write anything, nor know the downloader's temp files
or destinations.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import trio

from ..errors import ConnectionFailed, InvalidURL
from ._base import Response

__all__ = ["FileTransport", "file_url_path"]

_CHUNK = 1 << 20


def file_url_path(url: str) -> Path:
    """The local path of a ``file://`` URL (host empty or ``localhost``).

    The URL's percent escapes are the bytes of the file's name (what
    :meth:`pathlib.Path.as_uri` writes), decoded as :func:`os.fsdecode` does: the path names
    that very file whatever the locale's encoding, a name that is not UTF-8 included.
    Decoded as UTF-8 text instead, a name the file system encoding cannot write (é under
    ``LC_ALL=C`` without UTF-8 mode) raised ``UnicodeEncodeError`` out of the download, and
    a name in another encoding (``%E9``) became U+FFFD: 404 for a file that is there."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise InvalidURL("not a file:// URL", url=url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidURL(
            f"file:// URLs on another host ({parts.netloc!r}) are not supported", url=url
        )
    # (characters left unescaped: their UTF-8, or the bytes surrogateescape stands for)
    try:
        path = unquote_to_bytes(parts.path.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # (a lone surrogate that stands for no byte)
        raise InvalidURL("a file:// URL's path must be text or bytes", url=url) from None
    if not path.startswith(b"/") or b"\x00" in path:
        raise InvalidURL("a file:// URL needs an absolute path", url=url)
    return Path(os.fsdecode(path))


class _FileResponse:
    __slots__ = ("_file", "headers", "reason", "status_code", "url")

    def __init__(
        self, url: str, status: int, reason: str, file: io.BufferedReader | None, size: int | None
    ) -> None:
        self.url = url
        self.status_code = status
        self.reason = reason
        self._file = file
        self.headers: Mapping[str, str] = {"content-length": str(size)} if size is not None else {}

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        file = self._file
        if file is None:
            return
        while True:
            try:
                # read1: what one read(2) gives (a FIFO's bytes as they come, not held
                # back until 1 MiB is there; a regular file's 1 MiB all the same)
                chunk = await trio.to_thread.run_sync(file.read1, _CHUNK)
            except OSError as exc:
                raise ConnectionFailed(f"reading failed: {exc.strerror}", url=self.url) from exc
            if not chunk:
                return
            yield chunk


_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_long(path: Path) -> io.BufferedReader:
    """Open *path*, longer than the system takes in one call (``PATH_MAX``, 4096 bytes on
    Linux), one directory at a time: ``export`` writes such paths (below a deep ``DEST``)
    that way, and its manifest must read back."""
    *directories, name = path.parts
    fd = os.open(directories[0], _DIRECTORY)
    try:
        for directory in directories[1:]:
            below = os.open(directory, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        return open(os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0), dir_fd=fd), "rb")
    finally:
        os.close(fd)


def _open(path: Path) -> tuple[io.BufferedReader, int]:
    try:
        file = path.open("rb")
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG or len(path.parts) < 2:
            raise
        file = _open_long(path)
    try:
        st = os.fstat(file.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        return file, st.st_size
    except BaseException:
        file.close()
        raise


class FileTransport:
    """Reads local files.  A missing file answers 404 and an unreadable one 403."""

    @asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Response]:
        path = file_url_path(url)
        file: io.BufferedReader | None = None
        try:
            file, size = await trio.to_thread.run_sync(_open, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            response = _FileResponse(url, 404, "Not Found", None, None)
        except PermissionError:
            response = _FileResponse(url, 403, "Forbidden", None, None)
        except OSError as exc:
            raise ConnectionFailed(f"cannot open file: {exc.strerror}", url=url) from exc
        else:
            response = _FileResponse(url, 200, "OK", file, size)
        try:
            yield response
        finally:
            if file is not None:
                file.close()

    async def aclose(self) -> None:
        return None
