"""The command line grammar (argparse).

Owns the commands, options, their help and the checks argparse can make of one value
(integers, sizes, seconds); it imports nothing of the library but its version, and must
not check what only the library can judge (a CA file, a URL's reachability).
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from .. import __version__

__all__ = ["COMMANDS", "Parser", "UsageError", "build_parser", "subparsers"]

#: the commands, in the order of the top-level help
COMMANDS = (
    "sync",
    "list",
    "export",
    "verify",
    "versions",
    "prune",
    "gc",
    "repair",
    "serve",
    "demo",
    "completion",
    "config",
    "help",
)


class UsageError(Exception):
    """A usage error found by *parser* (the command's own parser for a command's options)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are raised (:class:`UsageError`), not printed:
    the command line prints them, with the usage of the parser that found them, and the JSON
    error object with ``--json``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command of *parser* (built by :func:`build_parser`)."""
    for action in parser._actions:  # argparse keeps no public list of them
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


VERBOSE_HELP = "log to stderr: -v info (retries...), -vv debug, -vvv every HTTP request too"
QUIET_HELP = (
    "print errors only: no progress bars, notes or summaries (the results asked for, "
    "such as list's rows or --json, are still printed)"
)


def _verbosity(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``-q/--quiet`` and ``-v/--verbose``, one or the other, in the same place of every
    usage line (right after ``-h``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", dest=f"{prefix}quiet", help=QUIET_HELP)
    group.add_argument(
        "-v", "--verbose", action="count", default=0, dest=f"{prefix}verbose", help=VERBOSE_HELP
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw progress bars on stderr (default: when stderr is a terminal and not -q)",
    )


DESCRIPTION = """\
Mirror file repositories (Pulp's PULP_MANIFEST) into a local store, every file complete or
absent.  Run 'triofetch demo' to see it work, 'triofetch COMMAND --help' for a command."""

EXIT_CODES = """\
exit status: 0 done; 1 some files/units failed (listed on stderr), the rest is kept;
2 usage error, unreachable or malformed manifest, store that cannot be opened;
130 interrupted (Ctrl-C), 143 terminated (SIGTERM): what was committed stays, nothing
half-written; 141 stdout closed by its reader (| head); 70 internal error (a bug)."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    """A number of seconds >= 0 (finite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value


def _positive_number(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


_BYTE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(text: str) -> int:
    """A number of bytes >= 1: digits, optionally followed by K, M, G or T (powers of 1024,
    case-insensitive, an optional trailing 'B' or 'iB': 64M, 64MiB, 1g)."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    digits = raw.rstrip("KMGT")
    suffix = raw[len(digits) :]
    if not (digits.isascii() and digits.isdigit()) or suffix not in _BYTE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes (e.g. 1048576, 64M, 1G), got {text!r}"
        )
    value = int(digits) * _BYTE_SUFFIXES[suffix]
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of bytes >= 1, got {text!r}")
    return value


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); port 0 picks
    a free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"write an IPv6 address in brackets: [{host}]:PORT")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port from 0 to 65535, got {text!r}"
        )
    return host or "127.0.0.1", int(port_text)


def build_parser() -> argparse.ArgumentParser:
    # -q/-v before the command (dests top_quiet, top_verbose) and after it (quiet, verbose):
    # the command line adds them up (see _main)
    top = Parser(add_help=False)
    _verbosity(top, "top_")
    common = Parser(add_help=False)
    _verbosity(common)
    # common, and the config file: every command that reads settings (not completion, help)
    configured = Parser(add_help=False)
    _verbosity(configured)
    configured.add_argument(
        "--config",
        metavar="FILE",
        help="read settings from this TOML file (default: "
        "$XDG_CONFIG_HOME/triofetch/config.toml, if it exists); flags and environment "
        "variables win over it",
    )

    store = Parser(add_help=False)
    store.add_argument(
        "--root",
        metavar="DIR",
        help="the store: SQLite database and artifact storage "
        "(default: $TRIOFETCH_ROOT, else ./triofetch-data)",
    )
    store.add_argument(
        "--db",
        metavar="URL",
        help="database URL instead of the SQLite file under --root (postgresql://...)",
    )
    store.add_argument(
        "--db-connect-timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="give up on a PostgreSQL server that does not answer within about SECONDS "
        "(default 10; a refused connection fails at once)",
    )

    # the options of the commands that download (sync, repair)
    fetching = Parser(add_help=False)
    fetching.add_argument(
        "--connections",
        type=_positive,
        metavar="N",
        help="at most N requests in flight (default 16)",
    )
    fetching.add_argument(
        "--retries",
        type=_non_negative,
        metavar="N",
        help="retries after the first attempt of each file (default 3)",
    )
    # time bounds (see docs/downloader.rst, "Time bounds"); not given: the Downloader's
    # defaults, which the help texts name
    fetching.add_argument(
        "--speed-limit",
        type=_non_negative,
        metavar="BYTES",
        help="a file arriving slower than BYTES/s on average over --speed-time fails "
        "(retried); 0: no lowest speed (default 1000)",
    )
    fetching.add_argument(
        "--speed-time",
        type=_positive_seconds,
        metavar="SECONDS",
        help="the window of --speed-limit (default 30)",
    )
    fetching.add_argument(
        "--max-time",
        type=_seconds,
        metavar="SECONDS",
        help="each file may take at most SECONDS, retries included; 0: no limit (default 0)",
    )
    fetching.add_argument(
        "--max-retry-after",
        type=_seconds,
        metavar="SECONDS",
        help="wait at most SECONDS when a server asks to retry later (Retry-After); 0: "
        "ignore Retry-After and back off as usual (default 60)",
    )

    # how the commands that download reach a server (sync, repair, export, serve's
    # upstream): the library's options; secrets only from a file or the environment
    upstream = Parser(add_help=False)
    upstream.add_argument(
        "--ca-cert",
        metavar="FILE",
        help="trust this CA bundle (PEM) for https instead of the system's; "
        "SSL_CERT_FILE / SSL_CERT_DIR are honoured otherwise",
    )
    upstream.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="send this header with every request (repeatable); credentials headers "
        "(Authorization, Proxy-Authorization, Cookie) are refused here: see "
        "--bearer-token-file and --header-file",
    )
    upstream.add_argument(
        "--header-file",
        action="append",
        metavar="FILE",
        help="send the headers of FILE ('Name: value' lines; # comments), credentials "
        "headers included (repeatable)",
    )
    upstream.add_argument(
        "--bearer-token-file",
        metavar="FILE",
        help="send 'Authorization: Bearer TOKEN' with the token in FILE (read again when "
        "a server answers 401); default: $TRIOFETCH_BEARER_TOKEN",
    )
    upstream.add_argument(
        "--client-cert",
        metavar="FILE",
        help="TLS client certificate (PEM; with its key unless --client-key)",
    )
    upstream.add_argument(
        "--client-key", metavar="FILE", help="the private key of --client-cert (PEM)"
    )
    upstream.add_argument(
        "--rate-limit",
        type=_positive_number,
        metavar="N",
        help="start at most N requests per second (default: no limit)",
    )
    upstream.add_argument(
        "--proxy",
        metavar="URL",
        help="send every request through this proxy (http://, https://, socks5://), "
        "instead of what HTTP(S)_PROXY, ALL_PROXY and NO_PROXY say; a password: in those "
        "variables, not here",
    )

    parser = Parser(
        prog="triofetch",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        parents=[top],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"triofetch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sync = commands.add_parser(
        "sync",
        parents=[configured, store, fetching, upstream],
        help="mirror a repository into the store (a new repository version)",
        description="Fetch the manifest at SOURCE, validate all of it, then download every "
        "file that is not stored yet and record it; each file is complete or absent.  A new "
        "repository version is made when every file succeeded and something changed.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument(
        "source",
        metavar="SOURCE",
        help="URL of the PULP_MANIFEST (http://, https://, file://, or a local path); "
        "credentials in the URL are used as HTTP basic auth and never printed",
    )
    sync.add_argument("--repository", required=True, metavar="NAME", help="repository name")
    sync.add_argument(
        "--policy",
        choices=["immediate", "on_demand", "streamed"],
        default="immediate",
        help="immediate: download now (default); on_demand: record where files are, "
        "download nothing ('triofetch serve' fetches and stores a file when first asked "
        "for); streamed: as on_demand, but 'serve' streams files and never stores them",
    )
    sync.add_argument(
        "--per-host",
        type=_positive,
        metavar="N",
        help="at most N requests in flight to one host (default: --connections)",
    )
    sync.add_argument(
        "--slice-size",
        type=_positive,
        default=500,
        metavar="N",
        help="units looked up and processed together (default 500)",
    )
    sync.add_argument(
        "--mirror",
        action="store_true",
        help="the new version holds exactly the manifest's files (default: it keeps the "
        "previous version's files as well); an empty manifest is refused",
    )
    sync.add_argument(
        "--allow-empty",
        action="store_true",
        help="with --mirror, accept a manifest listing no file (an empty version)",
    )
    sync.add_argument(
        "--transport",
        choices=["auto", "trio", "httpx"],
        default="auto",
        help="HTTP client: 'trio' (fastest; HTTP proxies too), 'httpx' (also SOCKS and "
        "https:// proxies); 'auto' (default) picks trio unless such a proxy is configured",
    )
    sync.add_argument(
        "--retain",
        type=_positive,
        metavar="N",
        help="after the sync, keep only the N latest complete versions of the repository "
        "(older ones are deleted; their files stay until 'triofetch gc')",
    )
    sync.add_argument(
        "--ignore-free-space",
        action="store_true",
        help="download even when the files not stored yet need more than the free space "
        "under --root (by default such a sync is refused before downloading, exit 2)",
    )
    sync.add_argument("--json", action="store_true", help="print one JSON object at the end")
    _progress_option(sync)
    sync.add_argument(
        "--max-manifest-size",
        type=byte_size,
        metavar="BYTES",
        help="refuse a manifest longer than BYTES (suffixes K, M, G, T: powers of 1024; "
        "default 256M: triofetch.DEFAULT_MAX_MANIFEST_SIZE)",
    )

    lister = commands.add_parser(
        "list",
        parents=[configured, store],
        help="list the files of a repository version",
        description="List the files of a repository version (default: the latest).",
    )
    lister.add_argument("--repository", required=True, metavar="NAME")
    lister.add_argument(
        "--version", type=_positive, metavar="N", help="the version (default: the latest)"
    )
    lister.add_argument(
        "--json",
        action="store_true",
        help='print a JSON array of {"relative_path", "sha256", "size", "downloaded"}',
    )

    export = commands.add_parser(
        "export",
        parents=[configured, store, upstream],
        help="write a repository version's files and a PULP_MANIFEST under DEST",
        description="Write the files of a repository version (default: the latest) under "
        "DEST at their relative paths (hard links when DEST is on the store's filesystem, "
        "else copies; hard-linked files share the store's read-only permissions) and a "
        "PULP_MANIFEST.  Nothing is written outside DEST: symbolic links inside DEST are "
        "replaced, never followed.",
    )
    export.add_argument("--repository", required=True, metavar="NAME")
    export.add_argument(
        "--version", type=_positive, metavar="N", help="the version (default: the latest)"
    )
    export.add_argument(
        "--no-fetch",
        action="store_true",
        help="do not download the files of on-demand units: list them and exit 1",
    )
    export.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the summary"
    )
    export.add_argument("dest", metavar="DEST", help="the directory to write (created if needed)")

    verify = commands.add_parser(
        "verify",
        parents=[configured, store],
        help="re-hash the stored files; list the corrupted and missing ones, and orphans",
        description="Check the store both ways, reading only: every file the database "
        "records (of any version) must be there with its size and sha256, each one re-hashed "
        "(an error otherwise); a file no record expects is an orphan, listed but no error "
        "('triofetch gc' removes it).  Exit 0 when there is no error, 1 listing the errors.",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")

    versions = commands.add_parser(
        "versions",
        parents=[configured, store],
        help="list the versions of a repository",
        description="List the versions of a repository: number, when it was created, how "
        "many units it holds, and whether it is complete.",
    )
    versions.add_argument("--repository", required=True, metavar="NAME")
    versions.add_argument(
        "--json",
        action="store_true",
        help='print a JSON array of {"number", "created", "units", "complete"}',
    )

    prune = commands.add_parser(
        "prune",
        parents=[configured, store],
        help="delete all but the N latest complete versions of a repository",
        description="Delete the complete versions of a repository older than its N latest "
        "ones.  Units and files stay in the store until 'triofetch gc' removes what no "
        "version holds.",
    )
    prune.add_argument("--repository", required=True, metavar="NAME")
    prune.add_argument(
        "--keep", type=_positive, required=True, metavar="N", help="complete versions to keep"
    )
    prune.add_argument("--json", action="store_true", help="print one JSON object")

    gc = commands.add_parser(
        "gc",
        parents=[configured, store],
        help="remove what no version holds: units, artifacts, files, abandoned versions",
        description="Remove the incomplete versions whose writer is gone (a sync killed "
        "with kill -9), the units no version holds, the artifacts no unit holds and their "
        "files, files of the storage without a record, and temp files of processes that are "
        "gone; report what was freed.  Waits for running syncs to finish first: what a sync "
        "is about to commit is never removed.",
    )
    gc.add_argument(
        "--wait",
        type=_seconds,
        default=600,
        metavar="SECONDS",
        help="how long to wait for running syncs before giving up (default 600; exit 1)",
    )
    gc.add_argument("--json", action="store_true", help="print one JSON object")

    repair = commands.add_parser(
        "repair",
        parents=[configured, store, fetching, upstream],
        help="re-hash stored files; re-download the missing or corrupted ones",
        description="Hash every stored file (or those of one repository's versions), and "
        "download again the missing or corrupted ones from the URLs they came from, "
        "replacing each file atomically.  Exit 0 when everything is intact or repaired, 1 "
        "listing the files that could not be repaired.",
    )
    repair.add_argument(
        "--repository", metavar="NAME", help="only the files of this repository's versions"
    )
    repair.add_argument("--json", action="store_true", help="print one JSON object")

    serve = commands.add_parser(
        "serve",
        parents=[configured, store, upstream],
        help="serve the store's repositories over HTTP (files, PULP_MANIFEST, index pages)",
        description="Serve the complete repository versions of the store over HTTP, "
        "read-only, in the foreground: /NAME/ is the latest version of repository NAME, "
        "/NAME/versions/N/ version N; each file at its relative path, a PULP_MANIFEST that "
        "another triofetch (or Pulp) can sync from, and index pages.  Ctrl-C or SIGTERM "
        "stops it (exit 0).  Needs hypercorn: pip install 'triofetch[serve]'.",
    )
    serve.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="the address to listen on (default 127.0.0.1:8080; port 0: a free port, shown "
        "in the startup line); another host than a loopback one exposes the store",
    )
    serve.add_argument(
        "--repository",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="serve only these repositories (default: all of the store's)",
    )
    serve.add_argument(
        "--json",
        action="store_true",
        help='once listening, print {"url", "root", "db", "repositories"} on stdout '
        "instead of the startup line",
    )

    demo = commands.add_parser(
        "demo",
        parents=[configured],
        help="sync a generated sample repository from a local server, and show what happened",
        description="Generate a sample file repository, serve it on 127.0.0.1, sync it into "
        "a temporary store with progress bars, sync it again, export and verify it.  Needs no "
        "network.",
    )
    demo.add_argument(
        "--files", type=_positive, default=200, metavar="N", help="files to generate (200)"
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (store, export) and print where it is",
    )
    _progress_option(demo)
    demo.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the steps"
    )

    completion = commands.add_parser(
        "completion",
        parents=[common],
        help="print the shell completion script (bash, zsh, fish, tcsh)",
        description="Print the completion script of triofetch for SHELL, generated from "
        'its options.  bash: eval "$(triofetch completion bash)" in ~/.bashrc, or save it '
        "as ~/.local/share/bash-completion/completions/triofetch; zsh: save it as _triofetch "
        "in a directory of $fpath; fish: save it as ~/.config/fish/completions/triofetch.fish.",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "fish", "tcsh"], metavar="SHELL")

    config = commands.add_parser(
        "config",
        parents=[configured, store, fetching, upstream],
        help="print the effective settings and where each comes from",
        description="Print the settings a command would use (its flags given here, the "
        "TRIOFETCH_* environment variables, the config file, the defaults: the first one "
        "that sets it wins) and where each came from: flag, env, file or default.  "
        "Secrets (a database password, the bearer token) are shown as ***.",
    )
    config.add_argument(
        "--json",
        action="store_true",
        help='print {"config_file", "settings": {KEY: {"value", "source", "from"}}}',
    )

    helper = commands.add_parser(
        "help",
        parents=[common],
        help="show the help of a command (triofetch help sync)",
        description="Show the help of COMMAND (the same as 'triofetch COMMAND --help'), or "
        "of triofetch itself.",
    )
    helper.add_argument("topic", nargs="?", metavar="COMMAND", help="the command")
    return parser
