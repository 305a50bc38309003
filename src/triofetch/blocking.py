"""The synchronous downloader: one blocking download, no event loop needed.

Owns :func:`~triofetch.fetch`, which runs a :class:`~triofetch.Downloader` in a short Trio
run of its own.  It must not reimplement anything of the downloader: validation, digests,
temp files and retries are the ones :meth:`Downloader.fetch <triofetch.Downloader.fetch>`
uses.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Unpack

import trio

from .downloader import Downloader, DownloaderOptions, DownloadResult
from .errors import WrongContext

__all__ = ["fetch"]


def _inside_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def fetch(
    url: str | Sequence[str],
    *,
    expected_digests: Mapping[str, str] | None = None,
    expected_size: int | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
    destination: str | os.PathLike[str] | None = None,
    **options: Unpack[DownloaderOptions],
) -> DownloadResult:
    """Download one file, blocking until it is downloaded and validated.

    For plain scripts and threads: it runs its own short Trio run, so it must not be called
    from inside one (use :class:`Downloader` there).  It shares its validation, digest and
    temp-file code with :meth:`Downloader.fetch`; *options* are :class:`Downloader` keyword
    arguments (``digests``, ``headers``, ``retries``, ``read_timeout``, ``auth``,
    ``verify``...: see :class:`~triofetch.downloader.DownloaderOptions`, which type checkers
    hold them to).  With *destination* the validated file is moved there (see
    :meth:`Downloader.fetch`).

    Returns:
        a :class:`DownloadResult`; the caller owns its file: *destination*, or a temp file
        in *temp_dir* (default: the system temp dir) that the caller moves or removes.
        Unlike an open :class:`Downloader`, nothing is left to remove it later.

    Raises:
        WrongContext: called inside a running Trio task.
        InvalidInput: bad arguments, before any I/O.
        DownloadError: the download failed (the temp file is already removed).
    """
    if _inside_trio():
        raise WrongContext(
            "triofetch.fetch() blocks and cannot run inside a Trio task; use "
            "'async with triofetch.Downloader() as dl: await dl.fetch(url)' instead"
        )
    # (digests and headers are the downloader's own: for one download, the same thing)
    if options.get("digests", ()) is None:  # None meant "the default" here before
        del options["digests"]
    options.setdefault("connections", 1)
    # (the file is handed to the caller: never the downloader's private directory, which
    # goes when the downloader closes)
    downloader = Downloader(
        temp_dir=tempfile.gettempdir() if temp_dir is None else temp_dir, **options
    )
    plan = downloader.plan(
        expected_digests=expected_digests, expected_size=expected_size, destination=destination
    )

    async def main() -> DownloadResult:
        async with downloader:
            return await downloader.fetch_planned(url, plan)

    return trio.run(main)
