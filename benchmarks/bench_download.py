"""Download benchmark: triofetch's Downloader beside curl, aria2c and asyncio+aiohttp.

    python -m benchmarks download [--quick] [--reps=N] [--clients=curl,aria2c,aiohttp,triofetch]
                                  [--workloads=small,large,digests] [--connections=16]

A local nginx (one worker, sendfile, keepalive, no access log) on 127.0.0.1 serves
(a) ``small``: 5000 files of 16 KiB and (b) ``large``: 4 files of 256 MiB (``--quick``: 300
files and 2 x 16 MiB). Each client runs as its own subprocess at 16 connections, in the same
run, and verifies the sha256 of every file against the known list:

- ``curl+sha256sum``: ``curl --parallel --parallel-max 16 --config LIST`` (url/output pairs),
  then ``sha256sum --check``; the two processes' seconds and CPU seconds add up;
- ``aria2c``: ``aria2c -j 16 -x 1 -i LIST`` with a ``checksum=sha-256=HEX`` option per URI and
  ``--file-allocation=none``;
- ``aiohttp``: benchmarks/aiohttp_client.py (Pulp's stack: blocking writes and hashing on the
  asyncio loop);
- ``triofetch``: benchmarks/triofetch_client.py (``triofetch.Downloader``).

``digests``: workload (b) with Pulp's four digests (sha224, sha256, sha384, sha512), one
download at a time and two at a time, for triofetch and for the aiohttp client, reported in
MB/s against the single-core speed of hashlib for those four digests, measured in-process
before every round and after the last (the median is used; every measurement is printed).

Every client run is repeated ``--reps`` times (3; 1 with ``--quick``), interleaved with the other
clients; the best run is reported. Output directories are emptied between runs (and dirty pages
flushed with sync); nothing else is dropped, so nginx serves from the page cache. Results are
also written to benchmarks/_work/results-download.json.
"""

from __future__ import annotations

import argparse
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
    busy_cpu_seconds,
    dataset,
    fresh_dir,
    machine_header,
    machine_info,
    print_table,
    run_measured,
    which,
    write_json,
)

CLIENTS = ("curl", "aria2c", "aiohttp", "triofetch", "triofetch-httpx")
LABELS = {
    "curl": "curl+sha256sum",
    "aria2c": "aria2c",
    "aiohttp": "aiohttp",
    "triofetch": "triofetch (trio transport)",
    "triofetch-httpx": "triofetch (httpx transport)",
}
WORKLOADS = ("small", "large", "digests")
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

    def best(self) -> dict[str, Any] | None:
        good = [r for r in self.runs if r["ok"]]
        return min(good, key=lambda r: r["seconds"]) if good else None


# --------------------------------------------------------------------------- clients


def write_job(name: str, ds: Dataset, srv: Nginx, out: Path, **extra: Any) -> Path:
    JOBS.mkdir(parents=True, exist_ok=True)
    files = [[srv.url(f"{ds.dirname}/{f.name}"), f.name, f.size, f.sha256] for f in ds.files]
    path = JOBS / f"{name}.json"
    path.write_text(json.dumps({"out": str(out), "files": files, **extra}))
    return path


def curl_run(ds: Dataset, srv: Nginx, connections: int) -> Callable[[], Measured]:
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
        fetched = run_measured(curl)
        if not fetched.ok:
            return fetched
        checked = run_measured(["sha256sum", "--check", "--quiet", "--strict", str(sums)], cwd=out)
        return fetched.then(checked)

    return execute


def aria2c_run(ds: Dataset, srv: Nginx, connections: int) -> Callable[[], Measured]:
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

    def execute() -> Measured:
        fresh_dir(out)
        return run_measured(cmd)

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

    def execute() -> Measured:
        fresh_dir(out)
        fresh_dir(tmp)
        return run_measured(cmd)

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


def execute_once(run: Run, ds: Dataset, srv: Nginx, out: Path) -> None:
    server_cpu = srv.cpu_seconds()
    busy = busy_cpu_seconds()
    m = run.execute()
    busy = busy_cpu_seconds() - busy
    server_cpu = srv.cpu_seconds() - server_cpu
    record: dict[str, Any] = {
        "ok": m.ok,
        "wall": m.wall,
        "cpu_total": m.cpu,
        "peak_rss_mib": m.maxrss_kib / 1024,
        "server_cpu": server_cpu,
        # CPU seconds spent by everything else on the machine during the run (other work on
        # a shared machine, plus this harness): a large value means a noisy measurement.
        "other_cpu": max(0.0, busy - m.cpu - server_cpu),
        "returncode": m.returncode,
    }
    # Python clients report the time spent on the work itself, after interpreter start-up
    # and imports (a constant that says nothing about throughput); the rest are measured
    # from outside, start-up included (a few milliseconds).
    record["seconds"] = m.report.get("work_seconds", m.wall)
    record["cpu"] = m.report.get("work_cpu", m.cpu)
    if "startup_seconds" in m.report:
        record["startup_seconds"] = m.report["startup_seconds"]
    if m.ok:
        problem = check_output(out, ds)
        if problem:
            record["ok"] = False
            m.stderr += problem
    if not m.ok:
        if m.returncode == UNAVAILABLE and run.key.startswith("triofetch"):
            run.status = "unavailable"
            run.error = "triofetch.Downloader does not exist yet"
        else:
            run.status = "failed"
            run.error = (m.stderr.strip() or m.stdout.strip())[-2000:]
        print(f"   {run.key}: {run.status}: {run.error.splitlines()[-1] if run.error else ''}")
    else:
        print(
            f"   {run.key}: {record['seconds']:.2f} s, cpu {record['cpu']:.2f} s, "
            f"rss {record['peak_rss_mib']:.0f} MiB, nginx cpu {server_cpu:.2f} s, "
            f"other cpu {record['other_cpu']:.2f} s",
            flush=True,
        )
    run.runs.append(record)


