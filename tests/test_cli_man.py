"""The man page triofetch(1) (#19, point 6): built from docs/cli.rst, the same source as the
HTML reference, by Sphinx's ``man`` builder; ``nox -s docs`` builds both.

The configuration and the docs session are checked, and the page itself is built (Sphinx is
in the test extra) and rendered with ``man -l`` when ``man`` is there.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.test_cli_noxfile import FakeNox, noxfile  # noqa: F401  (a fixture)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_man_page_is_configured_from_the_cli_reference() -> None:
    conf = runpy.run_path(str(DOCS / "conf.py"))
    pages = conf["man_pages"]
    assert len(pages) == 1
    source, name, description, authors, section = pages[0]
    assert (source, name, section) == ("cli", "triofetch", 1)
    assert (DOCS / f"{source}.rst").exists()
    assert description and authors


class _Recorder:
    """A stand-in ``nox.Session`` recording the commands a session runs."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, ...]] = []

    def install(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run(self, *args: str, **kwargs: Any) -> None:
        self.ran.append(args)


def test_nox_docs_builds_the_html_and_the_man_page(noxfile: Any) -> None:  # noqa: F811
    module, _fake = noxfile
    session = _Recorder()
    module.docs(session)
    builds = [args for args in session.ran if args[0] == "sphinx-build"]
    assert [(a[a.index("-b") + 1], a[-2], a[-1]) for a in builds] == [
        ("html", "docs", "docs/_build/html"),
        ("man", "docs", "docs/_build/man"),
    ]
    assert all("-W" in a and "-n" in a for a in builds)


def test_the_man_page_builds_and_documents_every_command(tmp_path: Path) -> None:
    # (sphinx is in the test extra: this runs in every test run, it is never skipped)
    out = tmp_path / "man"
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", "man", DOCS, out],
        check=True,
        timeout=300,
    )
    page = (out / "triofetch.1").read_text()
    assert '.TH "TRIOFETCH" "1"' in page
    for word in ("sync", "export", "serve", "config", "completion"):
        assert f"triofetch {word}" in page
    for word in (r"\-\-bearer\-token\-file", "TRIOFETCH_CONNECTIONS", "PGPASSWORD"):
        assert word in page
    if shutil.which("man"):
        shown = subprocess.run(
            ["man", "-l", out / "triofetch.1"],
            env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert "--bearer-token-file" in shown.replace("‐", "-")
