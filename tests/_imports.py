"""What a module of ``src/triofetch`` imports, read from its source (for the structure tests).

Every import counts, wherever it is written: at the top, inside a function, or under
``TYPE_CHECKING``.  Relative imports are resolved against the module's package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_name(path: Path) -> str:
    """The dotted name of the module at *path* (a file under ``src/``)."""
    parts = list(path.resolve().relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str | None = None) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import in *path* (the module *name*, by default
    the one its path says): ``import a.b`` gives ``("a.b", [])``, ``from X import y, z``
    gives ``(X, ["y", "z"])`` with relative imports resolved."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, [a.name for a in node.names if a.name != "*"]