def run_rounds(
    runs: list[Run], ds: Dataset, srv: Nginx, reps: int, before: Callable[[], None] | None = None
) -> None:
    for rep in range(reps):
        if before is not None:
            before()
        print(f"  round {rep + 1}/{reps}", flush=True)
        for run in runs:
            if run.status != "ok":
                continue
            out = OUT / run.key
            execute_once(run, ds, srv, out)


def summarize(runs: list[Run], ds: Dataset) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        best = run.best()
        row: dict[str, Any] = {"client": run.label, "key": run.key, "status": run.status}
        if run.error:
            row["error"] = run.error
        row["runs"] = run.runs
        if best is not None:
            secs = best["seconds"]
            good = [r["seconds"] for r in run.runs if r["ok"]]
            row |= {
                "seconds": secs,
                "median_seconds": statistics.median(good),
                "files_per_s": len(ds.files) / secs,
                "mb_per_s": ds.total_bytes / secs / MB,
                "cpu": best["cpu"],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in run.runs if r["ok"]),
                "server_cpu": best["server_cpu"],
                "other_cpu": best["other_cpu"],
            }
        rows.append(row)
    by_key = {r["key"]: r for r in rows}
    for row in rows:
        for peer in ("aiohttp", "curl"):
            base = by_key.get(peer, {}).get("files_per_s")
            if base and "files_per_s" in row:
                row[f"x_{peer}"] = row["files_per_s"] / base
    return rows


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(title: str, rows: list[dict[str, Any]]) -> None:
    headers = ["client", "seconds", "files/s", "MB/s", "CPU s", "peak RSS MiB"]
    headers += ["x aiohttp", "x curl", "nginx CPU s", "other CPU s"]
    lines = []
    for r in rows:
        if "seconds" not in r:
            lines.append([r["client"], r["status"]] + [""] * (len(headers) - 2))
            continue
        lines.append(
            [
                r["client"],
                fmt(r["seconds"], ".2f"),
                fmt(r["files_per_s"], ".0f" if r["files_per_s"] >= 100 else ".2f"),
                fmt(r["mb_per_s"], ".0f"),
                fmt(r["cpu"], ".2f"),
                fmt(r["peak_rss_mib"], ".0f"),
                fmt(r.get("x_aiohttp"), ".2f"),
                fmt(r.get("x_curl"), ".2f"),
                fmt(r["server_cpu"], ".2f"),
                fmt(r["other_cpu"], ".2f"),
            ]
        )
    print_table(title, headers, lines)


def digests_table(title: str, rows: list[dict[str, Any]], limit: float) -> None:
    headers = ["client", "at a time", "seconds", "MB/s", "x 1-core hash limit", "CPU s"]
    headers += ["peak RSS MiB", "other CPU s"]
    lines = []
    for r in rows:
        if "seconds" not in r:
            lines.append([r["client"], str(r["at_a_time"]), r["status"]] + [""] * 5)
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
    # Options are passed to every benchmark module by ``python -m benchmarks``: ignore the
    # ones meant for the others.
    args, others = parser.parse_known_args(argv)
    if others:
        print(f"download: ignoring options {' '.join(others)}")
    args.reps = args.reps or (1 if args.quick else 3)
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

    if args.quick:
        small, large, hash_bytes = (
            dataset("small", 300, 16 * KiB),
            dataset("large", 2, 16 * MiB),
            64 * MiB,
        )
    else:
        small, large, hash_bytes = (
            dataset("small", 5000, 16 * KiB),
            dataset("large", 4, 256 * MiB),
            256 * MiB,
        )
    results: dict[str, Any] = {
        "machine": info,
        "quick": args.quick,
        "reps": args.reps,
        "connections": args.connections,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workloads": {},
    }
    n = args.connections
    status = 0
    with Nginx(DATA) as srv:
        print(f"nginx on {srv.url('')}", flush=True)
        for name, ds in (("small", small), ("large", large)):
            if name not in args.workloads:
                continue
            title = (
                f"({name}) {len(ds.files)} files x {ds.files[0].size // KiB} KiB, {n} connections"
            )
            print(f"\n{title}", flush=True)
            runs = []
            for c in clients:
                if c == "curl":
                    execute = curl_run(ds, srv, n)
                elif c == "aria2c":
                    execute = aria2c_run(ds, srv, n)
                else:
                    execute = python_run(c, ds, srv, connections=n)
                runs.append(Run(c, LABELS[c], execute))
            run_rounds(runs, ds, srv, args.reps)
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

        if "digests" in args.workloads:
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
                f"{', '.join(f'{x:.0f}' for x in limits)}; sha256 alone: {sha256_speed:.0f} MB/s)"
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
