"""A process collecting garbage over and over: ``python -m tests._gc_loop DB ROOT STOP``.

Tries ``Store.collect_garbage(wait=0)`` every 10 ms until the file STOP exists, printing one
JSON line per attempt: ``{"t": monotonic time, "busy": bool, "report": {...}}`` (``report``
null when busy).  The race tests run it beside a sync.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import trio

from triofetch import StoreBusy
from triofetch.store import open_store


async def main(db: str, root: str, stop: str) -> None:
    async with open_store(db, root=root) as store:
        while not await trio.Path(stop).exists():
            try:
                report = await store.collect_garbage(wait=0)
            except StoreBusy:
                line = {"t": time.monotonic(), "busy": True, "report": None}
            else:
                line = {"t": time.monotonic(), "busy": False, "report": dataclasses.asdict(report)}
            print(json.dumps(line), flush=True)
            await trio.sleep(0.01)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
