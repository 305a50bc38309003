"""``triofetch completion SHELL``: the shell completion script, generated from the parser.

Owns turning the command line's own argparse parser into a completion script with shtab
(bash, zsh, fish, tcsh), so that the completions never drift from the options; it must
not hold a second description of the commands.
"""

from __future__ import annotations

import argparse
import sys

import shtab

from ._common import EXIT_OK
from ._parser import COMMANDS, build_parser, subparsers

__all__ = ["SHELLS", "completion_command", "completion_script"]

#: the shells a script is made for
SHELLS = ("bash", "zsh", "fish", "tcsh")

#: the metavars of the arguments that name a directory, and a file
_DIRECTORIES = frozenset({"DIR", "DEST"})
_FILES = frozenset({"FILE", "SOURCE"})


def _mark(parser: argparse.ArgumentParser) -> None:
    """Complete directories and files where the arguments name one (shtab's ``complete``
    attribute of an action)."""
    for action in parser._actions:  # argparse keeps no public list of them
        if action.metavar in _DIRECTORIES:
            setattr(action, "complete", shtab.DIRECTORY)  # noqa: B010
        elif action.metavar in _FILES:
            setattr(action, "complete", shtab.FILE)  # noqa: B010
        elif action.dest == "topic":  # help COMMAND: the commands
            action.choices = COMMANDS


def completion_script(shell: str) -> str:
    """The completion script of ``triofetch`` for *shell* (one of :data:`SHELLS`)."""
    parser = build_parser()
    _mark(parser)
    for command in subparsers(parser).values():
        _mark(command)
    script: str = shtab.complete(parser, shell=shell)
    return script


async def completion_command(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell))
    return EXIT_OK
