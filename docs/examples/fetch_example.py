"""Download one file with the synchronous ``triofetch.fetch``: no event loop needed.

Serves a generated file on 127.0.0.1 (in a thread), fetches it with its expected sha256 and
size, then shows the typed error a wrong digest gives.  Run it with
``python docs/examples/fetch_example.py``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import tempfile
import threading
from pathlib import Path

import triofetch


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        public, downloads = Path(tmp, "public"), Path(tmp, "downloads")
        public.mkdir()
        downloads.mkdir()
        data = b"hello, triofetch\n" * 1000
        (public / "hello.txt").write_bytes(data)
        handler = functools.partial(QuietHandler, directory=str(public))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = "http://{}:{}/hello.txt".format(*server.server_address[:2])
        try:
            result = triofetch.fetch(
                url,
                expected_digests={"sha256": hashlib.sha256(data).hexdigest()},
                expected_size=len(data),
                digests=triofetch.PULP_ALGORITHMS,  # computed while the bytes stream by
                temp_dir=downloads,
                retries=2,  # any Downloader option
            )
            print("downloaded", result.size, "bytes from", result.url, "to", result.path.name)
            for algorithm, digest in sorted(result.digests.items()):
                print(f"  {algorithm}: {digest[:16]}...")
            # The temp file is ours: move it where it belongs, or remove it.
            result.path.replace(Path(tmp, "hello.txt"))

            try:
                triofetch.fetch(
                    url, expected_digests={"sha256": "0" * 64}, temp_dir=downloads, retries=1
                )
            except triofetch.DigestMismatch as exc:
                print(
                    f"refused: {exc.algorithm} expected {exc.expected[:8]}..., "
                    f"got {exc.actual[:8]}... after {len(exc.attempts)} attempts"
                )
            assert list(downloads.iterdir()) == []  # a failed download leaves no temp file
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
