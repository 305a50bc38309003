"""When to try again, and how fast to go: retries, backoff, ``Retry-After``, limits.

Owns the attempts of one download over its mirror URLs (:meth:`RetryPolicy.run`: which
errors are retried and how often — a size or digest mismatch ``mismatch_retries`` times per
URL, a ``file://`` URL never —, how long to wait before the next attempt, a ``Retry-After``
honoured up to ``max_retry_after``, the ``max_time`` of one file across its attempts, an
INFO line on ``triofetch.downloader`` for each retry and mirror fall-back), the shared
request rate (:class:`RateLimit`) and the per-host connection limits (:class:`HostLimits`).
It must not send requests, read bodies or touch files: an attempt is a callable it is
handed, and its errors are the only thing it looks at.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit

import trio

from .._model import check_int, check_number
from .._urls import redact_url
from ..errors import (
    DestinationError,
    DigestMismatch,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    InvalidURL,
    SizeMismatch,
    TempFileError,
)

#: errors of writing the file here, not of fetching it: no other mirror can do better
_LOCAL = (TempFileError, DestinationError)

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "FileClock",
    "HostLimits",
    "RateLimit",
    "RetryPolicy",
    "retry_after",
]

#: the longest ``Retry-After`` honoured by default (seconds)
DEFAULT_MAX_RETRY_AFTER = 60.0

#: INFO for each retry and each mirror fall-back (see docs/downloader.rst, "Logging")
_log = logging.getLogger("triofetch.downloader")

_A = TypeVar("_A")
_T = TypeVar("_T")


class FileClock:
    """The deadline of one file under ``max_time``, set when its first request starts (a
    file waiting for a connection has not started yet)."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: when the file's time is up (inf until its first request)
        self.at = math.inf

    def start(self, now: float) -> float:
        """The deadline, starting the clock at *now* if this is the first request."""
        if self.at == math.inf:
            self.at = now + self.seconds
        return self.at

    def over(self) -> bool:
        return trio.current_time() >= self.at

    def error(self, url: str) -> DownloadTimeout:
        return DownloadTimeout(f"took longer than {self.seconds:g} s (max_time)", url=url)


