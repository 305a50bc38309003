"""The triofetch benchmark client: ``triofetch.Downloader`` through its public API only.

    python benchmarks/triofetch_client.py JOB.json [--connections=16] [--concurrency=N]
                                                   [--digests=sha256,...]
                                                   [--transport=trio|httpx|auto|asks|default]

JOB.json: ``{"out": DIR, "tmp": TEMP_DIR, "files": [[url, name, size, sha256], ...]}``.
One ``Downloader(connections=..., temp_dir=TEMP_DIR)``; *concurrency* worker tasks (default:
twice the connection count, so the Downloader's own limiter always has work queued) take files
from one shared iterator, as the aiohttp client's workers do. Each worker awaits
``dl.fetch(url, expected_digests={"sha256": ...}, expected_size=..., destination=DIR/name)``
(which validates, then moves the file to ``DIR/name`` in a worker thread) and checks
``result.digests["sha256"]``, ``result.size`` and ``result.path`` once more against the job.
With ``--digests`` the Downloader computes those algorithms (Pulp's four:
``sha224,sha256,sha384,sha512``).

``--transport`` (default ``trio``) is passed to the Downloader; ``default`` passes none, so
the run measures what ``Downloader()`` gives a library user (the default ``trust_env=True``
included: a proxy named by ``HTTP_PROXY`` is used). The JSON line names the transport the
Downloader reports (``dl.transport_name``; ``"unknown"`` where it has no such attribute).

Exit status 3 means ``triofetch.Downloader`` does not exist (yet). Prints one JSON line with
the time spent on the work itself.
"""

from __future__ import annotations

import time

_t0 = time.perf_counter()

import argparse  # noqa: E402 - the import time of the client is part of what we report
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import trio  # noqa: E402
from _client_report import cpu_seconds, print_work  # noqa: E402

import triofetch  # noqa: E402


async def run(
    job: dict,
    connections: int,
    concurrency: int,
    digests: list[str] | None,
    transport: str,
    report: dict,
) -> int:
    out = job["out"]
    done = 0
    kwargs = {"connections": connections, "temp_dir": job["tmp"]}
    if transport not in ("default", "many"):
        kwargs["transport"] = transport
    if digests:
        kwargs["digests"] = tuple(digests)

    files = iter(job["files"])

    async def worker(dl: triofetch.Downloader) -> None:
        # like the aiohttp client: *concurrency* workers take files from one iterator
        nonlocal done
        for url, name, size, sha256 in files:
            target = os.path.join(out, name)
            result = await dl.fetch(
                url, expected_digests={"sha256": sha256}, expected_size=size, destination=target
            )
            if result.digests.get("sha256") != sha256 or result.size != size:
                raise ValueError(f"{url}: wrong result {result.size} {result.digests}")
            if str(result.path) != target:
                raise ValueError(f"{url}: landed at {result.path}, not {target}")
            done += 1

    if transport == "many":  # the library's own way to run many downloads
        async with triofetch.Downloader(**kwargs) as dl:
            report["transport"] = str(getattr(dl, "transport_name", "unknown"))
            requests = [
                triofetch.FetchRequest(
                    url,
                    expected_digests={"sha256": sha256},
                    expected_size=size,
                    destination=os.path.join(out, name),
                )
                for url, name, size, sha256 in files
            ]
            async with dl.fetch_many(requests, in_flight=concurrency) as outcomes:
                async for outcome in outcomes:
                    if not outcome.ok:
                        raise outcome.error
                    result, wanted = outcome.result, outcome.request
                    if result.digests.get("sha256") != (wanted.expected_digests or {}).get(
                        "sha256"
                    ) or str(result.path) != str(wanted.destination):
                        raise ValueError(f"{wanted.url}: wrong result {result}")
                    done += 1
        return done

    async with triofetch.Downloader(**kwargs) as dl, trio.open_nursery() as nursery:
        report["transport"] = str(getattr(dl, "transport_name", "unknown"))
        for _ in range(concurrency):
            nursery.start_soon(worker, dl)
    return done


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("job")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=0)
    parser.add_argument("--digests", default="")
    parser.add_argument(
        "--transport", default="trio", choices=["trio", "httpx", "auto", "asks", "default", "many"]
    )
    args = parser.parse_args()
    if not hasattr(triofetch, "Downloader"):
        print("triofetch.Downloader does not exist yet", file=sys.stderr)
        return 3
    digests = args.digests.split(",") if args.digests else None
    with open(args.job) as fh:
        job = json.load(fh)
    report: dict = {}
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    done = trio.run(
        run,
        job,
        args.connections,
        args.concurrency or 2 * args.connections,
        digests,
        args.transport,
        report,
    )
    print_work(done, _t0, start_wall, start_cpu, **report)
    return 0 if done == len(job["files"]) else 1


if __name__ == "__main__":
    sys.exit(main())
