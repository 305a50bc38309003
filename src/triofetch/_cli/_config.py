"""Configuration: the settings of a command from its flags, the environment, a TOML file.

Owns the one precedence — flag > environment > config file > default — of the settings
people set per machine (the store, the downloader's options), the config file (``--config
FILE``, default ``$XDG_CONFIG_HOME/triofetch/config.toml``), its checks (an unknown key or a
value of the wrong type is a usage error naming the file, the key and what was expected),
and ``triofetch config``, which prints the effective settings and where each came from,
secrets redacted.  It fills the parsed arguments in place; the commands read them as flags.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import redact_url
from ._common import EXIT_OK, CLIError, absolute_path, emit_json, note
from ._parser import (
    _non_negative,
    _positive,
    _positive_number,
    _positive_seconds,
    _seconds,
)
from ._upstream import TOKEN_VARIABLE

__all__ = ["SETTINGS", "config_command", "configure", "default_config_path", "environment_variable"]


@dataclass(frozen=True)
class Setting:
    """One setting: its key in the config file (the flag without ``--``), its variable."""

    key: str
    env: str | None
    #: "text", "integer" or "number": what a TOML value must be
    kind: str
    #: the check of a value given as text (a variable; TOML numbers too, as text)
    parse: Callable[[str], Any] = str
    default: Any = None
    #: how it is shown: "url" has its password replaced by ***
    shown: str = "plain"

    @property
    def dest(self) -> str:
        return self.key.replace("-", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting("root", "TRIOFETCH_ROOT", "text", default="./triofetch-data"),
    Setting("db", "TRIOFETCH_DB", "text", shown="url"),
    Setting("db-connect-timeout", "TRIOFETCH_DB_CONNECT_TIMEOUT", "number", _positive_seconds),
    Setting("connections", "TRIOFETCH_CONNECTIONS", "integer", _positive, 16),
    Setting("retries", "TRIOFETCH_RETRIES", "integer", _non_negative, 3),
    Setting("speed-limit", "TRIOFETCH_SPEED_LIMIT", "integer", _non_negative),
    Setting("speed-time", "TRIOFETCH_SPEED_TIME", "number", _positive_seconds),
    Setting("max-time", "TRIOFETCH_MAX_TIME", "number", _seconds),
    Setting("max-retry-after", "TRIOFETCH_MAX_RETRY_AFTER", "number", _seconds),
    Setting("ca-cert", "TRIOFETCH_CA_CERT", "text"),
    Setting("bearer-token-file", "TRIOFETCH_BEARER_TOKEN_FILE", "text"),
    Setting("client-cert", "TRIOFETCH_CLIENT_CERT", "text"),
    Setting("client-key", "TRIOFETCH_CLIENT_KEY", "text"),
    Setting("rate-limit", "TRIOFETCH_RATE_LIMIT", "number", _positive_number),
    Setting("proxy", "TRIOFETCH_PROXY", "text", shown="url"),
)
_BY_KEY = {setting.key: setting for setting in SETTINGS}


def environment_variable(key: str) -> str:
    """The environment variable of the setting *key* (``ca-cert``: ``TRIOFETCH_CA_CERT``)."""
    env = _BY_KEY[key].env
    assert env is not None, key
    return env


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/triofetch/config.toml`` (``~/.config`` when unset or relative)."""
    base = environ.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "triofetch" / "config.toml"


def _expected(setting: Setting) -> str:
    if setting.kind == "text":
        return "a string"
    for probe in ("0", "-1"):
        try:
            setting.parse(probe)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            return str(exc).partition(", got")[0].removeprefix("expected ")
    return "a number"


def _from_toml(path: Path, key: str, value: object) -> Any:
    """The value of *key* in the file *path*; :class:`CLIError` when it is not one."""
    setting = _BY_KEY[key]
    wrong = CLIError(
        f"config file {path}: {key}: expected {_expected(setting)}, got {value!r}",
        kind="config",
    )
    if setting.kind == "text":
        if not isinstance(value, str):
            raise wrong
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    if setting.kind == "integer" and not isinstance(value, int):
        raise wrong
    try:
        return setting.parse(str(value))
    except argparse.ArgumentTypeError:
        raise wrong from None