class RetryPolicy:
    """How many attempts a download gets, and the waits between them."""

    __slots__ = (
        "backoff",
        "backoff_max",
        "max_retry_after",
        "max_time",
        "mismatch_retries",
        "retries",
        "sleep_until",
    )

    def __init__(
        self,
        *,
        retries: int,
        backoff: float,
        backoff_max: float,
        max_retry_after: float,
        max_time: float | None,
        mismatch_retries: int = 1,
        sleep_until: Callable[[float], Awaitable[None]] = trio.sleep_until,
    ) -> None:
        check_int(retries, "retries", least=0)
        check_int(mismatch_retries, "mismatch_retries", least=0)
        check_number(max_time, "max_time", positive=True, allow_none=True)
        for name, value in (
            ("backoff", backoff),
            ("backoff_max", backoff_max),
            ("max_retry_after", max_retry_after),
        ):
            check_number(value, name, allow_inf=True)
        self.retries = retries
        #: further attempts on one URL after a size or digest mismatch (within ``retries``)
        self.mismatch_retries = mismatch_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.max_time = max_time
        #: how the waits between attempts sleep (the downloader's can be interrupted: an
        #: error it raises propagates)
        self.sleep_until = sleep_until

    async def run(
        self,
        urls: Sequence[str],
        attempt: Callable[[str, _A, FileClock | None], Awaitable[_T]],
        arg: _A,
        relabel: Callable[[_T, int], _T] | None,
    ) -> _T:
        """``await attempt(url, arg, clock)`` until one works: up to ``retries`` more times
        per URL for a retryable error (of which up to ``mismatch_retries`` after a size or
        digest mismatch; none for a ``file://`` URL), then the next mirror URL.

        Returns what the attempt returned (after failures, ``relabel(result, attempts)``
        when given).  Raises the last attempt's error, with every attempt's error in its
        ``attempts``.  Under ``max_time`` no attempt or wait goes past the file's deadline.
        """
        errors: list[DownloadError] = []
        clock = FileClock(self.max_time) if self.max_time is not None else None
        for index, url in enumerate(urls):
            if index and errors and _log.isEnabledFor(logging.INFO):
                _log.info(
                    "falling back to mirror %s after %s failed: %s",
                    redact_url(url),
                    redact_url(urls[index - 1]),
                    errors[-1].message,
                )
            mismatches = 0
            for number in range(self.retries + 1):
                if number and not await self._wait(number, errors, clock, url):
                    break
                try:
                    result = await attempt(url, arg, clock)
                except DownloadError as exc:
                    errors.append(exc)
                    if isinstance(exc, _LOCAL):
                        break  # (nor another mirror: it would be written to the same place)
                    if (
                        not exc.retryable
                        or (clock is not None and clock.over())
                        or url[:5].lower() == "file:"  # (the same bytes would come again)
                    ):
                        break
                    if isinstance(exc, DigestMismatch | SizeMismatch):
                        mismatches += 1
                        if mismatches > self.mismatch_retries:
                            break  # (a mirror may serve the right bytes)
                else:
                    if errors and relabel is not None:
                        result = relabel(result, len(errors) + 1)
                    return result
            if (clock is not None and clock.over()) or isinstance(errors[-1], _LOCAL):
                break  # (no time left for another mirror either; or nowhere to write it)
        last = errors[-1]
        last.attempts = errors
        raise last

    async def _wait(
        self, retry: int, errors: list[DownloadError], clock: FileClock | None, url: str
    ) -> bool:
        """Wait before retry number *retry*; False (a timeout appended to *errors*) when
        the file's ``max_time`` ran out meanwhile (the wait ends then)."""
        delay = self.delay(retry, errors[-1])
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "retrying %s (attempt %d) in %.2f s after: %s",
                redact_url(url),
                retry + 1,
                delay,
                errors[-1].message,
            )
        if clock is None:
            await self.sleep_until(trio.current_time() + delay)
            return True
        await self.sleep_until(min(trio.current_time() + delay, clock.at))
        if clock.over():
            errors.append(clock.error(url))
            return False
        return True

    def delay(self, retry: int, error: DownloadError) -> float:
        """Seconds to wait before retry number *retry* after *error*."""
        if (
            isinstance(error, HTTPStatusError)
            and error.retry_after is not None
            and self.max_retry_after
        ):
            # a longer wait than max_retry_after waits max_retry_after (see the docs)
            return min(error.retry_after, self.max_retry_after)
        ceiling = min(self.backoff_max, self.backoff * 2.0 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # (str.isdigit alone takes "²")
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class RateLimit:
    """Requests per second shared by every download: each request takes the next slot."""

    __slots__ = ("_interval", "_next_slot", "_sleep_until")

    def __init__(
        self,
        per_second: float,
        sleep_until: Callable[[float], Awaitable[None]] = trio.sleep_until,
    ) -> None:
        self._interval = 1.0 / per_second
        self._next_slot = -math.inf
        #: how a request waits for its slot (see RetryPolicy.sleep_until)
        self._sleep_until = sleep_until

    async def wait(self) -> None:
        """Wait for this request's slot (at once when it is free)."""
        now = trio.current_time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await self._sleep_until(slot)


#: origins whose limiters are kept however idle; past that, the idle ones go
_HOSTS_KEPT = 1024


class HostLimits(dict[str, trio.CapacityLimiter]):
    """The ``per_host`` limit: a limiter for each origin (``scheme://host:port``) in use.

    A limiter no request holds nor waits for is dropped once more than ``_HOSTS_KEPT``
    origins have one (a fresh one limits the same): a long-lived downloader visiting ever
    new origins kept one for each, about 1.2 kB apiece, for ever.
    """

    __slots__ = ("_per_host",)

    def __init__(self, per_host: int) -> None:
        super().__init__()
        self._per_host = per_host

    def limiter(self, url: str) -> trio.CapacityLimiter:
        """The limiter of *url*'s origin."""
        try:
            key = _origin(url)
        except ValueError as exc:  # (an IPv6 literal without its closing bracket...)
            raise InvalidURL(f"malformed URL: {exc}", url=url) from None
        limiter = self.get(key)
        if limiter is None:
            if len(self) >= _HOSTS_KEPT:
                self._drop_idle()
            limiter = self[key] = trio.CapacityLimiter(self._per_host)
        return limiter

    def _drop_idle(self) -> None:
        # (safe: a caller acquires the limiter it gets with no checkpoint in between, so a
        # limiter handed out is borrowed or waited for by then)
        for key in [k for k, lim in self.items() if not lim.borrowed_tokens]:
            if not self[key].statistics().tasks_waiting:
                del self[key]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
