"""Running the content app on a real server: hypercorn's Trio worker.

Owns the one place hypercorn is imported (lazily: the library and every other command work
without it) and its configuration: where to listen, logging through the standard
``logging`` module, a graceful stop.  It must not hold any of the app's work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..errors import InvalidInput
from ._http import CutShort

__all__ = ["INSTALL_HINT", "serve_app"]

#: what to run when hypercorn is missing
INSTALL_HINT = "pip install 'triofetch[serve]'"


class _CutShortOnPurpose(logging.Filter):
    """Turns hypercorn's "Error in ASGI Framework" for a response the app cut short on
    purpose (:class:`CutShort`: an on-demand file's upstream broke off or sent bad bytes,
    or a stored file could not be read, after the response began, which the app has logged
    already) into one DEBUG line without a traceback.  Any other exception of the app stays
    an ERROR with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BaseExceptionGroup):
            # (only when every error in it is a deliberate cut or a cancellation)
            _, rest = exc.split((CutShort, trio.Cancelled))
            cuts = exc.subgroup(CutShort)
            if rest is not None or cuts is None:
                return True
            first: BaseException = cuts
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            exc = first
        if isinstance(exc, CutShort):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args = "response cut short: %s", (exc,)
            record.exc_info = record.exc_text = None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_CUT_SHORT = _CutShortOnPurpose()


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_app(
    app: Callable[..., Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    graceful_timeout: float = 3.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI *app* (for one, :func:`make_app`'s) over HTTP/1.1 on *host*:*port*
    with hypercorn's Trio worker, until *shutdown_trigger* returns or the task is cancelled.

    Started with ``await nursery.start(serve_app, app, ...)``, it reports the URLs it
    listens on (``["http://127.0.0.1:8080"]``; port 0 picks a free port, shown there).
    After the trigger, requests in flight get *graceful_timeout* seconds to finish; then
    they are cancelled, but hypercorn finishes sending the piece of a body it has started
    (shielded), which a client that stops reading can prolong (``triofetch serve`` exits
    anyway 2 seconds later).  Server
    messages go to the ``hypercorn.error`` logger; the app logs its own requests.  A
    response the app cuts short on purpose (an on-demand file whose upstream broke off or
    sent bad bytes, or a stored file that could not be read, after the response began) is
    one DEBUG line there, not an ERROR with a traceback: the app has logged the failure
    itself.

    Raises:
        ImportError: hypercorn is not installed (``pip install 'triofetch[serve]'``).
        OSError: the address cannot be listened on.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InvalidInput(f"port must be an integer from 0 to 65535, got {port!r}")
    try:
        from hypercorn.config import Config
        from hypercorn.trio import serve
    except ImportError as exc:
        raise ImportError(f"serving needs hypercorn: {INSTALL_HINT}") from exc
    config = Config()
    config.bind = [_bind(host, port)]
    errorlog = logging.getLogger("hypercorn.error")
    if _CUT_SHORT not in errorlog.filters:
        errorlog.addFilter(_CUT_SHORT)
    config.errorlog = errorlog
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    await serve(
        app,
        config,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
        mode="asgi",
    )
