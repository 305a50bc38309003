"""Hypothesis strategies for testing code built on triofetch.

This is the one module of :mod:`triofetch.testing` that imports Hypothesis (a test
dependency, not one of triofetch's): import it explicitly, ``from triofetch.testing import
strategies``.

- :func:`repository_specs` draws a :class:`~triofetch.testing.RepositorySpec`: a small pool
  of contents and units with several files each pointing into it, so artifacts are shared
  between units and units repeat;
- :func:`fault_plans` draws the faults of one path (a list of
  :data:`~triofetch.testing.Fault`), :func:`fault_maps` a plan per content of a pool;
- :func:`cancel_points` draws where a creator run is cancelled (or ``None``: not at all).

Serve a drawn repository with its faults on a :class:`~triofetch.testing.FaultServer`
(:meth:`RepositorySpec.serve <triofetch.testing.RepositorySpec.serve>`), run your code,
then check the store with :func:`~triofetch.testing.check_store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

from hypothesis import strategies as st

from triofetch import CreatorEventKind

from ._faultserver import Fault, Reset, Slow, Status, Truncate, WrongBytes
from ._specs import CREATOR_EVENT_KINDS, CancelPoint, FileSpec, RepositorySpec, UnitSpec

__all__ = [
    "FOREVER",
    "broken_plans",
    "cancel_points",
    "contents",
    "fault_maps",
    "fault_plans",
    "relative_paths",
    "repository_specs",
    "transient_faults",
    "unit_specs",
]

#: how many times a "broken for good" plan repeats its fault (more than any retry budget)
FOREVER = 1000

_SEGMENT_ALPHABET = "abcdxyz0189_-. "


def _safe_segment(segment: str) -> bool:
    return segment not in (".", "..") and segment.strip() != ""


def relative_paths(*, max_depth: int = 3) -> st.SearchStrategy[str]:
    """Relative paths a unit's file may have: 1 to *max_depth* segments of letters, digits,
    ``_-.`` and spaces (never ``.`` or ``..``)."""
    segment = st.text(_SEGMENT_ALPHABET, min_size=1, max_size=8).filter(_safe_segment)
    return st.lists(segment, min_size=1, max_size=max_depth).map("/".join)


def contents(*, min_size: int = 0, max_size: int = 4096) -> st.SearchStrategy[bytes]:
    """File contents: bytes of *min_size* to *max_size* (empty files included by default)."""
    return st.binary(min_size=min_size, max_size=max_size)


def _prefix_free(files: list[FileSpec]) -> bool:
    """No file's path is a directory of another's (``a`` and ``a/b`` cannot both be files
    when the unit is exported)."""
    paths = [f.relative_path for f in files]
    return not any(q.startswith(p + "/") for p in paths for q in paths)


def unit_specs(
    *,
    pool: int,
    types: Sequence[str] = ("pkg",),
    names: int = 10,
    max_files: int = 5,
    paths: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[UnitSpec]:
    """Units of one of *types*, named ``u0`` .. ``u<names - 1>``, with 0 to *max_files*
    files at distinct paths, each holding one of the *pool* contents."""
    if pool < 1 and max_files > 0:
        raise ValueError("a unit with files needs a pool of at least one content")
    files = st.lists(
        st.builds(
            FileSpec,
            relative_path=paths if paths is not None else relative_paths(),
            content=st.integers(0, max(pool - 1, 0)),
        ),
        max_size=max_files if pool else 0,
        unique_by=lambda f: f.relative_path,
    ).filter(_prefix_free)
    return st.builds(
        UnitSpec,
        type=st.sampled_from(list(types)),
        name=st.sampled_from([f"u{i}" for i in range(names)]),
        files=files.map(tuple),
    )


@st.composite
def repository_specs(
    draw: st.DrawFn,
    *,
    types: Sequence[str] = ("pkg",),
    min_units: int = 0,
    max_units: int = 10,
    max_files: int = 5,
    min_contents: int = 1,
    max_contents: int = 8,
    content_sizes: tuple[int, int] = (0, 4096),
    names: int = 10,
) -> RepositorySpec:
    """A :class:`~triofetch.testing.RepositorySpec`: *min_contents* to *max_contents*
    distinct contents (sizes within *content_sizes*), and *min_units* to *max_units* units
    (see :func:`unit_specs`) with files among them: few contents for many files make
    shared artifacts, few *names* make repeated units."""
    low, high = content_sizes
    pool = draw(
        st.lists(
            contents(min_size=low, max_size=high),
            min_size=min_contents,
            max_size=max_contents,
            unique=True,
        )
    )
    units = draw(
        st.lists(
            # (no content drawn: units without files, which an empty pool allows)
            unit_specs(
                pool=len(pool), types=types, names=names, max_files=max_files if pool else 0
            ),
            min_size=min_units,
            max_size=max_units,
        )
    )
    return RepositorySpec(tuple(pool), tuple(units))


def transient_faults(*, max_delay: float = 0.01) -> st.SearchStrategy[Fault]:
    """One fault that spoils one answer: a server error (``500``, ``502``, ``503``,
    ``429`` with ``Retry-After: 0``), a reset (before the headers or within the body), a
    truncated body, wrong bytes, or a slow body (at most *max_delay* seconds per piece: a
    slow answer still succeeds)."""
    return st.one_of(
        st.sampled_from([500, 502, 503]).map(Status),
        st.just(Status(429, {"Retry-After": "0"})),
        st.just(Reset(before_headers=True)),
        st.integers(0, 256).map(lambda n: Reset(after_bytes=n)),
        st.integers(0, 256).map(Truncate),
        st.just(WrongBytes()),
        st.builds(
            Slow,
            delay=st.floats(0, max_delay, allow_nan=False),
            chunk=st.integers(256, 4096),
        ),
    )


def broken_plans() -> st.SearchStrategy[list[Fault]]:
    """A path broken for good: ``404``, ``403``, ``500`` or wrong bytes, :data:`FOREVER`
    times."""
    broken: list[Fault] = [Status(404), Status(403), Status(500), WrongBytes()]
    return st.sampled_from(broken).map(lambda fault: [fault] * FOREVER)


def fault_plans(
    *, max_faults: int = 3, broken: bool = True, max_delay: float = 0.01
) -> st.SearchStrategy[list[Fault]]:
    """The faults of one path, in the order requests meet them: 0 to *max_faults*
    :func:`transient_faults`, or (when *broken*) a path broken for good
    (:func:`broken_plans`)."""
    transient = st.lists(transient_faults(max_delay=max_delay), max_size=max_faults)
    return st.one_of(transient, broken_plans()) if broken else transient


def fault_maps(
    *,
    pool: int = 8,
    max_size: int = 3,
    plans: st.SearchStrategy[list[Fault]] | None = None,
) -> st.SearchStrategy[dict[int, list[Fault]]]:
    """A fault plan for up to *max_size* of contents ``0`` .. ``pool - 1``, as
    :meth:`RepositorySpec.serve <triofetch.testing.RepositorySpec.serve>` takes it
    (indices beyond a smaller pool are ignored there)."""
    return st.dictionaries(
        st.integers(0, max(pool - 1, 0)),
        plans if plans is not None else fault_plans(),
        max_size=max_size,
    )


@overload
def cancel_points(
    *, kinds: Sequence[CreatorEventKind] = ..., max_nth: int = ..., none: Literal[False]
) -> st.SearchStrategy[CancelPoint]: ...


@overload
def cancel_points(
    *, kinds: Sequence[CreatorEventKind] = ..., max_nth: int = ..., none: bool = ...
) -> st.SearchStrategy[CancelPoint | None]: ...


def cancel_points(
    *,
    kinds: Sequence[CreatorEventKind] = CREATOR_EVENT_KINDS,
    max_nth: int = 6,
    none: bool = True,
) -> st.SearchStrategy[CancelPoint] | st.SearchStrategy[CancelPoint | None]:
    """Where to cancel a creator run: the n-th event (1 to *max_nth*) of one of *kinds*,
    or ``None`` (no cancellation) when *none*."""
    points = st.builds(CancelPoint, kind=st.sampled_from(list(kinds)), nth=st.integers(1, max_nth))
    return (st.none() | points) if none else points
