"""What a fetch must check, decided before any I/O: :class:`FetchPlan` and its checks.

Owns the validation of a fetch's arguments (expected digests and size, algorithms,
headers, temp directory, destination) into a :class:`FetchPlan`, the downloader's defaults
for them and the small caches that spare a busy downloader the same checks on every file
(:class:`Planner`), and the wording of the checks of the downloader's numeric options (the
rules themselves are :mod:`triofetch._model`'s).  It must not touch the network, open
files or know transports; its only system call is the ``stat`` that checks a ``temp_dir``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from .._digests import DEFAULT_ALGORITHM, normalize_digests, resolve_algorithms
from .._model import check_int
from .._version import __version__
from ..errors import InvalidInput

__all__ = [
    "FetchPlan",
    "Planner",
    "check_headers",
    "header_problem",
]


class FetchPlan:
    """What one fetch must check, validated before any I/O.

    Made by :meth:`Downloader.plan() <triofetch.Downloader.plan>` and given to
    :meth:`Downloader.fetch_planned() <triofetch.Downloader.fetch_planned>`: arguments
    checked once can be fetched many times (from several URLs, or again).  Its attributes
    are read, never changed.

    Attributes:
        expected_digests: ``{algorithm: hex digest}`` the bytes must match (canonical
            algorithm names, lower-case hex).
        expected_size: the exact size the body must have, or None.
        algorithms: every algorithm computed (the downloader's, the expected ones and
            those asked for).
        headers: the request headers (lower-case names), the downloader's included.
        temp_dir: the temp directory, as a string ending with a separator, or None: the
            downloader's own private directory (see :attr:`Downloader.temp_dir`).
        destination: where the validated file goes, or None (the caller gets the temp
            file).
    """

    __slots__ = (
        "algorithms",
        "destination",
        "expected_digests",
        "expected_size",
        "headers",
        "temp_dir",
    )

    def __init__(
        self,
        expected_digests: dict[str, str],
        expected_size: int | None,
        algorithms: tuple[str, ...],
        headers: Mapping[str, str],
        temp_dir: str | None,
        destination: str | None = None,
    ) -> None:
        self.expected_digests = expected_digests
        self.expected_size = expected_size
        self.algorithms = algorithms
        self.headers = headers
        #: the temp directory, as a string ending with a separator (a file name is
        #: appended), or None: the downloader's private directory
        self.temp_dir = temp_dir
        #: where the validated file goes, or None: the caller gets the temp file
        self.destination = destination

    def __repr__(self) -> str:
        return (
            f"FetchPlan(expected_digests={self.expected_digests!r}, "
            f"expected_size={self.expected_size!r}, algorithms={self.algorithms!r}, "
            f"temp_dir={self.temp_dir!r}, destination={self.destination!r})"
        )


class Planner:
    """Makes the plans of one downloader: its defaults, and what it checked already."""

    __slots__ = ("_algorithm_sets", "_temp_dirs", "algorithms", "headers", "temp_dir")

    def __init__(
        self,
        *,
        digests: Iterable[str],
        headers: Mapping[str, str] | None,
        temp_dir: str | os.PathLike[str] | None,
    ) -> None:
        check_headers(headers)
        #: the algorithms every fetch computes
        self.algorithms = resolve_algorithms({}, digests, (DEFAULT_ALGORITHM,))
        # expected algorithm names -> the algorithms a fetch computes (see plan())
        self._algorithm_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        #: the headers of every request (never changed in place: plans share it)
        self.headers: dict[str, str] = {
            "user-agent": f"triofetch/{__version__}",
            "accept-encoding": "identity",
        }
        self.headers.update({k.lower(): v for k, v in (headers or {}).items()})
        #: the default temp directory, as _directory gives it, or None: the downloader's
        #: private directory, made when it is entered
        self.temp_dir = _temp_directory(temp_dir) if temp_dir is not None else None
        # a fetch's temp_dir arguments already checked -> as _directory gives them
        self._temp_dirs: dict[str, str] = {}

    def plan(
        self,
        expected_digests: Mapping[str, str] | None,
        expected_size: int | None,
        digests: Iterable[str] | None,
        headers: Mapping[str, str] | None,
        temp_dir: str | os.PathLike[str] | None,
        destination: str | os.PathLike[str] | None,
    ) -> FetchPlan:
        """Validate the arguments of a fetch (raises :class:`InvalidInput` subclasses)."""
        expected = normalize_digests(expected_digests)
        if digests is None:  # the common case: the same few algorithm sets over and over
            names = tuple(expected)
            algorithms = self._algorithm_sets.get(names)
            if algorithms is None:
                algorithms = resolve_algorithms(expected, None, self.algorithms)
                if len(self._algorithm_sets) < 64:
                    self._algorithm_sets[names] = algorithms
        else:
            algorithms = resolve_algorithms(expected, digests, self.algorithms)
        if expected_size is not None and (type(expected_size) is not int or expected_size < 0):
            # (an exact int >= 0, the usual size, passes without a call; _model decides)
            check_int(expected_size, "expected_size", least=0)
        merged = self.merged_headers(headers) if headers else self.headers
        directory = self.temp_dir if temp_dir is None else self._checked_temp_dir(temp_dir)
        target: str | None = None
        if destination is not None:
            if not isinstance(destination, str | os.PathLike):
                raise InvalidInput(f"destination must be a path, got {destination!r}")
            target = os.fspath(destination)
            if not target or target.endswith(os.sep):
                raise InvalidInput(f"destination must name a file, got {target!r}")
        return FetchPlan(expected, expected_size, algorithms, merged, directory, target)

    def merged_headers(self, headers: Mapping[str, str] | None) -> Mapping[str, str]:
        """The downloader's headers with a fetch's own *headers* (checked) on top."""
        if not headers:
            return self.headers  # shared: nothing is added
        check_headers(headers)
        return {**self.headers, **{k.lower(): v for k, v in headers.items()}}

    def _checked_temp_dir(self, temp_dir: str | os.PathLike[str]) -> str:
        """A fetch's *temp_dir*, checked once per directory (a ``stat``), not per fetch."""
        # ("" for no path at all: never stored, as _temp_directory refuses it)
        key = os.fspath(temp_dir) if isinstance(temp_dir, str | os.PathLike) else ""
        directory = self._temp_dirs.get(key)
        if directory is None:
            directory = _temp_directory(temp_dir)
            if len(self._temp_dirs) < 64:
                self._temp_dirs[key] = directory
        return directory


