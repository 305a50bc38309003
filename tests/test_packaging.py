"""What the sdist and wheel carry besides the code (pyproject.toml, hatchling's defaults).

Building them takes seconds and a build backend: that is for a packaging session (build the
sdist and wheel, install the wheel in a fresh venv, check its files); these are the cheap
checks of the tree the build reads."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_the_metadata_names_is_shipped() -> None:
    """pyproject.toml said MIT and no file held the license's text: the wheel and sdist
    carried no license (hatchling ships ``LICENSE*`` files; MIT asks for its notice to go
    with every copy)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "The above copyright notice and this permission notice shall be included" in text
