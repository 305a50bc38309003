"""``triofetch serve`` beside nginx serving the exported tree (issue 18, item 5).

    python -m benchmarks serve [--quick] [--reps=N] [--serve-workloads=small,large,ondemand]

The same files are stored by ``triofetch sync`` (from a local ``PULP_MANIFEST``) and
exported by ``triofetch export`` (hard links); nginx (the download benchmark's configuration:
one worker, ``sendfile on``, keepalive) serves the exported tree, ``triofetch serve`` serves
the store, both on 127.0.0.1.  One client, curl with ``--parallel --parallel-max 16``, fetches
every file of a workload from one server, then from the other, in interleaved rounds (5 by
default; ``--quick``: 2).  Bodies go to ``/dev/null``: what is measured is the server and
the loopback, not the client's disk.  Before the measured rounds, every file is fetched
once from each server into a directory and its sha256 checked (not timed).

Workloads: **small** 2,000 files of 16 KiB (``--quick``: 300), **large** 4 files of 256 MiB
(``--quick``: 2 x 16 MiB).  The table shows the median round: seconds, files/s, MB/s (10^6
bytes), the server's CPU seconds, and serve/nginx ratios of throughput; every round's
seconds are listed.  Issue 18's targets: at least 0.25x nginx on the small files, 0.5x on the
large ones.  The small workload has a third row, **hypercorn, trivial app**
(``_asgi_ceiling.py``): the same hypercorn configuration serving the exported files from
memory with a trivial ASGI app, the most any app on that server can reach; its ratio to
nginx is the ceiling for ``triofetch serve``.  Results also go to
``benchmarks/_work/results-serve.json``.

**ondemand**: the first fetch of on-demand files through ``triofetch serve``, beside a direct
download of the same files.  Both datasets (small and large) are served by a second nginx
as the *remote*; every round, a fresh store records them with ``sync --policy on_demand``
(not timed), ``triofetch serve`` is started on it (not timed), and curl (16 in parallel)
fetches every file through it into a directory: each file is fetched from the remote,
streamed, validated and stored by the app while curl writes it (timed).  The direct
download is the same curl run against the remote itself, into a directory.  Rounds
alternate the two.  Issue 18's target: on-demand within 1.5x the direct time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import (
    MB,
    WORK,
    Dataset,
    KiB,
    MiB,
    Nginx,
    client_env,
    dataset,
    fresh_dir,
    machine_header,
    machine_info,
    print_table,
    process_cpu_seconds,
    run_measured,
    which,
    write_json,
)

WORKLOADS = ("small", "large", "ondemand")
SERVE_DIR = WORK / "serve"
#: the row of hypercorn with a trivial app (``_asgi_ceiling.py``), small files only
CEILING = "hypercorn, trivial app"
STARTUP = re.compile(r"at (http://127\.0\.0\.1:\d+)/ \(Ctrl-C to stop\)")


def _triofetch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triofetch", *map(str, args)],
        capture_output=True,
        text=True,
        env=client_env(),
        timeout=1800,
    )


def prepare(data: Dataset, store: Path, export_root: Path) -> None:
    """Sync *data* into *store* as repository ``data.dirname`` (a no-op when it is there
    already) and export it to ``export_root/<dirname>``."""
    manifest = _manifest(data)
    name = data.dirname
    listed = _triofetch("list", "--root", store, "--repository", name, "--json")
    if listed.returncode != 0 or len(json.loads(listed.stdout)) != len(data.files):
        print(f"storing {name} ({len(data.files)} files) ...", flush=True)
        done = _triofetch("sync", manifest, "--root", store, "--repository", name, "--mirror")
        if done.returncode != 0:
            raise RuntimeError(f"sync failed: {done.stderr}")
    dest = fresh_dir(export_root / name)
    done = _triofetch("export", "--root", store, "--repository", name, dest)
    if done.returncode != 0:
        raise RuntimeError(f"export failed: {done.stderr}")


class Serve:
    """``triofetch serve`` on 127.0.0.1, port 0, in the foreground; a context manager.

    ``Serve(root, ceiling=True)``: instead, ``_asgi_ceiling.py`` serving the files of the
    tree *root* from memory through the same hypercorn configuration (the ceiling of the
    server under the app, for the small files).
    """

    # (the store's root is writable: on-demand files are stored once fetched)

    def __init__(self, store: Path, *, ceiling: bool = False) -> None:
        self.store = store
        self.ceiling = ceiling
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    def __enter__(self) -> Serve:
        command = (
            [sys.executable, str(Path(__file__).with_name("_asgi_ceiling.py")), str(self.store)]
            if self.ceiling
            else [
                sys.executable,
                "-m",
                "triofetch",
                "serve",
                "--root",
                str(self.store),
                "--listen",
                "127.0.0.1:0",
            ]
        )
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=client_env(),
        )
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        seen = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                seen += chunk
                found = STARTUP.search(seen.decode(errors="replace"))
                if found:
                    self.base = found.group(1)
                    return self
        self.__exit__()
        raise RuntimeError(f"triofetch serve did not start: {seen.decode(errors='replace')}")

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def cpu_seconds(self) -> float:
        return process_cpu_seconds([self.proc.pid]) if self.proc is not None else 0.0

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _curl_config(urls: list[str], outputs: list[str], where: Path) -> Path:
    config = where / "curl.config"
    with open(config, "w") as fh:
        for url, out in zip(urls, outputs, strict=True):
            fh.write(f'url = "{url}"\noutput = "{out}"\n')
    return config


def curl_command(config: Path, connections: int) -> list[str]:
    curl = which("curl")
    assert curl is not None
    return [
        curl,
        "--parallel",
        "--parallel-max",
        str(connections),
        "--fail",
        "-sS",
        "--config",
        str(config),
    ]


def verify(server_url: Any, data: Dataset, tmp: Path, connections: int) -> None:
    """Fetch every file into *tmp* and check its sha256 (not timed)."""
    out = fresh_dir(tmp / "verify")
    urls = [server_url(f"{data.dirname}/{f.name}") for f in data.files]
    config = _curl_config(urls, [str(out / f.name) for f in data.files], tmp)
    done = subprocess.run(curl_command(config, connections), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"curl failed ({done.returncode}): {done.stderr[:500]}")
    for f in data.files:
        h = hashlib.sha256()
        with open(out / f.name, "rb") as fh:
            while block := fh.read(4 * MiB):
                h.update(block)
        if h.hexdigest() != f.sha256:
            raise RuntimeError(f"{f.name}: wrong bytes from {server_url('')}")
    fresh_dir(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serve")
    parser.add_argument("--quick", action="store_true", help="small sizes, two rounds")
    parser.add_argument("--reps", type=int, default=0, help="rounds (5; quick: 2)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve-workloads", default=",".join(WORKLOADS))
    args, others = parser.parse_known_args(argv)
    if others:
        print(f"serve: ignoring options {' '.join(others)}")
    args.reps = args.reps or (2 if args.quick else 5)
    args.workloads = [w for w in args.serve_workloads.split(",") if w]
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    info = machine_info()
    print(machine_header(info), flush=True)
    if which("nginx") is None or which("curl") is None:
        print("nginx and curl are needed (apt-get install nginx-light curl); skipped")
        return 1
    try:
        import hypercorn  # noqa: F401
    except ImportError:
        print("hypercorn is not installed (pip install 'triofetch[serve]'); skipped")
        return 1
    sets: dict[str, Dataset] = {}
    if "small" in args.workloads or "ondemand" in args.workloads:
        sets["small"] = dataset("serve-small", 300 if args.quick else 2000, 16 * KiB)
    if "large" in args.workloads or "ondemand" in args.workloads:
        sets["large"] = dataset("serve-large", *((2, 16 * MiB) if args.quick else (4, 256 * MiB)))
    results: dict[str, Any] = {"machine": info, "reps": args.reps, "workloads": {}}
    if "ondemand" in args.workloads:
        on_demand(sets, args, results)
    sets = {k: v for k, v in sets.items() if k in args.workloads}
    if not sets:
        write_json(WORK / "results-serve.json", results)
        return 0
    store = SERVE_DIR / "store"
    export_root = SERVE_DIR / "export"
    for data in sets.values():
        prepare(data, store, export_root)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="triofetch-bench-serve-") as tmp_name,
        Nginx(export_root) as nginx,
        Serve(store) as serve,
        Serve(export_root, ceiling=True) as ceiling,
    ):
        tmp = Path(tmp_name)
        every = {
            "nginx": (nginx.url, nginx.cpu_seconds),
            "serve": (serve.url, serve.cpu_seconds),
            CEILING: (ceiling.url, ceiling.cpu_seconds),
        }
        for label, data in sets.items():
            # (the ceiling holds the small files only: in memory)
            servers = {k: v for k, v in every.items() if k != CEILING or label == "small"}
            for url, _ in servers.values():
                verify(url, data, tmp, args.connections)
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
            for round_number in range(args.reps):
                for name, (url, cpu) in servers.items():
                    urls = [url(f"{data.dirname}/{f.name}") for f in data.files]
                    config = _curl_config(urls, ["/dev/null"] * len(urls), tmp)
                    before = cpu()
                    measured = run_measured(curl_command(config, args.connections))
                    if not measured.ok:
                        raise RuntimeError(f"{name}: curl failed: {measured.stderr[:500]}")
                    runs[name].append((measured.wall, cpu() - before))
                    print(
                        f"  {label} round {round_number + 1}: {name} {measured.wall:.3f} s",
                        flush=True,
                    )
            medians = {n: statistics.median(w for w, _ in r) for n, r in runs.items()}
            for name, r in runs.items():
                seconds = medians[name]
                ratio = medians["nginx"] / seconds
                rows.append(
                    [
                        f"{label} ({len(data.files)} x {_size(data.files[0].size)})",
                        name,
                        f"{seconds:.3f}",
                        f"{len(data.files) / seconds:,.0f}",
                        f"{data.total_bytes / seconds / MB:,.0f}",
                        f"{statistics.median(c for _, c in r):.2f}",
                        f"{ratio:.2f}x",
                        " ".join(f"{w:.2f}" for w, _ in r),
                    ]
                )
            results["workloads"][label] = {
                "files": len(data.files),
                "bytes": data.total_bytes,
                "runs": runs,
                "median_seconds": medians,
                "serve_x_nginx": medians["nginx"] / medians["serve"],
                **(
                    {"ceiling_x_nginx": medians["nginx"] / medians[CEILING]}
                    if CEILING in medians
                    else {}
                ),
            }
    print_table(
        f"serve vs nginx: curl --parallel --parallel-max {args.connections}, median of "
        f"{args.reps} interleaved rounds",
        [
            "workload",
            "server",
            "seconds",
            "files/s",
            "MB/s",
            "server CPU s",
            "x nginx",
            "rounds (s)",
        ],
        rows,
    )
    write_json(WORK / "results-serve.json", results)
    shutil.rmtree(export_root / "verify", ignore_errors=True)
    return 0


def on_demand(sets: dict[str, Dataset], args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The ondemand workload (see the module docstring): a table of its own."""
    rows = []
    for data in sets.values():
        _manifest(data)
    with (
        tempfile.TemporaryDirectory(prefix="triofetch-bench-ondemand-") as tmp_name,
        Nginx(sets[next(iter(sets))].root.parent) as remote,
    ):
        tmp = Path(tmp_name)
        for label, data in sets.items():
            runs: dict[str, list[float]] = {"direct": [], "ondemand": []}
            for round_number in range(args.reps):
                # direct: curl from the remote into a directory
                runs["direct"].append(_curl_into(remote.url, data, tmp, args.connections))
                # on demand: a fresh store recording the files, served; curl through it
                store = fresh_dir(SERVE_DIR / "ondemand-store")
                done = _triofetch(
                    "sync",
                    remote.url(f"{data.dirname}/PULP_MANIFEST"),
                    "--root",
                    store,
                    "--repository",
                    data.dirname,
                    "--policy",
                    "on_demand",
                )
                if done.returncode != 0:
                    raise RuntimeError(f"sync --policy on_demand failed: {done.stderr}")
                with Serve(store) as serve:
                    runs["ondemand"].append(_curl_into(serve.url, data, tmp, args.connections))
                _check_stored(store, data)
                print(
                    f"  ondemand {label} round {round_number + 1}: direct "
                    f"{runs['direct'][-1]:.3f} s, through serve {runs['ondemand'][-1]:.3f} s",
                    flush=True,
                )
            medians = {name: statistics.median(r) for name, r in runs.items()}
            for name, r in runs.items():
                rows.append(
                    [
                        f"{label} ({len(data.files)} x {_size(data.files[0].size)})",
                        name,
                        f"{medians[name]:.3f}",
                        f"{len(data.files) / medians[name]:,.0f}",
                        f"{data.total_bytes / medians[name] / MB:,.0f}",
                        f"{medians[name] / medians['direct']:.2f}x",
                        " ".join(f"{w:.2f}" for w in r),
                    ]
                )
            results["workloads"][f"ondemand-{label}"] = {
                "files": len(data.files),
                "bytes": data.total_bytes,
                "runs": runs,
                "median_seconds": medians,
                "ondemand_over_direct": medians["ondemand"] / medians["direct"],
            }
    print_table(
        f"on-demand first fetch through serve vs direct download: curl --parallel-max "
        f"{args.connections} into a directory, median of {args.reps} alternating rounds",
        ["workload", "how", "seconds", "files/s", "MB/s", "time x direct", "rounds (s)"],
        rows,
    )