def _temp_directory(path: str | os.PathLike[str]) -> str:
    """A ``temp_dir`` argument, checked (one ``stat``), as :func:`_directory` gives it."""
    if not isinstance(path, str | os.PathLike):
        raise InvalidInput(f"temp_dir must be a path, got {path!r}")
    if not os.path.isdir(path):
        raise InvalidInput(f"temp_dir {os.fspath(path)!r} is not an existing directory")
    return _directory(path)


def _directory(path: str | os.PathLike[str]) -> str:
    """*path* as a string ending with a separator, to which a file name is appended."""
    text = os.fspath(path)
    return text if text.endswith(os.sep) else text + os.sep


def check_headers(headers: object) -> None:
    """Refuse *headers* unless it is None or a mapping of strings to strings."""
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise InvalidInput(f"headers must be a mapping, got {type(headers).__name__}")
    for name, value in headers.items():  # (a value may be a secret: never in a message)
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidInput(
                f"headers must map strings to strings, but header {name!r} has a value "
                f"of type {type(value).__name__}"
            )
        problem = header_problem(name, value)
        if problem:
            raise InvalidInput(f"cannot send header {name[:100]!r}: {problem}")


#: a header name: an HTTP token (RFC 9110)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
#: a header value every transport sends as it is: visible ASCII, with spaces and tabs
#: inside (RFC 9110's field-value without obs-text, which httpx and asks cannot encode)
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?").fullmatch


def header_problem(name: str, value: str) -> str:
    """What keeps a request header from being sent (empty: nothing); never shows *value*,
    which may be a secret."""
    if not _TOKEN(name):
        return "a header name is a token of letters, digits and !#$%&'*+-.^_`|~"
    if not _FIELD_VALUE(value):
        return (
            "its value must be visible ASCII characters, with spaces or tabs inside "
            "(no control character such as CR or LF, no space at either end)"
        )
    return ""


# The checks of numeric options: the rules are _model's; the words are the ones the
# downloader's options are documented with ("an integer >= 0", "a positive number").
