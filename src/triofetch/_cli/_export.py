"""``triofetch export``: a repository version's files under DEST, plus a PULP_MANIFEST.

The export is exactly the version: one file per relative path, and a ``PULP_MANIFEST``
listing the files written and nothing else, which syncs back to the same paths, digests and
sizes.  Everything is checked before anything is written: a version that cannot be
exported that way (two units at one path, or a file and a directory at one path, which
versions made before schema 4 may hold; a path that a manifest line cannot carry) is
refused whole.  The files of on-demand units are fetched first, and stored, all or nothing
per unit; the store is opened for writing only then.

Nothing is written outside DEST.  Every directory below DEST is opened relative to its
parent with ``O_NOFOLLOW``; a symbolic link (or a file left by an earlier export) where a
directory must be is replaced by a directory, and a file is put in place by ``rename`` over
the name (which replaces a symbolic link, never writes through it).  Files are hard links to
the store's files when DEST is on the same filesystem, else copies.

The manifest never lies.  A stored file whose size is not the one recorded (a hard link is
not read: its size is checked), or whose bytes as copied are not its sha256 (a copy reads
them anyway), is not exported nor listed.  A ``PULP_MANIFEST`` left by an earlier export is
removed, durably, before the first file is written: an export stopped part-way (a full
disk, a signal) leaves none; the new one is written once every file is in place.

This module owns writing a version's files out and checking first that they can be; it
must not change what the store records (only the fetch of on-demand units adds to it,
through the creator) nor decide library policy (the transport, the temp files).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from ..creator import ContentUnitCreator
from ..downloader import Downloader
from ..errors import (
    InvalidInput,
    ManifestError,
    RepositoryNotFound,
    StorageWriteError,
    StoreError,
    VersionNotFound,
)
from ..manifest import MANIFEST_NAME, manifest_base_url, parse_pulp_manifest
from ..storage import ArtifactStorage, remove_dead_temp_files, temp_file_name
from ..store import open_store
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    Interrupted,
    absolute_path,
    emit_json,
    existing_store,
    resolve_root,
    say,
    warn,
    write_stop_hint,
    write_stop_kind,
)
from ._inspect import FileRow, file_rows, select_version
from ._sync import failure_reason, new_downloader
from ._upstream import upstream_options

__all__ = ["ExportReport", "Unexportable", "export_command", "export_files", "unexportable"]

_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass
class ExportReport:
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    #: (relative path, why) of each file that could not be written
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: stopped by a signal before the last file; no PULP_MANIFEST was written
    interrupted: bool = False
    #: stopped by a full (or read-only, or failing) disk, or too many open files, made
    #: when the write failed: the files before it were written, no PULP_MANIFEST
    disk_error: StorageWriteError | None = None
    #: the relative paths (also in ``errors``) whose stored file was not there: damage, or
    #: the version removed under the export (prune, then gc), which the caller tells apart
    missing: list[str] = field(default_factory=list)
    #: stopped by a signal (``interrupted`` too) while DEST was searched for the temp files
    #: of killed exports, before anything was written to it
    interrupted_sweeping: bool = False

    @property
    def written(self) -> int:
        return self.linked + self.copied + self.unchanged


#: the temp files of an export, beside the files they become (hidden: a dot first)
_TEMP_PREFIX = ".tf-export-"


def _temp_name() -> str:
    """``.tf-export-<pid>-<pid space>-<random>``: the name says which process wrote it, so
    that the next export can remove the temp files of one that was killed."""
    return temp_file_name(prefix=_TEMP_PREFIX, suffix="")


class _SweepStopped(Exception):
    """*stopped* said so during :func:`_remove_dead_temps`: the walk ends there."""


#: how many entries of one directory's listing are read between two looks at *stopped*
_ENTRIES_PER_LOOK = 4096


def _sweep(dir_fd: int, stopped: Callable[[], bool]) -> list[str]:
    """Remove from the directory *dir_fd* the temp files of exports that are gone (see
    :func:`_remove_dead_temps`); the names of its subdirectories (not the symbolic links
    to one).  One listing; a second one only where a temp file's name is seen.  Raises
    :class:`_SweepStopped` when *stopped* says so (asked every few thousand entries: a
    directory of millions of names does not hold up a Ctrl-C), having removed nothing."""
    subdirs: list[str] = []
    temps = False
    countdown = _ENTRIES_PER_LOOK
    try:
        with os.scandir(dir_fd) as listing:
            for entry in listing:
                countdown -= 1
                if not countdown:
                    if stopped():
                        raise _SweepStopped
                    countdown = _ENTRIES_PER_LOOK
                if entry.name.startswith(_TEMP_PREFIX):
                    temps = True
                elif entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
    except OSError:
        return []  # (an unreadable directory: its content stays)
    if temps:
        remove_dead_temp_files(dir_fd, prefix=_TEMP_PREFIX, suffix="")
    return subdirs


def _remove_dead_temps(dest: int, stopped: Callable[[], bool] = lambda: False) -> bool:
    """Remove from every directory under DEST (*dest*, an open descriptor) the temp files
    of exports that are gone (killed with ``kill -9``, or by a second signal, between
    writing a file's temp and renaming it into place): nothing else ever would.  Every
    directory, not only those this export writes to: a killed export's temp file may be in
    a directory no later version has.  A live export's (this one's included) are left
    alone; one written on another machine or in another container sharing DEST, whose pid
    means nothing here, once it has not been written for a day.

    One listing per directory, each opened relative to its parent with ``O_NOFOLLOW`` (a
    symbolic link is never followed out of DEST), one descriptor per level open at most.
    Best effort: a temp file that cannot be removed (a read-only DEST), or a directory that
    cannot be read, stays, and the export goes on.

    *stopped* is asked before each directory below DEST (and every few thousand names of a
    long listing): once it says so (Ctrl-C), the walk ends there and False is returned;
    what was removed until then was only dead exports' temp files, each removed whole.
    True when every directory was looked at."""
    try:
        stack = [(dest, _sweep(dest, stopped))]
    except _SweepStopped:
        return False
    try:
        while stack:
            fd, names = stack[-1]
            if not names:
                stack.pop()
                if fd != dest:
                    os.close(fd)
                continue
            if stopped():
                return False
            try:
                child = os.open(names.pop(), _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # (gone meanwhile, replaced by a link, no descriptor left)
            stack.append((child, []))  # (closed below, whatever happens next)
            stack[-1] = (child, _sweep(child, stopped))
    except _SweepStopped:
        return False
    finally:
        for fd, _ in stack:
            if fd != dest:
                os.close(fd)
    return True


class _Damaged(Exception):
    """The stored file is not what the store records (``size 3, expected 5``, as ``verify``
    says it): it is not exported."""

    def __str__(self) -> str:
        return f"the stored file is damaged ({self.args[0]}): run triofetch repair"


class _Missing(_Damaged):
    """The stored file is not there (deleted from the storage, or collected by ``gc`` with
    the version being exported)."""

    def __init__(self, src: Path) -> None:
        super().__init__(f"missing: {src}")


class _ManifestNotRemoved(Exception):
    """The old ``PULP_MANIFEST`` could not be removed: nothing may be written."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _OldManifest:
    """The ``PULP_MANIFEST`` an earlier export left in DEST; called before anything is
    written (the ``before_writing`` of :func:`_place` and :class:`_Dirs`).

    It lists that export's files: once one of them is replaced (or removed to make room for
    a directory) it would lie, so it is removed, and the removal made durable (the directory
    fsynced), before the first file is written.  An export stopped after that leaves no
    manifest; the new one is written at the end.  Raises :class:`_ManifestNotRemoved`.
    """

    def __init__(self, dest: int) -> None:
        self.dest = dest
        self.removed = False

    def __call__(self) -> None:
        if self.removed:
            return
        try:
            os.unlink(MANIFEST_NAME, dir_fd=self.dest)
        except (FileNotFoundError, IsADirectoryError):
            pass  # none (a directory of that name is no manifest: writing one fails later)
        except OSError as exc:
            raise _ManifestNotRemoved(exc) from exc
        else:
            try:
                os.fsync(self.dest)
            except OSError as exc:
                raise _ManifestNotRemoved(exc) from exc
        self.removed = True


