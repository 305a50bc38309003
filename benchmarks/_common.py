"""Shared helpers of the benchmarks.

- test data: directories of random files with a manifest (name, size, sha256), generated once
  under ``benchmarks/_work/data`` and reused by later runs;
- a local nginx on 127.0.0.1 (free port, config and logs in a temp dir) serving that data,
  and a throw-away tinyproxy on 127.0.0.1 in front of it (:class:`TinyProxy`);
- the clients' environment: proxy variables removed, or set to that proxy
  (:func:`client_env`);
- running a client as a subprocess and measuring it alone: wall seconds, CPU seconds (user +
  system, from ``os.wait4`` of that very child: all its threads and waited-for children) and
  peak RSS (``VmHWM`` of the child's own memory, polled; see :class:`PeakRSS`);
- table printing and a description of the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
DATA = WORK / "data"

KiB = 1024
MiB = 1024 * KiB
MB = 1_000_000  # throughput is reported in MB/s (10**6 bytes per second)


def which(name: str) -> str | None:
    """A program on PATH or in the sbin directories (nginx lives in /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(d) / name
        if candidate.exists():
            return str(candidate)
    return None


# --------------------------------------------------------------------------- test data


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: int
    sha256: str


@dataclass
class Dataset:
    """A directory of files under DATA, served by nginx at ``/<dirname>/<file>``."""

    root: Path
    files: list[FileSpec]

    @property
    def dirname(self) -> str:
        return self.root.name

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def dataset(label: str, count: int, size: int) -> Dataset:
    """*count* files of *size* random bytes; generated once, then reused if intact."""
    root = DATA / f"{label}-{count}x{size}"
    manifest = root / "manifest.json"
    if manifest.exists():
        files = [FileSpec(**f) for f in json.loads(manifest.read_text())["files"]]
        if len(files) == count and all(
            (root / f.name).is_file() and (root / f.name).stat().st_size == f.size for f in files
        ):
            return Dataset(root, files)
    print(f"generating {count} x {size} bytes of random data in {root} ...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    width = len(str(count - 1))
    files = []
    chunk = 4 * MiB
    for i in range(count):
        name = f"f{i:0{width}d}.bin"
        h = hashlib.sha256()
        with open(root / name, "wb") as fh:
            left = size
            while left:
                block = os.urandom(min(chunk, left))
                h.update(block)
                fh.write(block)
                left -= len(block)
        files.append(FileSpec(name, size, h.hexdigest()))
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"files": [asdict(f) for f in files]}))
    tmp.replace(manifest)
    return Dataset(root, files)


#: where fresh_dir() puts the outputs of earlier runs, removed by empty_trash() at the end
TRASH = WORK / "trash"
#: a directory with more entries than this is moved to TRASH rather than deleted
_MANY_FILES = 100
#: how long ext4 keeps freshly deleted inodes from being reused (RECENTCY_MIN, seconds)
EXT4_RECENTCY_S = 60


def fresh_dir(path: Path) -> Path:
    """Empty *path* (creating it), and flush dirty pages so one run's writes don't slow the next.

    A directory of many files is moved aside (to :data:`TRASH`) instead of deleted: for a
    minute after thousands of files are deleted, ext4 skips their inodes when it allocates
    new ones, scanning past every one of them (``recently_deleted()``), and creating a file
    costs 10-20x more CPU (measured here: 5000 creates of 16 KiB in 0.27 s, against 2.7-4.7 s
    right after deleting the previous 5000).  That would tax whichever client runs next.
    """
    if path.exists():
        with os.scandir(path) as entries:
            many = len(list(itertools.islice(entries, _MANY_FILES + 1))) > _MANY_FILES
        if many:
            TRASH.mkdir(parents=True, exist_ok=True)
            path.rename(TRASH / f"{path.name}-{time.monotonic_ns()}")
        else:
            shutil.rmtree(path)
    path.mkdir(parents=True)
    os.sync()
    return path


def empty_trash(wait_if_deleted: bool = False) -> None:
    """Delete what :func:`fresh_dir` moved aside.

    With *wait_if_deleted* (before measuring anything), wait until ext4 reuses the deleted
    inodes again if there was anything to delete.
    """
    if not TRASH.exists():
        return
    shutil.rmtree(TRASH)
    os.sync()
    if wait_if_deleted:
        print(f"(removed the outputs of an interrupted run: waiting {EXT4_RECENTCY_S} s)")
        time.sleep(EXT4_RECENTCY_S)