def read_config(path: Path, *, required: bool) -> dict[str, Any]:
    """The settings of the config file *path* (none when it is missing and not
    *required*)."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        if required:
            raise CLIError(f"--config: no such file: {str(path)!r}", kind="config") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CLIError(f"config file {path}: not valid TOML: {exc}", kind="config") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CLIError(f"config file {path}: cannot read it: {reason}", kind="config") from None
    settings: dict[str, Any] = {}
    for raw, value in data.items():
        key = raw.replace("_", "-")
        if key not in _BY_KEY:
            raise CLIError(
                f"config file {path}: unknown key {raw!r} (known: {', '.join(_BY_KEY)})",
                kind="config",
            )
        settings[key] = _from_toml(path, key, value)
    return settings


def _from_environment(setting: Setting, environ: Mapping[str, str]) -> Any:
    assert setting.env is not None
    text = environ[setting.env]
    try:
        return setting.parse(text)
    except argparse.ArgumentTypeError as exc:
        raise CLIError(f"${setting.env}: {exc}", kind="config") from None


def configure(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> dict[str, tuple[Any, str, str]]:
    """Fill the settings of *args*'s command that its flags left out, from *environ*, then
    the config file, then the defaults; return ``key -> (value, source, where)`` of every
    setting (source: ``flag``, ``env``, ``file`` or ``default``), the command's or not.

    Also sets ``args.config_sources`` (``key -> source``).
    """
    given = getattr(args, "config", None)
    path = absolute_path(given) if given else default_config_path(environ)
    from_file = read_config(path, required=given is not None)
    effective: dict[str, tuple[Any, str, str]] = {}
    for setting in SETTINGS:
        flag = getattr(args, setting.dest, None)
        if flag is not None:
            found = (flag, "flag", "--" + setting.key)
        elif setting.env and environ.get(setting.env, "") != "":
            found = (_from_environment(setting, environ), "env", "$" + setting.env)
        elif setting.key in from_file:
            found = (from_file[setting.key], "file", str(path))
        else:
            found = (setting.default, "default", "")
        effective[setting.key] = found
    # the bearer token: --bearer-token-file, then the variable, then the file's
    # bearer-token-file
    token_file = effective["bearer-token-file"]
    if token_file[1] in ("file", "default") and environ.get(TOKEN_VARIABLE, "").strip():
        effective["bearer-token-file"] = (None, "default", "")
    for key, (value, _source, _where) in effective.items():
        dest = _BY_KEY[key].dest
        if hasattr(args, dest):
            setattr(args, dest, value)
    args.config_sources = {key: source for key, (_v, source, _w) in effective.items()}
    args.config_file = str(path) if from_file or given else None
    return effective


def _shown(setting: Setting, value: Any) -> Any:
    if value is None:
        return None
    if setting.shown == "url":
        return redact_url(str(value))
    return value


async def config_command(args: argparse.Namespace) -> int:
    """``triofetch config``: the effective settings and where each came from."""
    effective = configure(args)
    rows: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        value, source, where = effective[setting.key]
        if setting.key == "root":
            value = str(absolute_path(str(value)))
        rows[setting.key] = {"value": _shown(setting, value), "source": source, "from": where}
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    token_file = effective["bearer-token-file"]
    if token_file[0] is not None:
        rows["bearer-token"] = {"value": "***", "source": token_file[1], "from": token_file[2]}
    elif token:
        rows["bearer-token"] = {"value": "***", "source": "env", "from": "$" + TOKEN_VARIABLE}
    else:
        rows["bearer-token"] = {"value": None, "source": "default", "from": ""}
    if args.json:
        emit_json({"config_file": args.config_file, "settings": rows})
        return EXIT_OK
    note(f"config file: {args.config_file or 'none'} ({default_config_path()} by default)")
    width = max(map(len, rows))
    for key, row in rows.items():
        value = "(none)" if row["value"] is None else str(row["value"])
        where = row["source"] + (f" {row['from']}" if row["from"] else "")
        print(f"{key:<{width}}  {value}  ({where})")  # (the result asked for: -q keeps it)
    return EXIT_OK
