"""URL user info: taking credentials out of a URL, and keeping them out of messages.

Owns the one way triofetch splits ``user:password@`` from a URL (for Basic authentication,
for the manifest's source, for the asks transport) and redacts it from anything printed.
Imports nothing of triofetch.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

__all__ = ["basic_authorization", "redact_in", "redact_url", "split_userinfo"]

#: a ``password=...`` keyword of a libpq connection string (quoted or not)
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
#: a ``password=`` (or libpq's ``sslpassword=``) parameter of a URL's query, which libpq
#: takes as the password as it takes the one of the user info
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """*url* without its user info, and the ``(user, password)`` it carried (percent-decoded;
    the password is ``""`` when only a user was given), or None when it had none.

    Raises :class:`ValueError` (from :func:`urllib.parse.urlsplit`) on a malformed URL.
    """
    if "@" not in url:
        return url, None
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic authentication."""
    raw = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def redact_url(url: str) -> str:
    """Return *url* with any user name and password replaced by ``***``, and the value of a
    ``password=`` parameter of its query too (and, in a libpq ``key=value`` connection
    string, the ``password=`` value)."""
    if "://" not in url and "=" in url:
        return _PASSWORD_KEYWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    return _QUERY_PASSWORD.sub(r"\1***", _without_userinfo(url, parts))


def _without_userinfo(url: str, parts: SplitResult) -> str:
    if "@" not in parts.netloc:
        # A password with a raw "/", "?" or "#" (unescaped: not a valid URL, but typed
        # so) ends the netloc early, and the rest of the user info lands in the path: a
        # "user:...@" before the first "@" after the scheme is taken for user info all
        # the same.  (A path with an "@" after a port is shown redacted too: better one
        # word too many hidden than a password shown.)
        start = url.find("://") + 3
        at = url.find("@", start) if start >= 3 else -1
        if at < 0 or ":" not in url[start:at]:
            return url
        return f"{url[:start]}***{url[at:]}"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def redact_in(text: str, url: str) -> str:
    """*text* (a message another library wrote about *url*, which may quote it) without
    *url*'s secrets: the URL shown redacted, its password (as written and percent-decoded)
    and any ``password=`` value replaced by ``***``.  A message that holds a password too
    short to replace safely is left out."""
    shown = redact_url(url)
    if shown != url:
        text = text.replace(url, shown)
    start = url.find("://") + 3
    at = url.find("@", start) if start >= 3 else -1
    if at >= 0 and ":" in url[start:at]:
        password = url[start:at].split(":", 1)[1]
        for secret in sorted({password, unquote(password)} - {""}, key=len, reverse=True):
            if secret in text:
                if len(secret) < 4:  # ("***" for every "a" of the text: say nothing)
                    return "(the reason, which quoted the password, is left out)"
                text = text.replace(secret, "***")
    return _PASSWORD_KEYWORD.sub(r"\1***", text)
