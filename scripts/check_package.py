"""Check the built sdist and wheel as a packager and a first-time installer would.

    python scripts/check_package.py DIST_DIR

Run by ``nox -s package`` after it built DIST_DIR (one sdist, one wheel) and installed the
wheel, without extras and not editable, into the Python running this script.  Checks:

- the wheel holds ``py.typed`` and the license, and nothing of tests/, benchmarks/, docs/
  or the benchmarks' work files; the sdist holds the sources, tests and docs a build and a
  test run need;
- the installed package is the wheel (not the checkout), its version that of the metadata;
- ``python -W error -m triofetch --version`` and ``demo`` run clean (no warning, status 0)
  with only the required dependencies;
- the optional parts missing are refused with their install hint, not a traceback.

Exit status 1 with one line per problem, else 0.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(dist: Path) -> int:
    problems: list[str] = []
    (wheel,) = dist.glob("triofetch-*.whl")
    (sdist,) = dist.glob("triofetch-*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    if "triofetch/py.typed" not in names:
        problems.append(f"{wheel.name}: no triofetch/py.typed (users' type checkers ignore us)")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append(f"{wheel.name}: no LICENSE")
    for name in names:
        top = name.split("/", 1)[0]
        if top in ("tests", "benchmarks", "docs") or "_work" in name.split("/"):
            problems.append(f"{wheel.name}: carries {name}")
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    for needed in ("pyproject.toml", "LICENSE", "src/triofetch/py.typed", "tests/conftest.py"):
        if needed not in members:
            problems.append(f"{sdist.name}: lacks {needed}")

    import triofetch

    where = Path(triofetch.__file__).resolve()
    if where.is_relative_to(ROOT / "src"):
        problems.append(f"triofetch is imported from the checkout ({where}), not the wheel")
    if triofetch.__version__ != importlib.metadata.version("triofetch"):
        problems.append(
            f"__version__ {triofetch.__version__} != metadata "
            f"{importlib.metadata.version('triofetch')}"
        )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory() as cwd:  # (not the checkout: its src/ is not seen)
            return subprocess.run(
                [sys.executable, "-W", "error", "-m", "triofetch", *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )

    for args in (["--version"], ["--help"], ["demo", "--files", "20"]):
        done = run(*args)
        if done.returncode != 0 or "Warning" in done.stderr:
            problems.append(f"triofetch {' '.join(args)}: status {done.returncode}: {done.stderr}")
    # the optional parts, not installed: refused with the install hint
    done = run("verify", "--db", "postgresql://u@127.0.0.1:9/x")
    if done.returncode != 2 or "triofetch[postgres]" not in done.stderr:
        problems.append(f"--db postgresql without psycopg: {done.returncode} {done.stderr!r}")
    done = run("serve", "--root", "nowhere")
    if done.returncode != 2 or "triofetch[serve]" not in done.stderr:
        problems.append(f"serve without hypercorn: {done.returncode} {done.stderr!r}")

    for problem in problems:
        print(f"check_package: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_package: {wheel.name} and {sdist.name}: fine")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
