"""Shell completion (issue #19, point 6), end to end: ``triofetch completion SHELL`` prints a
script generated from the command line's own parser, which bash loads and completes with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests._cli_helpers import run_cli

#: complete the last word of each line with the loaded script (a bash function per line)
_BASH = r"""
source "$1"
spec=$(complete -p triofetch) || exit 3
fn=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
try() {
  COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
  "$fn" triofetch "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
  echo "${COMPREPLY[*]}"
}
try triofetch sy
try triofetch -q ver
try triofetch sync --rep
try triofetch sync --policy ""
try triofetch list --j
try triofetch export --no-
try triofetch help ex
try triofetch completion ""
"""


def completion(shell: str, tmp_path: Path) -> Path:
    result = run_cli("completion", shell)
    assert result.code == 0 and result.err == "", result
    script = tmp_path / f"triofetch.{shell}"
    script.write_text(result.out, encoding="utf-8")
    return script


def test_bash_loads_the_script_and_completes_commands_options_and_choices(
    tmp_path: Path,
) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    script = completion("bash", tmp_path)
    done = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", _BASH, "bash", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.splitlines() == [
        "sync",
        "verify versions",
        "--repository",
        "immediate on_demand streamed",
        "--json",
        "--no-fetch",
        "export",
        "bash zsh fish tcsh",
    ]


@pytest.mark.parametrize("shell", ["zsh", "fish", "tcsh"])
def test_the_other_shells_get_a_script_of_every_command(shell: str, tmp_path: Path) -> None:
    script = completion(shell, tmp_path).read_text(encoding="utf-8")
    # (options are written --name in zsh's script, -l name in fish's, name in tcsh's)
    for word in ("sync", "export", "verify", "repository", "quiet", "json", "on_demand"):
        assert word in script, (shell, word)
    binary = shutil.which(shell)
    if binary is not None and shell in ("zsh", "fish"):  # their own syntax check, when there
        checked = subprocess.run([binary, "-n", str(tmp_path / f"triofetch.{shell}")],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
        assert checked.returncode == 0, checked


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = run_cli("completion", "powershell")
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("usage: triofetch completion [-h] [-q | -v] SHELL")
    assert "invalid choice: 'powershell'" in result.err
