"""Sphinx configuration for the triofetch documentation.

Build with ``nox -s docs`` or ``sphinx-build -W --keep-going -b html docs docs/_build/html``;
the man page ``triofetch(1)`` is built from the same ``cli.rst`` with ``-b man`` (into
``docs/_build/man``; ``nox -s docs`` builds both).
Nothing is fetched over the network: no intersphinx inventories.
"""

from __future__ import annotations

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
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Public names are re-exported from private modules: document them as triofetch.X.
add_module_names = True
python_use_unqualified_type_names = True

# Unresolvable references (types from trio, the standard library...) are not errors: no
# inventory of other projects is downloaded.
nitpicky = False

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
