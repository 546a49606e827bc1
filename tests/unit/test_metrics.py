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


def test_pooled_groups_and_union_match_scipy_with_ties_and_nans() -> None:
    """TargetRanks.pooled scores each group and the union (its sort merged from the groups'),
    as scipy does on the same rows; later calls with other predictions (finite on the same
    rows, then on fewer) reuse the target sorts and still agree."""
    from modelyard.models.metrics import TargetRanks

    rng = np.random.default_rng(21)
    groups = {}
    for g, n in (("crypto", 700), ("equities", 400), ("options", 50)):
        y = rng.normal(size=n)
        pred = np.round(0.4 * y + rng.normal(size=n), 1)  # many ties, across groups too
        pred[::13] = np.nan
        y[::29] = np.inf
        groups[g] = (pred, y)
    ranks = TargetRanks()
    for attempt in range(3):
        by_group, whole = ranks.pooled(groups, "pool")
        for g, (pred, y) in groups.items():
            keep = np.isfinite(pred) & np.isfinite(y)
            want = stats.spearmanr(pred[keep], y[keep]).statistic
            assert by_group[g].rank_ic == pytest.approx(want, rel=1e-12), (attempt, g)
            assert by_group[g] == metrics(pred, y)
        pred = np.concatenate([p for p, _ in groups.values()])
        y = np.concatenate([t for _, t in groups.values()])
        keep = np.isfinite(pred) & np.isfinite(y)
        assert whole.n == keep.sum()
        assert whole.rank_ic == pytest.approx(
            stats.spearmanr(pred[keep], y[keep]).statistic, rel=1e-12
        )
        assert whole.ic == pytest.approx(stats.pearsonr(pred[keep], y[keep]).statistic, rel=1e-12)
        if attempt == 0:  # same rows, new predictions: the kept target ranks serve them
            groups = {g: (0.5 - p, t) for g, (p, t) in groups.items()}
        else:  # other rows (another warm-up): a subset of the kept target sorts serves them
            groups = {
                g: (np.where(rng.random(p.size) < 0.2, np.nan, p), t)
                for g, (p, t) in groups.items()
            }


def test_merged_order_is_ascending() -> None:
    from modelyard.models._ranks import SortedGroups

    rng = np.random.default_rng(3)
    parts = [np.round(rng.normal(size=n), 2) for n in (300, 1, 0, 120)]
    values = np.concatenate(parts)
    groups = SortedGroups([len(p) for p in parts])
    for g, p in enumerate(parts):
        groups.sort(g, p)
    order, ordered = groups.merged()
    assert sorted(order.tolist()) == list(range(len(values)))
    assert np.all(np.diff(values[order]) >= 0)
    assert ordered.tobytes() == values[order].tobytes()


@pytest.mark.parametrize(
    "case", ["normal", "float32", "ties", "close", "signs", "float32 signs", "tiny"]
)
def test_sort_order_is_an_ascending_order(case: str) -> None:
    """The packed-key sort gives a true ascending order and the sorted values, for values
    that tie in their top bits (float32 predictions, values within 1e-9 of each other, long
    runs), signed zeros and infinities."""
    from modelyard.models._ranks import sort_order

    rng = np.random.default_rng(11)
    x = {
        "normal": rng.normal(size=20_000),
        "float32": rng.normal(size=20_000).astype(np.float32).astype(np.float64),
        "ties": np.round(rng.normal(size=20_000), 1),
        "close": 1.0 + rng.uniform(0.0, 1e-9, 5_000),  # one top-32-bit run: a real sort
        "signs": np.array([0.0, -0.0, np.inf, -np.inf, -1e-300, 1e-300, -2.5, 2.5, 0.0]),
        "float32 signs": np.array([0.0, -0.0, np.inf, -np.inf, -2.5, 2.5, 0.0, -0.0, 0.5]),
        "tiny": np.array([3.0]),
    }[case]
    order, ordered = sort_order(x)
    assert sorted(order.tolist()) == list(range(len(x)))
    assert np.all(x[order][1:] >= x[order][:-1])
    assert ordered.tobytes() == x[order].tobytes()


def test_pooled_sees_targets_refilled_in_place() -> None:
    """The kept target sorts are of the values, not of the caller's buffer: a buffer refilled
    with other targets is sorted again."""
    from modelyard.models.metrics import TargetRanks

    rng = np.random.default_rng(8)
    pred = rng.normal(size=500)
    target = 0.3 * pred + rng.normal(size=500)
    ranks = TargetRanks()
    ranks.pooled({"a": (pred, target)}, "pool")
    target[:] = -target
    _, whole = ranks.pooled({"a": (pred, target)}, "pool")
    assert whole == metrics(pred, target)
