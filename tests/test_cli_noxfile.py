"""``nox -s tests`` on any supported Python (issue #19, point 7), checked without running nox:
the noxfile is imported with a stand-in ``nox`` module that records its sessions and options.

The end-to-end check is manual (it would run the whole suite inside the suite): on a
machine whose only Python >= 3.11 is, say, 3.12, ``python3.12 -m pip install nox && nox -s
tests`` runs the tests on 3.12; ``nox -s tests --force-python 3.99`` (an interpreter that
is not there) exits 1 with ``Session tests-3.99 failed: Python interpreter 3.99 not found``,
with or without ``$CI`` (before: ``skipped``, status 0, unless ``$CI`` was set).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

NOXFILE = Path(__file__).resolve().parent.parent / "noxfile.py"


class FakeNox(types.ModuleType):
    """What the noxfile uses of ``nox``: ``options``, ``session``, ``Session``."""

    def __init__(self) -> None:
        super().__init__("nox")
        self.options = types.SimpleNamespace()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.Session = object

    def session(self, **kwargs: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
        def register(func: Callable[..., None]) -> Callable[..., None]:
            self.sessions[func.__name__] = kwargs
            return func

        return register


@pytest.fixture
def noxfile(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, FakeNox]:
    fake = FakeNox()
    monkeypatch.setitem(sys.modules, "nox", fake)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", NOXFILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, fake


def test_the_tests_session_runs_on_the_python_running_nox(
    noxfile: tuple[types.ModuleType, FakeNox],
) -> None:
    module, fake = noxfile
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert sys.version_info >= (3, 11)  # the project's oldest, which this suite runs on
    assert fake.sessions["tests"]["python"] == running == module.PYTHON
    # a missing interpreter is an error, whatever $CI says
    assert fake.options.error_on_missing_interpreters is True


def test_another_supported_python_is_taken_as_it_is(
    noxfile: tuple[types.ModuleType, FakeNox],
) -> None:
    module, _fake = noxfile
    nothing: Callable[[str], str | None] = lambda name: None  # noqa: E731
    for current, expected in (((3, 11), "3.11"), ((3, 12), "3.12"), ((3, 14), "3.14")):
        assert module.supported_python(current, nothing) == expected


def test_nox_on_an_old_python_picks_the_newest_supported_one_on_path(
    noxfile: tuple[types.ModuleType, FakeNox],
) -> None:
    module, _fake = noxfile
    on_path = {"python3.12": "/usr/bin/python3.12", "python3.13": "/usr/bin/python3.13"}
    assert module.supported_python((3, 10), on_path.get) == "3.13"
    assert module.supported_python((3, 9), {"python3.11": "/x/python3.11"}.get) == "3.11"
    assert module.supported_python((3, 10), {"python3.10": "/usr/bin/python3.10"}.get) == "3.11"
    # none there: the oldest supported version, which nox then reports missing (an error)
    assert module.supported_python((3, 10), lambda name: None) == "3.11"


def test_every_test_on_the_asks_transport_is_marked_asks(request: pytest.FixtureRequest) -> None:
    """``nox -s stress`` does not install asks and leaves out ``-m "not asks"``: a test run on
    the asks transport without the ``asks`` mark failed there for want of the package (the
    seven tests of test_hostile_responses.py, 15 items, took ``"asks"`` unmarked).  Checked
    on the items of this run, as collected: nothing is collected again."""
    unmarked = [
        item.nodeid
        for item in request.session.items
        if hasattr(item, "callspec")
        and "asks" in item.callspec.params.values()
        and item.get_closest_marker("asks") is None
    ]
    assert unmarked == []
