"""What a benchmark client process says of its own run: one JSON line on stdout.

Shared by the client scripts (``aiohttp_client.py``, ``triofetch_client.py``,
``floor_client.py``, ``units_client.py``), which run as scripts and import it from their own
directory.  Standard library only, and small: its import is part of a client's start-up.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def vm_hwm_kib() -> int:
    """This process's peak RSS in KiB (``ru_maxrss`` would include the harness's, see _common)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """This process's CPU time so far (user and system)."""
    times = os.times()
    return times.user + times.system


def print_work(files: int, imported_at: float, started: float, cpu: float, **extra: Any) -> None:
    """Print the JSON line of a download client: *files* done, the start-up (from
    *imported_at*, the first line of the client, to *started*), the work's wall seconds and
    CPU seconds (since *started* and *cpu*), the peak RSS, and *extra*."""
    print(
        json.dumps(
            {
                "files": files,
                "startup_seconds": started - imported_at,
                "work_seconds": time.perf_counter() - started,
                "work_cpu": cpu_seconds() - cpu,
                "vm_hwm_kib": vm_hwm_kib(),
                **extra,
            }
        )
    )
