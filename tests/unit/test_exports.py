"""The public surface: `modelyard.__all__` is complete and sorted (httpx's test)."""

from __future__ import annotations

import modelyard


def test_all_is_sorted_and_complete() -> None:
    names = [n for n in modelyard.__all__ if n != "__version__"]
    assert names == sorted(names)
    public = {
        name
        for name, value in vars(modelyard).items()
        if not name.startswith("_") and not isinstance(value, type(modelyard))
    }
    assert public == set(names)
    for name in modelyard.__all__:
        assert hasattr(modelyard, name)
