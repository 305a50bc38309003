"""What the examples share: files served over HTTP on 127.0.0.1, in a background thread.

Not an example itself: each runnable example under ``docs/examples/`` uses it to serve the
files it downloads, so that it needs no network.  Everything it makes lives in a temporary
directory removed when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def write_files(directory: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write *files* (``{relative_path: bytes}``) under *directory*."""
    for relative_path, data in files.items():
        path = Path(directory, relative_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that went away mid-body (a download cancelled on purpose) is no error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextlib.contextmanager
def serve_directory(directory: str | os.PathLike[str]) -> Iterator[str]:
    """Serve *directory* on a free port of 127.0.0.1; yields the base URL (ending in ``/``)."""
    handler = functools.partial(_QuietHandler, directory=os.fspath(directory))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert isinstance(host, str)
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def serve_files(files: Mapping[str, bytes]) -> Iterator[str]:
    """Write *files* into a temporary directory and serve it; yields the base URL."""
    with tempfile.TemporaryDirectory(prefix="served-") as public:
        write_files(public, files)
        with serve_directory(public) as base_url:
            yield base_url


def sha256(data: bytes) -> str:
    """The sha256 hex digest of *data*."""
    return hashlib.sha256(data).hexdigest()
