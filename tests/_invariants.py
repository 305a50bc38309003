"""Invariants of a store after any run: every unit complete or absent, nothing half-written.

The check itself is the public one, :func:`triofetch.testing.check_store`; this module keeps
the suite's shorthand (assert, and say which units are there).
"""

from __future__ import annotations

from collections.abc import Iterable

from triofetch import DeclarativeUnit
from triofetch.store import Store, UnitKey
from triofetch.testing import check_store


async def check_invariants(
    store: Store,
    universe: Iterable[DeclarativeUnit],
    *,
    on_demand_ok: bool = True,
    incomplete_versions_ok: bool = False,
) -> dict[UnitKey, bool]:
    """Check the store, and every unit of *universe* that is in it; return {key: complete}.

    Asserts that :func:`~triofetch.testing.check_store` finds nothing wrong:

    - a unit present has exactly its declared relative paths, with the declared sha256 and
      size;
    - every artifact recorded is in the storage with its size, and the stored file hashes to
      its name;
    - a unit lacking artifacts is allowed only when created on demand (*on_demand_ok*);
    - every version of every repository is complete and consistent (an incomplete one is
      allowed with *incomplete_versions_ok*: a run that could not write to its database
      leaves its version so);
    - the temp area holds no file.
    """
    units = list(universe)
    problems = await check_store(
        store,
        units=units,
        on_demand_ok=on_demand_ok,
        incomplete_versions_ok=incomplete_versions_ok,
    )
    assert problems == [], "\n".join(f"{p.kind}: {p.message}" for p in problems)
    found = await store.find_units([UnitKey(u.type, u.natural_key) for u in units])
    return {key: info.complete for key, info in found.items()}
