"""The public API as a type-checked user sees it: ``mypy --strict`` on code that only imports
``triofetch``, from outside the project (the installed package, as any user has it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import triofetch

USER_CODE = """
from pathlib import Path

import trio
import triofetch
from triofetch.errors import DownloadError
from triofetch.store import CommitOutcome, OpeningStore, Store


async def main() -> None:
    async with triofetch.Downloader(connections=4) as dl:
        plan: triofetch.FetchPlan = dl.plan(expected_size=3)
        try:
            result: triofetch.DownloadResult = await dl.fetch_planned("http://127.0.0.1:9/x", plan)
        except DownloadError as exc:
            print(exc.url)
        else:
            print(result.sha256)
    async with triofetch.open_store(root="data") as store:
        unit = triofetch.DeclarativeUnit("file", ("a",), {"relative_path": "a"}, [])
        creator = triofetch.ContentUnitCreator(store, triofetch.Downloader())
        report: triofetch.CreateReport = await creator.run([unit], repository="repo")
        print(report.version)
    outcome: CommitOutcome | None = None
    print(outcome)
    opening: OpeningStore = triofetch.open_store(root="data")  # (kept, then opened)
    opened: Store = await opening
    await opened.aclose()
    async with (
        triofetch.Downloader() as dl,
        triofetch.UnitDownloader(dl, temp_dir=Path("tmp")) as units,  # a path, not only a str
    ):
        async for done in units.download([unit]):
            if done.ok:  # narrows: DownloadedUnit has results, FailedUnit has error
                print(done.results)
            else:
                print(done.error.cause)


trio.run(main)
"""


def mypy_strict(directory: Path, cache: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on *code* as a user's module in *directory* (outside the project),
    with the run's mypy *cache*."""
    (directory / "user.py").write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), "user.py"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    """The numbers of the lines of the user's module that ``mypy`` reported errors on."""
    return [line.split(":")[1] for line in run.stdout.splitlines() if ": error:" in line]


@pytest.mark.parametrize("name", ["Downloader", "open_store", "StoreBusy", "CommitOutcome"])
def test_public_names_are_explicit_reexports(name: str) -> None:
    # what mypy --strict needs to see a name through the package's star import
    api = (Path(triofetch.__file__).parent / "_api.py").read_text(encoding="utf-8")
    assert f"{name} as {name}," in api


def test_mypy_strict_sees_every_public_name(tmp_path: Path, mypy_cache: Path) -> None:
    names = "\n".join(f"triofetch.{n}" for n in triofetch.__all__ if n != "__version__")
    run = mypy_strict(tmp_path, mypy_cache, USER_CODE + "\n" + names + "\n")
    assert run.returncode == 0, run.stdout + run.stderr


def test_downloader_options_are_the_downloaders_keyword_arguments() -> None:
    import inspect

    from triofetch.downloader import DownloaderOptions

    parameters = set(inspect.signature(triofetch.Downloader).parameters)
    assert set(DownloaderOptions.__annotations__) == parameters - {"temp_dir"}


def test_a_misspelt_option_is_a_type_error(tmp_path: Path, mypy_cache: Path) -> None:
    run = mypy_strict(
        tmp_path,
        mypy_cache,
        "import triofetch\n"
        "triofetch.fetch('http://127.0.0.1:9/x', retries=2, read_timeout=5.0)\n"
        "triofetch.fetch('http://127.0.0.1:9/x', retires=3)\n"
        "for done in triofetch.download_units([], temp_dir='t', connections=2, retires=3):\n"
        "    pass\n",
    )
    assert error_lines(run) == ["3", "4"], run.stdout
    assert all('"retires"' in e for e in run.stdout.splitlines() if ": error:" in e), run.stdout


def test_a_wrong_verify_is_a_type_error(tmp_path: Path, mypy_cache: Path) -> None:
    """``verify`` was typed ``bool | str | PathLike | object``: anything passed."""
    run = mypy_strict(
        tmp_path,
        mypy_cache,
        "import ssl\n"
        "import triofetch\n"
        "triofetch.Downloader(verify=ssl.create_default_context())\n"
        "triofetch.Downloader(verify='/etc/ssl/ca.pem')\n"
        "triofetch.Downloader(verify=5)\n"
        "triofetch.fetch('http://127.0.0.1:9/x', verify=5)\n",
    )
    assert error_lines(run) == ["5", "6"], run.stdout


EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_the_typed_usage_file_is_strict_clean_from_outside(
    tmp_path: Path, mypy_cache: Path
) -> None:
    # docs/examples/typed_usage.py (run by tests/test_docs_examples.py, and checked in place
    # by `nox -s typecheck`) as a user's module beside its helper, outside the project
    helper = (EXAMPLES / "_local_server.py").read_text(encoding="utf-8")
    (tmp_path / "_local_server.py").write_text(helper, encoding="utf-8")
    run = mypy_strict(
        tmp_path, mypy_cache, (EXAMPLES / "typed_usage.py").read_text(encoding="utf-8")
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_misused_outcomes_are_type_errors(tmp_path: Path, mypy_cache: Path) -> None:
    run = mypy_strict(
        tmp_path,
        mypy_cache,
        "import triofetch\n"
        "async def main(dl: triofetch.Downloader) -> None:\n"
        "    async with dl.fetch_many(['http://127.0.0.1:9/x']) as outcomes:\n"
        "        async for outcome in outcomes:\n"
        "            print(outcome.result)\n"  # 5: a FetchFailed has no result
        "            if not outcome.ok:\n"
        "                print(outcome.result)\n"  # 7: narrowed to FetchFailed
        "            else:\n"
        "                print(outcome.error)\n"  # 9: narrowed to FetchSucceeded
        "    triofetch.FetchRequest('http://127.0.0.1:9/x', {'sha256': '0' * 64})\n"  # 10
        "    for done in triofetch.download_units([]):\n"
        "        if done.ok:\n"
        "            print(done.error)\n",  # 13: a DownloadedUnit has no error
    )
    assert error_lines(run) == ["5", "7", "9", "10", "13"], run.stdout


def test_a_units_failure_is_typed_for_its_cause_and_key(tmp_path: Path, mypy_cache: Path) -> None:
    """``UnitFailed.unit_key`` was typed ``object`` and ``UnitFailure.error`` (and a
    ``failed`` event's ``error``) ``BaseException``, though each is documented as the unit's
    ``(type, natural_key)`` and a :class:`UnitFailed`: a user's ``failure.error.cause`` or
    ``unit_type, natural_key = exc.unit_key`` was a ``mypy --strict`` error."""
    run = mypy_strict(
        tmp_path,
        mypy_cache,
        "import triofetch\n"
        "def report(report: triofetch.CreateReport, event: triofetch.CreatorEvent) -> None:\n"
        "    for failure in report.failures:\n"
        "        cause: BaseException = failure.error.cause\n"
        "        unit_type, natural_key = failure.error.unit_key\n"
        "        first: str = natural_key[0] + unit_type\n"
        "        print(cause, first)\n"
        "    if event.error is not None:\n"
        "        print(event.error.cause)\n",
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_misspelt_cancel_point_kind_is_a_type_error(tmp_path: Path, mypy_cache: Path) -> None:
    """CancelPoint's ``kind`` and cancel_points' ``kinds`` were typed ``str``: a misspelt
    kind was found only when the test ran (a ValueError, or drawn by Hypothesis)."""
    run = mypy_strict(
        tmp_path,
        mypy_cache,
        "from triofetch.testing import CancelPoint, strategies\n"
        "CancelPoint('committed', 2)\n"
        "strategies.cancel_points(kinds=['downloading', 'committed'], none=False)\n"
        "CancelPoint('comitted')\n"
        "strategies.cancel_points(kinds=['downloadin'])\n",
    )
    assert error_lines(run) == ["4", "5"], run.stdout


def test_cancel_points_without_none_draws_points(tmp_path: Path, mypy_cache: Path) -> None:
    """``cancel_points(none=False)`` never draws None, and its type says so: a point's
    fields are used without a None check; with ``none=True`` (the default) they are not."""
    run = mypy_strict(
        tmp_path,
        mypy_cache,
        "from triofetch.testing import strategies\n"
        "from hypothesis import strategies as st\n"
        "def draw(data: st.DataObject) -> None:\n"
        "    point = data.draw(strategies.cancel_points(none=False))\n"
        "    print(point.kind, point.nth)\n"  # 5: fine
        "    maybe = data.draw(strategies.cancel_points())\n"
        "    print(maybe.kind)\n",  # 7: may be None
    )
    assert error_lines(run) == ["7"], run.stdout
