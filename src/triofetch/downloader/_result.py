"""What a fetch returns: :class:`DownloadResult`, an immutable value, and moving its file.

Owns the result type: it holds what the other modules of the downloader found out (the
final URL, the file, its size and digests, the headers, the number of attempts).  The one
file operation here is :func:`place_file`, the atomic move of a validated file to where
the caller wants it (a fetch's ``destination``, :meth:`DownloadResult.move_to`).  It must
not touch the network or the downloader's state.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from pathlib import Path

import trio

from .._tempfiles import new_temp_name
from ..errors import DestinationError, InvalidInput

__all__ = ["DownloadResult", "place_file", "with_attempts"]

_log = logging.getLogger("triofetch.downloader")


class DownloadResult:
    """A downloaded and validated file, waiting in the temp area (or at its destination).

    ``path`` is the fetch's ``destination`` when it had one, else a temp file.  A temp file
    in the private directory of a :class:`Downloader` opened without ``temp_dir`` is removed
    when the downloader closes: keep it with :meth:`move_to` (or move it into an
    :class:`ArtifactStorage`).  A temp file in a ``temp_dir`` the caller named is the
    caller's, to move or remove.

    Immutable (assigning an attribute raises ``dataclasses.FrozenInstanceError``); equal to
    another result with the same attributes.

    Attributes:
        url: the final URL, after redirects (credentials redacted).
        size: the number of bytes.
        digests: hex digests by algorithm name; always has ``sha256``, every algorithm of
            ``expected_digests`` and every algorithm asked for.
        headers: the response headers (lower-case names).
        attempts: how many attempts it took (1 when the first one succeeded).
    """

    __slots__ = ("_path", "_path_text", "attempts", "digests", "headers", "size", "url")

    url: str
    size: int
    digests: Mapping[str, str]
    headers: Mapping[str, str]
    attempts: int
    _path: Path | None
    _path_text: str

    def __init__(
        self,
        url: str,
        path: str | os.PathLike[str],
        size: int,
        digests: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        attempts: int = 1,
    ) -> None:
        setter = object.__setattr__
        setter(self, "url", url)
        setter(self, "_path", path if isinstance(path, Path) else None)
        setter(self, "_path_text", os.fspath(path))
        setter(self, "size", size)
        setter(self, "digests", digests)
        setter(self, "headers", {} if headers is None else headers)
        setter(self, "attempts", attempts)

    @property
    def path(self) -> Path:
        """The file (the temp file holding the bytes, or the fetch's ``destination``).

        Made on first use: building a ``Path`` is costly next to the rest of a small
        download, and a caller that never looks at it should not pay for it on every file.
        """
        path = self._path
        if path is None:
            path = Path(self._path_text)
            object.__setattr__(self, "_path", path)
        return path

    @property
    def sha256(self) -> str:
        """The sha256 hex digest of the bytes."""
        return self.digests["sha256"]

    async def move_to(self, path: str | os.PathLike[str]) -> DownloadResult:
        """Move the file to *path* (replacing a file there) and return the moved result.

        Atomic on one file system (a rename); across file systems the bytes are copied
        next to *path* under a temp name and renamed over it, then the original is removed:
        a reader of *path* sees the old file or the whole new one.  Runs in a worker thread;
        once started, a cancellation waits for the move to finish.  This result is
        unchanged (its ``path`` no longer exists afterwards): use the one returned.

        Raises:
            InvalidInput: *path* is not a path, or ends with a separator.
            DestinationError: the file could not be written there (a directory there, no
                such parent directory, no permission...); the file stays where it was and
                this result is still valid.
        """
        if not isinstance(path, str | os.PathLike):
            raise InvalidInput(f"move_to() takes a path, got {path!r}")
        target = os.fspath(path)
        if not target or target.endswith(os.sep):
            raise InvalidInput(f"move_to() needs a file name, got {target!r}")
        await trio.to_thread.run_sync(place_file, self._path_text, target, self.url)
        return DownloadResult(
            url=self.url,
            path=target,
            size=self.size,
            digests=self.digests,
            headers=self.headers,
            attempts=self.attempts,
        )

    def _fields(self) -> tuple[object, ...]:
        return (self.url, self._path_text, self.size, self.digests, self.headers, self.attempts)

    def __reduce__(self) -> tuple[type[DownloadResult], tuple[object, ...]]:
        # copy, deepcopy and pickle make a new result through __init__ (the default way
        # assigns the slots one by one, which __setattr__ refuses)
        fields = (self.url, self._path_text, self.size, dict(self.digests), dict(self.headers))
        return DownloadResult, (*fields, self.attempts)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, DownloadResult)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # (its digests and headers are dicts)

    def __repr__(self) -> str:
        return (
            f"DownloadResult(url={self.url!r}, path={self.path!r}, size={self.size!r}, "
            f"digests={self.digests!r}, headers={self.headers!r}, attempts={self.attempts!r})"
        )


def with_attempts(result: DownloadResult, attempts: int) -> DownloadResult:
    """*result*, saying it took *attempts* attempts."""
    return DownloadResult(
        url=result.url,
        path=result._path_text,
        size=result.size,
        digests=result.digests,
        headers=result.headers,
        attempts=attempts,
    )


def place_file(temp: str, destination: str, url: str) -> None:
    """Move a validated temp file to *destination* (replacing it), atomically.

    Across filesystems, the bytes are first copied next to the destination under a temp
    name, then renamed over it: a reader of *destination* sees the old file or the new one.
    Raises :class:`DestinationError` when the file could not be placed; a temp file that
    cannot be removed once the copy is in place is a WARNING, not an error.
    """
    try:
        os.replace(temp, destination)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise DestinationError(destination, exc, url=url) from exc
    staging = os.path.join(os.path.dirname(destination) or ".", new_temp_name())
    try:
        shutil.copyfile(temp, staging)
        os.replace(staging, destination)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise DestinationError(destination, exc, url=url) from exc
    # The file is in place: the move succeeded, whatever becomes of the temp file now.
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("cannot remove the temp file %s after copying it into place: %s", temp, exc)
