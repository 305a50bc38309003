"""Content-addressed artifact storage on the local (or a shared) filesystem.

This module owns the files of a store: where each sha256 lives, adopting a downloaded
temp file into place durably, reading and re-hashing stored files, and the temp area
(fresh temp names, removing the temp files of stopped processes, and of this process at the
end of a run).  It must not touch the database (the store records what is stored; the
storage only holds the bytes) nor download anything (the downloader writes the temp files,
the storage adopts them).

Layout under the storage root::

    <root>/artifacts/<aa>/<bb>/<sha256>     one file per sha256, read-only (0o444)
    <root>/tmp/tf-<pid>-<space>-<hex>.part  temp files of downloads in progress

A downloaded temp file is *adopted*: fsynced, renamed into place (an atomic rename on the
same filesystem), then the directory is fsynced, so the file is durable before the database
may refer to it.  Adopting is idempotent: any number of tasks or processes adopting the same
content end with one file and no error; the adopters that lose the race remove their temp
file.

A temp file's name carries the pid of the process writing it, and its pid space (a boot of
a machine, a PID namespace: see ``_tempfiles``), so a cleanup tells the files of a live
process (never touched) from those a stopped one left behind
(:meth:`ArtifactStorage.cleanup_temp <triofetch.ArtifactStorage.cleanup_temp>`), and a run
can remove its own on the way out
(:meth:`ArtifactStorage.remove_temp_files <triofetch.ArtifactStorage.remove_temp_files>`,
:meth:`ArtifactStorage.removing_temp_files <triofetch.ArtifactStorage.removing_temp_files>`),
without ever taking the files of another machine or container sharing the root for its own.

All file work runs in worker threads (``trio.to_thread.run_sync``) under a
:class:`trio.CapacityLimiter`; the Trio loop never waits on the disk (the one exception,
:meth:`ArtifactStorage.remove_temp_files <triofetch.ArtifactStorage.remove_temp_files>`, is
blocking on purpose: see there).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import trio

from ._context import check_trio
from ._digests import DEFAULT_ALGORITHM, MultiHasher, normalize_digests, resolve_algorithms
from ._durable import fsync_directory
from ._model import ArtifactRecord, check_bool, check_int, check_number, listed
from ._tempfiles import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    new_temp_name,
    new_temp_path,
    pid_space,
    temp_file_writer,
    writer_alive,
)
from .errors import (
    ArtifactMismatch,
    ArtifactMissing,
    InvalidDigest,
    InvalidInput,
    StorageWriteError,
    StoreError,
)

if TYPE_CHECKING:
    from io import BufferedReader

    from trio._file_io import AsyncIOWrapper


__all__ = [
    "ArtifactMismatch",
    "ArtifactMissing",
    "ArtifactStorage",
    "CorruptArtifact",
    "FileToAdopt",
    "StoredArtifact",
    "VerifyReport",
    "remove_dead_temp_files",
    "temp_file_name",
]

_CHUNK = 1 << 20
#: seconds a temp file of another pid space (another machine, another container) is left
#: alone by cleanup_temp without an older_than: its pid says nothing here, its age does
_FOREIGN_TEMP_AGE = 24 * 3600.0
#: times a directory the collector removed meanwhile is made again before giving up (it
#: removes each at most once per run: a second loss is a second gc)
_DIRECTORY_TRIES = 3


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """A file now in the storage: its sha256, size and every digest known for it."""

    sha256: str
    size: int
    digests: Mapping[str, str]
    path: Path
    #: False when the content was already stored and the temp file was removed instead.
    created: bool

    @property
    def record(self) -> ArtifactRecord:
        """This artifact as the store records it."""
        return ArtifactRecord(self.sha256, self.size, self.digests)


@dataclass(frozen=True, slots=True)
class FileToAdopt:
    """One file for :meth:`ArtifactStorage.adopt_many`: a temp file (its path, as for
    :meth:`~ArtifactStorage.adopt`) or the bytes themselves, with the sha256, size and
    digests computed when it was received."""

    #: the temp file's path, or the file's bytes (written to a temp file first)
    source: str | os.PathLike[str] | bytes
    sha256: str
    size: int
    digests: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class CorruptArtifact:
    """A stored file whose content no longer has its name's sha256 (or expected size)."""

    sha256: str
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :meth:`ArtifactStorage.verify` found.

    ``checked`` files were checked; ``corrupted`` are those missing or damaged.  ``orphans``
    (only with ``verify(expected=...)``) are the files under ``artifacts/`` that no record
    expects: not errors (``ok`` ignores them), the collector removes them.
    """

    checked: int
    corrupted: tuple[CorruptArtifact, ...]
    orphans: tuple[Path, ...] = ()

    @property
    def ok(self) -> bool:
        """No file is missing or damaged (orphans do not count)."""
        return not self.corrupted


class _DownloadResultLike(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def digests(self) -> Mapping[str, str]: ...


def _checked(
    sha256: str, size: int, digests: Mapping[str, str] | None, path: Path | None
) -> tuple[str, dict[str, str]]:
    """What a caller says of a file to adopt, checked: its sha256 and every digest known
    for it (``sha256`` included).  Raises :class:`InvalidDigest`, :class:`ArtifactMismatch`
    (a ``sha256`` among *digests* that is not *sha256*) or :class:`InvalidInput` (a size
    below 0)."""
    digest = _check_sha256(sha256)
    known = normalize_digests(digests)
    if DEFAULT_ALGORITHM in known and known[DEFAULT_ALGORITHM] != digest:
        raise ArtifactMismatch(DEFAULT_ALGORITHM, digest, known[DEFAULT_ALGORITHM], path=path)
    check_int(size, "size", least=0)
    known[DEFAULT_ALGORITHM] = digest
    return digest, known


def _raise_emfile(exc: OSError) -> None:
    """os.walk's onerror: a directory that could not be listed for want of a file
    descriptor is not an empty one (os.walk skips what it cannot list)."""
    if StorageWriteError.out_of_descriptors(exc):
        raise exc


def _check_sha256(value: object) -> str:
    digests = normalize_digests({DEFAULT_ALGORITHM: value})
    return digests[DEFAULT_ALGORITHM]


def _syncfs(path: Path) -> bool:
    """syncfs(2) on the filesystem of *path*; False where the platform has no syncfs.

    With no file descriptor to open *path* (``EMFILE``, ``ENFILE``), sync(2) instead: it
    needs none, and Linux waits for it as for syncfs.  So a run that stops for want of
    descriptors still commits the units it completed."""
    syncfs = getattr(_LIBC, "syncfs", None) if _LIBC is not None else None
    if syncfs is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        if not StorageWriteError.out_of_descriptors(exc):
            raise
        os.sync()  # (every file system: more work than syncfs, on a rare path)
        return True
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)
    return True


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to load
        return None


_LIBC = _load_libc()


def temp_file_name(*, prefix: str = TEMP_PREFIX, suffix: str = TEMP_SUFFIX) -> str:
    """A fresh name for a temp file (``<prefix><pid>-<pid space>-<random><suffix>``) that
    :func:`remove_dead_temp_files` can tell from the temp files of live processes.

    The storage's own temp files are ``tf-...part``; a writer of its own files beside a
    destination (``triofetch export`` writes ``.tf-export-...``) passes its *prefix* and
    *suffix* here and to :func:`remove_dead_temp_files`.
    """
    return new_temp_name(prefix, suffix)


def remove_dead_temp_files(
    directory: str | os.PathLike[str] | int,
    *,
    prefix: str = TEMP_PREFIX,
    suffix: str = TEMP_SUFFIX,
    older_than: float = 0.0,
) -> list[str]:
    """Remove from *directory* (a path, or an open directory's descriptor) the temp files
    named by :func:`temp_file_name` whose process is gone; return their names.

    A file of a process of this machine and PID namespace is removed once that process has
    ended (and it is at least *older_than* seconds old); one of another machine or
    container sharing the directory, whose pid says nothing here, once it has not been
    written for *older_than* seconds, or for a day when *older_than* is 0.  What was written
    by a live process (this one included) stays.  Blocking (a directory scan and a call per
    file): run it in a worker thread where it matters.  Best effort: a file that cannot be
    removed (a read-only directory) stays, and so does an unreadable directory's content.
    """
    older_than = check_number(older_than, "older_than (seconds)") or 0.0
    dir_fd, base = (directory, "") if isinstance(directory, int) else (None, os.fspath(directory))
    now = time.time()
    removed: list[str] = []
    try:
        with os.scandir(directory if dir_fd is None else dir_fd) as listing:
            names = [entry.name for entry in listing if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        writer = temp_file_writer(name, prefix, suffix)
        if writer is None:
            continue
        alive = writer_alive(*writer)
        if alive:
            continue
        # (another pid space's: only its age says it is abandoned)
        wait = older_than if alive is not None else older_than or _FOREIGN_TEMP_AGE
        path = os.path.join(base, name)
        try:
            if wait and now - os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mtime < wait:
                continue
            os.unlink(path, dir_fd=dir_fd)
        except OSError:
            continue  # gone already, a directory of that name, a read-only directory
        removed.append(name)
    return removed


class ArtifactStorage:
    """Content-addressed files under *root*.

    Args:
        root: the storage root; ``artifacts/`` and ``tmp/`` are created inside it.
        limiter: bounds the worker threads doing file work (default: 32 threads: adopting a
            file mostly waits for its fsyncs, and many fsyncs in flight at once let the
            filesystem commit them together in one journal transaction, where one at a time
            would wait for a commit each).
        durable: fsync files and directories before an adoption returns (default True;
            tests and benchmarks may turn it off).
        readonly: open the storage for reading only: no directory is created (a root
            without ``artifacts/`` is a storage holding no file), and every method that
            would write (:meth:`adopt`, :meth:`adopt_result`, :meth:`adopt_many`,
            :meth:`add_bytes`, :meth:`cleanup_temp`) raises :class:`~triofetch.StoreError`.
            For a root on a read-only filesystem, or one the process may not write.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        limiter: trio.CapacityLimiter | None = None,
        durable: bool = True,
        readonly: bool = False,
    ) -> None:
        path = os.fspath(root) if isinstance(root, str | os.PathLike) else None
        if not isinstance(path, str) or not path:  # ("": the current directory, by mistake)
            raise InvalidInput(
                f"the storage root must be a path (a str or os.PathLike), got {root!r}"
            )
        self.root = Path(path).absolute()
        self.artifacts_dir = self.root / "artifacts"
        #: where downloads write their temp files (same filesystem as the artifacts)
        self.temp_dir = self.root / "tmp"
        self.limiter = limiter if limiter is not None else trio.CapacityLimiter(32)
        self.durable = check_bool(durable, "durable")
        # files and directories adopted with sync=False, until the next sync()
        self._pending: set[Path] = set()
        self._pending_lock = threading.Lock()
        self.readonly = check_bool(readonly, "readonly")
        if readonly:
            return
        try:
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            self.temp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the artifact storage at {self.root}: {exc}") from exc

    def __repr__(self) -> str:
        flag = ", readonly=True" if self.readonly else ""
        return f"ArtifactStorage({str(self.root)!r}{flag})"

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"the artifact storage at {self.root} was opened read-only")

    # -- paths -------------------------------------------------------------------------

    def path_for(self, sha256: str) -> Path:
        """Where the file of *sha256* lives (whether or not it is stored)."""
        digest = _check_sha256(sha256)
        return self.artifacts_dir / digest[:2] / digest[2:4] / digest

    def new_temp_path(self) -> Path:
        """A fresh temp file name in :attr:`temp_dir` (named so cleanup spares live writers)."""
        return new_temp_path(self.temp_dir)

    # -- adopting ------------------------------------------------------------------------

    async def adopt(
        self,
        path: str | os.PathLike[str],
        *,
        sha256: str,
        size: int,
        digests: Mapping[str, str] | None = None,
        sync: bool = True,
    ) -> StoredArtifact:
        """Move the downloaded temp file *path* into the storage under *sha256*.

        *digests* are the digests the download computed; when they include ``sha256`` it must
        equal *sha256*, otherwise :class:`ArtifactMismatch` is raised and the temp file is left
        untouched.  *size* must be the file's size on disk.  When the content is already
        stored (a file of that size whose bytes hash to *sha256*), the temp file is removed and
        the existing file kept (``created`` is False); a damaged one is replaced.

        With ``sync=False`` the file and its directories are not fsynced now: call
        :meth:`sync` before the database may refer to it (one ``syncfs`` for a whole batch of
        files instead of several fsyncs for each).
        """
        check_trio()
        self._check_writable()
        src = Path(path)
        digest, known = _checked(sha256, size, digests, src)
        final = self.path_for(digest)
        created = await trio.to_thread.run_sync(
            self._adopt_sync, src, final, size, sync, limiter=self.limiter
        )
        return StoredArtifact(digest, size, known, final, created)

    async def adopt_many(
        self, files: Iterable[FileToAdopt], *, sync: bool = True
    ) -> list[StoredArtifact | Exception]:
        """Adopt several files at once, in one worker thread: what :meth:`adopt` does for
        each, without a thread round trip per file (for many small files).

        A :class:`FileToAdopt` holding bytes is written to a temp file first.  Returns, in
        the order of *files*, each file's :class:`StoredArtifact`, or the exception that
        file raised (:class:`ArtifactMismatch`, :class:`~triofetch.StoreError`...): one
        file failing does not stop the others.  A temp file whose adoption failed is left
        where it was (a file written here from bytes is removed).  *sync* as for
        :meth:`adopt`.

        Raises:
            InvalidInput: *files* is a str or bytes, or holds something else than a
                :class:`FileToAdopt` (nothing is adopted).
            StoreError: the storage was opened read-only.
        """
        check_trio()
        self._check_writable()
        todo: list[FileToAdopt] = listed(files, "files")
        for item in todo:
            if not isinstance(item, FileToAdopt):
                raise InvalidInput(f"expected FileToAdopt items, got {type(item).__name__}")
        items: list[tuple[FileToAdopt, Path, str, dict[str, str]] | Exception] = []
        for item in todo:
            try:
                where = None if isinstance(item.source, bytes) else Path(item.source)
                digest, known = _checked(item.sha256, item.size, item.digests, where)
                if isinstance(item.source, bytes) and len(item.source) != item.size:
                    raise ArtifactMismatch("size", item.size, len(item.source), path=None)
            except Exception as exc:
                items.append(exc)
                continue
            items.append((item, self.path_for(digest), digest, known))
        return await trio.to_thread.run_sync(
            self._adopt_many_sync, items, sync, limiter=self.limiter
        )

    def _adopt_many_sync(
        self,
        items: list[tuple[FileToAdopt, Path, str, dict[str, str]] | Exception],
        sync: bool,
    ) -> list[StoredArtifact | Exception]:
        results: list[StoredArtifact | Exception] = []
        for entry in items:
            if isinstance(entry, Exception):
                results.append(entry)
                continue
            item, final, digest, known = entry
            if isinstance(item.source, bytes):
                try:
                    src = self._write_temp(item.source)
                except StoreError as exc:
                    results.append(exc)
                    continue
            else:
                src = Path(item.source)
            try:
                created = self._adopt_sync(src, final, item.size, sync)
            except Exception as exc:  # (this file's outcome)
                if isinstance(item.source, bytes):
                    src.unlink(missing_ok=True)  # (written here: not the caller's)
                results.append(exc)
            else:
                results.append(StoredArtifact(digest, item.size, known, final, created))
        return results

    def _write_temp(self, data: bytes) -> Path:
        """(worker thread) *data* in a new temp file; raises :class:`StorageWriteError`
        (a full disk...) or :class:`~triofetch.StoreError`, leaving no file behind."""
        path = self.new_temp_path()
        try:
            with open(path, "xb") as f:
                f.write(data)
        except OSError as exc:
            # (made before the file is removed: it may hold the last inode)
            error = (
                StorageWriteError(exc, self.temp_dir)
                if StorageWriteError.matches(exc)
                else StoreError(f"cannot write a temp file in {self.temp_dir}: {exc}")
            )
            # (not unlink(missing_ok=True): on a read-only file system, unlinking a file
            # that is not there fails with EROFS, not ENOENT)
            with contextlib.suppress(OSError):
                path.unlink()
            raise error from exc
        return path

    async def adopt_result(
        self, result: _DownloadResultLike, *, sync: bool = True
    ) -> StoredArtifact:
        """Adopt a downloader's ``DownloadResult`` (its ``path``, ``size`` and ``digests``)."""
        check_trio()
        try:  # (each attribute read once: a result's path is made when it is read)
            path, size, digests = result.path, result.size, dict(result.digests)
        except (AttributeError, TypeError, ValueError):
            raise InvalidInput(f"adopt_result() takes a DownloadResult, got {result!r}") from None
        if DEFAULT_ALGORITHM not in digests:
            raise InvalidDigest(DEFAULT_ALGORITHM, None, "the download computed no sha256")
        return await self.adopt(
            path,
            sha256=digests[DEFAULT_ALGORITHM],
            size=size,
            digests=digests,
            sync=sync,
        )

    async def sync(self) -> None:
        """Make every file adopted with ``sync=False`` durable, with its directories.

        One ``syncfs`` of the storage's filesystem where the platform has it (Linux), else
        an fsync of each pending file and directory.  A no-op when nothing is pending.
        """
        check_trio()
        with self._pending_lock:
            pending, self._pending = self._pending, set()
        if not pending or not self.durable:
            return
        try:
            await trio.to_thread.run_sync(self._sync_paths, pending, limiter=self.limiter)
        except BaseException:
            with self._pending_lock:
                self._pending |= pending
            raise

    def _sync_paths(self, pending: set[Path]) -> None:
        if _syncfs(self.artifacts_dir):
            return
        for path in sorted(pending, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                fsync_directory(path)
            else:
                with open(path, "rb") as f:
                    os.fsync(f.fileno())

    async def add_bytes(
        self, data: bytes | bytearray | memoryview, *, algorithms: Iterable[str] = ()
    ) -> StoredArtifact:
        """Store *data* (hashed here with sha256 and *algorithms*): for small files and tests.

        *data* is any bytes-like value (stored as its bytes); *algorithms* may be one name.

        Raises:
            InvalidInput: *data* is not bytes-like.
            UnsupportedAlgorithm: an algorithm triofetch does not know.
            StorageWriteError: the temp file could not be written (a full disk, a read-only
                or failing file system); no part of it is left in the temp area.
            StoreError: a read-only storage, or another failure to write the temp file.
        """
        check_trio()
        self._check_writable()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"data must be bytes-like, got {type(data).__name__}")
        data = bytes(data)  # (a bytes object as it is; a copy of a buffer that may change)
        names = resolve_algorithms({}, algorithms, (DEFAULT_ALGORITHM,))

        def write() -> tuple[Path, dict[str, str]]:
            hasher = MultiHasher(names)
            hasher.update(data)
            return self._write_temp(data), hasher.hexdigests()

        tmp, digests = await trio.to_thread.run_sync(write, limiter=self.limiter)
        try:
            return await self.adopt(
                tmp, sha256=digests[DEFAULT_ALGORITHM], size=len(data), digests=digests
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(tmp.unlink, True)
            raise

    def _adopt_sync(self, src: Path, final: Path, size: int, sync: bool = True) -> bool:
        try:
            actual = os.stat(src).st_size
        except FileNotFoundError:
            raise InvalidInput(f"cannot adopt {src}: no such file") from None
        if actual != size:
            raise ArtifactMismatch("size", size, actual, path=src)
        try:
            return self._place(src, final, size, self.durable and sync)
        except OSError as exc:  # (a directory where the file goes, a full disk...)
            if StorageWriteError.matches(exc):  # a full disk...: the caller stops its run
                raise StorageWriteError(exc, self.artifacts_dir) from exc
            raise StoreError(f"cannot adopt {src} as {final}: {exc}") from exc

    def _place(self, src: Path, final: Path, size: int, durable: bool) -> bool:
        """(worker thread) Put *src* (of *size* bytes, checked) at *final*; whether it made
        the file (False: an intact copy was there already).  Raises OSError."""
        try:
            existing = os.stat(final).st_size
        except FileNotFoundError:
            existing = None
        # A file already there is trusted only once its bytes are checked: it may be the
        # not-yet-synced copy of a process that crashed before the database referred to it.
        if existing == size and self._check_file(final.name, final, size) is None:
            src.unlink(missing_ok=True)
            self._pend(final)
            return False
        if existing is not None:  # a damaged copy: replace it with this one
            os.chmod(src, 0o444)
            if durable:
                with open(src, "rb") as f:
                    os.fsync(f.fileno())
            # (gc may have swept that copy, unrecorded, and its directory with it)
            self._into(functools.partial(os.replace, src, final), src, final, durable)
            if durable:
                fsync_directory(final.parent)
            else:
                self._pend(final, final.parent)
            return True
        directory = final.parent
        if not directory.is_dir():
            self._make_directory(directory, durable)
        os.chmod(src, 0o444)
        if durable:
            with open(src, "rb") as f:
                os.fsync(f.fileno())
        try:
            # link() never replaces: exactly one adopter creates the file.
            self._into(functools.partial(os.link, src, final), src, final, durable)
        except FileExistsError:
            src.unlink(missing_ok=True)
            return False
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # temp file on another filesystem: copy it over
                self._copy_in(src, final, durable)
            elif exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                # no hard links here: rename (same content wins)
                self._into(functools.partial(os.replace, src, final), src, final, durable)
                if durable:
                    fsync_directory(directory)
                else:
                    self._pend(final, directory)
                return True
            else:
                raise
        src.unlink(missing_ok=True)
        if durable:
            fsync_directory(directory)
        else:
            self._pend(final, directory)
        return True

    def _make_directory(self, directory: Path, durable: bool) -> None:
        """Make *directory* (an ``ab/cd``) and its parent, durable with *durable*.

        The collector may remove them again before they are fsynced (see :meth:`_into`):
        then they are made again."""
        for attempt in range(_DIRECTORY_TRIES):
            directory.mkdir(parents=True, exist_ok=True)
            if not durable:
                self._pend(directory.parent, directory.parent.parent)
                return
            try:
                fsync_directory(directory.parent)
                fsync_directory(directory.parent.parent)
                return
            except FileNotFoundError:
                if attempt == _DIRECTORY_TRIES - 1:
                    raise

    def _into(self, put: Callable[[], object], src: Path, final: Path, durable: bool) -> None:
        """``put()``, which links or renames *src* to *final*; *final*'s directory is made
        again if it went meanwhile.

        The collector removes the directories it leaves empty (``Store.collect_garbage``),
        under the writers' lease; a program adopting without one may see its directory go
        between making it and putting a file in it (the longer the copy across file systems,
        the likelier)."""
        for attempt in range(_DIRECTORY_TRIES):
            try:
                put()
                return
            except FileNotFoundError:
                if attempt == _DIRECTORY_TRIES - 1 or final.parent.is_dir() or not src.exists():
                    raise
            self._make_directory(final.parent, durable)

    def _pend(self, *paths: Path) -> None:
        if self.durable:
            with self._pending_lock:
                self._pending.update(paths)

    def _copy_in(self, src: Path, final: Path, durable: bool) -> None:
        tmp = self.new_temp_path()
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o444)
            if self.durable:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                self._into(functools.partial(os.link, tmp, final), tmp, final, durable)
        finally:
            tmp.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------

    async def exists(self, sha256: str) -> bool:
        """Whether the file of *sha256* is stored."""
        check_trio()
        path = self.path_for(sha256)
        return await trio.to_thread.run_sync(path.is_file, limiter=self.limiter)

    async def damaged(self, sizes: Mapping[str, int]) -> set[str]:
        """The sha256s among *sizes* (``{sha256: recorded size}``) whose file is missing or
        has another size: one ``stat`` each, in one worker thread, no hashing."""
        check_trio()
        if not sizes:
            return set()
        return await trio.to_thread.run_sync(self._damaged_sync, sizes, limiter=self.limiter)

    def _damaged_sync(self, sizes: Mapping[str, int]) -> set[str]:
        bad: set[str] = set()
        stat = os.stat
        base = str(self.artifacts_dir)
        for sha, size in sizes.items():
            try:
                if stat(f"{base}/{sha[:2]}/{sha[2:4]}/{sha}").st_size == size:
                    continue
            except OSError:
                pass
            bad.add(sha)
        return bad

    async def open(self, sha256: str) -> AsyncIOWrapper[BufferedReader]:
        """Open the stored file of *sha256* for reading (a Trio async file object, binary).

        Raises :class:`ArtifactMissing` when it is not stored.
        """
        check_trio()
        path = self.path_for(sha256)
        try:
            return await trio.open_file(path, "rb")
        except FileNotFoundError:
            raise ArtifactMissing(sha256, path) from None

    def open_sync(self, sha256: str) -> IO[bytes]:
        """Open the stored file of *sha256* for reading, blocking (for synchronous callers)."""
        path = self.path_for(sha256)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise ArtifactMissing(sha256, path) from None

    async def read_bytes(self, sha256: str) -> bytes:
        """The whole content of a stored artifact (small files)."""
        check_trio()
        path = self.path_for(sha256)
        try:
            return await trio.to_thread.run_sync(path.read_bytes, limiter=self.limiter)
        except FileNotFoundError:
            raise ArtifactMissing(sha256, path) from None

    # -- maintenance -----------------------------------------------------------------------

    async def verify(
        self,
        sha256s: Iterable[str] | None = None,
        *,
        sizes: Mapping[str, int] | None = None,
        expected: Mapping[str, int] | None = None,
    ) -> VerifyReport:
        """Re-hash stored files and report those whose content is not their sha256.

        With *sha256s*, those artifacts are checked (a missing file is reported as corrupt);
        otherwise every file under ``artifacts/``.  *sizes* optionally gives the size each
        sha256 should have (as recorded in the database).

        With *expected* (``{sha256: size}``: every artifact the database records) the check
        goes both ways: each expected file must be there with that size and content (a
        missing one is reported as corrupt, reason ``missing``), and the files under
        ``artifacts/`` that are not expected are listed in ``orphans`` without being read.
        ``checked`` is then the number of expected files.

        Raises:
            StorageWriteError: the process (or the system) has no file descriptor left to
                open a file with (``too_many_open_files``): that says nothing of the file,
                so it is not reported as corrupt; the check stops.
        """
        check_trio()
        orphans: list[Path] = []
        if expected is not None:
            if sha256s is not None:
                raise InvalidInput("verify() takes sha256s or expected, not both")
            want = {_check_sha256(s): size for s, size in expected.items()}
            paths = await self._walk_or_stop()
            orphans = [p for p in paths if not (p.name in want and p == self.path_for(p.name))]
            todo = [(d, self.path_for(d)) for d in sorted(want)]
            sizes = want
        elif sha256s is None:
            paths = await self._walk_or_stop()
            todo = [(p.name, p) for p in paths]
        else:
            todo = [(d, self.path_for(d)) for d in (_check_sha256(s) for s in sha256s)]
        corrupted: list[CorruptArtifact] = []
        size_of = dict(sizes or {})

        stopped: list[OSError] = []

        async def check(name: str, path: Path, scope: trio.CancelScope) -> None:
            try:
                reason = await trio.to_thread.run_sync(
                    self._check_file, name, path, size_of.get(name), limiter=self.limiter
                )
            except OSError as exc:  # no descriptor left (see _check_file): stop, ungrouped
                stopped.append(exc)
                scope.cancel()
                return
            if reason is not None:
                corrupted.append(CorruptArtifact(name, path, reason))

        # Bounded by the limiter; the nursery only holds coroutines waiting for a token,
        # so check in batches to keep memory flat for huge storages.
        batch = 256
        for start in range(0, len(todo), batch):
            async with trio.open_nursery() as nursery:
                for name, path in todo[start : start + batch]:
                    nursery.start_soon(check, name, path, nursery.cancel_scope)
            if stopped:
                raise StorageWriteError(stopped[0], self.artifacts_dir)
        corrupted.sort(key=lambda c: c.sha256)
        return VerifyReport(len(todo), tuple(corrupted), tuple(orphans))

    async def check(self, sha256: str, *, size: int | None = None) -> str | None:
        """Hash the stored file of *sha256* (in a worker thread): None when it is intact,
        else what is wrong (``missing``, ``size 3, expected 5``, ``sha256 is ...``).

        Raises :class:`~triofetch.StorageWriteError` (``too_many_open_files``) when no file
        descriptor is left to open the file with: that says nothing of the file."""
        check_trio()
        digest = _check_sha256(sha256)
        try:
            return await trio.to_thread.run_sync(
                self._check_file, digest, self.path_for(digest), size, limiter=self.limiter
            )
        except OSError as exc:
            raise StorageWriteError(exc, self.artifacts_dir) from exc

    async def _walk_or_stop(self) -> list[Path]:
        try:
            return await trio.to_thread.run_sync(self._walk, limiter=self.limiter)
        except OSError as exc:  # no descriptor left to list a directory with
            raise StorageWriteError(exc, self.artifacts_dir) from exc

    def _walk(self) -> list[Path]:
        found: list[Path] = []
        for dirpath, _dirs, files in os.walk(self.artifacts_dir, onerror=_raise_emfile):
            found.extend(Path(dirpath) / f for f in files)
        found.sort()
        return found

    @staticmethod
    def _check_file(name: str, path: Path, size: int | None) -> str | None:
        hasher = hashlib.sha256()
        total = 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    hasher.update(chunk)
                    total += len(chunk)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            if StorageWriteError.out_of_descriptors(exc):  # the process's want, not the file's
                raise
            return f"unreadable: {exc}"
        if size is not None and total != size:
            return f"size {total}, expected {size}"
        actual = hasher.hexdigest()
        if actual != name:
            return f"sha256 is {actual}"
        return None

    async def cleanup_temp(self, *, older_than: float = 0.0) -> list[Path]:
        """Remove temp files left behind by processes that are gone; return what was removed.

        A temp file is removed only when its name says which process wrote it
        (``tf-<pid>-...``), that process is not alive, it is not this process, and the file is
        at least *older_than* seconds old.  A pid means that process only on this machine
        and in this PID namespace, which the name says too: a temp file written on another
        machine, or in another container, sharing this storage root is removed only once it
        has not been written for *older_than* seconds, or for a day when *older_than* is 0
        (a download writes its temp file as it goes).  Files with other names are never
        touched.  For this process's own temp files see :meth:`remove_temp_files`.
        """
        check_trio()
        self._check_writable()
        older_than = check_number(older_than, "older_than (seconds)") or 0.0
        return await trio.to_thread.run_sync(self._cleanup_sync, older_than, limiter=self.limiter)

    def _cleanup_sync(self, older_than: float) -> list[Path]:
        removed = remove_dead_temp_files(self.temp_dir, older_than=older_than)
        return [self.temp_dir / name for name in removed]

    def remove_temp_files(self, *, pid: int | None = None) -> list[Path]:
        """Remove the temp files process *pid* (default: this process) wrote; return them.

        *pid* is a process of this machine and PID namespace: the files of a process with
        the same pid on another machine or in another container sharing the storage root
        are not its files, and stay.

        For the end of a run: whatever way the run ended (an error, a cancellation, Ctrl-C),
        none of its temp files should stay behind.  The downloader and the storage remove
        their own temp files as they go; this is the last word, for the ones a cancellation
        caught between two steps.  Only call it when no other task of the process is still
        writing into this storage: it removes every temp file named after the process.

        It blocks (a scan of the temp directory, an unlink per file, no worker thread) so
        that it can run where nothing can be awaited any more: in the ``finally`` of a
        cancelled scope, on the way out of the program.  It never raises for a file it could
        not remove (a later :meth:`cleanup_temp` removes those once the process is gone).

        Raises:
            InvalidInput: *pid* is not an int >= 1.
            StoreError: the storage was opened read-only.
        """
        self._check_writable()
        owner = os.getpid() if pid is None else check_int(pid, "pid", least=1)
        removed: list[Path] = []
        try:
            entries = list(self._temp_entries())
        except OSError:  # a temp directory that cannot be read: nothing to do here
            return removed
        here = pid_space()
        for entry, writer, space in entries:
            if writer == owner and space in ("", here):
                try:
                    os.unlink(entry.path)
                except OSError:
                    continue
                removed.append(Path(entry.path))
        return removed

    @contextlib.contextmanager
    def removing_temp_files(self) -> Iterator[None]:
        """A block whose end, however it comes, removes this process's temp files.

        ``with storage.removing_temp_files(): ...`` is :meth:`remove_temp_files` in a
        ``finally``: a run's work goes in the block, and no temp file of this process stays
        after it (the same caveat: no other task of this process may be writing into this
        storage when the block ends).
        """
        self._check_writable()
        try:
            yield
        finally:
            self.remove_temp_files()

    def _temp_entries(self) -> Iterator[tuple[os.DirEntry[str], int, str]]:
        """The entries of the temp directory named as temp files, with their writer's pid
        and pid space (nothing when the directory is gone)."""
        try:
            entries = list(os.scandir(self.temp_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            writer = temp_file_writer(entry.name)
            if writer is not None:
                yield entry, *writer
