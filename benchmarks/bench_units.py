"""Content unit creator benchmark (issue 4): memory bounded by slices, end-to-end speed.

1. Streaming: 10,000 and 1,000,000 declarative units through (b) the on_demand path (recorded,
   nothing downloaded) and then (a) the already-present path (the same units again: one query
   per slice finds them all).  Peak RSS at 1,000,000 must stay within 1.2x of 10,000.
2. End to end on loopback nginx: 5,000 single-file units of 16 KiB created from nothing, then a
   no-op re-run (which must make zero file requests: it is also run against a closed port),
   in the same run as the peers downloading the same files (aiohttp client, curl).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ._common import (
    WORK,
    KiB,
    Nginx,
    dataset,
    free_port,
    fresh_dir,
    machine_header,
    machine_info,
    print_table,
    run_measured,
    which,
    write_json,
)
from .bench_download import client_env, curl_run, python_run, write_job

HERE = Path(__file__).resolve().parent
CLIENT = [sys.executable, str(HERE / "units_client.py")]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks units")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", default="stream,e2e")
    args, others = parser.parse_known_args(argv)
    if others:
        print(f"units: ignoring options {' '.join(others)}")
    return args


def stream_part(quick: bool, results: dict[str, Any]) -> None:
    sizes = (2_000, 50_000) if quick else (10_000, 1_000_000)
    rows = []
    peaks: dict[tuple[str, int], float] = {}
    for n in sizes:
        root = fresh_dir(WORK / "units" / f"stream-{n}")
        for path, policy in (("on_demand (new)", "on_demand"), ("already present", "on_demand")):
            m = run_measured([*CLIENT, "synthetic", str(n), str(root), "--policy", policy])
            if not m.ok:
                print(m.stderr[-2000:])
                raise SystemExit(f"units client failed on {path} with {n} units")
            rss = m.maxrss_kib / 1024
            peaks[(path, n)] = rss
            rows.append(
                [
                    path,
                    f"{n:,}",
                    f"{m.wall:.1f}",
                    f"{n / m.wall:,.0f}",
                    f"{m.cpu:.1f}",
                    f"{rss:.0f}",
                ]
            )
            results.setdefault("stream", []).append(
                {
                    "path": path,
                    "units": n,
                    "seconds": m.wall,
                    "units_per_s": n / m.wall,
                    "cpu": m.cpu,
                    "peak_rss_mib": rss,
                }
            )
        shutil.rmtree(root, ignore_errors=True)
    print_table(
        "streaming declarative units (SQLite, slices of 500)",
        ["path", "units", "seconds", "units/s", "CPU s", "peak RSS MiB"],
        rows,
    )
    small, big = sizes
    for path in ("on_demand (new)", "already present"):
        ratio = peaks[(path, big)] / peaks[(path, small)]
        verdict = "ok" if ratio <= 1.2 else "OVER the 1.2x bound"
        print(f"peak RSS {path}: {big:,} units / {small:,} units = {ratio:.2f}x ({verdict})")
        results.setdefault("rss_ratio", {})[path] = ratio


def e2e_part(quick: bool, results: dict[str, Any]) -> None:
    ds = dataset("small", 300 if quick else 5000, 16 * KiB)
    reps = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    with Nginx(WORK / "data") as srv:
        job = write_job(f"units-{ds.dirname}", ds, srv, WORK / "out" / "units")
        # the same files behind a port nobody listens on: a no-op re-run must not notice
        dead = write_job(f"units-dead-{ds.dirname}", ds, srv, WORK / "out" / "units")
        dead.write_text(
            dead.read_text().replace(f"127.0.0.1:{srv.port}/", f"127.0.0.1:{free_port()}/")
        )
        peers = {"aiohttp": python_run("aiohttp", ds, srv, connections=16)}
        if which("curl"):
            peers["curl+sha256sum"] = curl_run(ds, srv, 16, client_env())
        best: dict[str, float] = {}
        for _ in range(reps):
            for name, run in peers.items():
                m = run()
                if m.ok:
                    best[name] = min(best.get(name, float("inf")), m.wall)
            for transport in ("trio", "httpx"):
                root = fresh_dir(WORK / "units" / f"e2e-{transport}")
                cmd = [*CLIENT, "job", str(job), str(root), "--transport", transport]
                first = run_measured(cmd)
                again = run_measured(cmd)
                offline = run_measured(
                    [*CLIENT, "job", str(dead), str(root), "--transport", transport]
                )
                for label, m, want_downloads in (
                    (f"triofetch creator ({transport}) from nothing", first, len(ds.files)),
                    (f"triofetch no-op re-run ({transport})", again, 0),
                    (f"triofetch no-op re-run, server gone ({transport})", offline, 0),
                ):
                    rep = m.report
                    if not m.ok or rep.get("downloaded") != want_downloads:
                        print(f"{label}: FAILED {rep} {m.stderr[-1500:]}")
                        continue
                    best[label] = min(best.get(label, float("inf")), m.wall)
                shutil.rmtree(root, ignore_errors=True)
    n = len(ds.files)
    lines = []
    for label, seconds in best.items():
        row = {"client": label, "seconds": seconds, "units_per_s": n / seconds}
        for peer in ("aiohttp", "curl+sha256sum"):
            if peer in best:
                row[f"x {peer}"] = (n / seconds) / (n / best[peer])
        rows.append(row)
        lines.append(
            [
                label,
                f"{seconds:.2f}",
                f"{n / seconds:,.0f}",
                f"{row.get('x aiohttp', 0):.2f}",
                f"{row.get('x curl+sha256sum', 0):.2f}",
            ]
        )
    print_table(
        f"end to end: {n} single-file units of 16 KiB, 16 connections "
        f"(best of {reps}; peers only download)",
        ["client", "seconds", "units/s", "x aiohttp", "x curl"],
        lines,
    )
    results["e2e"] = rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    info = machine_info()
    print(machine_header(info), flush=True)
    results: dict[str, Any] = {
        "machine": info,
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    parts = args.parts.split(",")
    if "stream" in parts:
        stream_part(args.quick, results)
    if "e2e" in parts:
        if which("nginx") is None:
            print("nginx is not installed: end-to-end part skipped")
        else:
            e2e_part(args.quick, results)
    write_json(WORK / "results-units.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
