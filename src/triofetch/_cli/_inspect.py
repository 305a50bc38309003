"""``triofetch list`` and ``triofetch verify``: read the store, change nothing."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from .._store import RepositoryNotFound, Store, UnitInfo, VersionNotFound
from ._common import EXIT_FAILED, EXIT_OK, CLIError, emit_json, existing_store, resolve_root, warn

__all__ = ["FileRow", "file_rows", "list_command", "select_version", "verify_command"]


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
        raise CLIError(f"no repository named {repository!r}") from None
    except VersionNotFound:
        raise CLIError(f"repository {repository!r} has no version {version}") from None
    if not handle.complete:
        raise CLIError(f"version {version} of {repository!r} is not complete (a sync in progress?)")
    return handle.number


async def list_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    async with existing_store(root, args.db, storage=False) as store:
        number = await select_version(store, args.repository, args.version)
        units = [] if number is None else await store.list_units(args.repository, number)
    rows = file_rows(units)
    if number is None:
        warn(f"repository {args.repository!r} has no version yet")
    if args.json:
        emit_json([r.as_json() for r in rows])
        return EXIT_OK
    for r in rows:
        size = "?" if r.size is None else str(r.size)
        note = "" if r.downloaded else "  (not downloaded)"
        print(f"{r.sha256 or '-':64}  {size:>12}  {r.relative_path}{note}")
    if number is not None:
        downloaded = sum(r.downloaded for r in rows)
        print(
            f"repository {args.repository!r} version {number}: {len(rows)} files, "
            f"{downloaded} downloaded",
            file=sys.stderr,
        )
    return EXIT_OK


async def verify_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    async with existing_store(root, args.db) as store:
        storage = store.storage
        assert storage is not None
        report = await storage.verify()
        problems = [
            {"sha256": c.sha256, "path": str(c.path), "reason": c.reason} for c in report.corrupted
        ]
        # every file the repositories' latest versions refer to must be there
        seen = {c.sha256 for c in report.corrupted}
        referenced: dict[str, int] = {}
        for name in await store.repositories():
            for unit in await store.list_units(name, None):
                for record in unit.artifacts.values():
                    if record is not None:
                        referenced[record.sha256] = record.size
        for sha in sorted(referenced):
            if sha not in seen and not await storage.exists(sha):
                problems.append(
                    {"sha256": sha, "path": str(storage.path_for(sha)), "reason": "missing"}
                )
    if args.json:
        emit_json({"checked": report.checked, "ok": not problems, "corrupted": problems})
    for p in problems:
        warn(f"corrupted: {p['sha256']}: {p['reason']} ({p['path']})")
    if not args.json:
        verdict = "all intact" if not problems else f"{len(problems)} corrupted or missing"
        print(f"verified {report.checked} stored files: {verdict}")
    return EXIT_OK if not problems else EXIT_FAILED
