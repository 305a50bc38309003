"""The signatures the narrative docs spell out are the real ones.

A page that writes ``collect_garbage(*, wait=600)`` promises those parameters, in that
order, keyword-only where it says ``*``, with those defaults; a reader calls it that way.
A span naming one of the callables below is such a signature when it shows a ``*``, when
it is a definition-list term (a line of its own), or when it starts with a required
parameter; otherwise (``open_store(create=False)``) it is a call, not checked.  A
signature with no ``...`` is checked against :func:`inspect.signature`; annotations are
not written in the docs and not compared.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import triofetch

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: the name a page uses -> the callable it means
CALLABLES: dict[str, Callable[..., Any]] = {
    "open_store": triofetch.open_store,
    "repair": triofetch.repair,
    "FetchRequest": triofetch.FetchRequest,
    "fetch": triofetch.Downloader.fetch,  # as ``await dl.fetch(...)``
    "DeclarativeArtifact": triofetch.DeclarativeArtifact,
    "DeclarativeUnit": triofetch.DeclarativeUnit,
    "adopt_many": triofetch.ArtifactStorage.adopt_many,
    "verify": triofetch.ArtifactStorage.verify,
    "cleanup_temp": triofetch.ArtifactStorage.cleanup_temp,
    "commit_units": triofetch.Store.commit_units,
    "missing_artifacts": triofetch.Store.missing_artifacts,
    "new_version": triofetch.Store.new_version,
    "list_units": triofetch.Store.list_units,
    "stored_artifacts": triofetch.Store.stored_artifacts,
    "collect_garbage": triofetch.Store.collect_garbage,
}

#: ``name(...)`` in double back quotes, or a definition list's ``(...)`` after a class
_SPAN = re.compile(
    r"``(?:await )?(?:dl\.)?(\w+)\(([^`]*)\)``"
    r"|:class:`~triofetch\.(\w+)`\s*``\(([^`]*)\)``"
)


def documented_signatures() -> list[tuple[str, str, str]]:
    """(page, name, the parameters as written) for every signature of CALLABLES."""
    found = []
    for page in sorted(DOCS.glob("*.rst")):
        raw = page.read_text(encoding="utf-8")
        terms = {line.strip() for line in raw.splitlines()}
        for match in _SPAN.finditer(" ".join(raw.split())):
            name = match.group(1) or match.group(3)
            params = match.group(2) if match.group(1) else match.group(4)
            if name not in CALLABLES or "..." in params or "=" not in params:
                continue
            written = parse(params)
            first = actual(CALLABLES[name])[0]
            if (
                "*" in params
                or match.group(0) in terms
                or (written[0][1] == first[1] and written[0][2] is _NO_DEFAULT)
            ):
                found.append((page.name, name, params))
    return found


def parse(params: str) -> list[tuple[str, str, object]]:
    """``a, *, b=1`` as [(kind, name, default)]; kind "positional" or "keyword"."""
    tree = ast.parse(f"def f({params}): pass")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    out: list[tuple[str, str, object]] = []
    plain = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(plain) - len(args.defaults))
    defaults += list(args.defaults)
    for arg, default in zip(plain, defaults, strict=True):
        out.append(("positional", arg.arg, _value(default)))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append(("keyword", arg.arg, _value(kw_default)))
    return out


_NO_DEFAULT = object()


def _value(node: ast.expr | None) -> object:
    return _NO_DEFAULT if node is None else ast.literal_eval(node)


def actual(function: Callable[..., Any]) -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "self" or parameter.kind is parameter.VAR_KEYWORD:
            continue
        kind = "keyword" if parameter.kind is parameter.KEYWORD_ONLY else "positional"
        default = _NO_DEFAULT if parameter.default is parameter.empty else parameter.default
        out.append((kind, parameter.name, default))
    return out


def test_the_spans_are_found() -> None:
    names = {name for _, name, _ in documented_signatures()}
    assert {"open_store", "FetchRequest", "fetch", "collect_garbage", "DeclarativeUnit"} <= names


@pytest.mark.parametrize(
    ("page", "name", "params"),
    documented_signatures(),
    ids=lambda value: str(value)[:40],
)
def test_a_documented_signature_is_the_real_one(page: str, name: str, params: str) -> None:
    written = parse(params)
    real = actual(CALLABLES[name])
    # a page may stop before the last parameters, never leave one out in between
    assert written == real[: len(written)], f"{page}: {name}({params}) is {real}"
    # a keyword-only parameter must not be shown as positional
    assert [k for k, _, _ in written] == [k for k, _, _ in real[: len(written)]]
