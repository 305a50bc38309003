"""check_store from triofetch.testing: a clean store has no problem, a damaged one says
what is wrong.

A pytest test file for Trio (pytest-trio); ``triofetch_sqlite_store`` and
``triofetch_fault_server`` come from triofetch's pytest plugin.  Run it with
``pytest docs/examples/testing_check_store.py``.
"""

from __future__ import annotations

import hashlib

import pytest

import triofetch
from triofetch.store import Store
from triofetch.testing import FaultServer, check_store

pytestmark = pytest.mark.trio


def note(server: FaultServer, name: str, text: bytes) -> triofetch.DeclarativeUnit:
    """A unit of type ``note`` with one file, served by *server*."""
    server.add_file(f"/{name}.txt", text)
    return triofetch.DeclarativeUnit(
        "note",
        (name,),
        {},
        [
            triofetch.DeclarativeArtifact(
                server.url(f"/{name}.txt"),
                f"{name}.txt",
                {"sha256": hashlib.sha256(text).hexdigest()},
                len(text),
            )
        ],
    )


async def test_check_store_tells_what_is_wrong(
    triofetch_sqlite_store: Store, triofetch_fault_server: FaultServer
) -> None:
    store = triofetch_sqlite_store
    units = [note(triofetch_fault_server, name, name.encode() * 100) for name in ("a", "b")]
    async with triofetch.Downloader() as downloader:
        report = await triofetch.ContentUnitCreator(store, downloader).run(units, repository="r")
    assert report.ok

    # --8<-- [check]
    problems = await check_store(store, units=units)
    assert problems == [], "\n".join(p.message for p in problems)
    # --8<-- [/check]

    # damage a stored file and leave a temp file behind: both are found, and said
    assert store.storage is not None
    stored = store.storage.path_for(units[0].artifacts[0].sha256 or "")
    stored.chmod(0o644)
    stored.write_bytes(b"not what was downloaded")
    store.storage.new_temp_path().write_bytes(b"half a download")
    problems = await check_store(store, units=units)
    assert sorted(p.kind for p in problems) == ["corrupt_file", "temp_file"]
    for problem in problems:
        print(problem.kind, "-", problem.message)


if __name__ == "__main__":
    # run as a script, this file imports pytest plugins' packages (triofetch) before
    # pytest starts, which pytest warns about: harmless, and `pytest <file>` does not
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    raise SystemExit(pytest.main([__file__, "-q", "-s", *quiet]))
