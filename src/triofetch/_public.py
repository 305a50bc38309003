"""Public faces: the names a public module re-exports report that module as their home.

A class or function defined in a private module (``triofetch.downloader._core``) and
re-exported by a public one (``triofetch.downloader``) would otherwise show the private path
in reprs, tracebacks, pickles and the API reference.  This module owns only that renaming; it
imports nothing of triofetch.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from types import FunctionType

__all__ = ["publish"]


def publish(module: str, namespace: MutableMapping[str, object]) -> None:
    """Set ``__module__`` to *module* on every class and function of ``namespace["__all__"]``.

    Only names defined inside triofetch's private modules are touched (never a re-exported
    name of another library, nor one whose home is already public).  Methods of a class keep
    their own ``__module__``, which nothing reads.
    """
    names = namespace["__all__"]
    assert isinstance(names, Iterable)
    for name in names:
        value = namespace[name]
        home = getattr(value, "__module__", None)
        if not isinstance(home, str) or not home.startswith("triofetch."):
            continue
        if not any(part.startswith("_") for part in home.split(".")[1:]):
            continue  # defined in a public module: already right
        if isinstance(value, type | FunctionType):
            value.__module__ = module
