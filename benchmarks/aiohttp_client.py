"""The asyncio + aiohttp peer: Pulp's download stack, as a standalone benchmark client.

    python benchmarks/aiohttp_client.py JOB.json [--connections=16] [--concurrency=N]
                                                 [--digests=sha256,...] [--trust-env]

JOB.json: ``{"out": DIR, "files": [[url, name, size, sha256], ...]}``. Every file is streamed
to ``DIR/name`` in 1 MiB reads (``response.content.read(1048576)``, as Pulp's HttpDownloader
does), written with plain blocking ``write`` calls on the event loop thread and hashed while
streaming, also on the loop — the way Pulp's BaseDownloader.handle_data does it. The size and
the sha256 are then checked against the job; any mismatch or HTTP error fails the run (exit 1).

One ``ClientSession`` with ``TCPConnector(limit=connections)``; *concurrency* worker
coroutines (default: the connection count) take files from a shared iterator, so memory does
not grow with the number of files. ``--trust-env`` makes it ``ClientSession(trust_env=True)``:
proxies from ``HTTP_PROXY`` and the like (the benchmark's proxy workload; Pulp configures its
proxy explicitly, aiohttp's default is not to read the environment). Prints one JSON line with
the time spent on the work itself.
"""

from __future__ import annotations

import time

_t0 = time.perf_counter()

import argparse  # noqa: E402 - the import time of the client is part of what we report
import asyncio  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import aiohttp  # noqa: E402
from _client_report import cpu_seconds, print_work  # noqa: E402

CHUNK = 1024 * 1024


async def fetch_one(
    session: aiohttp.ClientSession,
    url: str,
    dest: str,
    size: int,
    sha256: str,
    algorithms: list[str],
) -> None:
    hashers = [hashlib.new(a) for a in algorithms]
    got = 0
    async with session.get(url) as response:
        response.raise_for_status()
        with open(dest, "wb") as fh:  # noqa: ASYNC230 - blocking writes on the loop, as Pulp
            while True:
                chunk = await response.content.read(CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                for h in hashers:
                    h.update(chunk)
                got += len(chunk)
    if got != size:
        raise ValueError(f"{url}: size {got} != {size}")
    actual = hashers[algorithms.index("sha256")].hexdigest()
    if actual != sha256:
        raise ValueError(f"{url}: sha256 {actual} != {sha256}")


async def run(
    job: dict, connections: int, concurrency: int, algorithms: list[str], trust_env: bool
) -> int:
    out = job["out"]
    items = iter(job["files"])
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for url, name, size, sha256 in items:
            await fetch_one(session, url, os.path.join(out, name), size, sha256, algorithms)
            done += 1

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=trust_env
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("job")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=0)
    parser.add_argument("--digests", default="sha256")
    parser.add_argument("--trust-env", action="store_true", help="proxies from the environment")
    args = parser.parse_args()
    algorithms = args.digests.split(",")
    if "sha256" not in algorithms:
        algorithms.append("sha256")
    with open(args.job) as fh:
        job = json.load(fh)
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    done = asyncio.run(
        run(
            job,
            args.connections,
            args.concurrency or args.connections,
            algorithms,
            args.trust_env,
        )
    )
    print_work(done, _t0, start_wall, start_cpu)
    return 0 if done == len(job["files"]) else 1


if __name__ == "__main__":
    sys.exit(main())
