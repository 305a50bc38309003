"""``triofetch``'s main: parse, run one command under Trio, turn its end into a status.

Owns running a command (sync, list, versions, export, verify, repair, prune, gc, serve,
demo, completion; help) and how every command ends: its exit status, and with ``--json``
the JSON error object of a fatal error; must not hold a command's own work (each is in
its module) nor import a private module of ``triofetch``.

Every command, on every fault, ends with one line on stderr (``triofetch: error: ...``, or
its summary) and a documented exit status (see :mod:`._common`):

- an expected error (:class:`CLIError`, a :class:`TriofetchError`, an ``OSError`` of the
  system): its message;
- SIGINT (Ctrl-C) or SIGTERM while a command runs: the command's scope is cancelled, so the
  library rolls back what was in flight as it does for any cancellation (downloads stopped,
  temp files removed, a commit that started finishes, the version being prepared
  discarded); then one line and status 130 or 143.  A second signal ends the process at once;
- stdout closed by its reader (``triofetch list ... | head``): nothing more, status 141;
- anything else is a bug: ``internal error: TYPE: MESSAGE``, status 70, and the traceback
  only with ``-vv``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..errors import (
    DownloadError,
    InvalidInput,
    ManifestError,
    StorageWriteError,
    StoreBusy,
    StoreError,
    TriofetchError,
)
from . import _startup
from ._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    CLIError,
    Interrupted,
    SettingError,
    error_json,
    output,
    stderr_log_handler,
    warn,
    write_stop_hint,
    write_stop_kind,
)
from ._parser import COMMANDS, UsageError, build_parser, subparsers

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
    if name == "completion":
        from ._completion import completion_command

        return completion_command
    if name == "config":
        from ._config import config_command

        return config_command
    if name == "serve":
        from ._serve import serve_command

        return serve_command
    from ._demo import demo_command

    return demo_command


def _setup_logging(verbosity: int) -> None:
    root = logging.getLogger()
    if not verbosity:
        # without -v the command's own lines are all it says: no library's warnings through
        # logging's last-resort handler (psycopg_pool's retries, for one)
        if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
            root.addHandler(logging.NullHandler())
        return
    root.addHandler(stderr_log_handler())
    # -v: INFO (retries, mirror fall-backs, replaced or repaired content); -vv: DEBUG
    # but the per-request lines; -vvv: those too (triofetch.http, and httpx's own)
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    logging.getLogger("triofetch.http").setLevel(logging.DEBUG if verbosity > 2 else logging.INFO)
    if verbosity < 3:
        # one line per request from httpx before -vvv is noise
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    else:
        logging.getLogger("httpcore").setLevel(logging.INFO)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first *kind* exception in *exc* or the groups nested in it."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def _expected(exc: BaseException) -> BaseException | None:
    """The CLIError or TriofetchError inside *exc* (a group of one), if that is what it is."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, CLIError | TriofetchError | OSError) else None


def _stdout_gone() -> bool:
    """Whether stdout's reader has gone away (a pipe or socket with no reader left)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _quiet_stdout() -> int:
    """stdout was closed (``| head``): say nothing more, and let nothing else try.

    As Python's documentation advises (the ``signal`` module, "Note on SIGPIPE"), stdout
    is pointed at the null device, so that the flush at exit raises nothing either.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return _startup.EXIT_PIPE


