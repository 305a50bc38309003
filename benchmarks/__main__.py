"""Run benchmark modules: ``python -m benchmarks [NAMES...] [--quick] [--option=value ...]``.

Each name ``X`` imports ``benchmarks.bench_X`` and calls its ``main(argv)`` with the options
(every argument starting with ``-``, passed through unchanged, so options with a value are
written ``--name=value``). Without names, every known benchmark runs; a module that does not
exist yet is skipped with a one-line notice.

Outputs of earlier runs are moved aside during the run and deleted at its end (see
``_common.fresh_dir``: deleting thousands of files slows down creating files for a minute).
"""

from __future__ import annotations

import importlib
import sys
import time

KNOWN = ("download", "store", "units", "serve")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        print(f"\nknown benchmarks: {', '.join(KNOWN)}")
        return 0
    names = [a for a in args if not a.startswith("-")]
    options = [a for a in args if a.startswith("-")]
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(KNOWN)}")
        return 2
    from ._common import empty_trash

    empty_trash(wait_if_deleted=True)
    status = 0
    try:
        status = _run(names or list(KNOWN), options)
    finally:
        empty_trash()
    return status


def _run(names: list[str], options: list[str]) -> int:
    status = 0
    for name in names:
        module_name = f"benchmarks.bench_{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            print(f"-- skipping {name!r}: {module_name} does not exist yet")
            continue
        print(f"== benchmark {name} ==", flush=True)
        started = time.perf_counter()
        rc = module.main(list(options))
        print(f"== {name} done in {time.perf_counter() - started:.0f} s ==", flush=True)
        status = status or (rc or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
