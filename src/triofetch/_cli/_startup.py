"""The command line's first steps: what must work before anything heavy is imported.

Owns the program's signal state (the first stopping signal received), the statuses and lines
of a stop or a bug, and ending the process at once.  It must import nothing but small
modules of the standard library (``contextlib``, ``os``, ``signal``, ``sys``): it is the
part of the program that runs before the rest is loaded, so it must not import trio, the
library, nor the other modules of the command line.

``triofetch.__main__`` calls :func:`install` as its first line, then imports the command
line (trio, the store, the downloader: slow to import, next to this).  From then on a
signal never ends in a traceback:

- SIGINT raises ``KeyboardInterrupt``, as Python's own handler does, and is remembered
  (:func:`on_sigint`): the ``KeyboardInterrupt`` raised while importing or parsing is
  caught by ``__main__`` (one line, status 130) — unless it was raised inside a callback
  (an import lock's weakref callback), where Python ignores it and would print it with its
  traceback (:func:`_unraisable` keeps that one quiet); the command line's signal watcher
  then finds the signal remembered and cancels the command at once.
  Inside ``trio.run`` Trio takes SIGINT over and delivers it safely; while a command runs,
  the command line watches both signals itself and cancels the command
  (``triofetch._cli._main``).
- SIGTERM is handled as SIGINT is: :func:`on_sigterm` records it and hands it to whatever
  handles SIGINT at that moment (Python's, or Trio's, which defers it out of Trio's own
  code), so that both take the same path and only the status differs: 143, not 130.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from types import FrameType

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_PIPE",
    "STOP_STATUSES",
    "exit_now",
    "install",
    "internal_error_line",
    "interrupted",
    "on_sigint",
    "on_sigterm",
    "print_internal_error",
    "sigint_to_trio",
    "state",
    "stop_message",
    "stop_status",
]

#: the statuses after SIGINT and SIGTERM
STOP_STATUSES = frozenset({128 + signal.SIGINT, 128 + signal.SIGTERM})
#: an unexpected exception: a bug (``EX_SOFTWARE`` of sysexits.h)
EXIT_INTERNAL = 70
#: stdout was closed by its reader (``| head``): 128 + SIGPIPE, what a shell reports for a
#: program the closed pipe killed
EXIT_PIPE = 128 + signal.SIGPIPE


class _State:
    """The first stopping signal received by this process (None: none yet), and the status
    of the command once it has finished (None: not yet; a signal after that stops nothing)."""

    received: int | None = None
    outcome: int | None = None
    #: :func:`_leaving` is registered to run at exit
    at_exit: bool = False


state = _State()


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT outside a running command: remembered, then ``KeyboardInterrupt``."""
    if state.received is None:
        state.received = signum
    raise KeyboardInterrupt


def sigint_to_trio() -> None:
    """Put Python's own SIGINT handler back, right before ``trio.run``: Trio takes SIGINT
    over (and delivers it at a safe point) only from that handler."""
    if signal.getsignal(signal.SIGINT) is on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside a running command: handled as SIGINT is, remembered as SIGTERM."""
    if state.received is None:
        state.received = signum
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler not in (on_sigterm, on_sigint):
        # Python's default_int_handler raises KeyboardInterrupt; Trio's (inside trio.run)
        # raises it or, inside Trio's own code, delivers it at the next checkpoint
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt  # SIGINT ignored (a background job): SIGTERM still stops


def interrupted(exc: BaseException) -> bool:
    """Whether *exc* is a ``KeyboardInterrupt``, or an error it caused while modules loaded
    (Python 3.11 wraps one raised in ``__set_name__`` in a RuntimeError), or a group of
    them."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return True
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return False


def exit_now(status: int) -> None:
    """End the process with *status* now, the standard streams flushed (see ``__main__``)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def install() -> None:
    """Remember SIGINT (:func:`on_sigint`) and handle SIGTERM as SIGINT, unless the parent
    process asked for either to be ignored; ignore both once the process exits."""
    state.received = state.outcome = None
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, on_sigterm)
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _unraisable
    if not state.at_exit:
        atexit.register(_leaving)
        state.at_exit = True


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Python's report of an exception it cannot raise (one raised in a weakref callback or
    a ``__del__``), but not of the ``KeyboardInterrupt`` of a signal this process
    remembered: :func:`on_sigint` (or :func:`on_sigterm`) raised it inside an import lock's
    weakref callback, where Python ignores it, and the signal still stops the command (the
    command line's signal watcher finds it remembered).  Printed, it would be a traceback
    on stderr before the one line a stopped command prints."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and state.received is not None:
        return
    sys.__unraisablehook__(unraisable)


def _leaving() -> None:
    """At exit, the status is decided: right after the exit functions, Python gives every
    signal it handled back its default action (for SIGINT and SIGTERM: to kill the process)
    and then takes a while to clean up, when a signal would end a process whose command
    had finished with the signal's death instead of its status."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # (not the main thread)
            signal.signal(signum, signal.SIG_IGN)


def stop_status(signum: int | None = None) -> int:
    """The exit status after *signum* (default: the one received, else SIGINT): 128 + it."""
    return 128 + (signum or state.received or signal.SIGINT)


def stop_message(signum: int | None = None, detail: str = "") -> str:
    """The one line after a stopping signal (without the ``triofetch:`` prefix).

    *detail* says what was done (``after 12 files``); by default, the guarantee: what was
    committed stays, nothing is half-written.
    """
    number = signum or state.received or signal.SIGINT
    word = "terminated (SIGTERM)" if number == signal.SIGTERM else "interrupted"
    if detail:
        return f"{word} {detail}"
    return f"{word}: work already committed is kept; run the command again to finish"


def internal_error_line(exc: BaseException) -> str:
    """The one line for an unexpected exception (a bug), without the ``triofetch:`` prefix."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a nursery's group of one: the exception is what matters
    message = str(exc).strip().splitlines()
    what = type(exc).__qualname__
    text = f"{what}: {message[0]}" if message else what
    if len(message) > 1:
        text += " ..."
    return f"error: internal error: {text} (run with -vv for the traceback)"


def print_internal_error(exc: BaseException, verbosity: int) -> int:
    """Report an unexpected exception on stderr: the traceback only at ``-vv``; the status."""
    if verbosity >= 2:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"triofetch: {internal_error_line(exc)}", file=sys.stderr, flush=True)
    return EXIT_INTERNAL
