"""Every public name has an entry in the API reference.

The reference (``docs/api.rst``, and ``docs/serve.rst`` for the content app) is written by
hand as a list of autodoc directives; a name added to a module's ``__all__`` and not to the
list is public but undocumented, and the narrative's ``:class:`` links to it lead nowhere
(Sphinx does not warn: ``nitpicky`` is off).  Read from the directives themselves, without
building the docs.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: the public modules whose ``__all__`` the reference covers
MODULES = ["triofetch", "triofetch.testing", "triofetch.testing.strategies", "triofetch.serve"]

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
    module = importlib.import_module(module_name)
    missing = sorted(set(f"{module_name}.{n}" for n in module.__all__) - documented())
    assert missing == [], f"public but not in the API reference: {', '.join(missing)}"


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
