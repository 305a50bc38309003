"""The command line stands on the public API, and the public API's names live in public modules.

- No module of ``triofetch._cli`` imports a private module of ``triofetch`` (a module with a
  segment starting with ``_`` outside the command line itself): what the command line needs,
  a user of the library can have too.
- Every class and function of ``triofetch.__all__`` reports a public module as its home,
  and that module really holds it.
- The end-of-run temp-file removal the command line relies on is the storage's
  (:meth:`ArtifactStorage.remove_temp_files`, :meth:`ArtifactStorage.removing_temp_files`):
  it removes this process's temp files and spares those of other live processes.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import triofetch
from tests._imports import SRC, imports
from triofetch.errors import InvalidInput, StoreError
from triofetch.storage import ArtifactStorage

CLI = SRC / "triofetch" / "_cli"


def _imports(path: Path, name: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import in *path*; ``from X import y`` yields ``X`` and
    ``X.y`` (``y`` may be a module, or a name of ``X``)."""
    for line, module, names in imports(path, name):
        yield line, module
        for n in names:
            yield line, f"{module}.{n}"


def _private(dotted: str) -> bool:
    """Whether a segment of *dotted* is private (``_x``; a dunder such as ``__version__``
    is not)."""
    return any(
        part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
        for part in dotted.split(".")
    )


def _violations(path: Path, name: str | None = None) -> list[str]:
    """The private parts of triofetch that *path* imports (the command line's own modules
    are its business)."""
    found = []
    for line, dotted in _imports(path, name):
        if dotted != "triofetch" and not dotted.startswith("triofetch."):
            continue  # another library
        if dotted == "triofetch._cli" or dotted.startswith("triofetch._cli."):
            continue
        if _private(dotted):
            found.append(f"{path.name}:{line}: {dotted}")
    return found


def test_the_command_line_imports_no_private_module() -> None:
    paths = sorted(CLI.rglob("*.py"))
    assert len(paths) > 5, CLI
    assert [v for path in paths for v in _violations(path)] == []


@pytest.mark.parametrize(
    ("text", "private"),
    [
        ("from .._tempfiles import temp_file_pid", True),
        ("from .. import _startup", True),
        ("import triofetch._model", True),
        ("from triofetch.downloader import _core", True),
        ("from ..store import _private_helper", True),
        ("from .. import __version__", False),
        ("from ..manifest import split_source", False),
        ("from ..errors import describe_error", False),
        ("from . import _startup", False),  # the command line's own
        ("from ._common import CLIError", False),
        ("import trio._core", False),  # not triofetch
    ],
)
def test_the_import_check_tells_private_from_public(
    tmp_path: Path, text: str, private: bool
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(text + "\n", encoding="utf-8")
    assert bool(_violations(probe, "triofetch._cli._probe")) is private


def test_every_public_name_lives_in_a_public_module() -> None:
    checked = 0
    for name in triofetch.__all__:
        value = getattr(triofetch, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        home = value.__module__
        assert not _private(home), (name, home)
        module = importlib.import_module(home)
        assert getattr(module, name, None) is value, (name, home)
        checked += 1
    assert checked > 50  # the classes and functions, not only the constants


# -- the storage removes this process's temp files ------------------------------------------


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    """Another process, alive while the test runs."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _names(storage: ArtifactStorage) -> set[str]:
    return set(os.listdir(storage.temp_dir))


def test_remove_temp_files_removes_ours_and_spares_the_others(
    tmp_path: Path, live_process: subprocess.Popen[bytes]
) -> None:
    storage = ArtifactStorage(tmp_path / "root")
    mine = [storage.new_temp_path() for _ in range(3)]
    theirs = storage.temp_dir / f"tf-{live_process.pid}-aaaa.part"
    foreign = storage.temp_dir / "notes.txt"
    lookalike = storage.temp_dir / f"tf-{os.getpid()}.part"  # no token: not a temp name
    for path in (*mine, theirs, foreign, lookalike):
        path.write_bytes(b"x")
    assert sorted(storage.remove_temp_files()) == sorted(mine)
    assert _names(storage) == {theirs.name, foreign.name, lookalike.name}
    assert storage.remove_temp_files() == []  # nothing of ours left
    # another process's, when asked by its pid (the caller knows it has stopped writing)
    assert storage.remove_temp_files(pid=live_process.pid) == [theirs]
    assert _names(storage) == {foreign.name, lookalike.name}


def test_remove_temp_files_without_a_temp_directory(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "root")
    storage.temp_dir.rmdir()
    assert storage.remove_temp_files() == []


@pytest.mark.parametrize("pid", [0, -1, True, 1.5, "1"])
def test_remove_temp_files_rejects_a_bad_pid(tmp_path: Path, pid: object) -> None:
    storage = ArtifactStorage(tmp_path / "root")
    with pytest.raises(InvalidInput, match="pid"):
        storage.remove_temp_files(pid=pid)  # type: ignore[arg-type]


def test_removing_temp_files_on_the_way_out_however_the_block_ends(
    tmp_path: Path, live_process: subprocess.Popen[bytes]
) -> None:
    storage = ArtifactStorage(tmp_path / "root")
    theirs = storage.temp_dir / f"tf-{live_process.pid}-bbbb.part"
    theirs.write_bytes(b"x")
    with storage.removing_temp_files():
        storage.new_temp_path().write_bytes(b"a")
    assert _names(storage) == {theirs.name}
    with pytest.raises(KeyboardInterrupt), storage.removing_temp_files():
        storage.new_temp_path().write_bytes(b"b")
        raise KeyboardInterrupt
    assert _names(storage) == {theirs.name}


def test_a_readonly_storage_removes_nothing(tmp_path: Path) -> None:
    ArtifactStorage(tmp_path / "root").new_temp_path().write_bytes(b"x")
    storage = ArtifactStorage(tmp_path / "root", readonly=True)
    with pytest.raises(StoreError):
        storage.remove_temp_files()
    with pytest.raises(StoreError), storage.removing_temp_files():
        pass  # pragma: no cover - refused on entry
    assert len(_names(storage)) == 1
