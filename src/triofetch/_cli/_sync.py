"""``triofetch sync``: read a manifest, validate all of it, then create its units."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import trio
from rich.console import Console

from .._creator import ContentUnitCreator, CreateReport
from .._downloader import Downloader
from .._errors import (
    InvalidInput,
    ManifestError,
    NotAStore,
    StoreError,
    StoreNotFound,
    UnitFailed,
    redact_url,
)
from .._manifest import (
    DEFAULT_MAX_MANIFEST_SIZE,
    PulpManifestReader,
    RepositoryIndex,
    describe_error,
    local_source,
    split_source,
)
from .._store import ReplacedUnit, open_store
from .._tempfiles import temp_file_pid
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    check_new_root,
    describe_db,
    emit_json,
    human_bytes,
    log,
    resolve_root,
    store_error,
    warn,
)
from ._progress import SyncTracker, progress_bars

__all__ = ["report_json", "run_sync", "sync_command"]

_SCHEMES = ("http", "https", "file")


def resolve_source(source: str) -> tuple[str, tuple[str, str] | None]:
    """The manifest URL without credentials, and the basic-auth credentials it carried."""
    scheme = urlsplit(source).scheme.lower() if "://" in source else ""
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


def _verify_option(ca_cert: str | None) -> bool | str:
    if ca_cert is None:
        return True
    path = Path(ca_cert).expanduser()
    if not path.exists():
        raise CLIError(f"--ca-cert {ca_cert}: no such file or directory")
    return str(path.absolute())


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
            {"relative_path": f.relative_path, "url": f.url, "error": _reason(f.error)}
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


def _reason(error: BaseException) -> str:
    return describe_error(error.cause if isinstance(error, UnitFailed) else error)


def _remove_own_temp_files(temp_dir: Path) -> None:
    """After an interrupted run: no temp file of this process may stay (belt and braces)."""
    me = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.scandir(temp_dir):
            if temp_file_pid(entry.name) == me:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def _cleanup_on_exit(temp_dir: Path) -> Iterator[None]:
    try:
        yield
    finally:
        _remove_own_temp_files(temp_dir)


def pick_transport(choice: str, url: str) -> Literal["trio", "httpx"]:
    """'auto': the trio transport, unless the environment routes *url* through a proxy."""
    if choice in ("trio", "httpx"):
        return choice  # type: ignore[return-value]
    scheme = url.partition(":")[0].lower()
    host = urlsplit(url).hostname or ""
    proxies = urllib.request.getproxies()
    if scheme in proxies and not urllib.request.proxy_bypass(host):
        return "httpx"
    return "trio"


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


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
    transport: str = "auto",
    console: Console | None = None,
    announce: bool = False,
    max_manifest_size: int | None = None,
) -> tuple[RepositoryIndex, CreateReport]:
    """One sync, with bars on *console* when given; the CLI's and the demo's."""
    url, auth = resolve_source(source)
    verify = _verify_option(ca_cert)
    if not repository:
        raise CLIError("--repository must not be empty")
    async with Downloader(
        connections=connections,
        per_host=per_host,
        retries=retries,
        verify=verify,
        auth=auth,
        transport=pick_transport(transport, url),
    ) as downloader:
        log.info("reading the manifest at %s", url)
        # (parsed as it streams, into memory: nothing is written before it is valid)
        reader = PulpManifestReader(max_size=max_manifest_size or DEFAULT_MAX_MANIFEST_SIZE)
        index = await reader.read(url, downloader)
        log.info("%d files, %s, in the manifest", len(index), human_bytes(index.total_size or 0))
        if announce:
            print(
                f"syncing {len(index)} files ({human_bytes(index.total_size or 0)}) "
                f"into repository {repository!r} at {root}",
                flush=True,
            )
        # The manifest is valid: from here on things are written.
        await trio.to_thread.run_sync(check_new_root, root, db)
        try:
            await trio.Path(root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"cannot create --root {root}: {exc.strerror}") from None
        log.info("opening the store %s", describe_db(db, root))
        try:
            opened = await open_store(db, root=root)
        except (StoreNotFound, NotAStore) as exc:
            raise store_error(exc, root, db) from None
        except (StoreError, InvalidInput) as exc:
            raise CLIError(f"cannot open the store {describe_db(db, root)}: {exc}") from None
        async with opened as store:
            storage = store.storage
            assert storage is not None
            removed = await storage.cleanup_temp()
            if removed:
                log.info("removed %d temp files left by stopped processes", len(removed))
            tracker = SyncTracker(index)
            creator = ContentUnitCreator(
                store,
                downloader,
                policy="on_demand" if policy == "on_demand" else "immediate",
                slice_size=slice_size,
                on_event=tracker.on_event,
            )
            bars = progress_bars(creator, tracker, console) if console else _nothing()
            with _cleanup_on_exit(storage.temp_dir):
                async with bars:
                    report = await creator.run(index.units(), repository=repository, mirror=mirror)
            if retain is not None:
                # also after a sync that changed nothing: the option states a policy
                pruned = await store.prune(repository, retain)
                if pruned.deleted:
                    log.info("pruned versions %s of %r", list(pruned.deleted), repository)
    return index, report


def print_failures(report: CreateReport) -> None:
    for failure in report.failures:
        where = failure.relative_path or "/".join(failure.unit.natural_key)
        warn(f"failed: {where}: {_reason(failure.error)}")


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
        warn(f"replaced: {what}: new content took its place in the new version")


async def sync_command(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty() and not args.json
    console = Console(file=sys.stdout) if tty else None
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
            announce=not tty and not args.json,
            max_manifest_size=args.max_manifest_size,
        )
    except ManifestError as exc:
        raise CLIError(str(exc)) from None
    except InvalidInput as exc:
        raise CLIError(str(exc)) from None
    except StoreError as exc:
        raise CLIError(f"store: {exc}", EXIT_FAILED) from None
    print_failures(report)
    if not args.json:
        print_replaced(report)
    if args.json:
        emit_json(report_json(report))
    else:
        print_summary(report)
    return EXIT_OK if report.ok else EXIT_FAILED
