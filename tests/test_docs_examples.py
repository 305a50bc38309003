"""Every Python example of the documentation runs, and leaves nothing behind (#17).

- Each ``docs/examples/*.py`` with a ``main`` runs as a user would run it, in a process of
  its own, with ``TMPDIR`` a fresh empty directory and a fresh working directory: it must
  exit with status 0, print what the docs say it prints, and leave ``TMPDIR`` empty (the
  documented snippets used to leave one ``tf-*.part`` per download there).
- No page of ``docs/`` nor ``README.md`` holds an inline Python example any more: each is a
  ``literalinclude`` of such a file, so every example a reader sees is code that runs.
- Every ``literalinclude`` names a file that exists, and the markers and objects it cuts by.

``docs/examples/_*.py`` are helpers, not examples; ``docs/examples/testing_*.py`` belong to
the testing kit's own tests.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"

#: what each example must print (regular expressions searched in its stdout)
EXPECTED_OUTPUT: dict[str, list[str]] = {
    "fetch_example.py": [
        r"downloaded 17000 bytes from http://127\.0\.0\.1:\d+/hello\.txt",
        r"refused: sha256 expected 00000000\.\.\., got \w{8}\.\.\. after 2 attempts",
    ],
    "creator_example.py": [
        r"version 1 holds \[\('pkg-0',\), \('pkg-1',\), \('pkg-2',\), \('pkg-3',\), \('pkg-4',\)\]",
        r"units: 5 total, 5 new, 0 existing, 0 failed; artifacts: 6 downloaded, 4 reused",
        r"version 1 \(unchanged, latest: 1\); units: 5 total, 0 new, 5 existing",
    ],
    "quickstart.py": [r"^3 new, 0 existing, 0 failed$", r"^0 new, 3 existing, 0 failed$"],
    "serve_example.py": [
        r"^serving at http://127\.0\.0\.1:\d+$",
        r"^stored\.tar 3000 bytes$",
        r"^on-demand\.tar 5000 bytes$",
        r"^still missing: \[\]$",
    ],
    "fetch_many_example.py": [
        r"^got a\.txt 1500 bytes$",
        r"^got b\.txt 3200 bytes$",
        r"^got c\.txt 4500 bytes$",
        r"^failed http://127\.0\.0\.1:\d+/a\.txt - DigestMismatch$",
        r"^failed http://127\.0\.0\.1:\d+/missing\.txt - HTTPStatusError$",
        r"^kept: a\.txt, b\.txt, c\.txt$",
        r"^kept the first 2 of 20; files left: 2$",
    ],
    "nursery_example.py": [r"^10 files kept, 1 failed:$", r"HTTP 404 .*/not-there\.bin"],
    "where_files_go.py": [r"^kept: a\.txt b\.txt - removed: tf-", r"^left in temp_dir: incoming$"],
    "json_reader_example.py": [
        r"^version 1: 2 packages created$",
        r"^refused: http://127\.0\.0\.1:\d+/broken\.json: bad package: 'version'$",
    ],
    "units_example.py": [
        r"^\('package', \('zsh', '5\.9-1'\)\) failed: server answered HTTP 404",
        r"^kept: bash\.tar, bash\.tar\.sig$",
    ],
    "creator_policies_example.py": [
        r"^on_demand: 3 units, 0 downloaded$",
        r"^fill_missing: 3 downloaded$",
        r"^mirror: version 2, 1 new, 2 existing, 1 downloaded$",
    ],
    "store_example.py": [
        r"^adopted \w{12} 1400 bytes$",
        r"^repaired .*/artifacts/\w\w/\w\w/\w{64} size 7, expected 1400$",
        r"^4 \S+ \S+ 3 True$",
        r"^1 1 1400$",
        r"^gc refused while a writer holds the lease$",
    ],
    "workers_example.py": [
        r"^version [12]: \d+ new, \d+ existing, 0 failed$",
        r"^20 files stored$",
    ],
    "custom_transport.py": [
        r"^http://127\.0\.0\.1:9/a\.bin -> 5000 bytes$",
        r"^http://127\.0\.0\.1:9/c\.bin -> server answered HTTP 404 Not Found",
        r"^MemoryTransport transport, 3 requests$",
    ],
    "typed_usage.py": [
        r"^fetch_many: 2 ok, 1 failed$",
        r"^caught: ConnectionFailed, DownloadTimeout, InvalidDigest WrongContext$",
        r"^download_units: 2 units$",
        r"^creator: version 1 with 2 new units$",
    ],
}


def _has_main(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def _examples() -> list[Path]:
    return sorted(
        path
        for path in EXAMPLES.glob("*.py")
        if not path.name.startswith(("_", "testing_")) and _has_main(path)
    )


def run_example(path: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run *path* as ``python path`` with a fresh empty TMPDIR and working directory; the
    TMPDIR must be empty afterwards."""
    temp, cwd = tmp_path / "tmpdir", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = f"{path.name} exited {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.returncode == 0, report
    assert "Traceback" not in run.stderr, report
    left = sorted(str(p.relative_to(temp)) for p in temp.rglob("*"))
    assert left == [], f"{path.name} left files in TMPDIR: {left}\n{report}"
    return run


