"""The bodies every real server serves: deterministic bytes of each test size.

The fixtures write them to files (for nginx and ``http.server``); the hypercorn app makes them
on the fly; the tests compute their digests.  The same size always gives the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import random

KiB = 1024
MiB = 1024 * KiB

#: the body sizes every server serves: empty, one byte, a small file, a large odd size, 5 MiB
SIZES = (0, 1, 16 * KiB, MiB + 7, 5 * MiB)


@functools.lru_cache(maxsize=len(SIZES) + 4)
def body(size: int) -> bytes:
    """*size* pseudo-random bytes, the same ones in every process."""
    return random.Random(size).randbytes(size)


def sha256(size: int) -> str:
    return hashlib.sha256(body(size)).hexdigest()


def file_name(size: int) -> str:
    """The name of the static file of *size* bytes (under ``/files/``)."""
    return f"f-{size}.bin"


def write_files(directory: str) -> None:
    """Write the file of every size into *directory*."""
    for size in SIZES:
        with open(f"{directory}/{file_name(size)}", "wb") as fh:
            fh.write(body(size))
