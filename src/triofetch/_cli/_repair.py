"""``triofetch repair``: hash the stored files; download the bad ones again."""

from __future__ import annotations

import argparse
import urllib.request
from typing import Any, Literal

from ..downloader import Downloader
from ..errors import InvalidInput
from ..repairing import RepairReport, repair
from ..store import RepositoryNotFound
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    emit_json,
    existing_store,
    log,
    resolve_root,
    warn,
)
from ._sync import _cleanup_on_exit, _verify_option, time_bounds

__all__ = ["repair_command", "report_json"]


def report_json(report: RepairReport) -> dict[str, Any]:
    """The JSON object ``repair --json`` prints."""
    return {
        "checked": report.checked,
        "repaired": [
            {"sha256": r.sha256, "path": str(r.path), "reason": r.reason} for r in report.repaired
        ],
        "failed": [{"sha256": f.sha256, "reason": f.reason} for f in report.failed],
        "ok": report.ok,
    }


def _transport() -> Literal["trio", "httpx"]:
    # The URLs are many and not known yet: the trio transport, unless the environment
    # routes plain or TLS traffic through a proxy (which only httpx follows).
    proxies = urllib.request.getproxies()
    return "httpx" if "http" in proxies or "https" in proxies else "trio"


async def repair_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    verify = _verify_option(args.ca_cert)
    async with existing_store(
        root, args.db, readonly=False, connect_timeout=args.db_connect_timeout
    ) as store:
        storage = store.storage
        assert storage is not None
        removed = await storage.cleanup_temp()
        if removed:
            log.info("removed %d temp files left by stopped processes", len(removed))
        async with Downloader(
            connections=args.connections,
            retries=args.retries,
            verify=verify,
            transport=_transport(),
            **time_bounds(args),
        ) as downloader:
            with _cleanup_on_exit(storage.temp_dir):
                try:
                    report = await repair(store, downloader, repository=args.repository)
                except RepositoryNotFound:
                    raise CLIError(f"no repository named {args.repository!r}") from None
                except InvalidInput as exc:
                    raise CLIError(str(exc)) from None
    for r in report.repaired:
        warn(f"repaired: {r.path}: {r.reason}")
    for f in report.failed:
        warn(f"not repaired: {f.sha256}: {f.reason}")
    if args.json:
        emit_json(report_json(report))
    else:
        print(
            f"checked {report.checked} stored files: {len(report.repaired)} repaired, "
            f"{len(report.failed)} could not be repaired",
            flush=True,
        )
    return EXIT_OK if report.ok else EXIT_FAILED