async def _watch_signals(
    scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Cancel *scope* on SIGTERM (and SIGINT, unless ignored by the parent): the library's
    own cancellation then rolls back what is in flight.  A second signal exits at once."""
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signals.append(signal.SIGINT)
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        if _startup.state.received is not None:
            # a signal came before this watcher took over, and the KeyboardInterrupt that
            # _startup's handler raised for it was lost: raised inside a callback (an
            # import lock's weakref callback), where Python prints and ignores exceptions
            logging.getLogger("triofetch.cli").info(
                "%s before start-up ended: cancelling the command",
                signal.Signals(_startup.state.received).name,
            )
            scope.cancel()
        async for signum in received:
            if _startup.state.received is None:
                _startup.state.received = signum
                logging.getLogger("triofetch.cli").info(
                    "%s: cancelling the command", signal.Signals(signum).name
                )
                scope.cancel()
                continue
            # asked twice: stop now (what this process leaves in the temp area is removed
            # by the next sync, repair or gc; SQLite and PostgreSQL roll back what was open)
            warn(f"{_startup.stop_message(signum, 'again: exiting at once')}")
            os._exit(_startup.stop_status(signum))


async def _supervised(command: Command, args: argparse.Namespace) -> int | None:
    """Run *command* while watching for signals; None: a signal cancelled it.

    A command that finishes although a signal came (after its last checkpoint: nothing was
    left to stop) reports its own outcome, not an interruption as well.
    """
    status: int | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, nursery.cancel_scope)
        status = await command(args)
        _startup.state.outcome = status  # a signal from now on finds nothing to stop
        nursery.cancel_scope.cancel()
    return status


#: the JSON error kinds of the library's errors that no command turns into a CLIError, most
#: specific first
_LIBRARY_KINDS: tuple[tuple[type[TriofetchError], str], ...] = (
    (StoreBusy, "busy"),
    (ManifestError, "manifest"),
    (DownloadError, "download"),
    (InvalidInput, "invalid_input"),
    (StoreError, "store"),
)


def _stopped(detail: str = "") -> tuple[int, str | None, str]:
    message = _startup.stop_message(detail=detail)
    status = _startup.stop_status()
    return status, "terminated" if status == 128 + signal.SIGTERM else "interrupted", message


def _outcome(exc: BaseException, verbosity: int) -> tuple[int, str | None, str]:
    """The exit status of a command that raised *exc*, having printed its line on stderr;
    and the kind and message of the JSON error object (kind None: print none)."""
    stopped = _find(exc, Interrupted)
    if isinstance(stopped, Interrupted):
        status, kind, message = _stopped(stopped.detail)
        warn(message)
        return status, kind, message
    if _startup.interrupted(exc) or _startup.state.received is not None:
        status, kind, message = _stopped()
        warn(message)
        return status, kind, message
    pipe = _find(exc, BrokenPipeError)
    if pipe is not None and _stdout_gone():
        return _quiet_stdout(), None, ""
    found = _expected(exc)
    if isinstance(found, CLIError):
        warn(f"error: {found.message}")
        return found.code, found.kind, found.message
    if isinstance(found, StorageWriteError):  # (verify, repair: out of file descriptors)
        message = f"{found}: {write_stop_hint(found, 'the command')}"
        warn(f"error: {message}")
        return EXIT_FAILED, write_stop_kind(found), message
    if isinstance(found, TriofetchError):
        warn(f"error: {found}")
        kind = next((k for t, k in _LIBRARY_KINDS if isinstance(found, t)), "error")
        return EXIT_FAILED, kind, str(found)
    if isinstance(found, OSError):
        message = _describe_os_error(found)
        kind = "os_error"
        if StorageWriteError.out_of_descriptors(found):  # (wherever the limit was met)
            message += ": raise the open-file limit (ulimit -n)"
            kind = "open_files"
        warn(f"error: {message}")
        return EXIT_FAILED, kind, message
    status = _startup.print_internal_error(exc, verbosity)
    line = _startup.internal_error_line(exc).removeprefix("error: ")
    return status, "internal", line


def _name_the_source(error: SettingError, args: argparse.Namespace) -> None:
    """Name the environment variable or the config file a bad setting came from (the user
    gave no flag then), as a bad value read there is named (``_config``)."""
    source = getattr(args, "config_sources", {}).get(error.key, "flag")
    if source == "env":
        from ._config import environment_variable

        error.came_from("env", "$" + environment_variable(error.key))
    elif source == "file":
        error.came_from("file", str(args.config_file))


def _describe_os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc}"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; ``-q``/``-v`` given before the command and after it are added up.

    Raises :class:`UsageError` from the parser it concerns: an option the command does not
    know is the command's error (its usage is printed), not the top level's.  ``help``
    prints the help asked for and exits (``SystemExit``), as ``--help`` does.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    commands = subparsers(parser)
    own = commands.get(args.command, parser)
    if extras:
        own.error("unrecognized arguments: " + " ".join(extras))
    quiet = bool(args.quiet or args.top_quiet)
    verbose = int(args.verbose) + int(args.top_verbose)
    del args.top_quiet, args.top_verbose
    if quiet and verbose:
        own.error("-q/--quiet and -v/--verbose cannot be used together")
    args.quiet, args.verbose = quiet, verbose
    if args.command == "help":
        if args.topic is None:
            parser.print_help()
        elif args.topic in commands:
            commands[args.topic].print_help()
        else:
            own.error(f"unknown command {args.topic!r} (choose from {', '.join(COMMANDS)})")
        raise SystemExit(0)
    return args


def _usage_error(exc: UsageError) -> int:
    """argparse's own two lines: the usage of the parser concerned, and the message."""
    exc.parser.print_usage(sys.stderr)
    print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def _wants_json(argv: Sequence[str] | None) -> bool:
    """Whether ``--json`` is among the arguments (before a ``--``): known before they are
    parsed, for the JSON error object of a usage error."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "--" in words:
        words = words[: words.index("--")]
    return "--json" in words


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    With ``--json``, a fatal error (one that ends the command without its result) prints
    one JSON object on stdout besides its line on stderr: ``{"error": {"kind": KIND,
    "message": MESSAGE}}``, *MESSAGE* being the line's text.
    """
    status, kind, message = _run(argv)
    if kind is not None and _wants_json(argv):
        with contextlib.suppress(OSError, ValueError):  # stdout closed: the status says it
            error_json(kind, message)
    return status


def _run(argv: Sequence[str] | None) -> tuple[int, str | None, str]:
    """Run the command line: the exit status, and the kind and message of a fatal error
    (kind None: the command ended with its own result)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    # (_startup.state.received is not reset here: a signal received while the command line
    # was imported, whose KeyboardInterrupt was lost, still stops the command; see
    # _watch_signals.  triofetch.__main__ resets it for every run, in-process ones too)
    output.quiet = False
    verbosity = 0
    args: argparse.Namespace | None = None
    try:
        args = parse(argv)
        verbosity = args.verbose
        output.quiet = args.quiet
        _setup_logging(verbosity)
        # the settings from the environment and the config file (config reads them itself,
        # to show them; completion reads none)
        if args.command not in ("config", "completion"):
            from ._config import configure

            configure(args)
        command = _command(args.command)
        _startup.sigint_to_trio()
        status = trio.run(_supervised, command, args)
        sys.stdout.flush()  # here, where a closed stdout is handled, not at exit
    except UsageError as exc:
        return _usage_error(exc), "usage", exc.message
    except SystemExit as exc:  # argparse: --help, --version, help COMMAND
        if exc.code == 0 and _stdout_gone():
            return _quiet_stdout(), None, ""  # argparse says nothing of a help it could not write
        return (exc.code if isinstance(exc.code, int) else EXIT_USAGE), None, ""
    except BaseException as exc:
        finished = _startup.state.outcome
        if finished is not None and _startup.interrupted(exc):
            # a signal once the command had finished (while Trio ended): nothing to stop
            return finished, None, ""
        setting = _find(exc, SettingError)
        if isinstance(setting, SettingError) and args is not None:
            _name_the_source(setting, args)
        return _outcome(exc, verbosity)
    if status is None:
        stopped, kind, message = _stopped()
        warn(message)
        return stopped, kind, message
    return status, None, ""
