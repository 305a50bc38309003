"""``triofetch demo``: the whole thing, on one machine, with no network.

A sample file repository is generated, served by a small threaded web server on
127.0.0.1, synced into a temporary store (with the progress bars on a terminal), synced
again (nothing to download), exported and verified; each step is printed.

Owns the sample repository and its server; the steps themselves are the other commands'
code (``run_sync``, ``export_files``), which it must not copy.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import filecmp
import hashlib
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trio

from ..manifest import MANIFEST_NAME
from ..store import open_store
from ._common import EXIT_FAILED, EXIT_OK, CLIError, emit_json, human_bytes, say
from ._export import export_files
from ._inspect import file_rows
from ._progress import progress_console
from ._sync import print_failures, run_sync

__all__ = ["demo_command", "generate_repository", "serve_directory"]

_DIRS = ["docs", "images/2024", "packages/noarch", "packages/x86_64", "données"]
_SPECIAL = ["docs/read me.txt", "données/été 2024 — résumé.txt", "docs/notes #1 (draft).txt"]


def _nameable(path: str) -> bool:
    """Whether *path*'s file name is its UTF-8 here, what the web server of the demo looks
    for: always under a UTF-8 locale; under another (``LC_ALL=C`` without UTF-8 mode) only
    an ASCII name, the others are left out of the sample (they could not be written)."""
    return path.isascii() or codecs.lookup(sys.getfilesystemencoding()).name == "utf-8"


def generate_repository(where: Path, count: int, seed: int = 2024) -> list[str]:
    """Write *count* files and their PULP_MANIFEST under *where*; return the paths."""
    rng = random.Random(seed)
    special = [p for p in _SPECIAL if _nameable(p)]
    dirs = [d for d in _DIRS if _nameable(d)]
    paths = special[: min(len(special), count)]
    i = 0
    while len(paths) < count:
        directory = dirs[i % len(dirs)]
        paths.append(f"{directory}/file-{i:04}.bin")
        i += 1
    lines = []
    for path in paths:
        data = rng.randbytes(rng.randint(256, 64 * 1024))
        target = where / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        lines.append(f"{path},{hashlib.sha256(data).hexdigest()},{len(data)}\n")
    (where / MANIFEST_NAME).write_text("".join(lines), encoding="utf-8")
    return paths


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server: Any = self.server
        with server.lock:
            server.requests += 1
        if self.delay and not self.path.endswith(MANIFEST_NAME):
            time.sleep(self.delay)
        super().do_GET()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path, delay: float) -> None:
        handler = partial(_Handler, directory=str(directory))
        _Handler.delay = delay
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.requests = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client going away is no error
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve_directory(directory: Path, delay: float = 0.0) -> Iterator[_Server]:
    """Serve *directory* on 127.0.0.1 (an ephemeral port) from a background thread."""
    server = _Server(directory, delay)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def demo_command(args: argparse.Namespace) -> int:
    console = progress_console(args.progress, args.quiet)

    def step(*values: object) -> None:
        if not args.json:  # --json: the object at the end only
            say(*values)

    tty = console is not None
    holder: tempfile.TemporaryDirectory[str] | None = None
    if args.keep:
        base = Path(tempfile.mkdtemp(prefix="triofetch-demo-"))
    else:
        # removed below, in every case (Ctrl-C included); left to the holder's finalizer it
        # was removed all the same, with a ResourceWarning ("Implicitly cleaning up")
        holder = tempfile.TemporaryDirectory(prefix="triofetch-demo-", ignore_cleanup_errors=True)
        base = Path(holder.name)
    try:
        site, root, dest = base / "site", base / "store", base / "export"
        step("triofetch demo: a sample file repository, served on 127.0.0.1 and mirrored into")
        step("a temporary store, every file complete or absent.\n")
        paths = await trio.to_thread.run_sync(generate_repository, site, args.files)
        size = sum((site / p).stat().st_size for p in paths)
        dirs = len({p.rsplit("/", 1)[0] for p in paths if "/" in p})
        examples = ", ".join(repr(p) for p in paths[:2])
        step(f"1. generated {len(paths)} files ({human_bytes(size)}) in {dirs} directories,")
        step(f"   e.g. {examples}, and a {MANIFEST_NAME} listing them")
        with serve_directory(site, delay=0.03 if tty else 0.0) as server:
            url = f"http://127.0.0.1:{server.server_address[1]}/{MANIFEST_NAME}"
            step(f"2. serving them at {url} (a local web server: no network needed)")
            step(f"3. triofetch sync {url} --root {root} --repository demo")
            _index, report = await run_sync(
                source=url, repository="demo", root=root, console=console
            )
            print_failures(report)
            step(
                f"   → version {report.version} created: {report.units_new} new files, "
                f"{report.artifacts_downloaded} downloaded ({human_bytes(report.bytes_downloaded)})"
                f" in {report.seconds:.2f} s, {server.requests} requests"
            )
            if not report.ok:
                raise CLIError(
                    f"the demo's sync failed: {report.units_failed} of {report.units_total} files",
                    EXIT_FAILED,
                    kind="download",
                )
            before = server.requests
            _index, again = await run_sync(source=url, repository="demo", root=root)
            step(
                f"4. the same sync again → {again.units_existing} files already present, "
                f"{again.artifacts_downloaded} downloaded, no new version "
                f"({server.requests - before} request: the manifest)"
            )
        async with open_store(root=root) as store:
            storage = store.storage
            assert storage is not None
            rows = file_rows(await store.list_units("demo", None))
            exported = await trio.to_thread.run_sync(export_files, storage, rows, dest)
            same = await trio.to_thread.run_sync(_same_tree, site, dest, paths)
            step(f"5. triofetch export --root {root} --repository demo {dest}")
            step(
                f"   → {exported.written} files ({exported.linked} hard links, "
                f"{exported.copied} copies) and a {MANIFEST_NAME}; identical to the source: "
                f"{'yes' if same else 'NO'}"
            )
            checked = await storage.verify()
            verdict = "all intact" if checked.ok else f"{len(checked.corrupted)} corrupted"
            step(f"6. triofetch verify --root {root} → {checked.checked} stored files: {verdict}")
        if args.json:
            emit_json(
                {
                    "files": len(paths),
                    "bytes": size,
                    "version": report.version,
                    "downloaded": report.artifacts_downloaded,
                    "downloaded_again": again.artifacts_downloaded,
                    "exported": exported.written,
                    "identical": same,
                    "intact": checked.ok,
                    "kept": str(base) if args.keep else None,
                }
            )
        if args.keep:
            step(f"\nkept: {base} (store in store/, export in export/)")
        else:
            step(
                "\ndone; the temporary directory is removed (keep it with 'triofetch demo --keep')."
            )
        return EXIT_OK if same and checked.ok and not exported.errors else EXIT_FAILED
    finally:
        if holder is not None:
            # shielded: once interrupted (a cancelled scope) an await would end at once
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(holder.cleanup)  # read-only files: fine


def _same_tree(site: Path, dest: Path, paths: list[str]) -> bool:
    def lines(where: Path) -> list[str]:
        return sorted((where / MANIFEST_NAME).read_text(encoding="utf-8").splitlines())

    same_files = all(filecmp.cmp(site / p, dest / p, shallow=False) for p in paths)
    return same_files and lines(site) == lines(dest)
