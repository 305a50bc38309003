"""Create content units from a Trio app: a Downloader, a store, a ContentUnitCreator.

Runs anywhere, no network needed: it generates a few files, serves them with a small web
server on 127.0.0.1 (in a thread), and creates one unit per "package" of files in a store
under a temporary directory.  Run it with ``python docs/examples/creator_example.py``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import tempfile
import threading
from collections import Counter
from pathlib import Path

import trio

import triofetch


def make_files(directory: Path) -> dict[str, bytes]:
    """Generate the files to serve: ``pkg-N/data.bin`` and ``pkg-N/README``."""
    files: dict[str, bytes] = {}
    for n in range(5):
        files[f"pkg-{n}/data.bin"] = hashlib.sha256(str(n).encode()).digest() * (100 + n)
        files[f"pkg-{n}/README"] = b"the same README in every package\n"
    for relative_path, data in files.items():
        path = directory / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve *directory* on a free loopback port, in a background thread."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    assert isinstance(host, str)
    return server, f"http://{host}:{port}/"


def describe(base_url: str, files: dict[str, bytes]) -> list[triofetch.DeclarativeUnit]:
    """One unit of type ``package`` per directory, with its files as artifacts."""
    packages: dict[str, list[triofetch.DeclarativeArtifact]] = {}
    for relative_path, data in files.items():
        package, name = relative_path.split("/")
        packages.setdefault(package, []).append(
            triofetch.DeclarativeArtifact(
                base_url + relative_path,  # or several mirror URLs
                name,  # the artifact's path inside its unit
                digests={"sha256": hashlib.sha256(data).hexdigest()},
                size=len(data),
            )
        )
    return [
        triofetch.DeclarativeUnit("package", (package,), {"name": package}, artifacts)
        for package, artifacts in packages.items()
    ]


async def create(root: Path, units: list[triofetch.DeclarativeUnit]) -> triofetch.CreateReport:
    events: Counter[str] = Counter()
    async with (
        triofetch.open_store(root=root) as store,  # SQLite + artifact storage under root
        triofetch.Downloader(connections=8, retries=2) as downloader,
    ):
        creator = triofetch.ContentUnitCreator(
            store,
            downloader,
            slice_size=100,
            on_event=lambda event: events.update([event.kind]),
        )
        report = await creator.run(units, repository="example")
        print("events:", dict(sorted(events.items())))
        if report.version is not None:
            listed = await store.list_units("example", report.version)
            print("version", report.version, "holds", sorted(u.key.natural_key for u in listed))
        return report


def print_report(report: triofetch.CreateReport) -> None:
    print(
        f"repository {report.repository!r}: version {report.version} "
        f"({'created' if report.created else 'unchanged'}, latest: {report.latest_version}); "
        f"units: {report.units_total} total, "
        f"{report.units_new} new, {report.units_existing} existing, "
        f"{report.units_failed} failed; artifacts: {report.artifacts_downloaded} downloaded, "
        f"{report.artifacts_reused} reused, {report.bytes_downloaded} bytes"
    )
    for failure in report.failures:
        print("  failed:", failure.key, failure.error)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        public, root = Path(tmp, "public"), Path(tmp, "store")
        files = make_files(public)
        server, base_url = serve(public)
        try:
            units = describe(base_url, files)
            first = trio.run(create, root, units)
            print_report(first)
            # A second run finds every unit present: nothing is downloaded, and no new
            # version is made (the report names version 1, which holds them all).
            second = trio.run(create, root, units)
            print_report(second)
        finally:
            server.shutdown()
            server.server_close()
    assert first.ok and first.units_new == 5 and first.version == 1
    assert second.ok and second.units_existing == 5 and second.artifacts_downloaded == 0
    assert second.version == 1 and not second.created  # no new version: nothing changed


if __name__ == "__main__":
    main()
