"""``triofetch versions``, ``prune`` and ``gc``: a store's versions, retention and orphans.

Owns these commands' options and output; what is kept or collected is the store's
(:meth:`~triofetch.Store.prune`, :meth:`~triofetch.Store.gc`), which this must not second-guess.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..store import GCReport, PruneReport, RepositoryNotFound, VersionInfo
from ._common import (
    EXIT_OK,
    CLIError,
    emit_json,
    existing_store,
    human_bytes,
    note,
    resolve_root,
    say,
    version_numbers,
)

__all__ = ["gc_command", "prune_command", "versions_command"]


def versions_json(versions: Sequence[VersionInfo]) -> list[dict[str, Any]]:
    return [
        {
            "number": v.number,
            "created": None if v.created is None else v.created.isoformat(),
            "units": v.units,
            "complete": v.complete,
        }
        for v in versions
    ]


async def versions_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    async with existing_store(
        root, args.db, storage=False, connect_timeout=args.db_connect_timeout
    ) as store:
        try:
            found = await store.versions(args.repository)
        except RepositoryNotFound:
            raise CLIError(
                f"no repository named {args.repository!r}", kind="repository_not_found"
            ) from None
    if args.json:
        emit_json(versions_json(found))
        return EXIT_OK
    if not found:
        note(f"repository {args.repository!r} has no version yet")
        return EXIT_OK
    print(f"{'version':>7}  {'created (UTC)':19}  {'units':>9}  state")
    for v in found:
        when = "-" if v.created is None else v.created.strftime("%Y-%m-%d %H:%M:%S")
        state = "complete" if v.complete else "incomplete"
        print(f"{v.number:>7}  {when:19}  {v.units:>9}  {state}")
    return EXIT_OK


def prune_json(report: PruneReport) -> dict[str, Any]:
    return {
        "repository": report.repository,
        "kept": list(report.kept),
        "deleted": list(report.deleted),
    }


async def prune_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    async with existing_store(
        root, args.db, readonly=False, connect_timeout=args.db_connect_timeout
    ) as store:
        try:
            report = await store.prune(args.repository, args.keep)
        except RepositoryNotFound:
            raise CLIError(
                f"no repository named {args.repository!r}", kind="repository_not_found"
            ) from None
    if args.json:
        emit_json(prune_json(report))
        return EXIT_OK
    kept = version_numbers(report.kept)
    if report.deleted:
        say(
            f"repository {report.repository!r}: deleted versions "
            f"{version_numbers(report.deleted)}; kept {kept} (run 'triofetch gc' to free "
            "their files)"
        )
    else:
        say(f"repository {report.repository!r}: nothing to delete; kept {kept}")
    return EXIT_OK


def gc_json(report: GCReport) -> dict[str, int]:
    return {
        "versions": report.versions,
        "units": report.units,
        "artifacts": report.artifacts,
        "files": report.files,
        "bytes": report.bytes,
        "temp_files": report.temp_files,
    }


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


async def gc_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    async with existing_store(
        root, args.db, readonly=False, connect_timeout=args.db_connect_timeout
    ) as store:
        report = await store.collect_garbage(wait=args.wait)
    if args.json:
        emit_json(gc_json(report))
        return EXIT_OK
    if report == GCReport():
        say("nothing to remove")
        return EXIT_OK
    say(
        f"removed {_count(report.versions, 'incomplete version')}, "
        f"{_count(report.units, 'unit')}, {_count(report.artifacts, 'artifact')}, "
        f"{_count(report.files, 'file')} ({human_bytes(report.bytes)}), "
        f"{_count(report.temp_files, 'temp file')}",
        file=sys.stdout,
    )
    return EXIT_OK
