"""The layout's union timeline and close filling equal the pandas/numpy definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelyard.strategies._vbt_layout import _ffill_bfill, _union


def test_ffill_bfill_equals_pandas() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=(300, 6))
    values[rng.random(values.shape) < 0.4] = np.nan
    values[:50, 1] = np.nan  # leading NaNs
    values[:, 2] = np.nan  # a column of NaN stays NaN
    values[-20:, 3] = np.nan  # trailing NaNs
    want = pd.DataFrame(values).ffill().bfill().to_numpy()
    got = _ffill_bfill(values.copy())
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", ["same", "shifted", "duplicates", "unsorted", "empty"])
def test_union_equals_numpy_unique(case: str) -> None:
    base = np.arange(0, 1000, 7, dtype=np.int64)
    stamps = {
        "same": [base, base.copy(), base.copy()],
        "shifted": [base, base + 3, base[::2]],
        "duplicates": [np.repeat(base, 2), base],
        "unsorted": [base[::-1].copy(), base[::-1].copy()],
        "empty": [np.empty(0, dtype=np.int64), base],
    }[case]
    got = _union(stamps)
    np.testing.assert_array_equal(got, np.unique(np.concatenate(stamps)))
