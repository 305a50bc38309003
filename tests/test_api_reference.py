"""Every public name has an entry in the API reference.

The reference (``docs/api.rst``, and ``docs/serve.rst`` for the content app) is written by
hand as a list of autodoc directives; a name added to a module's ``__all__`` and not to the
list is public but undocumented, and the narrative's ``:class:`` links to it lead nowhere
(Sphinx does not warn: ``nitpicky`` is off).  Read from the directives themselves, without
building the docs.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: the public modules whose ``__all__`` the reference covers
MODULES = [
    "triofetch",
    "triofetch.errors",
    "triofetch.declarative",
    "triofetch.transports",
    "triofetch.downloader",
    "triofetch.blocking",
    "triofetch.storage",
    "triofetch.store",
    "triofetch.units",
    "triofetch.manifest",
    "triofetch.creator",
    "triofetch.repairing",
    "triofetch.testing",
    "triofetch.testing.strategies",
    "triofetch.serve",
]

_DIRECTIVE = re.compile(
    r"^\.\. (module|currentmodule|automodule|autoclass|autoexception|autofunction|autodata"
    r"|py:data|py:class|py:function|py:exception)::\s*(\S+)\s*$"
)


def documented() -> set[str]:
    """The full names the reference has an entry for (``automodule`` with ``:members:``
    covering the module's ``__all__``)."""
    names: set[str] = set()
    for page in sorted(DOCS.glob("*.rst")):
        current = ""
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if match is None:
                continue
            kind, name = match.groups()
            if kind in ("module", "currentmodule"):
                current = name
            elif kind == "automodule":
                options = []
                for following in lines[i + 1 :]:
                    if not following.startswith("   :"):
                        break
                    options.append(following.strip())
                if ":members:" in options:
                    module = importlib.import_module(name)
                    names.update(f"{name}.{member}" for member in module.__all__)
            elif "." in name and name.startswith("triofetch"):
                names.add(name)
            else:
                names.add(f"{current}.{name}")
    return names


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_in_the_reference(module_name: str) -> None:
    """(A name re-exported by ``triofetch`` is documented once, as ``triofetch.X``.)"""
    import triofetch

    module = importlib.import_module(module_name)
    names = documented()
    missing = sorted(
        f"{module_name}.{n}"
        for n in module.__all__
        if f"{module_name}.{n}" not in names
        and not (
            n in triofetch.__all__
            and getattr(triofetch, n) is getattr(module, n)
            and f"triofetch.{n}" in names
        )
    )
    assert missing == [], f"public but not in the API reference: {', '.join(missing)}"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_reports_a_public_module(module_name: str) -> None:
    """A class or function of a public ``__all__`` names a public module as its
    ``__module__`` (docs/api.rst says so), not the private module that defines it."""
    module = importlib.import_module(module_name)
    private = []
    for name in module.__all__:
        value = getattr(module, name)
        home = getattr(value, "__module__", None)
        if not isinstance(value, type) and not inspect.isfunction(value):
            continue
        if isinstance(home, str) and any(
            part.startswith("_") for part in home.split(".")[1:] if not part.startswith("__")
        ):
            private.append(f"{name} ({home})")
    assert private == [], f"{module_name}: public names with a private home: {private}"


def test_the_creator_event_kinds_are_one_list() -> None:
    """CreatorEventKind (the type of CreatorEvent.kind) and the testing kit's
    CREATOR_EVENT_KINDS name the same kinds, in the order a unit meets them; and the docs
    spell out that type's values."""
    import typing

    import triofetch.testing

    kinds = typing.get_args(triofetch.CreatorEventKind)
    assert kinds == triofetch.testing.CREATOR_EVENT_KINDS
    assert kinds[0] == "seen" and set(kinds[-2:]) == {"committed", "failed"}
    documented = (Path(__file__).parent.parent / "docs" / "api.rst").read_text()
    assert ", ".join(f'"{kind}"' for kind in kinds).replace(" ", "") in documented.replace(
        " ", ""
    ).replace("\n", "")
