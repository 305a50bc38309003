"""Whether the caller runs under Trio: the check of the async entry points.

triofetch runs under Trio only.  Called from asyncio (or from no event loop at all), its
async entry points (``Downloader``, ``open_store``, ``UnitDownloader``, every async method of
``ArtifactStorage``) raise :class:`~triofetch.WrongContext` saying so and what to do instead,
rather than Trio's bare "must be called from async context" from somewhere deeper.
"""

from __future__ import annotations

import trio

from .errors import WrongContext

__all__ = ["check_trio"]

_INSTEAD = "use trio.run(...), or triofetch.fetch() for one blocking download"


def check_trio() -> None:
    """Raise :class:`WrongContext` unless called inside a Trio task (a thread-local look-up)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise WrongContext(_message()) from None


def _message() -> str:
    library = _async_library()
    if library is not None and library != "trio":
        # (the blocking call would block this event loop for the whole download)
        return (
            f"triofetch runs under Trio, not {library}: use trio.run(...) in a worker thread, "
            "or triofetch.fetch() there (asyncio.to_thread) for one blocking download"
        )
    return f"triofetch runs under Trio, and was called outside a Trio run: {_INSTEAD}"


def _async_library() -> str | None:
    """The name of the async library running this task, if any is detected."""
    try:
        import sniffio  # (httpx's dependencies bring it; not one of triofetch's own)
    except ImportError:  # pragma: no cover - sniffio not installed
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None