def _open_subdir(parent: int, name: str, before_writing: Callable[[], None]) -> int:
    """Open (creating or replacing a non-directory) the directory *name* in *parent*."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # a symbolic link or a file is in the way: replace it, never follow it
        before_writing()
        os.unlink(name, dir_fd=parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


class _Dirs:
    """The open directory of the current file (files come sorted, so it rarely changes)."""

    def __init__(self, dest: int, before_writing: Callable[[], None]) -> None:
        self.dest = dest
        self.before_writing = before_writing
        self.parts: tuple[str, ...] = ()
        self.fd = dest

    def open(self, parts: tuple[str, ...]) -> int:
        if parts == self.parts:
            return self.fd
        self.close()
        fd = self.dest
        try:
            for part in parts:
                child = _open_subdir(fd, part, self.before_writing)
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


def _copy(src: Path, name: str, dir_fd: int) -> tuple[str, int]:
    """Copy *src* to *name* in *dir_fd*; the sha256 and size of the bytes copied."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    out = os.open(name, flags, 0o644, dir_fd=dir_fd)
    hasher = hashlib.sha256()
    size = 0
    try:
        with open(src, "rb") as fin, open(out, "wb", closefd=False) as fout:
            # the bytes are read anyway: hashing them costs no I/O
            while chunk := fin.read(1 << 20):
                hasher.update(chunk)
                fout.write(chunk)
                size += len(chunk)
    finally:
        os.close(out)
    return hasher.hexdigest(), size


