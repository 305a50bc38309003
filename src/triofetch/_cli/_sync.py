"""``triofetch sync``: read a manifest, validate all of it, then create its units.

Owns the sync command (its checks of the source, the free space and an empty manifest, its
report and lines) and what the commands that download share: a :class:`Downloader` made
from their options (:func:`new_downloader`), the time bounds, the reason of a failure.  It
must not decide library policy (the transport, the CA file's validity, which temp files go):
those are the downloader's and the storage's, asked through the public API.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import trio
from rich.console import Console

from ..creator import ContentUnitCreator, CreateReport, Policy
from ..downloader import Downloader
from ..errors import (
    DownloadError,
    InvalidInput,
    ManifestError,
    NotAStore,
    StorageWriteError,
    StoreError,
    StoreNotFound,
    UnitFailed,
    describe_error,
    redact_url,
)
from ..manifest import (
    DEFAULT_MAX_MANIFEST_SIZE,
    PulpManifestReader,
    RepositoryIndex,
    local_source,
    split_source,
)
from ..store import ReplacedUnit, Store, open_store
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    SettingError,
    check_new_root,
    damaged_database,
    damaged_store,
    describe_db,
    emit_json,
    human_bytes,
    log,
    note,
    output,
    resolve_root,
    say,
    store_error,
    version_numbers,
    warn,
    write_stop_hint,
    write_stop_kind,
)
from ._progress import SyncTracker, progress_bars, progress_console
from ._upstream import TOKEN_VARIABLE, upstream_options

__all__ = [
    "failure_reason",
    "new_downloader",
    "print_failures",
    "report_json",
    "run_sync",
    "sync_command",
    "time_bounds",
]

_SCHEMES = ("http", "https", "file")


def _escape_undecoded(url: str) -> str:
    """*url* with each byte the locale could not decode (a surrogate escape of ``sys.argv``:
    a UTF-8 URL typed under ``LC_ALL=C`` without UTF-8 mode) percent-escaped, as a URL
    carries such bytes; the rest as it is."""
    return "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in url)


def resolve_source(source: str) -> tuple[str, tuple[str, str] | None]:
    """The manifest URL without credentials, and the basic-auth credentials it carried."""
    scheme = urlsplit(source).scheme.lower() if "://" in source else ""
    if scheme:
        source = _escape_undecoded(source)
    if not scheme:
        if Path(source).exists():
            return local_source(source), None
        raise CLIError(
            f"unsupported source {redact_url(source)!r}: give an http://, https:// or file:// "
            "URL of a PULP_MANIFEST, or an existing local path"
        )
    if scheme not in _SCHEMES:
        raise CLIError(
            f"unsupported source scheme {scheme!r} in {redact_url(source)!r}: "
            "use http://, https:// or file://"
        )
    url, auth = split_source(source)
    if auth is not None and scheme == "file":
        raise CLIError("credentials make no sense in a file:// URL")
    return url, auth


#: what ``--transport`` may say ("auto": the library's choice)
TransportChoice = Literal["auto", "trio", "httpx"]


def new_downloader(
    *, ca_cert: str | None = None, transport: TransportChoice = "auto", **options: Any
) -> Downloader:
    """The :class:`Downloader` of a command: *ca_cert* (``--ca-cert``) as ``verify=``,
    *transport* as given (``"auto"``: the library's choice), and the other *options*.

    The downloader checks the CA file as it is made (missing, unreadable, not a CA bundle:
    :class:`InvalidInput`, before any I/O); here that is a usage error, exit status 2, with
    the downloader's reason under the option's name.
    """
    verify: bool | str = True if ca_cert is None else os.path.expanduser(ca_cert)
    try:
        return Downloader(verify=verify, transport=transport, **options)
    except InvalidInput as exc:
        raise _option_error(str(exc)) from None


#: the downloader's names of its options, and the command line's settings
_OPTION_NAMES = {"verify": "ca-cert", "cert": "client-cert", "rate_limit": "rate-limit"}


def _option_error(message: str) -> CLIError:
    """A downloader's complaint about an option, under the command-line setting's name."""
    option, sep, rest = message.partition(": ")
    if sep and option in _OPTION_NAMES:
        return SettingError(_OPTION_NAMES[option], rest)
    if message.startswith("rate_limit "):
        return SettingError("rate-limit", message.removeprefix("rate_limit "))
    if message.startswith("invalid proxy"):
        return SettingError("proxy", message)
    # (the library names its keyword; the command line has a flag for it)
    return CLIError(message.replace("transport='httpx'", "--transport httpx"))


def time_bounds(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Downloader`` options of the time-bound flags given (``--max-time 0``: none)."""
    given = {
        "speed_limit": args.speed_limit,
        "speed_time": args.speed_time,
        "max_time": args.max_time,
        "max_retry_after": args.max_retry_after,
    }
    options = {name: value for name, value in given.items() if value is not None}
    if options.get("max_time") == 0:
        options["max_time"] = None
    return options


def report_json(report: CreateReport) -> dict[str, Any]:
    """The JSON object of the issue's contract."""
    return {
        "repository": report.repository,
        "version": report.version,
        "created": report.created,
        "units": {
            "total": report.units_total,
            "new": report.units_new,
            "existing": report.units_existing,
            "failed": report.units_failed,
            "replaced": report.units_replaced,
        },
        "artifacts": {
            "downloaded": report.artifacts_downloaded,
            "reused": report.artifacts_reused,
            "repaired": report.artifacts_repaired,
            "bytes": report.bytes_downloaded,
        },
        "replaced": [_replaced_json(r) for r in report.replaced],
        "failures": [
            {"relative_path": f.relative_path, "url": f.url, "error": failure_reason(f.error)}
            for f in report.failures
        ],
        "seconds": round(report.seconds, 3),
    }


def _replaced_json(item: ReplacedUnit) -> dict[str, Any]:
    """A replaced file unit: its path and the content it had; another unit: its key."""
    key = item.key.natural_key
    if item.key.type == "file" and item.relative_path is not None and len(key) == 2:
        return {
            "relative_path": item.relative_path,
            "sha256": key[1],
            "by": item.by.natural_key[-1],
        }
    return {"type": item.key.type, "key": list(key), "by": list(item.by.natural_key)}


def failure_reason(error: BaseException) -> str:
    """Why a unit failed, in one line (the cause a :class:`UnitFailed` carries)."""
    return describe_error(error.cause if isinstance(error, UnitFailed) else error)


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


#: sha256s looked up in the store at once when counting what is not stored yet
_LOOKUP = 1000


async def _not_stored(index: RepositoryIndex, store: Store | None) -> tuple[int, int]:
    """The bytes and the number of the manifest's distinct contents the store does not
    hold yet (*store* None: a store not made yet, which holds nothing)."""
    # Keys of the first 8 bytes of the sha256, as ints: a fraction of the memory of the hex
    # strings for a manifest of millions of files; a collision would only count one file
    # less (a free-space estimate, not a decision about content).
    counted: set[int] = set()
    total = files = 0
    batch: dict[str, int] = {}

    async def flush() -> tuple[int, int]:
        found = {} if store is None else await store.find_artifacts(sorted(batch))
        missing = count = 0
        for sha, size in batch.items():
            if sha not in found:
                missing += size
                count += 1
                counted.add(int(sha[:16], 16))
        batch.clear()
        return missing, count

    for unit in index.units():
        for art in unit.artifacts:
            if art.size is None:
                continue  # unknown: nothing to count (a PULP_MANIFEST gives every size)
            if art.sha256 is None:
                total += art.size
                files += 1
            elif int(art.sha256[:16], 16) not in counted and art.sha256 not in batch:
                batch[art.sha256] = art.size
                if len(batch) >= _LOOKUP:
                    more, count = await flush()
                    total, files = total + more, files + count
    if batch:
        more, count = await flush()
        total, files = total + more, files + count
    return total, files


def _free_room(path: Path) -> tuple[int, int | None]:
    """The free bytes and free inodes (None: no fixed number, as on btrfs) of the file
    system *path* is (or will be, made) on."""
    while not path.exists() and path.parent != path:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize, stats.f_favail if stats.f_files else None


async def check_free_space(index: RepositoryIndex, store: Store | None, root: Path) -> None:
    """Refuse (exit 2) a sync whose files not stored yet need more than the free space, or
    more files than the file system has free inodes (each stored file takes one).

    The manifest's total is compared first (no query when it fits); only when it does not
    are the contents the store already holds looked up and left out.  *store* None: a
    root not made yet (checked before anything is written), where nothing is stored.
    """
    free, inodes = await trio.to_thread.run_sync(_free_room, root)
    # (len(index): at most the files of a PULP_MANIFEST, one a unit)
    if (index.total_size or 0) <= free and (inodes is None or len(index) <= inodes):
        return
    needed, files = await _not_stored(index, store)
    if store is None:
        needed = index.total_size or 0
    log.info("%s not stored yet, %s free under %s", human_bytes(needed), human_bytes(free), root)
    if needed > free:
        raise CLIError(
            f"the manifest's files not stored yet need {human_bytes(needed)}, only "
            f"{human_bytes(free)} is free under {root} (--ignore-free-space to try anyway)",
            kind="no_space",
        )
    if inodes is not None and files > inodes:
        raise CLIError(
            f"the manifest's {files} files not stored yet need as many inodes, only "
            f"{inodes} are free under {root} (--ignore-free-space to try anyway)",
            kind="no_space",
        )


async def run_sync(
    *,
    source: str,
    repository: str,
    root: Path,
    db: str | None = None,
    policy: str = "immediate",
    connections: int = 16,
    per_host: int | None = None,
    retries: int = 3,
    slice_size: int = 500,
    mirror: bool = False,
    retain: int | None = None,
    ca_cert: str | None = None,
    transport: TransportChoice = "auto",
    console: Console | None = None,
    announce: bool = False,
    db_connect_timeout: float | None = None,
    allow_empty: bool = False,
    ignore_free_space: bool = False,
    bounds: Mapping[str, Any] | None = None,
    max_manifest_size: int | None = None,
) -> tuple[RepositoryIndex, CreateReport]:
    """One sync, with bars on *console* when given; the CLI's and the demo's.

    *bounds* are more ``Downloader`` options: the time bounds (see :func:`time_bounds`),
    headers, credentials, proxy... (see :func:`~._upstream.upstream_options`).
    """
    url, auth = resolve_source(source)
    if not repository:
        raise CLIError("--repository must not be empty")
    if auth is not None and (bounds or {}).get("token_provider") is not None:
        # (the library would say "auth or token_provider, not both": its words, not ours)
        raise CLIError(
            "the SOURCE URL carries a user and password, and a bearer token is given "
            f"(--bearer-token-file or ${TOKEN_VARIABLE}): give one of them"
        )
    async with new_downloader(
        ca_cert=ca_cert,
        transport=transport,
        connections=connections,
        per_host=per_host,
        retries=retries,
        auth=auth,
        **(bounds or {}),
    ) as downloader:
        log.info("reading the manifest at %s", url)
        # (parsed as it streams, into memory: nothing is written before it is valid)
        reader = PulpManifestReader(max_size=max_manifest_size or DEFAULT_MAX_MANIFEST_SIZE)
        index = await reader.read(url, downloader)
        log.info("%d files, %s, in the manifest", len(index), human_bytes(index.total_size or 0))
        if mirror and not len(index) and not allow_empty:
            # most likely a publisher's mistake or a truncated file: mirroring it would make
            # a version without a single file
            raise CLIError(
                f"the manifest at {redact_url(url)} lists no file: with --mirror the new "
                "version would be empty (--allow-empty to make it anyway)",
                kind="empty_manifest",
            )
        if announce:
            say(
                f"syncing {len(index)} files ({human_bytes(index.total_size or 0)}) "
                f"into repository {repository!r} at {root}",
                flush=True,
            )
        check_space = policy == "immediate" and not ignore_free_space
        if check_space and not await trio.Path(root).exists():
            # a new store, where nothing is stored: refused before anything is made
            await check_free_space(index, None, root)
        # The manifest is valid: from here on things are written.
        await trio.to_thread.run_sync(check_new_root, root, db)
        made_root = not await trio.Path(root).exists()
        try:
            await trio.Path(root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(
                f"cannot create --root {root}: {exc.strerror}", kind="os_error"
            ) from None
        log.info("opening the store %s", describe_db(db, root))
        try:
            try:
                opened = await open_store(db, root=root, connect_timeout=db_connect_timeout)
            except BaseException:
                if made_root:  # (a database that cannot be reached: no empty root left)
                    with contextlib.suppress(OSError):
                        os.rmdir(root)  # (only if nothing was made in it)
                raise
        except (StoreNotFound, NotAStore) as exc:
            raise store_error(exc, root, db) from None
        except StoreError as exc:
            if damaged_database(exc):
                raise damaged_store(describe_db(db, root), exc) from None
            raise CLIError(
                f"cannot open the store {describe_db(db, root)}: {exc}", kind="store"
            ) from None
        except InvalidInput as exc:
            raise CLIError(
                f"cannot open the store {describe_db(db, root)}: {exc}", kind="store"
            ) from None
        async with opened as store:
            storage = store.storage
            assert storage is not None
            removed = await storage.cleanup_temp()
            if removed:
                log.info("removed %d temp files left by stopped processes", len(removed))
            if check_space:
                await check_free_space(index, store, storage.root)
            tracker = SyncTracker(index)
            creator = ContentUnitCreator(
                store,
                downloader,
                policy=Policy(policy),
                slice_size=slice_size,
                on_event=tracker.on_event,
            )
            bars = progress_bars(creator, tracker, console) if console else _nothing()
            with storage.removing_temp_files():  # (however the run ends)
                async with bars:
                    report = await creator.run(index.units(), repository=repository, mirror=mirror)
            if retain is not None:
                # also after a sync that changed nothing: the option states a policy
                pruned = await store.prune(repository, retain)
                if pruned.deleted:
                    log.info(
                        "pruned versions %s of %r", version_numbers(pruned.deleted), repository
                    )
    return index, report


def storage_write_message(exc: StorageWriteError) -> str:
    """The one line for a sync stopped by a full (or read-only, or failing) disk, or by too
    many open files."""
    text = str(exc)
    if exc.report is not None:
        report = exc.report
        text += f": {report.artifacts_downloaded} files stored, {report.units_new} committed"
    if exc.database_error is not None:
        # (the database is on the full disk too)
        text += (
            f"; committing failed too ({exc.database_error}), rolled back: the store is consistent"
        )
    return f"{text}; {write_stop_hint(exc, 'the command', connections=True)}"


def print_failures(report: CreateReport) -> None:
    for failure in report.failures:
        where = failure.relative_path or "/".join(failure.unit.natural_key)
        warn(f"failed: {where}: {failure_reason(failure.error)}")


def print_summary(report: CreateReport, *, file: Any = None) -> None:
    out = file or sys.stdout
    name = repr(report.repository)
    if report.created:
        head = f"repository {name}: version {report.version} created"
    elif report.failures:
        latest = (
            "no version yet"
            if report.latest_version is None
            else f"latest: version {report.latest_version}"
        )
        head = (
            f"repository {name}: {report.units_failed} of {report.units_total} "
            f"files failed, no new version ({latest})"
        )
    else:
        head = f"repository {name}: up to date at version {report.version}"
    print(head, file=out)
    replaced = f", {report.units_replaced} replaced" if report.units_replaced else ""
    print(
        f"files: {report.units_total} total, {report.units_new} new, "
        f"{report.units_existing} already present, {report.units_failed} failed{replaced}",
        file=out,
    )
    repaired = f"; repaired: {report.artifacts_repaired}" if report.artifacts_repaired else ""
    print(
        f"downloaded: {report.artifacts_downloaded} files, "
        f"{human_bytes(report.bytes_downloaded)}; reused: {report.artifacts_reused}{repaired}; "
        f"time: {report.seconds:.2f} s",
        file=out,
        flush=True,
    )


def print_replaced(report: CreateReport) -> None:
    for item in report.replaced:
        what = item.relative_path or repr(list(item.key.natural_key))
        log.info("replaced: %s (%s)", what, " ".join(item.key.natural_key))
        note(f"replaced: {what}: new content took its place in the new version")


async def sync_command(args: argparse.Namespace) -> int:
    # bars on stderr (a terminal, or --progress); stdout carries the results only
    console = progress_console(args.progress, args.quiet)
    try:
        _index, report = await run_sync(
            source=args.source,
            repository=args.repository,
            root=resolve_root(args.root),
            db=args.db,
            policy=args.policy,
            connections=args.connections,
            per_host=args.per_host,
            retries=args.retries,
            slice_size=args.slice_size,
            mirror=args.mirror,
            retain=args.retain,
            ca_cert=args.ca_cert,
            transport=args.transport,
            console=console,
            # the first line of the human report (stdout), bars or not
            announce=not args.json,
            db_connect_timeout=args.db_connect_timeout,
            allow_empty=args.allow_empty,
            ignore_free_space=args.ignore_free_space,
            bounds={**time_bounds(args), **upstream_options(args)},
            max_manifest_size=args.max_manifest_size,
        )
    except ManifestError as exc:
        # a manifest that could not be fetched, or that was read and is malformed
        fetching = isinstance(exc.__context__, DownloadError)
        raise CLIError(str(exc), kind="download" if fetching else "manifest") from None
    except InvalidInput as exc:  # (raised as the downloader opens: in the flags' words)
        error = _option_error(str(exc))
        error.kind = "invalid_input"
        raise error from None
    except StorageWriteError as exc:
        raise CLIError(storage_write_message(exc), EXIT_FAILED, kind=write_stop_kind(exc)) from None
    except StoreError as exc:
        if damaged_database(exc):
            raise damaged_store(describe_db(args.db, resolve_root(args.root)), exc) from None
        raise CLIError(f"store: {exc}", EXIT_FAILED, kind="store") from None
    print_failures(report)
    if not args.json:
        print_replaced(report)
    if args.json:
        emit_json(report_json(report))
    elif not output.quiet:
        print_summary(report)
    return EXIT_OK if report.ok else EXIT_FAILED
