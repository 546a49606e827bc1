"""IC, rank IC and hit rate against independent scipy/numpy computations on the same arrays."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from modelyard.models.metrics import hit_rate, ic, icir, metrics, rank_ic


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = rng.normal(size=500)
    pred = 0.3 * y + rng.normal(size=500)
    pred[::17] = np.round(pred[::17], 1)  # some ties
    return pred, y


def test_ic_matches_scipy_pearson(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    pred, y = arrays
    assert ic(pred, y) == pytest.approx(stats.pearsonr(pred, y).statistic, rel=1e-12)


def test_rank_ic_matches_scipy_spearman_with_ties(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    pred, y = arrays
    pred = np.round(pred, 1)  # many ties
    assert rank_ic(pred, y) == pytest.approx(stats.spearmanr(pred, y).statistic, rel=1e-12)


def test_hit_rate_matches_numpy(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    pred, y = arrays
    pred = pred.copy()
    pred[:10] = 0.0
    keep = (pred != 0) & (y != 0)
    expected = np.mean(np.sign(pred[keep]) == np.sign(y[keep]))
    assert hit_rate(pred, y) == expected


def test_nan_rows_are_dropped_and_counted() -> None:
    pred = np.array([0.1, np.nan, 0.3, -0.2])
    y = np.array([0.2, 0.1, np.inf, -0.1])
    m = metrics(pred, y)
    assert m.n == 2
    assert m.hit_rate == 1.0


def test_icir_is_mean_over_sample_std() -> None:
    values = [0.02, 0.05, -0.01, 0.03]
    assert icir(values) == pytest.approx(np.mean(values) / np.std(values, ddof=1), rel=1e-12)
    assert np.isnan(icir([0.1]))


def test_ranks_equal_the_unique_based_average_ranks_bit_for_bit() -> None:
    from modelyard.models.metrics import _ranks

    rng = np.random.default_rng(8)
    for x in (
        rng.normal(size=3_000),
        np.round(rng.normal(size=3_000), 1),
        np.array([0.0, -0.0, 1.0, 1.0, -2.0]),
        np.array([4.0]),
    ):
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        expected = ((ends - counts + 1 + ends) / 2.0)[inverse]
        assert _ranks(x).tobytes() == expected.tobytes()
    np.testing.assert_array_equal(_ranks(np.array([3.0, 1.0, 3.0])), [2.5, 1.0, 2.5])


def test_metrics_equals_the_single_metrics(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    pred, y = arrays
    pred = pred.copy()
    pred[::13] = np.nan
    m = metrics(pred, y)
    assert (m.ic, m.rank_ic, m.hit_rate) == (ic(pred, y), rank_ic(pred, y), hit_rate(pred, y))
