"""``triofetch repair``: hash the stored files; download the bad ones again.

Owns the repair command's options, report and lines; the repairing itself is
:func:`triofetch.repairing.repair`.  It must not decide library policy (the transport, the
CA file, the temp files): the downloader and the storage do, through the public API.
"""

from __future__ import annotations

import argparse
from typing import Any

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
    note,
    resolve_root,
    say,
    warn,
)
from ._sync import new_downloader, time_bounds
from ._upstream import upstream_options

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


async def repair_command(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    # made (and its --ca-cert checked) before the store is opened; the transport: the
    # library's choice ("auto": the trio transport unless a proxy is configured)
    downloader = new_downloader(
        ca_cert=args.ca_cert,
        connections=args.connections,
        retries=args.retries,
        **time_bounds(args),
        **upstream_options(args),
    )
    async with existing_store(
        root, args.db, readonly=False, connect_timeout=args.db_connect_timeout
    ) as store:
        storage = store.storage
        assert storage is not None
        removed = await storage.cleanup_temp()
        if removed:
            log.info("removed %d temp files left by stopped processes", len(removed))
        async with downloader:
            with storage.removing_temp_files():  # (however the repair ends)
                try:
                    report = await repair(store, downloader, repository=args.repository)
                except RepositoryNotFound:
                    raise CLIError(
                        f"no repository named {args.repository!r}", kind="repository_not_found"
                    ) from None
                except InvalidInput as exc:
                    raise CLIError(str(exc), kind="invalid_input") from None
    for r in report.repaired:
        note(f"repaired: {r.path}: {r.reason}")
    for f in report.failed:
        warn(f"not repaired: {f.sha256}: {f.reason}")
    if args.json:
        emit_json(report_json(report))
    else:
        say(
            f"checked {report.checked} stored files: {len(report.repaired)} repaired, "
            f"{len(report.failed)} could not be repaired",
            flush=True,
        )
    return EXIT_OK if report.ok else EXIT_FAILED
