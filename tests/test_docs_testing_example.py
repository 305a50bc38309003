"""The examples of docs/testing.rst run, as a consumer's test suite would run them.

``docs/examples/testing_*.py`` (pytest files, which ``tests/test_docs_examples.py`` leaves
to this module) are copied into an empty directory (no ``pyproject.toml``, no conftest of
this project) and run by a new pytest process: the ``triofetch_*`` fixtures they use come
from the plugin that the installed package's entry point registers, nothing else.  A
consumer's test file there uses the PostgreSQL fixtures too, and ``pytest --fixtures``
lists them all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

FIXTURES = [
    "triofetch_fault_server",
    "triofetch_fault_server_session",
    "triofetch_sqlite_store",
    "triofetch_postgres_server",
    "triofetch_postgres_url",
    "triofetch_postgres_store",
]

CONSUMER = """
import pytest
import trio
import httpx

import triofetch
from triofetch.store import Store
from triofetch.testing import FaultServer, Status, check_store

pytestmark = pytest.mark.trio


async def test_sqlite_store(triofetch_sqlite_store: Store, triofetch_fault_server: FaultServer):
    server = triofetch_fault_server
    server.add_file("/a", b"alpha", faults=[Status(503)])
    unit = triofetch.DeclarativeUnit(
        "note", ("a",), {}, [triofetch.DeclarativeArtifact(server.url("/a"), "a.txt")]
    )
    async with triofetch.Downloader(retries=1, backoff=0.001) as dl:
        report = await triofetch.ContentUnitCreator(triofetch_sqlite_store, dl).run(
            [unit], repository="r"
        )
    assert report.ok and server.count("/a") == 2
    assert await check_store(triofetch_sqlite_store, units=[unit]) == []


@pytest.mark.skipif("not config.getoption('--with-postgres')")
async def test_postgres_store(triofetch_postgres_store: Store):
    await triofetch_postgres_store.create_repository("r")
    assert await triofetch_postgres_store.repositories() == ["r"]
    assert await check_store(triofetch_postgres_store) == []
"""

CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--with-postgres", action="store_true")
"""


def run_pytest(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def consumer(tmp_path: Path) -> Path:
    """An empty project holding the examples (and a test file of a consumer)."""
    for example in EXAMPLES.glob("testing_*.py"):
        shutil.copy(example, tmp_path / example.name)
    (tmp_path / "test_consumer.py").write_text(CONSUMER, encoding="utf-8")
    (tmp_path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    return tmp_path


def test_the_example_passes(consumer: Path) -> None:
    # a fixed seed: the drawn examples (and so the events counted below) are the same each run
    result = run_pytest(
        consumer,
        "testing_racing_creators.py",
        "-q",
        "--hypothesis-show-statistics",
        "--hypothesis-seed=17",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    # Hypothesis ran the race with cancellations and faults, not only the happy path
    assert "first run: cancelled" in result.stdout, result.stdout
    assert "run: failures" in result.stdout, result.stdout


def test_the_fault_server_and_check_store_examples_pass(consumer: Path) -> None:
    result = run_pytest(consumer, "testing_fault_server.py", "testing_check_store.py", "-q", "-s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    # what check_store says of the damaged store
    assert "corrupt_file - the file of artifact" in result.stdout
    assert "temp_file - a temp file was left behind" in result.stdout


def test_the_plugin_fixtures_in_a_consumer_project(consumer: Path) -> None:
    result = run_pytest(consumer, "test_consumer.py", "-q", "-rs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout


@pytest.mark.postgres
def test_the_postgres_fixtures_in_a_consumer_project(consumer: Path) -> None:
    """The plugin starts a PostgreSQL server of its own in that pytest process."""
    result = run_pytest(consumer, "test_consumer.py", "-q", "--with-postgres")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_pytest_lists_the_fixtures(consumer: Path) -> None:
    result = run_pytest(consumer, "--fixtures", "test_consumer.py")
    assert result.returncode == 0, result.stderr
    for name in FIXTURES:
        line = rf"^{name}( \[session scope\])? -- .*triofetch/testing/pytest_plugin\.py:\d+$"
        assert re.search(line, result.stdout, re.MULTILINE), (name, result.stdout)


def test_the_examples_are_shown_on_the_page() -> None:
    page = (EXAMPLES.parent / "testing.rst").read_text(encoding="utf-8")
    examples = sorted(p.name for p in EXAMPLES.glob("testing_*.py"))
    assert len(examples) == 3, examples
    for name in examples:
        assert f".. literalinclude:: examples/{name}" in page, name
