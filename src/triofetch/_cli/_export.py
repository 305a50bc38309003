"""``triofetch export``: a repository version's files under DEST, plus a PULP_MANIFEST.

Nothing is written outside DEST.  Every directory below DEST is opened relative to its
parent with ``O_NOFOLLOW``; a symbolic link (or a file) where a directory must be is
replaced by a directory, and a file is put in place by ``rename`` over the name (which
replaces a symbolic link, never writes through it).  Files are hard links to the store's
files when DEST is on the same filesystem, else copies.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .._manifest import MANIFEST_NAME
from .._storage import ArtifactStorage
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    absolute_path,
    existing_store,
    resolve_root,
    warn,
)
from ._inspect import FileRow, file_rows, select_version

__all__ = ["ExportReport", "export_command", "export_files"]

_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass
class ExportReport:
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.linked + self.copied + self.unchanged


def _temp_name() -> str:
    return f".tf-export-{os.getpid()}-{secrets.token_hex(6)}"


def _open_subdir(parent: int, name: str) -> int:
    """Open (creating or replacing a non-directory) the directory *name* in *parent*."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # a symbolic link or a file is in the way: replace it, never follow it
        os.unlink(name, dir_fd=parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


class _Dirs:
    """The open directory of the current file (files come sorted, so it rarely changes)."""

    def __init__(self, dest: int) -> None:
        self.dest = dest
        self.parts: tuple[str, ...] = ()
        self.fd = dest

    def open(self, parts: tuple[str, ...]) -> int:
        if parts == self.parts:
            return self.fd
        self.close()
        fd = self.dest
        try:
            for part in parts:
                child = _open_subdir(fd, part)
                if fd != self.dest:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != self.dest:
                os.close(fd)
            raise
        self.parts, self.fd = parts, fd
        return fd

    def close(self) -> None:
        if self.fd != self.dest:
            os.close(self.fd)
        self.parts, self.fd = (), self.dest


def _copy(src: Path, name: str, dir_fd: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    out = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        with open(src, "rb") as fin, open(out, "wb", closefd=False) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    finally:
        os.close(out)


def _place(src: Path, name: str, dir_fd: int, report: ExportReport) -> None:
    """Put the stored file *src* at *name* in *dir_fd*, replacing what is there."""
    source = os.stat(src)
    try:
        there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        there = None
    if there is not None:
        if stat.S_ISDIR(there.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
        if (there.st_dev, there.st_ino) == (source.st_dev, source.st_ino):
            report.unchanged += 1  # already this very file (an earlier export)
            return
    temp = _temp_name()
    linked = True
    try:
        os.link(src, temp, dst_dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in _LINK_FALLBACK:
            raise
        linked = False
        _copy(src, temp, dir_fd)
    try:
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
    if linked:
        report.linked += 1
    else:
        report.copied += 1


def _write_manifest(dest: int, rows: list[FileRow]) -> None:
    temp = _temp_name()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o644, dir_fd=dest)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as out:
            for r in rows:
                out.write(f"{r.relative_path},{r.sha256},{r.size}\n")
        os.replace(temp, MANIFEST_NAME, src_dir_fd=dest, dst_dir_fd=dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dest)


def export_files(storage: ArtifactStorage, rows: list[FileRow], dest: Path) -> ExportReport:
    """Write *rows* (downloaded files, distinct paths) and their PULP_MANIFEST under *dest*."""
    report = ExportReport()
    dest.mkdir(parents=True, exist_ok=True)
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    dirs = _Dirs(dest_fd)
    done: list[FileRow] = []
    try:
        for row in rows:
            assert row.sha256 is not None
            *parents, name = row.relative_path.split("/")
            try:
                fd = dirs.open(tuple(parents))
                _place(storage.path_for(row.sha256), name, fd, report)
            except OSError as exc:
                dirs.close()
                report.errors.append(f"{row.relative_path}: {exc.strerror or exc}")
                continue
            done.append(row)
        dirs.close()
        _write_manifest(dest_fd, done)
    finally:
        os.close(dest_fd)
    return report


def _pick(rows: list[FileRow]) -> Iterator[tuple[FileRow, list[FileRow]]]:
    """One row per relative path (the newest unit), with the rows it shadows."""
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1].relative_path == rows[i].relative_path:
            j += 1
        yield rows[j], rows[i:j]
        i = j + 1


async def export_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    dest = absolute_path(args.dest)
    async with existing_store(root, args.db) as store:
        storage = store.storage
        assert storage is not None
        number = await select_version(store, args.repository, args.version)
        if number is None:
            raise CLIError(f"repository {args.repository!r} has no version yet")
        units = await store.list_units(args.repository, number)
    errors: list[str] = []
    todo: list[FileRow] = []
    for row, shadowed in _pick(file_rows(units)):
        for other in shadowed:
            warn(
                f"warning: {row.relative_path!r} is in the version twice; exporting sha256 "
                f"{row.sha256}, not {other.sha256}"
            )
        if row.relative_path == MANIFEST_NAME:
            errors.append(f"{row.relative_path}: the name of the manifest itself")
        elif not row.downloaded or row.sha256 is None:
            errors.append(f"{row.relative_path}: not downloaded (synced with --policy on_demand)")
        else:
            todo.append(row)
    try:
        report = await trio.to_thread.run_sync(export_files, storage, todo, dest)
    except OSError as exc:
        raise CLIError(f"cannot export to {dest}: {exc.strerror or exc}") from None
    errors.extend(report.errors)
    for error in errors:
        warn(f"not exported: {error}")
    how = []
    if report.linked:
        how.append(f"{report.linked} hard links")
    if report.copied:
        how.append(f"{report.copied} copies")
    if report.unchanged:
        how.append(f"{report.unchanged} unchanged")
    print(
        f"exported {report.written} files of {args.repository!r} version {number} to {dest}"
        + (f" ({', '.join(how)})" if how else "")
        + f" and {MANIFEST_NAME}"
    )
    return EXIT_OK if not errors else EXIT_FAILED