def _place(
    src: Path,
    name: str,
    dir_fd: int,
    report: ExportReport,
    *,
    sha256: str,
    size: int | None,
    before_writing: Callable[[], None],
) -> None:
    """Put the stored file *src* at *name* in *dir_fd*, replacing what is there.

    Raises :class:`_Damaged`, having changed nothing, when the stored file is not *size*
    bytes long (or, when copied, its bytes are not *sha256*).  *before_writing* is called
    before anything is written.
    """
    try:
        source = os.stat(src)
    except FileNotFoundError:  # (deleted from the storage: "No such file" named nothing)
        raise _Missing(src) from None
    if size is not None and source.st_size != size:
        raise _Damaged(f"size {source.st_size}, expected {size}")
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
    before_writing()
    temp = _temp_name()
    linked = True
    try:
        try:
            os.link(src, temp, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in _LINK_FALLBACK:
                raise
            linked = False
            # a full disk, or damaged bytes: the part copied is removed below
            digest, copied = _copy(src, temp, dir_fd)
            if size is not None and copied != size:
                raise _Damaged(f"size {copied}, expected {size}") from None
            if digest != sha256:
                raise _Damaged(f"sha256 is {digest}") from None
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        if os.path.lexists(src):
            raise
        raise _Missing(src) from None  # removed since the stat above (by gc)
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


class Unexportable(ValueError):
    """Rows that cannot be exported as one directory tree and one true manifest."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _describe(row: FileRow) -> str:
    what = f"sha256 {row.sha256}" if row.sha256 else "content unknown"
    return f"{what}, unit {row.unit_id}"


def _clashes(rows: list[FileRow]) -> list[str]:
    """Two units at one path, or a file at a path that is a directory of another."""
    problems: list[str] = []
    by_path: dict[str, list[FileRow]] = {}
    for row in rows:
        by_path.setdefault(row.relative_path, []).append(row)
    for path, same in by_path.items():
        if len(same) > 1:
            times = "twice" if len(same) == 2 else f"{len(same)} times"
            problems.append(
                f"{path!r} is in the version {times}: "
                + " and ".join(f"({_describe(r)})" for r in same)
            )
    children: dict[str, list[str]] = {}
    for path in by_path:
        cut = path.rfind("/")
        while cut > 0:
            parent = path[:cut]
            if parent in by_path:
                children.setdefault(parent, []).append(path)
            cut = path.rfind("/", 0, cut)
    for parent, under in sorted(children.items()):
        first = min(under)
        more = f" (and {len(under) - 1} more files under it)" if len(under) > 1 else ""
        problems.append(
            f"{parent!r} ({_describe(by_path[parent][0])}) is a file and also a directory of "
            f"{first!r} ({_describe(by_path[first][0])}){more}"
        )
    return problems


def _manifest_line(row: FileRow) -> str:
    # a file not downloaded yet may not know its content: its path is what is checked
    sha = row.sha256 or "0" * 64
    size = 0 if row.size is None else row.size
    return f"{row.relative_path},{sha},{size}\n"


def _unmanifestable(rows: list[FileRow], dest: Path) -> list[str]:
    """The paths a PULP_MANIFEST at *dest* cannot carry back to themselves.

    Each line is read back by the very parser ``sync`` uses, with the base URL a sync of
    ``DEST/PULP_MANIFEST`` has: a path it refuses, reads differently, or skips (a line
    starting with ``#`` is a comment) cannot round-trip.
    """
    base_url = manifest_base_url((dest / MANIFEST_NAME).as_uri())
    lines: list[bytes] = []
    problems: list[str] = []
    encoded: list[FileRow] = []
    for row in rows:
        try:
            lines.append(_manifest_line(row).encode("utf-8"))
        except UnicodeEncodeError:
            problems.append(f"{row.relative_path!r} cannot be written as UTF-8")
        else:
            encoded.append(row)
    rows = encoded
    try:
        parsed = parse_pulp_manifest(lines, base_url=base_url).entries
    except ManifestError:
        parsed = []
    if len(parsed) == len(rows) and all(
        e.relative_path == r.relative_path for e, r in zip(parsed, rows, strict=True)
    ):
        return problems
    for row, line in zip(rows, lines, strict=True):
        why = "it would be read as another path"
        try:
            entries = parse_pulp_manifest([line], base_url=base_url).entries
        except ManifestError as exc:
            why = exc.message
        else:
            if not entries:
                why = "a line starting with '#' is a comment"
            elif entries[0].relative_path == row.relative_path:
                continue
        problems.append(f"{row.relative_path!r} cannot be listed in a {MANIFEST_NAME}: {why}")
    return problems


def unexportable(rows: list[FileRow], dest: Path) -> list[str]:
    """Why *rows* cannot be written under *dest* as one tree and one true manifest (the
    rows the manifest skips, named like it, are not checked against it)."""
    listed = [r for r in rows if not _is_manifest(r.relative_path)]
    return _clashes(rows) or _unmanifestable(listed, dest)


def _is_manifest(path: str) -> bool:
    return path == MANIFEST_NAME or path.startswith(MANIFEST_NAME + "/")


def _file_name(part: str) -> str:
    """The name that writes *part* as its UTF-8 bytes, what the manifest's line (UTF-8) and
    a ``file://`` or web server's URL of it (percent-escaped UTF-8) name, whatever the file
    system encoding: *part* itself under a UTF-8 locale.  Under another (``LC_ALL=C``
    without UTF-8 mode: ASCII) *part* could not be written (UnicodeEncodeError: "internal
    error"), or was written in that encoding, which a sync of the export did not find."""
    return os.fsdecode(part.encode("utf-8"))


def export_files(
    storage: ArtifactStorage,
    rows: list[FileRow],
    dest: Path,
    *,
    checked: bool = False,
    stopped: Callable[[], bool] = lambda: False,
) -> ExportReport:
    """Write *rows* (downloaded files) and their PULP_MANIFEST under *dest*.

    Raises :class:`Unexportable`, having written nothing, when the rows are not one file per
    path or a manifest cannot list them (:func:`unexportable`; *checked*: the caller did).
    *stopped* is asked before each file: once it says so, the export ends there, without a
    manifest (``report.interrupted``); and before each directory below DEST searched first
    for the temp files of killed exports, where it ends the export before anything is
    written (``report.interrupted_sweeping`` too).  A stored file that is damaged (another
    size than recorded; when copied, other bytes) or missing is in ``report.errors`` and not
    in the manifest; a missing one is in ``report.missing`` too.
    An earlier ``PULP_MANIFEST`` is removed before the first file is written (raises the
    OSError, having written nothing, when it cannot be).
    """
    if not checked:
        problems = unexportable(rows, dest)
        if problems:
            raise Unexportable(problems)
    report = ExportReport()
    dest.mkdir(parents=True, exist_ok=True)
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    before_writing = _OldManifest(dest_fd)
    dirs = _Dirs(dest_fd, before_writing)
    done: list[FileRow] = []
    try:
        # killed exports' leftovers: their space back first (a walk of all DEST: stoppable)
        if not _remove_dead_temps(dest_fd, stopped):
            report.interrupted = report.interrupted_sweeping = True
            rows = []
        for row in rows:
            if stopped():
                report.interrupted = True
                break
            assert row.sha256 is not None
            *parents, name = map(_file_name, row.relative_path.split("/"))
            try:
                fd = dirs.open(tuple(parents))
                _place(
                    storage.path_for(row.sha256),
                    name,
                    fd,
                    report,
                    sha256=row.sha256,
                    size=row.size,
                    before_writing=before_writing,
                )
            except _Damaged as exc:
                report.errors.append((row.relative_path, str(exc)))
                if isinstance(exc, _Missing):
                    report.missing.append(row.relative_path)
                continue
            except (OSError, _ManifestNotRemoved) as exc:
                dirs.close()
                error = exc.error if isinstance(exc, _ManifestNotRemoved) else exc
                if StorageWriteError.matches(error):  # a full disk: every next file fails too
                    report.disk_error = StorageWriteError(error, dest)
                    break
                if isinstance(exc, _ManifestNotRemoved):  # writing on would make it lie
                    raise error from None
                report.errors.append((row.relative_path, str(error.strerror or error)))
                continue
            done.append(row)
        dirs.close()
        if not report.interrupted and report.disk_error is None:
            try:
                _write_manifest(dest_fd, done)
            except OSError as exc:
                if not StorageWriteError.matches(exc):
                    raise
                report.disk_error = StorageWriteError(exc, dest)
    finally:
        os.close(dest_fd)
    return report


def _cancel_requested() -> bool:
    """In a worker thread: whether the task waiting for it was cancelled (Ctrl-C, SIGTERM)."""
    try:
        trio.from_thread.check_cancelled()
    except trio.Cancelled:
        return True
    return False


#: why a file of an on-demand unit is not exported with --no-fetch
NOT_FETCHED = "not downloaded (on-demand; run without --no-fetch to fetch it)"
#: why a file is not exported whose version was removed (prune, then gc) during the export
REMOVED = "removed from the store with its version during the export (prune and gc)"


async def _version_removed(
    root: Path, db: str | None, repository: str, number: int, connect_timeout: float | None
) -> bool:
    """Whether version *number* of *repository* is gone from the store: pruned, and its
    files collected by gc, while it was being exported (export takes no lease), so that its
    missing files are not damage.  Read as every store read is, in a worker thread; a store
    that cannot be read now tells nothing (False: the files are reported as missing)."""
    try:
        async with existing_store(
            root, db, storage=False, connect_timeout=connect_timeout
        ) as store:
            # (a complete version's number is never given again: prune keeps the latest)
            await store.get_version(repository, number)
    except (RepositoryNotFound, VersionNotFound):
        return True
    except (CLIError, StoreError):
        return False
    return False


@dataclass
class _Fetched:
    rows: list[FileRow]
    #: unit id -> why its files are still not downloaded
    failed: dict[int, str]
    units: int = 0


async def _fetch(
    root: Path,
    db: str | None,
    repository: str,
    number: int,
    rows: list[FileRow],
    downloader: Downloader,
    connect_timeout: float | None = None,
) -> _Fetched:
    """Fetch and store the files of the version's on-demand units, all or nothing per unit;
    the rows again, as the store has them now.  The only time export writes to the store."""
    try:
        async with open_store(
            db, root=root, create=False, connect_timeout=connect_timeout
        ) as store:
            storage = store.storage
            assert storage is not None
            async with store.lease():
                with storage.removing_temp_files():  # (however the fetch ends)
                    async with downloader:
                        report = await ContentUnitCreator(store, downloader).fill_missing(
                            repository, number
                        )
                units = await store.list_units(repository, number)
    except (StoreError, InvalidInput, OSError) as exc:
        # a store that cannot be written (a read-only root): the rest is still exported
        why = f"not downloaded (cannot write the store to fetch it: {exc})"
        return _Fetched(rows, {r.unit_id: why for r in rows if not r.downloaded})
    reasons = {f.key: f"fetch failed: {failure_reason(f.error)}" for f in report.failures}
    failed = {
        u.id: f"not downloaded ({reasons.get(u.key, 'still missing after the fetch')})"
        for u in units
        if not u.complete
    }
    return _Fetched(file_rows(units), failed, report.units_new)


def _stopped_by_disk(report: ExportReport, total: int, dest: Path) -> str:
    """The one line for an export a full (read-only, failing) disk, or too many open files,
    stopped: what it wrote."""
    error = report.disk_error
    assert error is not None
    if error.inodes_exhausted:
        what = "the file system ran out of inodes"
    elif error.too_many_open_files:
        what = "it ran out of file descriptors"
    else:
        what = "the disk filled" if error.full else "a write failed"
    return (
        f"wrote {report.written} of {total} files to {dest} before {what} ({error.reason}); "
        f"no {MANIFEST_NAME} written: {write_stop_hint(error, 'the export')}"
    )


async def export_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    if not args.dest:  # (an unset $DEST: the export would go into the current directory)
        raise CLIError("DEST must not be empty")
    dest = absolute_path(args.dest)
    # made (its options checked) before anything is read; used for on-demand files only
    downloader = new_downloader(ca_cert=args.ca_cert, **upstream_options(args))
    async with existing_store(root, args.db, connect_timeout=args.db_connect_timeout) as store:
        storage = store.storage
        assert storage is not None
        number = await select_version(store, args.repository, args.version)
        if number is None:
            raise CLIError(
                f"repository {args.repository!r} has no version yet", kind="version_not_found"
            )
        rows = file_rows(await store.list_units(args.repository, number))
    # all checked before anything is fetched or written
    problems = await trio.to_thread.run_sync(unexportable, rows, dest)
    if problems:
        for problem in problems:
            warn(f"cannot export: {problem}")
        raise CLIError(
            f"nothing written to {dest}: {args.repository!r} version {number} is not one file "
            f"per path that a {MANIFEST_NAME} can list",
            EXIT_FAILED,
            kind="unexportable",
        )
    fetched = 0
    failed: dict[int, str] = {}
    if any(not r.downloaded for r in rows):
        if args.no_fetch:
            failed = {r.unit_id: NOT_FETCHED for r in rows if not r.downloaded}
        else:
            result = await _fetch(
                root, args.db, args.repository, number, rows, downloader, args.db_connect_timeout
            )
            rows, failed, fetched = result.rows, result.failed, result.units
    errors: list[tuple[str, str]] = []
    todo: list[FileRow] = []
    for row in rows:
        if _is_manifest(row.relative_path):
            errors.append((row.relative_path, "the name of the manifest itself"))
        elif not row.downloaded or row.sha256 is None:
            errors.append((row.relative_path, failed.get(row.unit_id, "not downloaded")))
        else:
            todo.append(row)
    try:
        report = await trio.to_thread.run_sync(
            partial(export_files, storage, todo, dest, checked=True, stopped=_cancel_requested)
        )
    except OSError as exc:
        raise CLIError(f"cannot export to {dest}: {exc.strerror or exc}", kind="os_error") from None
    if report.interrupted_sweeping:
        raise Interrupted(
            f"before writing anything to {dest} (it was looking for the temp files of "
            "killed exports in it, and removing them): run the export again"
        )
    if report.interrupted:
        raise Interrupted(
            f"after {report.written} files of {args.repository!r} version {number} written "
            f"to {dest}, no {MANIFEST_NAME} yet: run the export again to finish"
        )
    removed = bool(report.missing) and await _version_removed(
        root, args.db, args.repository, number, args.db_connect_timeout
    )
    if removed:
        gone = set(report.missing)
        report.errors = [(p, REMOVED if p in gone else why) for p, why in report.errors]
    errors.extend(report.errors)
    for path, why in errors:
        warn(f"not exported: {path}: {why}")
    if removed:
        gone_count = len(report.missing)
        warn(
            f"repository {args.repository!r} version {number} was removed while it was "
            f"being exported (prune and gc): {gone_count} of its files "
            f"{'was' if gone_count == 1 else 'were'} gone before being exported, not "
            "damaged; export a version that exists"
        )
    if report.disk_error is not None:
        raise CLIError(
            _stopped_by_disk(report, len(todo), dest),
            EXIT_FAILED,
            kind=write_stop_kind(report.disk_error),
        )
    if args.json:
        emit_json(
            {
                "repository": args.repository,
                "version": number,
                "dest": str(dest),
                "written": report.written,
                "linked": report.linked,
                "copied": report.copied,
                "unchanged": report.unchanged,
                "fetched": fetched,
                "version_removed": removed,
                "not_exported": [{"relative_path": p, "reason": why} for p, why in errors],
            }
        )
        return EXIT_OK if not errors else EXIT_FAILED
    how = []
    if report.linked:
        how.append(f"{report.linked} hard links")
    if report.copied:
        how.append(f"{report.copied} copies")
    if report.unchanged:
        how.append(f"{report.unchanged} unchanged")
    if fetched:
        how.append(f"{fetched} on-demand units fetched and stored")
    say(
        f"exported {report.written} files of {args.repository!r} version {number} to {dest}"
        + (f" ({', '.join(how)})" if how else "")
        + f" and {MANIFEST_NAME}"
    )
    return EXIT_OK if not errors else EXIT_FAILED
