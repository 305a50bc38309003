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

__all__ = ["INSTALL_HINT", "serve_app"]

#: what to run when hypercorn is missing
INSTALL_HINT = "pip install 'triofetch[serve]'"


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
    messages go to the ``hypercorn.error`` logger; the app logs its own requests.

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
    config.errorlog = logging.getLogger("hypercorn.error")
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
