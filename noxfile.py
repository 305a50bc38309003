"""Task entry points: CI and people run the same sessions.

nox -s tests       the whole test suite (installs PostgreSQL when missing, as root), on the
                   Python running nox when it is >= 3.11, else the newest python3.N >= 3.11
                   on PATH; none: an error, never a skip
nox -s lint        ruff check + ruff format --check
nox -s typecheck   mypy --strict on src/
nox -s docs        Sphinx HTML docs into docs/_build/html
nox -s bench       benchmarks side by side with peers (curl, aria2c, aiohttp)
nox -s asks        the transport test suite on the asks transport
nox -s stress      the suite with a large Hypothesis profile (400 examples)
nox -s package     build the sdist and wheel, install the wheel without extras, check both

Another Python: ``nox -s tests --force-python 3.13`` runs the session on python3.13 (the
session tests-3.13, in its own virtualenv .nox/tests-3.13; .nox/tests stays as it is), and
so for any session and any python3.N on PATH; a missing one is an error.  Without it the
sessions run on the one Python picked by supported_python().
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
# A session whose Python is not there fails (nox's default skips it and exits 0 unless $CI
# is set): "tests passed" must never mean "no test ran".
nox.options.error_on_missing_interpreters = True

#: the oldest Python the project supports (pyproject.toml: requires-python = ">=3.11")
OLDEST = (3, 11)
#: the newest minor version looked for on PATH
NEWEST_MINOR = 20


def supported_python(
    current: tuple[int, int] = (sys.version_info.major, sys.version_info.minor),
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """The Python the sessions run on: the one running nox when the project supports it
    (``python -m pip install nox && nox -s tests`` tests on that Python), else the newest
    supported ``python3.N`` on PATH, else the oldest supported version, which nox then
    reports missing: an error (``error_on_missing_interpreters``), never a skip."""
    if current >= OLDEST:
        return f"{current[0]}.{current[1]}"
    for minor in range(NEWEST_MINOR, OLDEST[1] - 1, -1):
        if which(f"python3.{minor}"):
            return f"3.{minor}"
    return f"{OLDEST[0]}.{OLDEST[1]}"


PYTHON = supported_python()

#: pytest-xdist: a worker process per core, at most 4 (the tests are mostly waits on servers
#: and subprocesses; two workers on two cores take about two thirds of one's time)
_WORKERS = ["-n", "auto", "--maxprocesses=4"]

ASKS_DEPS = ["anyio>=4", "h11>=0.14", "async_generator>=1.10"]


def _ensure_postgres(session: nox.Session) -> None:
    """PostgreSQL's server binaries, nginx and tinyproxy are needed by the tests (each
    started on 127.0.0.1 by the fixtures); install them when missing."""
    subprocess.run(["bash", "scripts/ensure-postgres.sh"], check=True)
    subprocess.run(["bash", "scripts/ensure-test-servers.sh"], check=True)


def _install_asks(session: nox.Session) -> None:
    # asks 3.0.0 pins anyio~=3.0, which crashes on current Trio; it runs on anyio 4.
    session.install(*ASKS_DEPS)
    session.install("--no-deps", "asks>=3.0")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (SQLite and a real PostgreSQL started by the fixtures), in one
    worker process per core (at most 4: pytest-xdist; each worker starts its own servers).
    With arguments, pytest gets those instead (``nox -s tests -- tests/test_cli.py``)."""
    _ensure_postgres(session)
    session.install("-e", ".[test]")
    _install_asks(session)
    session.run("pytest", *(session.posargs or ["-q", *_WORKERS]))


@nox.session(python=PYTHON)
def asks(session: nox.Session) -> None:
    """Run the transport behaviour tests on the asks transport only."""
    session.install("-e", ".[test]")
    _install_asks(session)
    session.run("pytest", "-q", "-m", "asks", *session.posargs)


@nox.session(python=PYTHON)
def stress(session: nox.Session) -> None:
    """The suite (but the asks transport's tests) with many more examples of every property."""
    _ensure_postgres(session)
    session.install("-e", ".[test]")
    session.run(
        "pytest", "-q", *_WORKERS, "--hypothesis-profile=stress", "-m", "not asks", *session.posargs
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    paths = ["src", "tests", "benchmarks", "docs/examples", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/, and on docs/examples/ as a user's code (through the installed
    package's public names): every documented example, and typed_usage.py, a typed usage
    file of the public API (tests/test_docs_examples.py runs them all)."""
    # pytest and hypothesis: triofetch.testing's plugin and strategies, and their examples;
    # hypercorn (the serve extra): triofetch.serve
    session.install("-e", ".[postgres,serve]", "mypy", "pytest", "hypothesis")
    session.run("mypy", "--strict", "src/triofetch")
    session.run("mypy", "--strict", "docs/examples")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the HTML documentation and the man page triofetch(1) (from docs/cli.rst), a
    warning an error (-W) and nitpicky (-n, as docs/conf.py sets anyway): every
    cross-reference must resolve, without any network (no intersphinx)."""
    # pytest and hypothesis: autodoc imports triofetch.testing's plugin and strategies
    session.install("-e", ".[postgres,serve]", "sphinx>=7", "pytest", "hypothesis")
    flags = ["-W", "-n", "--keep-going"]
    session.run("sphinx-build", *flags, "-b", "html", "docs", "docs/_build/html")
    session.run("sphinx-build", *flags, "-b", "man", "docs", "docs/_build/man")


@nox.session(python=PYTHON)
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel, install the wheel (no extras, not editable) and check
    both as a packager and a first-time installer would (scripts/check_package.py)."""
    dist = session.create_tmp() + "/dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.install("build")
    session.run("python", "-m", "build", "--outdir", dist, ".")
    wheels = [name for name in os.listdir(dist) if name.endswith(".whl")]
    session.install("--force-reinstall", os.path.join(dist, *wheels))
    session.run("python", "scripts/check_package.py", dist)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, side by side with peers in the same run; prints tables of ratios."""
    _ensure_postgres(session)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        missing = [
            p
            for p, b in (("nginx-light", "nginx"), ("aria2", "aria2c"), ("curl", "curl"))
            if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")
        ]
        if missing:
            session.run("apt-get", "update", "-qq", external=True)
            session.run("apt-get", "install", "-y", "-qq", *missing, external=True)
    # serve: `triofetch serve` (hypercorn) beside nginx, `nox -s bench -- serve`
    session.install("-e", ".[postgres,serve]", "aiohttp", "psutil")
    session.run("python", "-m", "benchmarks", *session.posargs)
