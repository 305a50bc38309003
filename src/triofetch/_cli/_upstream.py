"""The options of the commands that download, as ``Downloader`` arguments.

Owns ``--header``/``--header-file``, the bearer token (``--bearer-token-file`` or
``$TRIOFETCH_BEARER_TOKEN``), ``--client-cert``/``--client-key``, ``--rate-limit`` and
``--proxy``: it turns them into :class:`~triofetch.Downloader` keyword arguments and refuses
a secret given on the command line alone (a credentials header in ``--header``, a proxy URL
with a password), where ``ps`` would show it.  The checks of the values themselves (a
certificate file that loads, a proxy URL, a positive rate) are the downloader's.

A secret (a header's value, the token) never goes into a message or a log line.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from ._common import CLIError, SettingError

__all__ = ["TOKEN_VARIABLE", "parse_header", "upstream_options"]

#: the environment variable holding a bearer token (when --bearer-token-file is not given)
TOKEN_VARIABLE = "TRIOFETCH_BEARER_TOKEN"

#: headers carrying credentials: never taken from the command line
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

# an HTTP field name (RFC 9110 "token")
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_ALTERNATIVES = (
    "give a bearer token with --bearer-token-file FILE or $" + TOKEN_VARIABLE + ", or "
    "credentials headers in a file with --header-file FILE"
)


def _shown(text: str) -> str:
    """*text* as it may be printed: what comes after its first blank or colon could be a
    secret, and is left out."""
    cut = re.split(r"[\s:]", text, maxsplit=1)
    return repr(cut[0] + (" ..." if len(cut) > 1 else ""))


def parse_header(text: str, where: str = "--header") -> tuple[str, str]:
    """``(name, value)`` of ``"Name: value"``; :class:`CLIError` (status 2) naming it when
    it is malformed (the value is never shown)."""
    name, sep, value = text.partition(":")
    if not sep or not _NAME.fullmatch(name):
        raise CLIError(
            f"{where}: malformed header {_shown(text)}: expected 'Name: value' "
            "(a name of letters, digits and !#$%&'*+-.^_`|~, then a colon)"
        )
    value = value.strip(" \t")
    if any(c in value for c in "\r\n\0"):
        raise CLIError(f"{where}: the value of header {name!r} holds a line break or NUL")
    return name, value


def _headers(args: argparse.Namespace) -> dict[str, str]:
    """The headers of ``--header-file`` then ``--header`` (a later one replaces an
    earlier one of the same name, whatever its case)."""
    headers: dict[str, str] = {}

    def put(name: str, value: str) -> None:
        for known in [k for k in headers if k.lower() == name.lower()]:
            del headers[known]
        headers[name] = value

    for file in getattr(args, "header_file", None) or []:
        path = Path(os.path.expanduser(file))
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"--header-file: cannot read {file!r}: {_reason(exc)}") from None
        for number, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                put(*parse_header(line.strip(), f"--header-file {file}, line {number}"))
    for text in getattr(args, "header", None) or []:
        name, value = parse_header(text)
        if name.lower() in SECRET_HEADERS:
            raise CLIError(
                f"--header {name}: credentials are not taken on the command line, where "
                f"other users' 'ps' shows them; {_ALTERNATIVES}"
            )
        put(name, value)
    return headers


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _read_token(file: str) -> str:
    """The token in *file* (its first line, blanks around it removed)."""
    try:
        text = Path(os.path.expanduser(file)).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = f"cannot read {file!r}: {_reason(exc)}"
        raise SettingError("bearer-token-file", reason) from None
    token = text.strip().partition("\n")[0].strip()
    if not token:
        raise SettingError("bearer-token-file", f"{file!r} holds no token")
    return token


def _token_provider(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> Callable[[], Awaitable[str]] | None:
    """The bearer token's provider: ``--bearer-token-file`` (read again when the server
    says the token went stale: 401), else ``$TRIOFETCH_BEARER_TOKEN``, else None."""
    file = getattr(args, "bearer_token_file", None)
    if file is not None:
        _read_token(file)  # (a missing or empty file: a usage error before any I/O)

        async def from_file() -> str:
            return await trio.to_thread.run_sync(_read_token, file)

        return from_file
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        return None

    async def from_environment() -> str:
        return token

    return from_environment


def _proxy(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None  # (the downloader says what is wrong with it)
    if password is not None:
        raise CLIError(
            "--proxy: a password is not taken on the command line, where other users' "
            "'ps' shows it; set it in the environment instead (HTTPS_PROXY, HTTP_PROXY or "
            "ALL_PROXY: user:password@host:port)"
        )
    return url


def upstream_options(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """The ``Downloader`` keyword arguments of these options in *args* (those not given
    are left to the downloader's defaults)."""
    options: dict[str, Any] = {}
    headers = _headers(args)
    if headers:
        options["headers"] = headers
    provider = _token_provider(args, environ)
    if provider is not None:
        options["token_provider"] = provider
    cert, key = getattr(args, "client_cert", None), getattr(args, "client_key", None)
    if key is not None and cert is None:
        raise CLIError("--client-key needs --client-cert")
    if cert is not None:
        cert = os.path.expanduser(cert)
        options["cert"] = cert if key is None else (cert, os.path.expanduser(key))
    if getattr(args, "rate_limit", None) is not None:
        options["rate_limit"] = args.rate_limit
    sources = getattr(args, "config_sources", {})
    proxy = getattr(args, "proxy", None)
    if sources.get("proxy", "flag") == "flag":  # (the environment and a file may hold one)
        proxy = _proxy(proxy)
    if proxy is not None:
        options["proxy"] = proxy
    return options