def test_the_examples_are_found() -> None:
    names = {path.name for path in _examples()}
    assert set(EXPECTED_OUTPUT) <= names, set(EXPECTED_OUTPUT) - names


@pytest.mark.parametrize("path", _examples(), ids=lambda path: path.name)
def test_example_runs_and_leaves_nothing(path: Path, tmp_path: Path) -> None:
    run = run_example(path, tmp_path)
    for pattern in EXPECTED_OUTPUT.get(path.name, []):
        assert re.search(pattern, run.stdout, re.MULTILINE), (
            f"{path.name} did not print {pattern!r}:\n{run.stdout}"
        )


@pytest.mark.postgres
def test_workers_example_on_postgresql(postgres_dsn: str, tmp_path: Path) -> None:
    run = run_example(EXAMPLES / "workers_example.py", tmp_path, postgres_dsn)
    assert re.search(r"^20 files stored$", run.stdout, re.MULTILINE), run.stdout
    assert len(re.findall(r"^version [12]: ", run.stdout, re.MULTILINE)) == 2, run.stdout


# -- no inline Python in the docs ----------------------------------------------------------

PYTHON_LANGUAGES = {"python", "python3", "py", "py3", "pycon", "ipython", "ipython3"}
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(code-block|code|sourcecode)::\s*(\S*)\s*$")
_HIGHLIGHT = re.compile(r"^\s*\.\.\s+highlight::\s*(\S+)\s*$")


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # 1-based line of the directive or of the paragraph ending in '::'
    kind: str  # "code-block:: python", "::", ...
    text: str


def _indented_block(lines: list[str], start: int, indent: int) -> str:
    """The lines after *start* indented deeper than *indent* (blank lines included)."""
    body: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return textwrap.dedent("\n".join(body)).strip("\n")