def _manifest(data: Dataset) -> Path:
    """The ``PULP_MANIFEST`` of *data* (written the first time)."""
    manifest = data.root / "PULP_MANIFEST"
    if not manifest.exists():
        manifest.write_text("".join(f"{f.name},{f.sha256},{f.size}\n" for f in data.files))
    return manifest


def _curl_into(url: Any, data: Dataset, tmp: Path, connections: int) -> float:
    """The seconds curl takes to fetch every file of *data* from *url* into a fresh
    directory (``url(path)`` gives a file's URL)."""
    out = fresh_dir(SERVE_DIR / "ondemand-out")
    names = [f.name for f in data.files]
    urls = [url(f"{data.dirname}/{n}") for n in names]
    config = _curl_config(urls, [str(out / n) for n in names], tmp)
    measured = run_measured(curl_command(config, connections))
    if not measured.ok:
        raise RuntimeError(f"curl from {url('')} failed: {measured.stderr[:500]}")
    return measured.wall


def _check_stored(store: Path, data: Dataset) -> None:
    """Every file of *data* is stored after its first fetch through serve."""
    done = _triofetch("verify", "--root", store, "--json")
    if done.returncode != 0:
        raise RuntimeError(f"after the on-demand round, verify failed: {done.stdout[-500:]}")
    files = [p for p in (store / "artifacts").rglob("*") if p.is_file()]
    if len(files) != len(data.files):
        raise RuntimeError(f"{len(files)} files stored, {len(data.files)} expected")


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB"


if __name__ == "__main__":
    sys.exit(main())
