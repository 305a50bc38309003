"""Download benchmark: triofetch's Downloader beside curl, aria2c and asyncio+aiohttp.

    python -m benchmarks download [--quick] [--reps=N] [--clients=curl,aria2c,aiohttp,triofetch]
                                  [--workloads=small,proxy,large,digests] [--connections=16]
                                  [--small-count=5000]

A local nginx (one worker, sendfile, keepalive, no access log) on 127.0.0.1 serves
(a) ``small``: 5000 files of 16 KiB (``--small-count``) and (b) ``large``: 4 files of 256 MiB
(``--quick``: 300 files and 2 x 16 MiB). Each client runs as its own subprocess at 16
connections, in the same run, and verifies the sha256 of every file against the known list:

- ``curl+sha256sum``: ``curl --parallel --parallel-max 16 --config LIST`` (url/output pairs),
  then ``sha256sum --check``; the two processes' seconds and CPU seconds add up;
- ``aria2c``: ``aria2c -j 16 -x 1 -i LIST`` with a ``checksum=sha-256=HEX`` option per URI and
  ``--file-allocation=none``;
- ``aiohttp``: benchmarks/aiohttp_client.py (Pulp's stack: blocking writes and hashing on the
  asyncio loop);
- ``triofetch``: benchmarks/triofetch_client.py (``triofetch.Downloader(transport="trio")``);
  ``triofetch-httpx`` the same with ``transport="httpx"``, ``triofetch-default`` with no
  transport argument (whatever ``Downloader()`` gives a library user; the transport it got is
  reported), ``triofetch-many`` the same through ``Downloader.fetch_many`` (the whole list of
  requests, ``in_flight`` = the concurrency);
- ``floor-loop``, ``floor-batched``: benchmarks/floor_client.py, a minimal HTTP/1.1 client on
  bare Trio (no library; files hashed and written on the loop, or by one worker thread
  draining a queue as triofetch does): not a peer but a measuring stick, what Trio itself
  costs on the small files (only in the ``small`` and ``proxy`` workloads).

``proxy``: the small files through a throw-away tinyproxy on 127.0.0.1 in front of the same
nginx. The clients find it in their environment (``HTTP_PROXY`` and ``http_proxy``; no
``NO_PROXY``): aiohttp with ``trust_env=True``, triofetch with its default ``trust_env=True``,
curl by itself, aria2c with ``--all-proxy``. tinyproxy's own request counter proves that every
file went through it (a run that bypassed the proxy fails). In the other workloads the clients
run with every proxy variable removed from their environment.

``digests``: workload (b) with Pulp's four digests (sha224, sha256, sha384, sha512), one
download at a time and two at a time, for triofetch and for the aiohttp client, reported in
MB/s against the single-core speed of hashlib for those four digests, measured in-process
before every round and after the last (the median is used; every measurement is printed).

Every client run is repeated ``--reps`` times (3; 1 with ``--quick``), interleaved with the other
clients (round 1: every client, round 2: every client, ...); the tables show the median of the
rounds and every round's seconds, and ratios of the medians. Output directories are emptied
between runs (and dirty pages flushed with sync); nothing else is dropped, so nginx serves from
the page cache. Results are also written to benchmarks/_work/results-download.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import (
    DATA,
    HERE,
    MB,
    WORK,
    Dataset,
    KiB,
    Measured,
    MiB,
    Nginx,
    TinyProxy,
    busy_cpu_seconds,
    client_env,
    dataset,
    fresh_dir,
    machine_header,
    machine_info,
    print_table,
    run_measured,
    which,
    write_json,
)

CLIENTS = (
    "curl",
    "aria2c",
    "aiohttp",
    "triofetch",
    "triofetch-default",
    "triofetch-many",
    "triofetch-httpx",
    "floor-loop",
    "floor-batched",
)
LABELS = {
    "curl": "curl+sha256sum",
    "aria2c": "aria2c",
    "aiohttp": "aiohttp",
    "triofetch": "triofetch (trio transport)",
    # completed with the transport the Downloader reported, see summarize()
    "triofetch-default": "triofetch (default transport",
    "triofetch-many": "triofetch fetch_many (default transport",
    "triofetch-httpx": "triofetch (httpx transport)",
    "floor-loop": "floor: bare Trio, files on the loop",
    "floor-batched": "floor: bare Trio, files in a batch thread",
}
WORKLOADS = ("small", "proxy", "large", "digests")
SMALL_COUNT, SMALL_COUNT_QUICK = 5000, 300
PULP_DIGESTS = ("sha224", "sha256", "sha384", "sha512")
UNAVAILABLE = 3  # exit status of triofetch_client.py when triofetch.Downloader is missing
RESULTS = WORK / "results-download.json"
OUT = WORK / "out"
JOBS = WORK / "jobs"


@dataclass
class Run:
    """How to run one client on one data set, and what happened each time."""

    key: str
    label: str
    execute: Callable[[], Measured]
    runs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    error: str = ""

    def good(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["ok"]]


# --------------------------------------------------------------------------- clients


def write_job(name: str, ds: Dataset, srv: Nginx, out: Path, **extra: Any) -> Path:
    JOBS.mkdir(parents=True, exist_ok=True)
    files = [[srv.url(f"{ds.dirname}/{f.name}"), f.name, f.size, f.sha256] for f in ds.files]
    path = JOBS / f"{name}.json"
    path.write_text(json.dumps({"out": str(out), "files": files, **extra}))
    return path


def curl_run(
    ds: Dataset, srv: Nginx, connections: int, env: dict[str, str]
) -> Callable[[], Measured]:
    out = OUT / "curl"
    JOBS.mkdir(parents=True, exist_ok=True)
    config = JOBS / f"curl-{ds.dirname}.conf"
    with config.open("w") as fh:
        for f in ds.files:
            fh.write(f'url = "{srv.url(f"{ds.dirname}/{f.name}")}"\noutput = "{out / f.name}"\n')
    sums = JOBS / f"sha256-{ds.dirname}.txt"
    sums.write_text("".join(f"{f.sha256}  {f.name}\n" for f in ds.files))
    curl = [which("curl") or "curl", "--parallel", "--parallel-max", str(connections)]
    curl += ["--silent", "--show-error", "--fail", "--config", str(config)]

    def execute() -> Measured:
        fresh_dir(out)
        fetched = run_measured(curl, env=env)
        if not fetched.ok:
            return fetched
        checked = run_measured(
            ["sha256sum", "--check", "--quiet", "--strict", str(sums)], cwd=out, env=env
        )
        return fetched.then(checked)

    return execute


def aria2c_run(
    ds: Dataset, srv: Nginx, connections: int, env: dict[str, str], proxy: str | None = None
) -> Callable[[], Measured]:
    out = OUT / "aria2c"
    JOBS.mkdir(parents=True, exist_ok=True)
    listing = JOBS / f"aria2c-{ds.dirname}.txt"
    with listing.open("w") as fh:
        for f in ds.files:
            fh.write(f"{srv.url(f'{ds.dirname}/{f.name}')}\n")
            fh.write(f"  out={f.name}\n  checksum=sha-256={f.sha256}\n")
    cmd = [which("aria2c") or "aria2c", "--no-conf", "-i", str(listing), "-d", str(out)]
    cmd += ["-j", str(connections), "-x", "1", "-s", "1", "--file-allocation=none"]
    cmd += ["--console-log-level=error", "--summary-interval=0", "--download-result=hide"]
    cmd += ["--show-console-readout=false", "--auto-file-renaming=false"]
    cmd += ["--allow-overwrite=true", "--deferred-input=true", "--max-tries=1"]
    # No periodic control-file (.aria2) saves: they fsync, and no other client syncs to disk.
    cmd += ["--auto-save-interval=0"]
    if proxy is not None:
        cmd.append(f"--all-proxy={proxy}")

    def execute() -> Measured:
        fresh_dir(out)
        return run_measured(cmd, env=env)

    return execute


def python_run(
    client: str,
    ds: Dataset,
    srv: Nginx,
    *,
    connections: int,
    concurrency: int = 0,
    digests: tuple[str, ...] = (),
    tag: str = "",
    env: dict[str, str] | None = None,
    trust_env: bool = False,
) -> Callable[[], Measured]:
    out = OUT / f"{client}{tag}"
    tmp = OUT / f"{client}{tag}-tmp"
    job = write_job(f"{client}{tag}-{ds.dirname}", ds, srv, out, tmp=str(tmp))
    script, _, transport = client.partition("-")
    cmd = [sys.executable, str(HERE / f"{script}_client.py"), str(job)]
    if transport:
        cmd.append(f"--transport={transport}")
    cmd += [f"--connections={connections}"]
    if concurrency:
        cmd.append(f"--concurrency={concurrency}")
    if digests:
        cmd.append(f"--digests={','.join(digests)}")
    if trust_env and script == "aiohttp":
        cmd.append("--trust-env")  # triofetch's Downloader trusts the environment by default
    env = client_env() if env is None else env

    def execute() -> Measured:
        fresh_dir(out)
        fresh_dir(tmp)
        return run_measured(cmd, env=env)

    return execute


def check_output(out: Path, ds: Dataset) -> str:
    """The harness's own check (not timed) that every file is there with the right size."""
    for f in ds.files:
        p = out / f.name
        if not p.is_file() or p.stat().st_size != f.size:
            return f"missing or wrong size: {p}"
    return ""


