"""``python -m triofetch`` and the ``triofetch`` script: the command line's entry point.

Owns the order of the program's first steps and nothing else: it must not hold a command
nor import anything heavy before the signals are taken (the command line itself is
``triofetch._cli``).

Signals are taken from this module's first statement on (``triofetch._cli._startup``); only
then is the command line imported, which is slow next to it (trio, the store, the
downloader).  A signal at any point after that first statement ends the program with one
line on stderr and status 130 (SIGINT) or 143 (SIGTERM), never a traceback.  What comes
before it is Python's own start-up (and, for ``python -m``, the package's ``__init__``,
which imports nothing heavy): a moment no program can take a signal in.
"""

# The try below is this module's first statement: no ``from __future__ import`` (it is a
# real import, of a module Python has not loaded yet, so a Ctrl-C can land in it), no
# import of ``os`` or ``sys`` before it.
try:
    import os
    import signal
    import sys
    from collections.abc import Sequence

    from ._cli import _startup  # (``triofetch._cli`` itself imports nothing)
except KeyboardInterrupt:  # Ctrl-C while this module itself loads (SIGTERM: not taken yet)
    import os
    import sys

    # _startup.stop_message(), which could not be imported
    print(
        "triofetch: interrupted: work already committed is kept; run the command again to finish",
        file=sys.stderr,
        flush=True,
    )
    os._exit(130)

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    After a signal the process ends at once (:func:`._cli._startup.exit_now`, once the streams
    are flushed), not by returning: CPython 3.11 kills a process with SIGINT at exit when a
    ``KeyboardInterrupt`` went through an ``exec`` of source text (``dataclasses`` does that
    while the modules load), even one that was caught, which would make 143 a SIGINT death.
    """
    try:
        _startup.install()
        from ._cli._main import main as run  # the heavy imports

        status = run(argv)
    except BaseException as exc:
        if not _startup.interrupted(exc):
            if isinstance(exc, SystemExit):
                raise
            return _startup.print_internal_error(exc, 0)  # the command line did not load
        if _startup.state.outcome is not None:
            return _startup.state.outcome  # the command had finished: nothing was stopped
        # before the command line could take the signal (imports, parsing), or a second
        # one while it was reporting: nothing was started, nothing to roll back
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # we are leaving: no third traceback
        print(f"triofetch: {_startup.stop_message()}", file=sys.stderr, flush=True)
        status = _startup.stop_status()
    if status in _startup.STOP_STATUSES:
        _startup.exit_now(status)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
