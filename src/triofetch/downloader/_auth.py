"""Who the downloader says it is: Basic credentials, bearer tokens, credentials in URLs.

Owns the ``Authorization`` header of a request: the downloader's ``auth`` pair, the user
info of a URL (taken out of the URL with :mod:`triofetch._urls`, preferred for that URL),
and the bearer token of a ``token_provider``, fetched once for every download that needs it
and refreshed once, for all waiters, after a 401 (:class:`Credentials`).  It must not send
requests itself, know transports, or decide retries and timeouts: it is handed the
exchange to run.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Concatenate, ParamSpec, TypeVar

import trio

from .._urls import basic_authorization, split_userinfo
from ..errors import InvalidInput, InvalidURL
from ._plan import header_problem

__all__ = ["Credentials", "TokenProvider", "split_credentials"]

#: An async callable returning a fresh bearer token.
TokenProvider = Callable[[], Awaitable[str]]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Tokens:
    """One bearer token shared by every download; refreshed once for all waiters."""

    def __init__(
        self, provider: TokenProvider, waiting: Callable[[], AbstractContextManager[object]]
    ) -> None:
        self._provider = provider
        self._waiting = waiting
        self._lock = trio.Lock()
        self.token: str | None = None
        self.generation = 0
        self.refreshes = 0

    async def current(self) -> tuple[str, int]:
        if self.token is None:
            await self.refresh(self.generation)
        assert self.token is not None
        return self.token, self.generation

    async def refresh(self, stale_generation: int) -> None:
        """Get a new token unless someone already replaced the *stale_generation* one."""
        with self._waiting():
            await self._refresh(stale_generation)

    async def _refresh(self, stale_generation: int) -> None:
        async with self._lock:
            if self.token is not None and self.generation != stale_generation:
                return
            pending = self._provider()
            if not inspect.isawaitable(pending):
                raise InvalidInput(
                    "token_provider must be an async callable: it returned "
                    f"{type(pending).__name__}, not an awaitable"
                )
            token = await pending
            if not isinstance(token, str) or not token:
                raise InvalidInput(
                    f"the token provider returned {type(token).__name__}, expected a non-empty str"
                )
            problem = header_problem("authorization", f"Bearer {token}")
            if problem:  # (a token read from a file with its line feed...; never shown)
                raise InvalidInput(
                    f"the token provider returned a token that cannot go in a header: {problem}"
                )
            self.token = token
            self.generation += 1
            self.refreshes += 1


class Credentials:
    """The credentials of one downloader: a Basic pair (``auth``) or a bearer token
    (``token_provider``), or neither (:attr:`anonymous`)."""

    __slots__ = ("_basic", "_tokens", "anonymous")

    def __init__(
        self,
        auth: object,
        token_provider: TokenProvider | None,
        waiting: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """*waiting* is the context a refresh of the token (the lock, the provider) waits
        in: the downloader's ends it when the downloader closes (its error propagates)."""
        if auth is not None and token_provider is not None:
            raise InvalidInput("give either auth (basic) or token_provider (bearer), not both")
        if token_provider is not None and not callable(token_provider):
            raise InvalidInput(
                "token_provider must be an async callable returning a token, got "
                f"{type(token_provider).__name__}"
            )
        if auth is not None and not (
            isinstance(auth, tuple | list)
            and len(auth) == 2
            and all(isinstance(part, str) for part in auth)
        ):
            raise InvalidInput("auth must be a (user, password) pair of strings")
        self._basic = basic_authorization(*auth) if auth is not None else None
        self._tokens = _Tokens(token_provider, waiting) if token_provider is not None else None
        #: no credentials of the downloader's own (a URL may still carry some)
        self.anonymous = self._basic is None and self._tokens is None

    @property
    def refreshes(self) -> int:
        """How many times the token provider was awaited."""
        return self._tokens.refreshes if self._tokens is not None else 0

    async def exchange(
        self,
        headers: Mapping[str, str],
        basic: str | None,
        attempt: Callable[Concatenate[Mapping[str, str], bool, _P], Awaitable[_T | None]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """``attempt(headers, may_refresh, *args)`` with credentials in *headers*.

        *basic* is the ``Authorization`` of the URL's own user info, if it had some (it
        wins over ``auth``).  With a bearer token, *attempt* may return None when a 401
        asks for a fresh token (``may_refresh`` is true only the first time): the token is
        refreshed, once for every download that saw it go stale, and *attempt* runs once
        more.
        """
        if basic is not None or self._basic is not None:
            headers = {**headers, "authorization": basic or self._basic or ""}
        tokens = self._tokens
        for auth_round in (0, 1):
            generation = -1
            if tokens is not None:
                token, generation = await tokens.current()
                headers = {**headers, "authorization": f"Bearer {token}"}
            got = await attempt(headers, auth_round == 0 and generation >= 0, *args, **kwargs)
            if got is not None:
                return got
            assert tokens is not None  # (None is returned only when a refresh may help)
            await tokens.refresh(generation)
        raise AssertionError("the second round may not ask for a fresh token")


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without user info, and a Basic ``Authorization`` value when it had some."""
    try:
        bare, userinfo = split_userinfo(url)
    except ValueError as exc:
        raise InvalidURL(f"malformed URL: {exc}", url=url) from None
    return bare, (basic_authorization(*userinfo) if userinfo else None)
