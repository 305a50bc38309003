"""Exception groups from nurseries, made readable for callers.

Owns the two ways triofetch reads a group: its first leaf error (the cause a failed unit
reports) and a group of one error raised as that error.  Exceptions only: it imports
nothing of triofetch and must not decide what an error means.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collapse_single", "first_error", "leaves"]


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
        found = leaves(group)
        if len(found) == 1:
            # its own cause kept (the database error behind a StoreError), the group dropped
            raise found[0] from found[0].__cause__
        raise


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every leaf exception of a (nested) exception group, in order."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(leaves(exc))
        else:
            found.append(exc)
    return found
