"""The API reference renders exactly the public API: every public name, nothing private.

The reference (``docs/api.rst``, and ``docs/serve.rst`` for the content app) is written by
hand as a list of autodoc directives, so what it shows is checked on what Sphinx renders,
not on what the directives say: the docs are built once for this module (Sphinx is in the
test extra; ``-W`` and conf.py's ``nitpicky``: a broken cross-reference fails the build)
and the doctrees are read.  A directive's ``:members: a, b`` list once filtered nothing
(conf.py's default ``members`` overrode it), and a class re-exported from a private module
once lost the attributes documented by ``#:`` comments (autodoc looks for them in the
public module): both are caught here.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from docutils import nodes
from sphinx import addnodes
from sphinx.pycode import ModuleAnalyzer

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
    "triofetch.testing.pytest_plugin",
    "triofetch.serve",
]

#: the pages holding the reference's autodoc directives
PAGES = ["api.rst", "serve.rst"]


def _private(dotted: str) -> bool:
    """A dotted name with a ``_``-prefixed part (``__version__`` and the like are not)."""
    return any(p.startswith("_") and not p.endswith("__") for p in dotted.split("."))


@dataclass(frozen=True)
class Entry:
    """One object the reference renders (a ``desc`` of the Python domain)."""

    module: str
    fullname: str  # inside the module: "Downloader.stream"
    objtype: str
    page: str

    @property
    def name(self) -> str:
        return f"{self.module}.{self.fullname}"


@dataclass(frozen=True)
class Rendered:
    entries: list[Entry]
    modules: set[str]  # the modules with an entry (``.. module::``, ``automodule``)
    links: list[tuple[str, str, str]]  # (page, role, target) of every cross-reference
    typed_twice: list[str]  # attributes with a type in their signature and a "Type" field

    @property
    def names(self) -> set[str]:
        return {e.name for e in self.entries}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    out = tmp_path_factory.mktemp("docs")
    doctrees = out / "doctrees"
    build = ["-b", "dummy", "-d", str(doctrees), str(DOCS), str(out / "dummy")]
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", *build],
        check=True,
        timeout=600,
    )
    entries: list[Entry] = []
    modules: set[str] = set()
    links: list[tuple[str, str, str]] = []
    typed_twice: list[str] = []
    for path in sorted(doctrees.glob("*.doctree")):
        tree = pickle.loads(path.read_bytes())
        for desc in tree.findall(addnodes.desc):
            if desc.get("domain") != "py":
                continue
            for signature in desc.findall(addnodes.desc_signature):
                if signature.parent is desc and signature.get("ids"):
                    entry = Entry(
                        signature["module"], signature["fullname"], desc["objtype"], path.stem
                    )
                    entries.append(entry)
                    annotated = any(
                        a.astext().lstrip().startswith(":")
                        for a in signature.findall(addnodes.desc_annotation)
                    )
                    fields = [
                        f[0].astext()
                        for f in desc.children[-1].findall(nodes.field)
                        if f.parent.parent is desc.children[-1]
                    ]
                    if annotated and "Type" in fields:
                        typed_twice.append(entry.name)
        for element in tree.findall(nodes.Element):  # (a module's target, merged into the
            # element after it by docutils)
            ids = element.get("ids", [])
            modules.update(i[len("module-") :] for i in ids if i.startswith("module-"))
        for xref in tree.findall(addnodes.pending_xref):
            if xref.get("refdomain") == "py":
                links.append((path.stem, xref["reftype"], xref["reftarget"]))
    return Rendered(entries, modules, links, typed_twice)


def test_the_build_is_nitpicky() -> None:
    """Every build is (conf.py, not a command-line flag): the one above, ``nox -s docs``'s.
    What may stay unresolved is other projects' names only, never triofetch's own."""
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert conf["nitpicky"] is True
    assert "sphinx.ext.intersphinx" not in conf["extensions"]  # (nothing is downloaded)
    own = [t for _, t in conf["nitpick_ignore"] if t.split(".")[0] == "triofetch"]
    assert own == []
    assert "members" not in conf["autodoc_default_options"]


def test_every_public_name_is_rendered(rendered: Rendered) -> None:
    """(A name re-exported by ``triofetch`` is rendered once, as ``triofetch.X``.)"""
    import triofetch

    missing = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        assert module_name in rendered.modules, f"no entry for the module {module_name}"
        for name in module.__all__:
            reexported = name in triofetch.__all__ and getattr(triofetch, name) is getattr(
                module, name
            )
            if f"{module_name}.{name}" not in rendered.names and not (
                reexported and f"triofetch.{name}" in rendered.names
            ):
                missing.append(f"{module_name}.{name}")
    assert missing == [], f"public but not in the API reference: {', '.join(missing)}"


def test_only_public_names_are_rendered(rendered: Rendered) -> None:
    """Each entry is a name of a public module's ``__all__``, or a public member of one;
    a module with an entry is a public module."""
    wrong = []
    for entry in rendered.entries:
        if _private(entry.name):
            wrong.append(f"{entry.name} (private)")
            continue
        top = entry.fullname.split(".")[0]
        if entry.module not in MODULES:
            wrong.append(f"{entry.name} (not in a public module)")
        elif top not in importlib.import_module(entry.module).__all__:
            wrong.append(f"{entry.name} (not in {entry.module}.__all__)")
    wrong += [f"module {m}" for m in sorted(rendered.modules) if m not in MODULES]
    assert wrong == []


def test_nothing_links_to_a_private_name(rendered: Rendered) -> None:
    """No cross-reference (a type hint, a base class, a docstring's role) names a private
    object: the reference writes the public type instead (conf.py's PRIVATE_TYPES)."""
    private = sorted({f"{page}: :{role}:`{target}`" for page, role, target in rendered.links})
    private = [link for link in private if _private(link.split("`")[1])]
    assert private == []


def _member_lists() -> Iterator[tuple[str, str, list[str] | None]]:
    """(page, class, listed members) of each autoclass/autoexception with ``:members:``
    (None: a bare ``:members:``, every documented public member)."""
    directive = re.compile(r"^\.\. (module|currentmodule|autoclass|autoexception)::\s*(\S+)")
    for page in PAGES:
        lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
        current = ""
        for i, line in enumerate(lines):
            match = directive.match(line)
            if match is None:
                continue
            kind, name = match.groups()
            if kind in ("module", "currentmodule"):
                current = name
                continue
            full = name if name.startswith("triofetch.") else f"{current}.{name}"
            for option in lines[i + 1 :]:
                if not option.startswith("   :"):
                    break
                if option.strip().startswith(":members:"):
                    listed = option.strip()[len(":members:") :].strip()
                    yield page, full, [m.strip() for m in listed.split(",")] if listed else None


def _docstring_attributes(cls: type) -> set[str]:
    """The names of the ``Attributes:`` section of *cls*'s docstring (napoleon renders
    each as an entry of the class)."""
    doc = inspect.getdoc(cls) or ""
    section = re.search(r"^Attributes:\n((?:    .*\n?|\n)*)", doc, re.MULTILINE)
    return set(re.findall(r"^    (\w+)\b", section.group(1), re.MULTILINE)) if section else set()


def _members_of(rendered: Rendered, full: str) -> dict[str, str]:
    return {
        e.name[len(full) + 1 :]: e.objtype
        for e in rendered.entries
        if e.name.startswith(full + ".") and "." not in e.name[len(full) + 1 :]
    }


def _resolve(full: str) -> type:
    module, _, name = full.rpartition(".")
    value = getattr(importlib.import_module(module), name)
    assert isinstance(value, type)
    return value


def test_a_members_list_is_what_is_rendered(rendered: Rendered) -> None:
    """A ``:members: a, b`` list renders each of a, b and no other member (but the
    attributes of the class docstring's ``Attributes:`` section, which are not members
    autodoc looks for)."""
    lists = [(page, full, listed) for page, full, listed in _member_lists() if listed]
    assert lists, "no :members: list left: this test checks nothing"
    wrong = []
    for page, full, listed in lists:
        shown = _members_of(rendered, full)
        wrong += [f"{page}: {full}.{m} is listed, not rendered" for m in listed if m not in shown]
        extra = set(shown) - set(listed) - _docstring_attributes(_resolve(full))
        wrong += [f"{page}: {full}.{m} is rendered, not listed" for m in sorted(extra)]
    assert wrong == []


def _comment_documented(cls: type) -> set[str]:
    """The public attributes of *cls* documented by a ``#:`` comment, in the module that
    defines it (not the public module its ``__module__`` names, where autodoc looks)."""
    homes = {cls.__module__} | {
        v.__module__ for v in vars(cls).values() if inspect.isfunction(v) and v.__module__
    }
    names: set[str] = set()
    for home in sorted(h for h in homes if h.startswith("triofetch")):
        analyzer = ModuleAnalyzer.for_module(home)
        analyzer.analyze()
        names |= {n for (ns, n) in analyzer.attr_docs if ns == cls.__qualname__}
    return {n for n in names if not n.startswith("_")}


def test_documented_attributes_are_rendered(rendered: Rendered) -> None:
    """Every ``#:``-documented public attribute of a class rendered with its members is
    rendered too.  (Sphinx finds ``#:`` comments only in the module ``__module__`` names:
    a class re-exported from a private module documents its attributes in its docstring's
    ``Attributes:`` section instead.)"""
    missing = []
    for page, full, listed in _member_lists():
        wanted = _comment_documented(_resolve(full))
        if listed is not None:
            wanted &= set(listed)
        shown = _members_of(rendered, full)
        missing += [f"{page}: {full}.{name}" for name in sorted(wanted - set(shown))]
    assert missing == [], f"documented but not rendered: {', '.join(missing)}"


def test_no_attribute_loses_its_description_to_a_type(rendered: Rendered) -> None:
    """napoleon reads the first line of an attribute's or a property's docstring (or ``#:``
    comment) as ``type: description`` when it has a colon outside ``code``: "A full disk:
    freeing space..." was rendered as "Type: A full disk", the type beside the real one
    autodoc puts in the signature."""
    assert rendered.typed_twice == []


def test_every_public_name_reports_a_public_module() -> None:
    """A class or function of a public ``__all__`` names a public module as its
    ``__module__`` (docs/api.rst says so), not the private module that defines it."""
    private = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            home = getattr(value, "__module__", None)
            if not isinstance(value, type) and not inspect.isfunction(value):
                continue
            if isinstance(home, str) and _private(home):
                private.append(f"{module_name}.{name} ({home})")
    assert private == [], f"public names with a private home: {private}"


def test_the_creator_event_kinds_are_one_list() -> None:
    """CreatorEventKind (the type of CreatorEvent.kind) and the testing kit's
    CREATOR_EVENT_KINDS name the same kinds, in the order a unit meets them; and the docs
    spell out that type's values."""
    import typing

    import triofetch.testing

    kinds = typing.get_args(triofetch.CreatorEventKind)
    assert kinds == triofetch.testing.CREATOR_EVENT_KINDS
    assert kinds[0] == "seen" and set(kinds[-2:]) == {"committed", "failed"}
    documented = (DOCS / "api.rst").read_text()
    assert ", ".join(f'"{kind}"' for kind in kinds).replace(" ", "") in documented.replace(
        " ", ""
    ).replace("\n", "")
