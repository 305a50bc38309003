"""``triofetch list`` and ``triofetch verify``: read the store, change nothing.

Owns the rows of a version's files (shared with ``export``) and the two commands' output;
it opens the store read-only and must not write to it, nor import a private module.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..storage import ArtifactStorage, CorruptArtifact
from ..store import RepositoryNotFound, Store, UnitInfo, VersionNotFound
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    emit_json,
    existing_store,
    note,
    resolve_root,
    say,
    warn,
)

__all__ = [
    "FileRow",
    "file_rows",
    "list_command",
    "recorded_artifacts",
    "select_version",
    "verify_command",
]


@dataclass(frozen=True, slots=True)
class FileRow:
    """One file of a repository version."""

    relative_path: str
    sha256: str | None
    size: int | None
    downloaded: bool
    unit_id: int

    def as_json(self) -> dict[str, Any]:
        return {
            "relative_path": self.relative_path,
            "sha256": self.sha256,
            "size": self.size,
            "downloaded": self.downloaded,
        }


def file_rows(units: list[UnitInfo]) -> list[FileRow]:
    """Every artifact of every unit, sorted by relative path (then unit id)."""
    rows: list[FileRow] = []
    for unit in units:
        key = unit.key.natural_key
        for path, record in unit.artifacts.items():
            if record is not None:
                rows.append(FileRow(path, record.sha256, record.size, True, unit.id))
                continue
            # not downloaded (on-demand): a file unit's key and fields still say what it is
            is_file = unit.key.type == "file" and len(key) == 2 and key[0] == path
            size = unit.fields.get("size") if is_file else None
            rows.append(
                FileRow(
                    path,
                    key[1] if is_file else None,
                    size if isinstance(size, int) else None,
                    False,
                    unit.id,
                )
            )
    rows.sort(key=lambda r: (r.relative_path, r.unit_id))
    return rows


async def select_version(store: Store, repository: str, version: int | None) -> int | None:
    """The version number to read (None: the repository has no complete version yet)."""
    try:
        if version is None:
            latest = await store.latest_version(repository)
            return None if latest is None else latest.number
        handle = await store.get_version(repository, version)
    except RepositoryNotFound:
        raise CLIError(f"no repository named {repository!r}", kind="repository_not_found") from None
    except VersionNotFound:
        raise CLIError(
            f"repository {repository!r} has no version {version}", kind="version_not_found"
        ) from None
    if not handle.complete:
        raise CLIError(
            f"version {version} of {repository!r} is not complete (a sync in progress?)",
            kind="version_incomplete",
        )
    return handle.number


async def list_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    async with existing_store(
        root, args.db, storage=False, connect_timeout=args.db_connect_timeout
    ) as store:
        number = await select_version(store, args.repository, args.version)
        units = [] if number is None else await store.list_units(args.repository, number)
    rows = file_rows(units)
    if number is None:
        note(f"repository {args.repository!r} has no version yet")
    if args.json:
        emit_json([r.as_json() for r in rows])
        return EXIT_OK
    for r in rows:
        size = "?" if r.size is None else str(r.size)
        tail = "" if r.downloaded else "  (not downloaded)"
        print(f"{r.sha256 or '-':64}  {size:>12}  {r.relative_path}{tail}")
    if number is not None:
        downloaded = sum(r.downloaded for r in rows)
        say(
            f"repository {args.repository!r} version {number}: {len(rows)} files, "
            f"{downloaded} downloaded",
            file=sys.stderr,
        )
    return EXIT_OK


async def recorded_artifacts(store: Store) -> dict[str, int]:
    """Every artifact the database records: ``{sha256: size}``, read page by page."""
    recorded: dict[str, int] = {}
    cursor: int | None = 0
    while cursor is not None:
        page, cursor = await store.stored_artifacts(after=cursor, limit=_PAGE)
        recorded.update((sha, size) for _id, sha, size in page)
    return recorded


#: artifact rows read per query by verify
_PAGE = 5000


async def verify_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    async with existing_store(root, args.db, connect_timeout=args.db_connect_timeout) as store:
        storage = store.storage
        assert storage is not None
        # Both ways: every recorded artifact must have its file, of its size and content
        # (all of them, not only the latest versions'); a file without a record is an
        # orphan, which gc removes: reported, not an error.
        report = await storage.verify(expected=await recorded_artifacts(store))
        # verify takes no lock: prune and gc, a sync or a repair may have run while it
        # hashed.  What it found wrong is looked at again as the store is now.
        corrupted, removed = await _still_corrupted(store, storage, report.corrupted)
        orphans_now = await _still_orphans(store, storage, report.orphans)
    problems = [{"sha256": c.sha256, "path": str(c.path), "reason": c.reason} for c in corrupted]
    orphans = [{"sha256": p.name, "path": str(p)} for p in orphans_now]
    ok = not problems
    if args.json:
        emit_json(
            {
                "checked": report.checked,
                "ok": ok,
                "corrupted": problems,
                "orphans": orphans,
                "removed_by_gc": removed,
            }
        )
    for c in problems:
        warn(f"corrupted: {c['sha256']}: {c['reason']} ({c['path']})")
    for o in orphans:
        note(f"orphan: {o['sha256']} ({o['path']}) — no record; 'triofetch gc' removes it")
    if removed:
        files = (
            "1 stored file and its record"
            if removed == 1
            else f"{removed} stored files and their records"
        )
        note(
            f"{files} went while the store was verified (gc removed what no version holds any "
            "more): not damage"
        )
    if not args.json:
        verdict = "all intact" if ok else f"{len(problems)} corrupted or missing"
        if orphans:
            verdict += f", {len(orphans)} orphan{'s' if len(orphans) != 1 else ''}"
        say(f"verified {report.checked} stored files: {verdict}")
    return EXIT_OK if ok else EXIT_FAILED


_SHA256 = re.compile("[0-9a-f]{64}")

#: sha256s looked up per query when verify looks again at what it found
_RECHECK = 500


async def _recorded_now(store: Store, sha256s: list[str]) -> dict[str, int]:
    """Which of *sha256s* the store records now, with their recorded sizes."""
    found: dict[str, int] = {}
    for start in range(0, len(sha256s), _RECHECK):
        records = await store.find_artifacts(sha256s[start : start + _RECHECK])
        found.update((sha, record.size) for sha, record in records.items())
    return found


async def _still_corrupted(
    store: Store, storage: ArtifactStorage, corrupted: Sequence[CorruptArtifact]
) -> tuple[list[CorruptArtifact], int]:
    """The files of *corrupted* still wrong now, and how many are no longer recorded.

    A file whose record is gone was removed by gc (prune, then gc) after verify read the
    records: it is not damage.  One recorded still is hashed again: a sync or a repair may
    have put it (back) in place meanwhile; it is reported as it is found now.
    """
    if not corrupted:
        return [], 0
    now = await _recorded_now(store, [c.sha256 for c in corrupted])
    still: list[CorruptArtifact] = []
    for c in corrupted:
        if c.sha256 not in now:
            continue
        reason = await storage.check(c.sha256, size=now[c.sha256])
        if reason is not None:
            still.append(CorruptArtifact(c.sha256, c.path, reason))
    return still, sum(c.sha256 not in now for c in corrupted)


async def _still_orphans(
    store: Store, storage: ArtifactStorage, orphans: Sequence[Path]
) -> list[Path]:
    """The files of *orphans* that still have no record: a sync commits the files it stored
    a moment after storing them, so one that committed during the walk recorded some."""
    if not orphans:
        return []
    # (a name that is no sha256 cannot be recorded: it stays an orphan)
    now = await _recorded_now(store, [p.name for p in orphans if _SHA256.fullmatch(p.name)])
    return [p for p in orphans if not (p.name in now and p == storage.path_for(p.name))]
