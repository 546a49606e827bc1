"""The vectorbt layout: each symbol's bars placed on the union timeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelyard.strategies._vbt_layout import build_layout

HOURS = pd.date_range("2024-01-01", periods=300, freq="1h", tz="UTC")


def _bars(indexes: list[pd.DatetimeIndex]) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(3)
    return {
        f"S{j}": pd.DataFrame(
            {c: rng.uniform(90, 110, len(ix)) for c in ("open", "high", "low", "close", "volume")},
            index=ix,
        )
        for j, ix in enumerate(indexes)
    }


MIXED = [
    HOURS,
    HOURS[(HOURS.hour >= 14) & (HOURS.hour < 21)],  # gaps every day
    HOURS[np.sort(np.random.default_rng(1).choice(300, 40, replace=False))],
    HOURS[:0],  # no bar at all
    HOURS[100:130],  # starts late, ends early, consecutive
]
SHARED = [HOURS, HOURS, HOURS]  # one timeline: every symbol at every step


@pytest.mark.parametrize("indexes", [MIXED, SHARED], ids=["mixed", "shared"])
def test_rows_are_each_bar_position_on_the_union(indexes: list[pd.DatetimeIndex]) -> None:
    bars = _bars(indexes)
    layout = build_layout(bars, list(bars))
    union = layout.index.asi8
    for j, (symbol, frame) in enumerate(bars.items()):
        want = np.searchsorted(union, frame.index.as_unit("ns").asi8)
        assert layout.rows[j].dtype == np.intp
        assert np.array_equal(layout.rows[j], want), symbol
        assert np.array_equal(np.flatnonzero(layout.has_bar[:, j]), want), symbol
        assert np.array_equal(layout.open[want, j], frame["open"].to_numpy()), symbol
