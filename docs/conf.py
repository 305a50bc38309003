"""Sphinx configuration for the triofetch documentation.

Build with ``nox -s docs`` or ``sphinx-build -W --keep-going -b html docs docs/_build/html``;
the man page ``triofetch(1)`` is built from the same ``cli.rst`` with ``-b man`` (into
``docs/_build/man``; ``nox -s docs`` builds both).
Nothing is fetched over the network: no intersphinx inventories.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.typing import restify

import triofetch

project = "triofetch"
author = "the triofetch authors"
copyright = "the triofetch authors"
release = triofetch.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Google-style docstrings (Args:, Returns:, Raises:, Attributes:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# No "members" here: Sphinx lets a default "members": True override every directive's own
# ``:members: a, b`` list (the list then filters nothing).  Each directive in api.rst and
# serve.rst says what it renders: ``:members:`` (every documented public member) or a list.
autodoc_default_options = {
    "show-inheritance": True,
}
# Public names are re-exported from private modules: document them as triofetch.X.
add_module_names = True
python_use_unqualified_type_names = True

# Every cross-reference must resolve (``-W`` makes a broken one an error), in every build:
# ``nox -s docs``, the tests' builds and a plain ``sphinx-build``.  No inventory of another
# project is downloaded (intersphinx would need the network), so the names of Python's
# standard library and of the libraries triofetch builds on, which the type hints and a few
# docstrings mention, cannot resolve: they are listed in ``nitpick_ignore`` below, and
# nothing else is.  A name of triofetch's own that does not resolve is an error to fix.
nitpicky = True

nitpick_ignore = [
    # -- Python's standard library (docs.python.org's inventory is not fetched) ---------
    *(
        ("py:class", f"collections.abc.{name}")
        for name in (
            "AsyncGenerator",
            "AsyncIterable",
            "AsyncIterator",
            "Awaitable",
            "Callable",
            "Iterable",
            "Iterator",
            "Mapping",
            "Sequence",
        )
    ),
    ("py:class", "abc.ABC"),
    ("py:class", "contextlib.AbstractAsyncContextManager"),
    ("py:class", "datetime.datetime"),
    ("py:class", "enum.StrEnum"),
    ("py:class", "os.PathLike"),
    ("py:class", "pathlib.Path"),
    ("py:class", "ssl.SSLContext"),
    ("py:data", "errno.ENOSPC"),
    ("py:mod", "logging"),
    # the same names as the source writes them, where the type is not qualified (napoleon's
    # ``Attributes:`` read from the class's string annotations; names imported under
    # ``TYPE_CHECKING`` only): pathlib.Path, io.BufferedReader, and trio's async file
    ("py:class", "Path"),
    ("py:class", "BufferedReader"),
    ("py:class", "AsyncIOWrapper"),
    # -- Trio ------------------------------------------------------------------------------
    ("py:class", "trio.CancelScope"),
    ("py:class", "trio.CapacityLimiter"),
    ("py:class", "trio.MemoryReceiveChannel"),
    ("py:class", "trio.TaskStatus"),
    ("py:func", "trio.to_thread.run_sync"),
    # -- Hypothesis (triofetch.testing.strategies returns its strategies) ----------------
    ("py:class", "hypothesis.strategies.SearchStrategy"),
    # -- pytest (the fixtures of triofetch.testing.pytest_plugin take its request) -------
    ("py:class", "pytest.FixtureRequest"),
    # -- triofetch's own type variable: BodyConsumer[T] and Downloader.stream's return type
    # (``_T_co`` in the code, written ``T`` here); a type variable has no entry to link to
    ("py:class", "T"),
]

templates_path: list[str] = []
exclude_patterns = ["_build", "examples"]
html_static_path = ["_static"]
html_theme = "alabaster"
html_theme_options = {
    "description": "Download content units with Trio: every unit complete or absent.",
    "fixed_sidebar": True,
}
html_title = f"triofetch {release}"

# The man page triofetch(1): the command line reference (cli.rst), the same source as the
# HTML page.  ``sphinx-build -b man docs docs/_build/man`` writes docs/_build/man/triofetch.1
# (view it with ``man -l docs/_build/man/triofetch.1``).
man_pages = [
    (
        "cli",
        "triofetch",
        "mirror file repositories into a local store, every file complete or absent",
        [author],
        1,
    )
]
man_show_urls = False


# -- Private types in the type hints -------------------------------------------------------
#
# A few signatures name a type of a private module: a protocol stating what a parameter
# needs, a type variable, the store's database backend.  The reference names the public type
# instead (whose values are what callers pass), or no type where none is public; it never
# shows (nor links to) a private name.

#: the private types the type hints name, by their full names, and what the reference writes
#: instead (None: the type is left out)
PRIVATE_TYPES: dict[str, str | None] = {
    "triofetch.downloader._core._T_co": "T",  # BodyConsumer's type variable
    "triofetch.errors._Keyed": "~triofetch.UnitKey",  # what an error needs of a unit key
    "triofetch.storage._DownloadResultLike": "~triofetch.DownloadResult",
    "triofetch.store._dialect.Dialect": None,  # Store(backend): made by open_store() only
}

_TYPE_NAME = re.compile(r"~?[A-Za-z_][\w.]*")


def _public_type(text: str) -> str | None:
    """*text*, a type hint as autodoc writes it, with each private type replaced (None: one
    had no public name)."""
    replaced: list[bool] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group().lstrip("~")
        for private, public in PRIVATE_TYPES.items():
            if name == private or private.endswith("." + name):
                if public is None:
                    replaced.append(False)
                    return ""
                return public
        return match.group()

    result = _TYPE_NAME.sub(substitute, text)
    return None if replaced else result


def _public_type_fields(app: Sphinx, domain: str, objtype: str, content: nodes.Element) -> None:
    """The ``type`` and ``rtype`` fields autodoc adds from the type hints
    (``autodoc_typehints = "description"``), with the private types of PRIVATE_TYPES
    replaced: run after autodoc's own handler of the event, before the fields become links."""
    if domain != "py":
        return
    for field_list in content.findall(nodes.field_list):
        for field in list(field_list.children):
            name = field[0].astext()
            if not (name.startswith("type ") or name == "rtype"):
                continue
            body = field[1]
            text = body.astext()
            public = _public_type(text)
            if public is None:
                field_list.remove(field)
            elif public != text:
                body.children = [nodes.paragraph("", public)]


def _public_bases(app: Sphinx, name: str, obj: object, options: object, bases: list[Any]) -> None:
    """The bases shown (``show-inheritance``) without private ones: a private class is
    replaced by its own bases, a private type variable as in PRIVATE_TYPES."""
    shown: list[Any] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if isinstance(base, type) and _is_private(base):
            pending[:0] = base.__bases__
        elif typing.get_args(base):
            text = restify(base, mode="smart")
            shown.append(_PRIVATE_XREF.sub(lambda m: _public_xref(m.group(1)), text))
        elif base not in shown:
            shown.append(base)
    bases[:] = shown or [object]


_PRIVATE_XREF = re.compile(r":py:\w+:`~?([\w.]+)`")


def _public_xref(target: str) -> str:
    public = PRIVATE_TYPES.get(target, target)
    return f":py:class:`{public}`" if public else ""


def _is_private(cls: type) -> bool:
    return cls.__name__.startswith("_") or any(
        part.startswith("_") for part in cls.__module__.split(".")
    )


def setup(app: Sphinx) -> None:
    # (after autodoc's own handler, priority 500, has added the fields)
    app.connect("object-description-transform", _public_type_fields, priority=600)
    app.connect("autodoc-process-bases", _public_bases)
