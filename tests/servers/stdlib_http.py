"""Python's ``http.server`` (HTTP/1.0: one response per connection): ``python -m`` this.

Usage: ``python -m tests.servers.stdlib_http ROOT CERTFILE KEYFILE TOKEN``.  Two
``ThreadingHTTPServer`` instances, plain and TLS (each connection wrapped in its own thread,
so a failed handshake holds up no one else), listen on free ports of 127.0.0.1 and are printed
as one JSON line (``{"http": port, "https": port}``); then they serve until killed.

The handler is the standard library's ``SimpleHTTPRequestHandler`` with
``protocol_version = "HTTP/1.0"``; it serves ROOT's files under ``/files/`` with a
Content-Length, as it does.  The routes it adds:

- ``/ready``: the TOKEN;
- ``/close-delimited/SIZE``: the body of SIZE bytes with neither Content-Length nor
  Transfer-Encoding: it ends when the server closes the connection (HTTP/1.0 framing);
- ``/close-delimited-short/SIZE``: the same, but only half of the body;
- ``/redirect/CODE/PATH...``: status CODE with ``Location: /PATH...``;
- ``/cut/SIZE``: ``Content-Length: SIZE``, half of the body, then the connection closes;
- ``/connections/TAG``: distinct client connections of the requests with ``?tag=TAG``.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
import sys
import threading
from collections import defaultdict
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers.data import body

CLIENTS: defaultdict[str, set[tuple[str, int]]] = defaultdict(set)
CLIENTS_LOCK = threading.Lock()
TOKEN = b""


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        for tag in parse_qs(url.query).get("tag", []):
            with CLIENTS_LOCK:
                CLIENTS[tag].add(self.client_address[:2])
        parts = url.path.strip("/").split("/")
        try:
            if parts[0] == "files":
                super().do_GET()
            elif parts == ["ready"]:
                self.reply(200, TOKEN)
            elif len(parts) == 2 and parts[0] in ("close-delimited", "close-delimited-short"):
                size = int(parts[1])
                data = body(size)
                if parts[0] == "close-delimited-short":
                    data = data[: size // 2]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(data)
            elif len(parts) >= 3 and parts[0] == "redirect":
                self.send_response(int(parts[1]))
                self.send_header("Location", "/" + "/".join(parts[2:]))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif len(parts) == 2 and parts[0] == "cut":
                size = int(parts[1])
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self.wfile.write(body(size)[: size // 2])
            elif len(parts) == 2 and parts[0] == "connections":
                with CLIENTS_LOCK:
                    count = len(CLIENTS.get(parts[1], ()))
                self.reply(200, b"%d" % count)
            else:
                self.send_error(404)
        except ValueError:
            self.send_error(400)

    def reply(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class TLSServer(ThreadingHTTPServer):
    """Wraps each accepted connection in TLS in the connection's own thread."""

    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(10)
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # (a client that refused the certificate, for one)
        try:
            super().finish_request(tls, client_address)
            tls.unwrap()  # close_notify: the end of a close-delimited body
        except (OSError, ssl.SSLError):
            pass
        finally:
            tls.close()


class PlainServer(ThreadingHTTPServer):
    daemon_threads = True


def main(root: str, certfile: str, keyfile: str) -> None:
    handler = functools.partial(Handler, directory=root)
    plain = PlainServer(("127.0.0.1", 0), handler)
    tls = TLSServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    tls.context = context
    for server in (plain, tls):
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=tls.serve_forever, daemon=True).start()
    ports = {"http": plain.server_address[1], "https": tls.server_address[1]}
    print(json.dumps(ports), flush=True)
    plain.serve_forever()


if __name__ == "__main__":
    root, certfile, keyfile, token = sys.argv[1:5]
    TOKEN = token.encode()
    main(root, certfile, keyfile)
