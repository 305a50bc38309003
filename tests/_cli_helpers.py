"""Helpers for the end-to-end tests of the ``triofetch`` command (tests/test_cli.py)."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import ipaddress
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from triofetch.testing import Fault, FaultServer

__all__ = [
    "Result",
    "TLSServer",
    "manifest_of",
    "publish",
    "run_cli",
    "run_cli_in_process",
    "run_cli_on_a_terminal",
    "self_signed_cert",
    "start_cli",
]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOFETCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("COLUMNS", None)
    # no config file of the machine's: a test that wants one says so
    env["XDG_CONFIG_HOME"] = "/nonexistent/triofetch-tests-config"
    env.update(extra or {})
    return env


class Result:
    """A finished ``triofetch`` run: ``code``, ``out``, ``err`` and ``json()``."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}>"


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Result:
    """Run ``python -m triofetch ARGS`` (the installed package, this interpreter)."""
    proc = subprocess.run(
        [sys.executable, "-m", "triofetch", *map(str, args)],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )
    return Result(proc)


def run_cli_in_process(
    *args: str | Path, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> Result:
    """What :func:`run_cli` gives, from ``triofetch.__main__.main(ARGS)`` in this process: the
    same environment (:func:`cli_env`) and working directory while it runs, stdout and
    stderr captured.  For what needs no process of its own (help, usage errors): a real
    process's start-up, signals and streams are for :func:`run_cli`."""
    from triofetch.__main__ import main

    argv = [*map(str, args)]
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    # (what a run sets up for its process: signal handlers, the root logger's handlers and
    # levels; put back afterwards, so that one test's run leaves nothing to the next)
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    saved_logging = (list(root.handlers), root.level)
    saved_levels = {
        name: logging.getLogger(name).level for name in ("triofetch.http", "httpx", "httpcore")
    }
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(cli_env(env))
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)
        root.handlers[:] = saved_logging[0]
        root.setLevel(saved_logging[1])
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
    return Result(subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue()))


class TerminalResult(Result):
    """A run whose stderr was a pseudo-terminal: ``err`` is what the terminal received."""


def run_cli_on_a_terminal(
    *args: str | Path,
    stdout: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> TerminalResult:
    """Run ``python -m triofetch ARGS`` with stderr a pseudo-terminal (80 columns) and stdout
    the file *stdout* (its text is ``out``); stdin is the null device."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    terminal = {"TERM": "xterm-256color", "COLUMNS": "100", **(env or {})}
    try:
        with open(stdout, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "triofetch", *map(str, args)],
                env=cli_env(terminal),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=slave,
            )
        os.close(slave)
        slave = -1
        received = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    done = subprocess.CompletedProcess(
        proc.args, code, stdout.read_text(encoding="utf-8"), received.decode("utf-8", "replace")
    )
    return TerminalResult(done)


#: runs ``python -m triofetch`` with Python's own SIGINT handler, as in a terminal: a test
#: run started in the background (``cmd &``, nohup, some CI runners) has SIGINT ignored,
#: which its children inherit, and then Python installs no handler and Ctrl-C does nothing
_AS_IN_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('triofetch', run_name='__main__', alter_sys=True)"
)


def start_cli(
    *args: str | Path, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m triofetch ARGS`` (SIGINT handled as in a terminal); not waited for."""
    return subprocess.Popen(
        [sys.executable, "-c", _AS_IN_A_TERMINAL, *map(str, args)],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def manifest_of(files: Mapping[str, bytes], newline: str = "\n") -> bytes:
    lines = [f"{p},{hashlib.sha256(d).hexdigest()},{len(d)}" for p, d in files.items()]
    return (newline.join(lines) + newline).encode("utf-8")


def publish(
    server: FaultServer,
    files: Mapping[str, bytes],
    *,
    prefix: str = "/repo",
    faults: Mapping[str, list[Fault]] | None = None,
    manifest: bytes | None = None,
) -> str:
    """Serve *files* and their PULP_MANIFEST under *prefix*; return the manifest's URL."""
    for path, data in files.items():
        server.add_file(f"{prefix}/{path}", data, faults=(faults or {}).get(path, []))
    server.add_file(f"{prefix}/PULP_MANIFEST", manifest or manifest_of(files))
    return server.url(f"{prefix}/PULP_MANIFEST")


def file_requests(server: FaultServer, prefix: str = "/repo") -> list[str]:
    """Paths (decoded) of the requests for files, the manifest excluded."""
    return [
        unquote(r.path)
        for r in server.requests
        if r.path.startswith(prefix + "/") and not r.path.endswith("/PULP_MANIFEST")
    ]


# -- TLS ------------------------------------------------------------------------------------


def self_signed_cert(where: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert+key PEM, cert PEM to trust)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "triofetch cli test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (where / "server.pem").write_bytes(cert_pem + key_pem)
    (where / "ca.pem").write_bytes(cert_pem)
    return where / "server.pem", where / "ca.pem"


class TLSServer:
    """A small HTTPS server on 127.0.0.1 serving a dict of paths (decoded) to bytes; with
    *client_ca*, a client must present a certificate that CA issued (else no handshake)."""

    def __init__(
        self, files: Mapping[str, bytes], server_pem: Path, client_ca: Path | None = None
    ) -> None:
        self.files = dict(files)
        self.requests: list[str] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server_pem)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                owner.requests.append(path)
                data = owner.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                sock, addr = self.socket.accept()
                return context.wrap_socket(sock, server_side=True), addr

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # failed handshakes are what some tests expect

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}{path}"

    @contextlib.contextmanager
    def running(self) -> Iterator[TLSServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
