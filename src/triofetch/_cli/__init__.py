"""The ``triofetch`` command: sync, list, versions, export, verify, repair, prune, gc, demo.

Every expected error ends as one message on stderr and an exit status (see
:mod:`._common`); Ctrl-C ends with status 130 after the library has rolled back what was in
flight.  Only a bug shows a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

from .._errors import TriofetchError
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CLIError, warn
from ._parser import build_parser

__all__ = ["main"]

Command = Callable[[argparse.Namespace], Awaitable[int]]


def _command(name: str) -> Command:
    if name == "sync":
        from ._sync import sync_command

        return sync_command
    if name == "list":
        from ._inspect import list_command

        return list_command
    if name == "verify":
        from ._inspect import verify_command

        return verify_command
    if name == "export":
        from ._export import export_command

        return export_command
    if name in ("versions", "prune", "gc"):
        from . import _maintenance

        return {
            "versions": _maintenance.versions_command,
            "prune": _maintenance.prune_command,
            "gc": _maintenance.gc_command,
        }[name]
    if name == "repair":
        from ._repair import repair_command

        return repair_command
    from ._demo import demo_command

    return demo_command


def _setup_logging(verbosity: int) -> None:
    if not verbosity:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    if verbosity < 3:
        # one line per request from httpx at -v is noise; keep it for -vvv
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING if verbosity < 2 else logging.INFO)


def _interrupted(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return False


def _expected(exc: BaseException) -> BaseException | None:
    """The CLIError or TriofetchError inside *exc* (a group of one), if that is what it is."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, CLIError | TriofetchError) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(getattr(args, "verbose", 0))
        command = _command(args.command)
        return trio.run(command, args)
    except SystemExit as exc:  # argparse: --help, --version, usage errors (status 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except BaseException as exc:
        if _interrupted(exc):
            warn("interrupted: work already committed is kept; run the command again to finish")
            return EXIT_INTERRUPTED
        found = _expected(exc)
        if isinstance(found, CLIError):
            warn(f"error: {found.message}")
            return found.code
        if isinstance(found, TriofetchError):
            warn(f"error: {found}")
            return EXIT_FAILED
        raise
