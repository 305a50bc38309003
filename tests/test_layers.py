"""The layers of ``src/triofetch``: imports only go down, and form no cycle.

The layers are the ones ``docs/architecture.rst`` draws.  Every import counts, wherever it is
written: at the top of a module, inside a function (a lazy import), or under
``TYPE_CHECKING`` — a type-only import that runs up the layers still ties a lower module to
a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._imports import SRC, imports, module_name

PACKAGE = SRC / "triofetch"

#: module (or package prefix) -> layer; the longest matching prefix wins
LAYERS: dict[str, int] = {
    "triofetch._urls": 0,
    "triofetch._public": 0,
    "triofetch._version": 0,
    "triofetch._groups": 0,
    "triofetch._watch": 0,
    "triofetch._tempfiles": 0,
    "triofetch._durable": 0,
    "triofetch.errors": 1,
    "triofetch._digests": 2,
    "triofetch._model": 2,
    "triofetch._context": 2,
    "triofetch.transports": 3,
    "triofetch.declarative": 3,
    "triofetch.storage": 3,
    "triofetch.downloader": 4,
    "triofetch.store": 4,
    "triofetch.blocking": 5,
    "triofetch.units": 5,
    "triofetch.manifest": 5,
    "triofetch.creator": 6,
    "triofetch.repairing": 6,
    "triofetch": 7,  # the package's __init__: the lazy public face over everything
    "triofetch._api": 7,
    "triofetch.serve": 7,
    "triofetch._cli": 8,
    "triofetch.__main__": 8,
    # the testing kit: a consumer of the public API, as the command line is
    "triofetch.testing": 8,
}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The triofetch modules *path* imports: ``from package import module`` imports that
    module (the package's __init__ runs for any of its modules anyway), ``from module import
    name`` the module."""
    found: set[str] = set()
    for _, module, names in imports(path, name):
        targets = [f"{module}.{n}" if f"{module}.{n}" in known else module for n in names]
        for target in targets or [module]:
            if target in known and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[best]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    for name in modules():
        assert layer_of(name) >= 0, name


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
        # a package's __init__ shows the names of its own modules
        and not target.startswith(name + ".")
    ]
    assert upward == []


def test_imports_form_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_says_what_it_owns(name: str) -> None:
    path = modules()[name]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if path.name == "__init__.py" and path.stat().st_size == 0:
        pytest.fail(f"{name}: an empty __init__ (say what the package holds)")
    assert doc, f"{name} has no module docstring"


def _private_part(dotted: str) -> bool:
    """Whether a segment of *dotted* is private (``_x``; a dunder is not)."""
    return any(
        part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
        for part in dotted.split(".")
    )


def test_the_testing_kit_stands_on_the_public_api() -> None:
    """``triofetch.testing`` imports triofetch's public modules only (its own private
    modules aside): what it does, a consumer's test could do."""
    kit = PACKAGE / "testing"
    paths = sorted(kit.rglob("*.py"))
    assert len(paths) >= 5, kit
    private = [
        f"{path.name}:{line}: {dotted}"
        for path in paths
        for line, module, names in imports(path)
        for dotted in (module, *(f"{module}.{n}" for n in names))
        if (dotted == "triofetch" or dotted.startswith("triofetch."))
        and not dotted.startswith("triofetch.testing")
        and _private_part(dotted)
    ]
    assert private == []


def test_nothing_of_the_library_imports_the_testing_kit() -> None:
    users = [
        name
        for name, targets in graph().items()
        if not name.startswith("triofetch.testing")
        and any(t == "triofetch.testing" or t.startswith("triofetch.testing.") for t in targets)
    ]
    assert users == []