# --------------------------------------------------------------------------- nginx

NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=20000 inactive=60s;
    default_type application/octet-stream;
    types {{ }}
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def process_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds (user + system, all threads) used so far by the processes *pids*."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _connectable(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Daemon:
    """A server program run in the foreground on 127.0.0.1 at a free port, with its
    configuration and logs in a temp dir; started on entering (a few ports tried), stopped
    and its temp dir removed on leaving.  Subclasses say what to run."""

    #: the program, its install hint, and the log to quote when it does not start
    program = ""
    package = ""
    log_name = ""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def command(self, binary: str, tmp: Path) -> list[str]:
        """Write the configuration for :attr:`port` into *tmp*; the command line to run."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        binary = which(self.program)
        if binary is None:
            raise RuntimeError(f"{self.program} is not installed (apt-get install {self.package})")
        self._tmp = tempfile.TemporaryDirectory(prefix=f"triofetch-bench-{self.program}-")
        tmp = Path(self._tmp.name)
        for attempt in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                self.command(binary, tmp),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            self._stop()
            if attempt == 4:
                log = tmp / self.log_name
                raise RuntimeError(
                    f"{self.program} did not start: "
                    + (log.read_text() if log.exists() else "no log")
                )
        raise AssertionError("unreachable")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _connectable(self.port):
                return True
            time.sleep(0.05)
        return False

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self._stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class Nginx(_Daemon):
    """nginx serving *root* on 127.0.0.1 at a free port; a context manager."""

    program = "nginx"
    package = "nginx-light"
    log_name = "error.log"

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def command(self, binary: str, tmp: Path) -> list[str]:
        conf = tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                user="user root;" if os.geteuid() == 0 else "",
                tmp=tmp,
                port=self.port,
                root=self.root,
            )
        )
        return [binary, "-p", str(tmp), "-c", str(conf)]

    def pids(self) -> list[int]:
        """The master and its worker processes."""
        if self.proc is None:
            return []
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(p) for p in children.read_text().split()]
        return pids

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by nginx's processes."""
        return process_cpu_seconds(self.pids())


# --------------------------------------------------------------------------- tinyproxy

TINYPROXY_CONF = """\
Port {port}
Listen 127.0.0.1
Allow 127.0.0.1
MaxClients 100
Timeout 60
LogLevel Critical
LogFile "{tmp}/tinyproxy.log"
PidFile "{tmp}/tinyproxy.pid"
StatHost "{stathost}"
"""

_REQUESTS = re.compile(rb"Number of requests:\s*(\d+)")


class TinyProxy(_Daemon):
    """A throw-away tinyproxy on 127.0.0.1 at a free port (foreground, config, log and pid file
    in a temp dir; stopped at the end); a context manager.

    :meth:`requests` reads tinyproxy's own request counter from its statistics page (fetched
    through the proxy from :attr:`STATHOST`), so a run can prove that every file went through
    the proxy without logging each request.
    """

    program = "tinyproxy"
    package = "tinyproxy"
    log_name = "tinyproxy.log"
    STATHOST = "tinyproxy-stats.invalid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, binary: str, tmp: Path) -> list[str]:
        conf = tmp / "tinyproxy.conf"
        conf.write_text(TINYPROXY_CONF.format(port=self.port, tmp=tmp, stathost=self.STATHOST))
        return [binary, "-d", "-c", str(conf)]

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, all threads) used so far by tinyproxy."""
        return process_cpu_seconds([self.proc.pid] if self.proc is not None else [])

    def requests(self) -> int:
        """tinyproxy's count of requests so far, this one (for the statistics page) included."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": self.url}))
        with opener.open(f"http://{self.STATHOST}/", timeout=10) as response:
            found = _REQUESTS.search(response.read())
        if found is None:
            raise RuntimeError("tinyproxy's statistics page has no request count")
        return int(found.group(1))


