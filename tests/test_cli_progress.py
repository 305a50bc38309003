"""Progress bars on stderr (issue #19), end to end: ``triofetch sync`` run with stderr a
pseudo-terminal and stdout a file draws its bars on the terminal and writes only its result
to the file; ``--progress``/``--no-progress`` force either way, ``-q`` means none."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests._cli_helpers import publish, run_cli, run_cli_on_a_terminal
from triofetch.testing import FaultServer, Slow

FILES = {f"dir/f{i}.bin": os.urandom(2000 + i) for i in range(12)}
#: rich's bar and the labels of the two bars
BAR = "━"


def bars_drawn(text: str) -> bool:
    return BAR in text and "files" in text and "download" in text and "12/12" in text


def test_bars_on_a_terminal_stderr_and_clean_json_on_stdout(
    http_server: FaultServer, tmp_path: Path
) -> None:
    # slow files: the bars are refreshed while the sync runs, not only drawn at its end
    url = publish(http_server, FILES, faults={p: [Slow(0.05)] for p in list(FILES)[:3]})
    out = tmp_path / "out.json"
    result = run_cli_on_a_terminal(
        "sync", url, "--root", tmp_path / "root", "--repository", "r", "--json", stdout=out
    )
    assert result.code == 0, result
    assert bars_drawn(result.err), result
    assert "\x1b[" in result.err  # drawn as on a terminal
    report = json.loads(out.read_text(encoding="utf-8"))  # nothing but the JSON object
    assert report["units"]["new"] == 12 and report["version"] == 1
    assert BAR not in result.out and "\x1b" not in result.out


def test_the_human_summary_goes_to_stdout_the_bars_to_stderr(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = publish(http_server, FILES)
    out = tmp_path / "out.txt"
    result = run_cli_on_a_terminal(
        "sync", url, "--root", tmp_path / "root", "--repository", "r", stdout=out
    )
    assert result.code == 0, result
    assert bars_drawn(result.err), result
    lines = result.out.splitlines()
    assert len(lines) == 4, result
    assert lines[0].startswith("syncing 12 files (") and "into repository 'r'" in lines[0]
    assert lines[1:3] == [
        "repository 'r': version 1 created",
        "files: 12 total, 12 new, 0 already present, 0 failed",
    ]
    assert lines[3].startswith("downloaded: 12 files, ")


def test_no_progress_and_quiet_on_a_terminal(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    out = tmp_path / "out.json"
    plain = run_cli_on_a_terminal(
        "sync", url, "--root", tmp_path / "a", "--repository", "r", "--no-progress", stdout=out
    )
    assert plain.code == 0, plain
    assert plain.err == "", plain
    assert plain.out.startswith("syncing 12 files (")
    assert "repository 'r': version 1 created\n" in plain.out
    quiet = run_cli_on_a_terminal(
        "sync", url, "--root", tmp_path / "b", "--repository", "r", "-q", "--json", stdout=out
    )
    assert quiet.code == 0 and quiet.err == "", quiet
    assert json.loads(quiet.out)["units"]["new"] == 12


def test_progress_forced_without_a_terminal(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    forced = run_cli("sync", url, "--root", tmp_path / "a", "--repository", "r", "--progress",
                     "--json")  # fmt: skip
    assert forced.code == 0, forced
    assert bars_drawn(forced.err), forced
    assert forced.json()["units"]["new"] == 12
    # by default, no terminal: no bars, and the summary alone on stdout
    default = run_cli("sync", url, "--root", tmp_path / "b", "--repository", "r")
    assert default.code == 0 and BAR not in default.err + default.out, default
    assert default.err == "" and default.out.startswith("syncing 12 files (")


def test_demo_draws_its_bars_on_stderr(tmp_path: Path) -> None:
    out = tmp_path / "demo.txt"
    demo = run_cli_on_a_terminal("demo", "--files", "30", stdout=out)
    assert demo.code == 0, demo
    assert BAR in demo.err and "30/30" in demo.err, demo
    assert BAR not in demo.out and "identical to the source: yes" in demo.out
