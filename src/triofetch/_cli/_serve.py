"""``triofetch serve``: the content app of a store on hypercorn, in the foreground.

Owns the command: opening the store read-only, checking the repositories asked for, the
startup line (the real URL, also for port 0), the access log at ``-v`` (the app's
``triofetch.serve`` logger) and the clean stop: SIGINT (Ctrl-C) or SIGTERM stops accepting,
lets the requests in flight finish for a few seconds, closes the store, and exits 0; a
second signal stops at once (status 130 / 143), as does the grace period running out (status
0), each after removing the temp files of the on-demand downloads still running.  It must
not hold any of the app's work, which is :mod:`triofetch.serve`'s, nor import a private
module.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial

import trio

from ..errors import InvalidInput, redact_url
from ..serve import INSTALL_HINT, ContentApp, make_app, serve_app
from . import _startup
from ._common import (
    EXIT_OK,
    CLIError,
    emit_json,
    existing_store,
    log,
    note,
    output,
    resolve_root,
    say,
    stderr_log_handler,
    warn,
)
from ._sync import new_downloader
from ._upstream import upstream_options

__all__ = ["serve_command"]


def _stop_signals() -> list[signal.Signals]:
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signals.append(signal.SIGINT)
    return signals


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError in *exc* or the groups nested in it (the server's nurseries)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None


#: how long the requests in flight get after a stop signal (then they are cancelled)
GRACEFUL_SECONDS = 3.0
#: and how much longer the server may take to let go of them: hypercorn finishes sending a
#: piece of a body it started (shielded from cancellation), which a slow client may make last
STOP_MARGIN_SECONDS = 2.0


def _exit_now(app: ContentApp, status: int) -> None:
    """End the process with *status* now, without letting the server finish: the temp
    files of the on-demand downloads still running are removed first (nothing else would:
    the process ends before their flights do)."""
    app.on_demand.remove_temp_files()
    storage = app.store.storage
    if storage is not None and not storage.readonly:
        # and any other of this process's (a small file being adopted): this process
        # writes into the storage for the app only, and nothing of it goes on after this
        storage.remove_temp_files()
    _startup.exit_now(status)


async def _stop_anyway(app: ContentApp, signum: int) -> None:
    """Exit (status 0) when the server has not stopped in time after the signal."""
    await trio.sleep(GRACEFUL_SECONDS + STOP_MARGIN_SECONDS)
    warn(
        f"stopped ({signal.Signals(signum).name}); responses still being sent to slow "
        "clients were cut"
    )
    _exit_now(app, EXIT_OK)


async def _stop_at_once(app: ContentApp, received: AsyncIterator[int]) -> None:
    """While the server stops: a second signal exits at once (status 128 + it)."""
    async for signum in received:
        warn(_startup.stop_message(signum, "again: exiting at once"))
        _exit_now(app, _startup.stop_status(signum))


#: the loggers of a running server whose warnings and errors are printed without -v
_SERVER_LOGGERS = ("triofetch", "hypercorn.error")


@contextlib.contextmanager
def _server_problems(verbosity: int) -> Iterator[None]:
    """Without ``-v``, for the block: the server's warnings and errors on stderr (a stored
    file missing or damaged, the store unreadable, an on-demand file that could not be
    fetched or stored, hypercorn's own errors), as ``-v`` prints them; with ``-q``, its
    errors only.  A server has no summary at its end to say them: without this they were
    nowhere (``-v`` adds the INFO lines: the access log, retries)."""
    if verbosity:
        yield  # (the root logger's handler prints them already)
        return
    handler = stderr_log_handler(logging.ERROR if output.quiet else logging.WARNING)
    loggers = [logging.getLogger(name) for name in _SERVER_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def serve_command(args: argparse.Namespace) -> int:
    with _server_problems(getattr(args, "verbose", 0)):
        return await _serve(args)


async def _serve(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("hypercorn") is None:
        raise CLIError(
            f"'triofetch serve' needs hypercorn, which is not installed: {INSTALL_HINT}",
            kind="missing_dependency",
        )
    host, port = args.listen
    if getattr(args, "verbose", 0) < 2:
        # hypercorn's own "Running on" line says what the startup line says
        logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    root = resolve_root(args.root)
    # made (its options checked) before the store is opened
    downloader = new_downloader(ca_cert=args.ca_cert, **upstream_options(args))
    # on-demand files are stored once fetched: the store is opened for writing, unless the
    # root cannot be written (then they are served from their remote and not kept)
    writable = os.access(root, os.W_OK) and os.access(root / "artifacts", os.W_OK)
    async with existing_store(
        root, args.db, readonly=not writable, connect_timeout=args.db_connect_timeout
    ) as store:
        if not writable:  # (said once there is a store: no root at all is an error)
            log.warning("%s is read-only: on-demand files are served but not stored", root)
        wanted = args.repository or None
        if wanted:
            known = set(await store.repositories())
            unknown = [name for name in wanted if name not in known]
            if unknown:
                raise CLIError(
                    "no repository named " + ", ".join(repr(name) for name in unknown),
                    kind="repository_not_found",
                )
        try:
            app = make_app(store, repositories=wanted, downloader=downloader)
        except InvalidInput as exc:
            raise CLIError(str(exc), kind="invalid_input") from None
        what = str(root) if args.db is None else f"{redact_url(args.db)} (files under {root})"
        stop = trio.Event()
        signum: int = signal.SIGTERM
        # the upstream of on-demand and streamed files, open while the server runs
        async with downloader:
            with trio.open_signal_receiver(*_stop_signals()) as received:
                async with trio.open_nursery() as watchdog:
                    async with trio.open_nursery() as nursery:
                        server = partial(
                            serve_app,
                            app,
                            host=host,
                            port=port,
                            shutdown_trigger=stop.wait,
                            graceful_timeout=GRACEFUL_SECONDS,
                        )
                        try:
                            urls = await nursery.start(server)
                        except (OSError, BaseExceptionGroup) as exc:
                            found = _os_error(exc)
                            if found is None:
                                raise
                            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                            raise CLIError(
                                f"cannot listen on {where}: {found.strerror or found}",
                                kind="listen",
                            ) from None
                        url = urls[0] if urls else f"http://{host}:{port}"
                        if args.json:
                            emit_json(
                                {
                                    "url": f"{url}/",
                                    "root": str(root),
                                    "db": None if args.db is None else redact_url(args.db),
                                    "repositories": wanted,
                                },
                                one_line=True,
                            )
                        else:
                            say(
                                f"Serving {what} at {url}/ (Ctrl-C to stop)",
                                file=sys.stderr,
                                flush=True,
                            )
                        async for signum in received:
                            log.info("%s: stopping", signal.Signals(signum).name)
                            stop.set()
                            watchdog.start_soon(_stop_anyway, app, signum)
                            break
                        # (the receiver stays installed: a second signal must not be lost)
                        watchdog.start_soon(_stop_at_once, app, received)
                    watchdog.cancel_scope.cancel()
    note(f"stopped ({signal.Signals(signum).name})")
    return EXIT_OK
