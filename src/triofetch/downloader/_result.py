"""What a fetch returns: :class:`DownloadResult`, an immutable value.

Owns the result type and nothing else: it holds what the other modules of the downloader
found out (the final URL, the file, its size and digests, the headers, the number of
attempts).  It must not touch files, the network or the downloader's state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from pathlib import Path

__all__ = ["DownloadResult", "with_attempts"]


class DownloadResult:
    """A downloaded and validated file, waiting in the temp area (or at its destination).

    The caller owns ``path``: move it where it belongs (see :class:`ArtifactStorage`) or
    remove it — unless the fetch was given a ``destination``, which ``path`` then is.

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
        """The file: the temp file holding the bytes, or the fetch's ``destination``.

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

    def _fields(self) -> tuple[object, ...]:
        return (self.url, self._path_text, self.size, self.digests, self.headers, self.attempts)

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