#: the variables that name proxies or exceptions to them, for every client we run
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def client_env(proxy: str | None = None) -> dict[str, str]:
    """The environment of a client: this one without any proxy variable (in either case), so
    every client connects directly; with *proxy*, ``HTTP_PROXY`` and ``http_proxy`` set to it
    (curl reads only the lowercase one for http) and no ``NO_PROXY`` to exempt 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    if proxy is not None:
        env["HTTP_PROXY"] = env["http_proxy"] = proxy
    return env


# --------------------------------------------------------------------------- measuring


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    """One measured client run (possibly several processes run one after the other)."""

    wall: float
    cpu: float
    maxrss_kib: int
    returncode: int
    stdout: str = ""
    stderr: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def then(self, other: Measured) -> Measured:
        """This run followed by *other*: times add up, the peak RSS is the larger one."""
        return Measured(
            wall=self.wall + other.wall,
            cpu=self.cpu + other.cpu,
            maxrss_kib=max(self.maxrss_kib, other.maxrss_kib),
            returncode=self.returncode or other.returncode,
            stdout=self.stdout + other.stdout,
            stderr=self.stderr + other.stderr,
            report={**self.report, **other.report},
        )


def vm_hwm_kib(pid: int) -> int:
    """Peak RSS (``VmHWM``) of process *pid* so far, in KiB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            with contextlib.suppress(OSError):
                kids = [int(k) for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
                found += kids
                todo += kids
    return found


class PeakRSS:
    """Polls ``VmHWM`` of a process and its descendants (largest single process) in a thread.

    ``ru_maxrss`` from wait4/getrusage cannot be used for this: at exec the kernel records the
    peak RSS of the *forking* process's memory as the child's starting maximum, so every child of
    this (large) harness would report at least the harness's own peak. ``VmHWM`` belongs to the
    memory of the exec'd program alone; being a high-water mark, polling only misses growth in
    the last interval before exit (Python clients also report their own final VmHWM).
    """

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while True:
            for p in [self.pid, *descendants(self.pid)]:
                self.peak_kib = max(self.peak_kib, vm_hwm_kib(p))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


def run_measured(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> Measured:
    """Run *cmd* to completion and measure that child alone.

    Seconds: wall clock from spawn to exit. CPU seconds: ``ru_utime + ru_stime`` from
    ``os.wait4`` on the child (all its threads, and the descendants it waited for). Peak RSS:
    see :class:`PeakRSS`. *env*: the child's environment (default: this one). If the command
    prints a JSON object as its last stdout line, it is kept as ``report`` (the Python clients
    put their own timings and VmHWM there).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        peak = PeakRSS(proc.pid)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            # Wait for the exit without reaping (so the pid cannot be reused under the poller),
            # stop the poller, then reap and take the rusage. A zombie keeps no memory map:
            # the poller's last reading before the exit is the peak.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        finally:
            timer.cancel()
            peak_kib = peak.stop()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    report: dict[str, Any] = {}
    lines = stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        with contextlib.suppress(ValueError):
            report = json.loads(lines[-1])
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_kib=max(peak_kib, int(report.get("vm_hwm_kib", 0))),
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        report=report,
    )


# --------------------------------------------------------------------------- output


def command_version(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name, flag in (
        ("curl", "--version"),
        ("aria2c", "--version"),
        ("nginx", "-v"),
        ("tinyproxy", "-v"),
    ):
        binary = which(name)
        versions[name] = command_version([binary, flag]) if binary else "missing"
    for module in ("triofetch", "trio", "httpx", "aiohttp"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            versions[module] = "missing"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def machine_header(info: dict[str, Any]) -> str:
    v = info["versions"]
    short = {
        "curl": v["curl"].split(" (")[0].replace("curl ", ""),
        "aria2c": v["aria2c"].replace("aria2 version ", ""),
        "nginx": v["nginx"].split("/")[-1],
        "tinyproxy": v.get("tinyproxy", "missing").replace("tinyproxy ", ""),
    }
    return (
        f"machine: nproc={info['nproc']} ({info['cpu']}), python {info['python']}, "
        f"curl {short['curl']}, aria2c {short['aria2c']}, nginx {short['nginx']}, "
        f"tinyproxy {short['tinyproxy']}, "
        f"triofetch {v['triofetch']}, trio {v['trio']}, httpx {v['httpx']}, "
        f"aiohttp {v['aiohttp']}"
    )


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    print(f"\n{title}")

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [str(first).ljust(widths[0])]
            + [str(c).rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    sys.stdout.flush()


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
