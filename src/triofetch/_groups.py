"""Exception groups from nurseries, made readable for callers.

Owns the two ways triofetch reads a group: its first leaf error (the cause a failed unit
reports) and a group of one error raised as that error.  Exceptions only: it imports
nothing of triofetch and must not decide what an error means.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collapse_single", "first_error"]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a (nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@contextmanager
def collapse_single() -> Iterator[None]:
    """Re-raise a group holding one exception as that exception.

    A nursery inside a context manager wraps whatever the caller's ``async with`` body
    raises in an ExceptionGroup; callers of our context managers get their own exception
    back instead (or ours: UnitFailed, StoreError...).
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            # its own cause kept (the database error behind a StoreError), the group dropped
            raise leaves[0] from leaves[0].__cause__
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found