# --------------------------------------------------------------------------- running


def measure_hash_speed(total: int, algorithms: tuple[str, ...], reps: int = 3) -> float:
    """MB/s of one core hashing *total* bytes with all *algorithms* (best of *reps*)."""
    block = bytes(range(256)) * (MiB // 256)
    best = float("inf")
    for _ in range(reps):
        hashers = [hashlib.new(a) for a in algorithms]
        started = time.perf_counter()
        for _ in range(total // MiB):
            for h in hashers:
                h.update(block)
        for h in hashers:
            h.hexdigest()
        best = min(best, time.perf_counter() - started)
    return total / best / MB


def execute_once(
    run: Run, ds: Dataset, srv: Nginx, out: Path, proxy: TinyProxy | None = None
) -> None:
    # tinyproxy's request counter is read outside the measured window
    requests = proxy.requests() if proxy is not None else 0
    proxy_cpu = proxy.cpu_seconds() if proxy is not None else 0.0
    server_cpu = srv.cpu_seconds()
    busy = busy_cpu_seconds()
    m = run.execute()
    busy = busy_cpu_seconds() - busy
    server_cpu = srv.cpu_seconds() - server_cpu
    if proxy is not None:
        proxy_cpu = proxy.cpu_seconds() - proxy_cpu
        # the counter counts its own statistics requests too: the second one is not the client's
        requests = proxy.requests() - requests - 1
    record: dict[str, Any] = {
        "ok": m.ok,
        "wall": m.wall,
        "cpu_total": m.cpu,
        "peak_rss_mib": m.maxrss_kib / 1024,
        "server_cpu": server_cpu,
        # CPU seconds spent by everything else on the machine during the run (other work on
        # a shared machine, plus this harness): a large value means a noisy measurement.
        "other_cpu": max(0.0, busy - m.cpu - server_cpu - proxy_cpu),
        "returncode": m.returncode,
    }
    if proxy is not None:
        record["proxy_cpu"] = proxy_cpu
        record["proxy_requests"] = requests
    if "transport" in m.report:
        record["transport"] = m.report["transport"]
    # Python clients report the time spent on the work itself, after interpreter start-up
    # and imports (a constant that says nothing about throughput); the rest are measured
    # from outside, start-up included (a few milliseconds).
    record["seconds"] = m.report.get("work_seconds", m.wall)
    record["cpu"] = m.report.get("work_cpu", m.cpu)
    if "startup_seconds" in m.report:
        record["startup_seconds"] = m.report["startup_seconds"]
    if m.ok:
        problem = check_output(out, ds)
        if not problem and proxy is not None and requests < len(ds.files):
            problem = (
                f"the proxy saw {requests} requests for {len(ds.files)} files: "
                "the client did not go through it"
            )
        if problem:
            record["ok"] = False
            m.stderr += "\n" + problem
    if not record["ok"]:
        if m.returncode == UNAVAILABLE and run.key.startswith("triofetch"):
            run.status = "unavailable"
            run.error = "triofetch.Downloader does not exist yet"
        else:
            run.status = "failed"
            run.error = (m.stderr.strip() or m.stdout.strip())[-2000:]
        print(f"   {run.key}: {run.status}: {run.error.splitlines()[-1] if run.error else ''}")
    else:
        via = f" [{record['transport']}]" if "transport" in record else ""
        through = (
            f"proxy cpu {proxy_cpu:.2f} s ({requests} requests), " if proxy is not None else ""
        )
        print(
            f"   {run.key}{via}: {record['seconds']:.2f} s, cpu {record['cpu']:.2f} s, "
            f"rss {record['peak_rss_mib']:.0f} MiB, nginx cpu {server_cpu:.2f} s, {through}"
            f"other cpu {record['other_cpu']:.2f} s",
            flush=True,
        )
    run.runs.append(record)


def run_rounds(
    runs: list[Run],
    ds: Dataset,
    srv: Nginx,
    reps: int,
    before: Callable[[], None] | None = None,
    proxy: TinyProxy | None = None,
) -> None:
    for rep in range(reps):
        if before is not None:
            before()
        print(f"  round {rep + 1}/{reps}", flush=True)
        for run in runs:
            if run.status != "ok":
                continue
            out = OUT / run.key
            execute_once(run, ds, srv, out, proxy)


def label(run: Run) -> str:
    if run.key not in ("triofetch-default", "triofetch-many"):
        return run.label
    got = sorted({r["transport"] for r in run.runs if "transport" in r})
    return f"{run.label}: {'/'.join(got) or '?'})"


def summarize(runs: list[Run], ds: Dataset) -> list[dict[str, Any]]:
    """One row per client: the medians of its successful rounds (peak RSS: the largest), each
    round's seconds, and throughput ratios of the medians to aiohttp's and curl's."""
    rows = []
    for run in runs:
        good = run.good()
        row: dict[str, Any] = {"client": label(run), "key": run.key, "status": run.status}
        if run.error:
            row["error"] = run.error
        row["runs"] = run.runs
        row["rounds"] = [r["seconds"] if r["ok"] else None for r in run.runs]
        if good:
            secs = statistics.median(r["seconds"] for r in good)
            row |= {
                "rounds_ok": len(good),
                "seconds": secs,
                "median_seconds": secs,
                "best_seconds": min(r["seconds"] for r in good),
                "files_per_s": len(ds.files) / secs,
                "mb_per_s": ds.total_bytes / secs / MB,
                "cpu": statistics.median(r["cpu"] for r in good),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in good),
                "server_cpu": statistics.median(r["server_cpu"] for r in good),
                "other_cpu": statistics.median(r["other_cpu"] for r in good),
            }
            if all("proxy_cpu" in r for r in good):
                row["proxy_cpu"] = statistics.median(r["proxy_cpu"] for r in good)
        rows.append(row)
    by_key = {r["key"]: r for r in rows}
    for row in rows:
        for peer in ("aiohttp", "curl"):
            base = by_key.get(peer, {})
            if base.get("files_per_s") and "files_per_s" in row:
                row[f"x_{peer}"] = row["files_per_s"] / base["files_per_s"]
                # the same ratio round by round (the rounds are interleaved)
                row[f"x_{peer}_rounds"] = [
                    b / s if s and b else None
                    for s, b in zip(row["rounds"], base["rounds"], strict=False)
                ]
    return rows


def rounds_text(row: dict[str, Any]) -> str:
    return " ".join("fail" if s is None else f"{s:.2f}" for s in row["rounds"])


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(title: str, rows: list[dict[str, Any]]) -> None:
    proxied = any("proxy_cpu" in r for r in rows)
    headers = ["client", "seconds", "files/s", "MB/s", "CPU s", "peak RSS MiB"]
    headers += ["x aiohttp", "x curl", "nginx CPU s"]
    headers += ["proxy CPU s"] if proxied else []
    headers += ["other CPU s", "rounds (s)"]
    lines = []
    for r in rows:
        if "seconds" not in r:
            lines.append([r["client"], r["status"]] + [""] * (len(headers) - 3) + [rounds_text(r)])
            continue
        line = [
            r["client"],
            fmt(r["seconds"], ".2f"),
            fmt(r["files_per_s"], ".0f" if r["files_per_s"] >= 100 else ".2f"),
            fmt(r["mb_per_s"], ".0f"),
            fmt(r["cpu"], ".2f"),
            fmt(r["peak_rss_mib"], ".0f"),
            fmt(r.get("x_aiohttp"), ".2f"),
            fmt(r.get("x_curl"), ".2f"),
            fmt(r["server_cpu"], ".2f"),
        ]
        line += [fmt(r.get("proxy_cpu"), ".2f")] if proxied else []
        line += [fmt(r["other_cpu"], ".2f"), rounds_text(r)]
        lines.append(line)
    print_table(title, headers, lines)


def digests_table(title: str, rows: list[dict[str, Any]], limit: float) -> None:
    headers = ["client", "at a time", "seconds", "MB/s", "x 1-core hash limit", "CPU s"]
    headers += ["peak RSS MiB", "other CPU s", "rounds (s)"]
    lines = []
    for r in rows:
        if "seconds" not in r:
            lines.append([r["client"], str(r["at_a_time"]), r["status"]] + [""] * 5)
            lines[-1].append(rounds_text(r))
            continue
        lines.append(
            [
                r["client"],
                str(r["at_a_time"]),
                fmt(r["seconds"], ".2f"),
                fmt(r["mb_per_s"], ".0f"),
                fmt(r["mb_per_s"] / limit, ".2f"),
                fmt(r["cpu"], ".2f"),
                fmt(r["peak_rss_mib"], ".0f"),
                fmt(r["other_cpu"], ".2f"),
                rounds_text(r),
            ]
        )
    print_table(title, headers, lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks download")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--reps", type=int, default=0, help="runs per client (3; quick: 1)")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--small-count",
        type=int,
        default=0,
        help=f"files of 16 KiB in the small and proxy workloads ({SMALL_COUNT}; quick: "
        f"{SMALL_COUNT_QUICK})",
    )
    # Options are passed to every benchmark module by ``python -m benchmarks``: ignore the
    # ones meant for the others.
    args, others = parser.parse_known_args(argv)
    if others:
        print(f"download: ignoring options {' '.join(others)}")
    args.reps = args.reps or (1 if args.quick else 3)
    if args.small_count < 0:
        parser.error("--small-count must be a positive number of files")
    args.small_count = args.small_count or (SMALL_COUNT_QUICK if args.quick else SMALL_COUNT)
    args.clients = [c for c in args.clients.split(",") if c]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for c in args.clients:
        if c not in CLIENTS:
            parser.error(f"unknown client {c!r}; known: {', '.join(CLIENTS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    info = machine_info()
    print(machine_header(info), flush=True)
    load = os.getloadavg()
    info["loadavg_at_start"] = load
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    missing = [c for c in ("curl", "aria2c", "nginx") if which(c) is None]
    if "nginx" in missing:
        print("nginx is not installed (apt-get install nginx-light); download benchmark skipped")
        return 1
    clients = [c for c in args.clients if c not in missing]
    for c in set(args.clients) - set(clients):
        print(f"-- {c} is not installed: skipped")
    workloads = list(args.workloads)
    if "proxy" in workloads and which("tinyproxy") is None:
        print("-- tinyproxy is not installed (apt-get install tinyproxy): proxy workload skipped")
        workloads.remove("proxy")

    small = large = None
    if {"small", "proxy"} & set(workloads):
        small = dataset("small", args.small_count, 16 * KiB)
    if {"large", "digests"} & set(workloads):
        large = dataset("large", *((2, 16 * MiB) if args.quick else (4, 256 * MiB)))
    hash_bytes = 64 * MiB if args.quick else 256 * MiB
    results: dict[str, Any] = {
        "machine": info,
        "quick": args.quick,
        "reps": args.reps,
        "connections": args.connections,
        "small_count": args.small_count,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workloads": {},
    }
    n = args.connections
    status = 0
    with Nginx(DATA) as srv:
        print(f"nginx on {srv.url('')}", flush=True)
        for name in ("small", "proxy", "large"):
            if name not in workloads:
                continue
            ds = large if name == "large" else small
            assert ds is not None
            size = f"{ds.files[0].size // KiB} KiB"
            title = f"({name}) {len(ds.files)} files x {size}, {n} connections"
            with contextlib.ExitStack() as stack:
                proxy = None
                env = client_env()
                if name == "proxy":
                    proxy = stack.enter_context(TinyProxy())
                    env = client_env(proxy.url)
                    version = info["versions"].get("tinyproxy", "tinyproxy")
                    title = (
                        f"(proxy) {len(ds.files)} files x {size} through {version} on "
                        f"127.0.0.1 (HTTP_PROXY in the environment), {n} connections"
                    )
                    print(f"tinyproxy on {proxy.url}", flush=True)
                title += f"; median of {args.reps} interleaved rounds"
                print(f"\n{title}", flush=True)
                runs = []
                for c in clients:
                    if c.startswith("floor-") and name == "large":
                        continue  # (a measuring stick for small files only)
                    if c == "curl":
                        execute = curl_run(ds, srv, n, env)
                    elif c == "aria2c":
                        execute = aria2c_run(ds, srv, n, env, proxy.url if proxy else None)
                    else:
                        execute = python_run(
                            c, ds, srv, connections=n, env=env, trust_env=proxy is not None
                        )
                    runs.append(Run(c, LABELS[c], execute))
                run_rounds(runs, ds, srv, args.reps, proxy=proxy)
            rows = summarize(runs, ds)
            status = status or any(r["status"] == "failed" for r in rows)
            results["workloads"][name] = {
                "title": title,
                "files": len(ds.files),
                "bytes": ds.total_bytes,
                "results": rows,
            }
            write_json(RESULTS, results)
            table(title, rows)

        if "digests" in workloads:
            assert large is not None
            py = [c for c in ("triofetch", "aiohttp") if c in clients]
            print(f"\nmeasuring one core's hashlib speed over {hash_bytes // MiB} MiB ...")
            # The speed of this machine drifts from minute to minute (by 20% and more): the
            # limit is measured before every round and after the last, and the median used.
            limits: list[float] = []

            def measure_limit() -> None:
                limits.append(measure_hash_speed(hash_bytes, PULP_DIGESTS))

            sha256_speed = measure_hash_speed(hash_bytes, ("sha256",))
            runs = []
            for c in py:
                for k in (1, 2):
                    execute = python_run(
                        c,
                        large,
                        srv,
                        connections=k,
                        concurrency=k,
                        digests=PULP_DIGESTS,
                        tag=f"-4d-{k}",
                    )
                    runs.append(Run(f"{c}-4d-{k}", LABELS[c], execute))
            run_rounds(runs, large, srv, args.reps, before=measure_limit)
            measure_limit()
            limit = statistics.median(limits)
            title = (
                f"(digests) {len(large.files)} files x {large.files[0].size // MiB} MiB with "
                f"{'+'.join(PULP_DIGESTS)}; one core hashes them at {limit:.0f} MB/s (median "
                f"of {len(limits)} measurements around the rounds: "
                f"{', '.join(f'{x:.0f}' for x in limits)}; sha256 alone: {sha256_speed:.0f} MB/s); "
                f"median of {args.reps} interleaved rounds"
            )
            rows = summarize(runs, large)
            for row, run in zip(rows, runs, strict=True):
                row["at_a_time"] = int(run.key.rsplit("-", 1)[1])
                if "mb_per_s" in row:
                    row["x_hash_limit"] = row["mb_per_s"] / limit
            status = status or any(r["status"] == "failed" for r in rows)
            results["workloads"]["digests"] = {
                "title": title,
                "files": len(large.files),
                "bytes": large.total_bytes,
                "hash_limit_mb_per_s": limit,
                "hash_limit_measurements": limits,
                "sha256_mb_per_s": sha256_speed,
                "results": rows,
            }
            write_json(RESULTS, results)
            digests_table(title, rows, limit)

    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(RESULTS, results)
    print(f"\nresults written to {RESULTS}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