def rst_code_blocks(path: Path) -> list[Block]:
    """The code blocks of an rst file: directives with their language, and ``::`` literal
    blocks (highlighted with the ``highlight`` language, Python by default)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    default = "python"
    for i, line in enumerate(lines):
        highlight = _HIGHLIGHT.match(line)
        if highlight:
            default = highlight.group(1)
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            indent = len(directive.group(1))
            language = directive.group(3) or default
            body = _indented_block(lines, i, indent)
            # drop the directive's options (":linenos:" and the like)
            body = "\n".join(b for b in body.splitlines() if not re.match(r"^:\w[\w-]*:", b))
            blocks.append(Block(path, i + 1, f"{directive.group(2)}:: {language}", body))
            continue
        stripped = line.rstrip()
        if stripped.endswith("::") and not stripped.lstrip().startswith(".."):
            indent = len(line) - len(line.lstrip())
            blocks.append(Block(path, i + 1, f":: ({default})", _indented_block(lines, i, indent)))
    return blocks


def markdown_code_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", lines[i])
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
                end += 1
            text = "\n".join(lines[i + 1 : end])
            blocks.append(Block(path, i + 1, f"```{fence.group(2)}", text))
            i = end
        i += 1
    return blocks


_PYTHON_NODES = (
    ast.Call,
    ast.Assign,
    ast.AnnAssign,
    ast.AugAssign,
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.With,
    ast.AsyncWith,
    ast.For,
    ast.AsyncFor,
    ast.Await,
)


def looks_like_python(text: str) -> bool:
    """Whether *text* parses as Python (``await`` and ``async with`` allowed at the top)
    and does something: calls, assigns, imports, defines, loops or awaits.  Directory
    trees, console sessions, manifests and error messages do not parse."""
    if not text.strip():
        return False
    try:
        tree = ast.parse("async def _():\n" + textwrap.indent(text, "    ") + "\n")
    except SyntaxError:
        return False
    wrapper = tree.body[0]
    assert isinstance(wrapper, ast.AsyncFunctionDef)
    return any(isinstance(node, _PYTHON_NODES) for stmt in wrapper.body for node in ast.walk(stmt))


def _inline_python(block: Block) -> bool:
    kind = block.kind
    if kind.startswith("```"):
        language = kind[3:].lower()
        return language in PYTHON_LANGUAGES or (not language and looks_like_python(block.text))
    language = kind.split("::", 1)[1].strip(" ()").lower()
    if kind.startswith("::"):
        return language in PYTHON_LANGUAGES | {"default"} and looks_like_python(block.text)
    return language in PYTHON_LANGUAGES


def code_blocks(path: Path) -> list[Block]:
    return markdown_code_blocks(path) if path.suffix == ".md" else rst_code_blocks(path)


def _doc_files() -> list[Path]:
    rst = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.relative_to(DOCS).parts)
    return [*rst, ROOT / "README.md"]


def test_the_block_finder_sees_each_kind() -> None:
    assert looks_like_python("async with open_store(root=root) as store:\n    ...")
    assert looks_like_python("store = await open_store(root='data')")
    assert not looks_like_python("hello.txt,5891b5b522d5df086d0ff0b110fbd9d21bb,6")
    assert not looks_like_python("<root>/artifacts/ab/cd/abcd1234...   one file per sha256")
    assert not looks_like_python("TriofetchError\n ├── InvalidInput")
    assert not looks_like_python("143")


def test_no_inline_python_example_in_the_docs() -> None:
    found = [
        f"{block.file.relative_to(ROOT)}:{block.line}: an inline Python example "
        f"({block.kind}) — put it in docs/examples/<name>.py, with a main() that runs it "
        f"(this module runs every one), and "
        + ("link to it" if path.suffix == ".md" else "show it with '.. literalinclude::'")
        for path in _doc_files()
        for block in code_blocks(path)
        if _inline_python(block)
    ]
    assert not found, "\n".join(found)


# -- literalinclude targets ----------------------------------------------------------------

_INCLUDE = re.compile(r"^(\s*)\.\.\s+literalinclude::\s*(\S+)\s*$")


@dataclass(frozen=True)
class Include:
    file: Path
    line: int
    target: Path
    options: dict[str, str]


def literal_includes() -> list[Include]:
    includes: list[Include] = []
    for path in _doc_files():
        if path.suffix != ".rst":
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = _INCLUDE.match(line)
            if not match:
                continue
            options: dict[str, str] = {}
            for option in lines[i + 1 :]:
                found = re.match(r"^\s+:([\w-]+):\s?(.*)$", option)
                if not found:
                    break
                options[found.group(1)] = found.group(2)
            name = match.group(2)
            target = (DOCS / name.lstrip("/")) if name.startswith("/") else path.parent / name
            includes.append(Include(path, i + 1, target.resolve(), options))
    return includes


def test_the_docs_include_the_examples() -> None:
    included = {include.target for include in literal_includes()}
    assert (EXAMPLES / "fetch_many_example.py").resolve() in included
    assert len(included) >= 10, included


@pytest.mark.parametrize(
    "include",
    literal_includes(),
    ids=lambda include: f"{include.file.name}:{include.line}",
)
def test_literalinclude_target_exists(include: Include) -> None:
    where = f"{include.file.relative_to(ROOT)}:{include.line}"
    assert include.target.is_file(), f"{where}: no such file {include.target}"
    text = include.target.read_text(encoding="utf-8")
    for option in ("start-after", "end-before", "start-at", "end-at"):
        if option in include.options:
            marker = include.options[option]
            assert marker in text, f"{where}: {option} {marker!r} not in {include.target.name}"
    if include.target.suffix == ".py":
        relative = include.target.relative_to(ROOT)
        assert include.target.parent == EXAMPLES.resolve(), (
            f"{where}: a Python example must be a file of docs/examples/ (run by this test "
            f"module), not {relative}"
        )
        runs = _has_main(include.target) or include.target.name.startswith("testing_")
        assert runs, f"{where}: {relative} has no main(), so the test suite does not run it"
        if "pyobject" in include.options:
            names = {
                node.name
                for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            }
            wanted = include.options["pyobject"].split(".")[-1]
            assert wanted in names, f"{where}: no {wanted!r} in {relative}"
