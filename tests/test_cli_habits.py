"""The command line's everyday habits (issue #19): ``-q`` and ``-v`` on every command, end to
end as subprocesses; each command's own usage on a usage error and ``triofetch help``, which
answer before anything runs, from ``main()`` in process (the same environment, the same
output: tests/_cli_helpers.py, run_cli_in_process)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests._cli_helpers import publish, run_cli, run_cli_in_process
from triofetch.testing import FaultServer, Status

COMMANDS = ["sync", "list", "export", "verify", "versions", "prune", "gc", "repair", "serve"]
COMMANDS += ["demo", "completion", "help"]
FILES = {"a.txt": b"alpha\n", "dir/b.bin": b"b" * 3000}


def usage_head(text: str, command: str) -> str:
    """The start of the usage line of *command*, up to its first option after -h."""
    match = re.search(rf"usage: triofetch {command} (\[-h\] \[-q \| -v\])", text)
    assert match is not None, text
    return match.group(1)


# -- -q/-v and each command's own usage ------------------------------------------------------


def test_quiet_and_verbose_in_the_same_place_of_every_usage() -> None:
    for command in COMMANDS:
        result = run_cli_in_process(command, "--help")
        assert result.code == 0, result
        assert usage_head(result.out, command) == "[-h] [-q | -v]"
        assert "-q, --quiet" in result.out and "-v, --verbose" in result.out
    top = run_cli_in_process("--help")
    assert top.code == 0 and top.out.startswith("usage: triofetch [-h] [-q | -v] [--version]")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_prints_the_commands_usage(command: str, tmp_path: Path) -> None:
    result = run_cli_in_process(command, "--no-such-option", cwd=tmp_path)
    assert result.code == 2, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines[0].startswith(f"usage: triofetch {command} [-h] [-q | -v]"), result
    # the command's own error: a missing required option, or the unknown one
    assert lines[-1].startswith(f"triofetch {command}: error: "), result
    assert "Traceback" not in result.err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_option_once_the_command_is_complete(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for argv in (
        ["list", "--repository", "r", "--root", str(root), "--bogus"],
        ["--bogus", "list", "--repository", "r", "--root", str(root)],
        ["list", "--repository", "r", "--root", str(root), "extra"],
    ):
        result = run_cli_in_process(*argv)
        assert result.code == 2, result
        assert result.err.startswith("usage: triofetch list [-h] [-q | -v]"), result
        assert "triofetch list: error: unrecognized arguments: " in result.err
    assert not root.exists()


def test_quiet_and_verbose_together_is_a_usage_error(tmp_path: Path) -> None:
    for argv in (["list", "-q", "-v"], ["-q", "list", "-v"], ["-vv", "list", "--quiet"]):
        result = run_cli_in_process(*argv, "--repository", "r", "--root", tmp_path / "none")
        assert result.code == 2, result
        assert result.err.startswith("usage: triofetch list"), result
        assert re.search(r"not allowed with argument|cannot be used together", result.err)
    assert not (tmp_path / "none").exists()


def test_help_command() -> None:
    for command in COMMANDS:
        helped = run_cli_in_process("help", command)
        assert helped.code == 0, helped
        assert helped.out == run_cli_in_process(command, "--help").out
        assert helped.err == ""
    top = run_cli_in_process("help")
    assert top.code == 0 and top.out == run_cli_in_process("--help").out
    assert "help" in top.out and "show the help of a command" in top.out
    unknown = run_cli_in_process("help", "frobnicate")
    assert unknown.code == 2 and unknown.out == ""
    assert unknown.err.startswith("usage: triofetch help")
    assert "unknown command 'frobnicate'" in unknown.err


# -- what -q leaves out, what -v adds --------------------------------------------------------


def test_quiet_prints_errors_and_results_only(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    root = tmp_path / "root"
    synced = run_cli("sync", url, "--root", root, "--repository", "r", "-q")
    assert (synced.code, synced.out, synced.err) == (0, "", ""), synced
    # before the command, as -v
    again = run_cli("-q", "sync", url, "--root", root, "--repository", "r")
    assert (again.code, again.out, again.err) == (0, "", ""), again
    for argv in (
        ["verify"],
        ["prune", "--repository", "r", "--keep", "1"],
        ["gc"],
        ["repair"],
        ["export", "--repository", "r", str(tmp_path / "out")],
    ):
        quiet = run_cli(*argv, "--root", root, "-q")
        assert (quiet.code, quiet.out, quiet.err) == (0, "", ""), (argv, quiet)
        loud = run_cli(*argv, "--root", root)
        assert loud.code == 0 and loud.out != "", (argv, loud)
    assert (tmp_path / "out" / "dir" / "b.bin").read_bytes() == FILES["dir/b.bin"]
    # the results asked for are still printed: list's rows (not its count line), JSON
    listed = run_cli("list", "--root", root, "--repository", "r", "-q")
    assert listed.code == 0 and listed.err == "", listed
    assert [line.split()[-1] for line in listed.out.splitlines()] == sorted(FILES)
    assert "2 files" in run_cli("list", "--root", root, "--repository", "r").err
    versions = run_cli("versions", "--root", root, "--repository", "r", "-q")
    assert versions.code == 0 and "complete" in versions.out and versions.err == ""
    as_json = run_cli("sync", url, "--root", root, "--repository", "r", "-q", "--json")
    assert as_json.code == 0 and as_json.json()["units"]["existing"] == 2 and as_json.err == ""
    # config's rows are its result (-q printed nothing at all); its note is not
    config = run_cli("config", "--root", root, "-q")
    assert config.code == 0 and config.err == "", config
    assert config.out.splitlines() == run_cli("config", "--root", root).out.splitlines()
    assert any(line.startswith("root ") for line in config.out.splitlines()), config


def test_quiet_still_prints_the_errors(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES, faults={"a.txt": [Status(404)]})
    root = tmp_path / "root"
    failed = run_cli("sync", url, "--root", root, "--repository", "r", "-q", "--retries", "0")
    assert failed.code == 1 and failed.out == "", failed
    assert failed.err.splitlines() == [
        line for line in failed.err.splitlines() if line.startswith("triofetch: failed: a.txt: ")
    ]
    assert len(failed.err.splitlines()) == 1
    missing = run_cli("-q", "verify", "--root", tmp_path / "nothing")
    assert missing.code == 2 and missing.out == ""
    assert missing.err == f"triofetch: error: no triofetch store at {tmp_path / 'nothing'}\n"


def test_verbose_before_and_after_the_command_add_up(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = publish(http_server, FILES)
    after = run_cli("sync", url, "--root", tmp_path / "a", "--repository", "r", "-v")
    assert after.code == 0 and "triofetch.cli INFO: reading the manifest" in after.err, after
    assert " DEBUG: " not in after.err
    both = run_cli("-v", "sync", url, "--root", tmp_path / "b", "--repository", "r", "-v")
    assert both.code == 0 and "triofetch.downloader DEBUG: transport" in both.err, both
    assert "triofetch.http" not in both.err  # -vv, not -vvv
