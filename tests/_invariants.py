"""Invariants of a store after any run: every unit complete or absent, nothing half-written."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import trio

from triofetch import DeclarativeUnit
from triofetch.store import Store, UnitKey


async def check_invariants(
    store: Store, universe: Iterable[DeclarativeUnit], *, on_demand_ok: bool = True
) -> dict[UnitKey, bool]:
    """Check every unit of *universe* that is in the store; return {key: complete}.

    - a unit present has exactly its declared relative paths;
    - every artifact it has is in the storage with the declared sha256 and size, and the
      stored file hashes to its name;
    - a unit lacking artifacts is allowed only when created on demand (*on_demand_ok*);
    - the temp area holds no file.
    """
    assert store.storage is not None
    units = {UnitKey(u.type, u.natural_key): u for u in universe}
    found = await store.find_units(list(units))
    state: dict[UnitKey, bool] = {}
    for key, info in found.items():
        unit = units[key]
        assert set(info.artifacts) == {a.relative_path for a in unit.artifacts}, key
        for art in unit.artifacts:
            record = info.artifacts[art.relative_path]
            if record is None:
                assert on_demand_ok, f"{key}: {art.relative_path} missing"
                continue
            if art.sha256:
                assert record.sha256 == art.sha256
            if art.size is not None:
                assert record.size == art.size
            path = store.storage.path_for(record.sha256)
            data = await trio.Path(path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record.sha256, path
            assert len(data) == record.size
        state[key] = info.complete
    leftovers = list(await trio.Path(store.storage.temp_dir).iterdir())
    assert leftovers == [], leftovers
    return state
