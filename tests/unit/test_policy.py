"""The signal policy: thresholds with hysteresis, caps, long-short, NaN, the gross limit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from modelyard.config import PolicyConfig
from modelyard.errors import ConfigError
from modelyard.strategies.policy import (
    GrossLimiter,
    PolicyState,
    limit_gross,
    order_targets,
    target_weights,
)
from modelyard.strategies.routed import MIN_ORDER_UNITS, PlannedOrder, plan_orders

NAN = math.nan
LONG = PolicyConfig(entry_threshold=0.01, exit_threshold=0.004, scale=10.0, cap=0.3)
LONG_SHORT = PolicyConfig(
    entry_threshold=0.01, exit_threshold=0.004, scale=10.0, cap=0.3, long_short=True
)
BANDED = LONG_SHORT.model_copy(update={"rebalance_band": 0.05})


def test_long_only_enters_above_entry_and_holds_until_exit() -> None:
    pred = [0.005, 0.011, 0.008, 0.005, 0.004, 0.006, 0.02, -0.05, 0.012]
    expected = [0.0, 0.11, 0.08, 0.05, 0.0, 0.0, 0.2, 0.0, 0.12]
    np.testing.assert_allclose(target_weights(pred, LONG), expected, rtol=0, atol=1e-15)


def test_caps_clip_both_sides() -> None:
    pred = [0.05, 0.031, 0.5, -0.5, -0.031]
    assert target_weights(pred, LONG).tolist() == [0.3, 0.3, 0.3, 0.0, 0.0]
    assert target_weights(pred, LONG_SHORT).tolist() == [0.3, 0.3, 0.3, -0.3, -0.3]


def test_long_short_hysteresis_and_flip_on_one_bar() -> None:
    pred = [-0.011, -0.005, -0.004, -0.009, -0.02, 0.015, 0.005, -0.012, 0.0]
    expected = [-0.11, -0.05, 0.0, 0.0, -0.2, 0.15, 0.05, -0.12, 0.0]
    np.testing.assert_allclose(target_weights(pred, LONG_SHORT), expected, rtol=0, atol=1e-15)


def test_nan_prediction_is_flat_and_resets_the_state() -> None:
    pred = [0.02, NAN, 0.006, 0.02, 0.006]
    # After NaN the position is closed: 0.006 is below entry, so it stays flat.
    np.testing.assert_allclose(
        target_weights(pred, LONG), [0.2, 0.0, 0.0, 0.2, 0.06], rtol=0, atol=1e-15
    )


def test_rebalance_band_holds_the_weight_until_it_moves_more_than_the_band() -> None:
    pred = [0.02, 0.024, 0.026, 0.0255, 0.019, 0.05, 0.003, 0.011, -0.02, -0.016, NAN, 0.012]
    # 0.2 held while within 0.05 (0.24, 0.26, 0.255 -> 0.26 moves 0.06; 0.19 is 0.07 off);
    # 0.3 (cap); exit at 0.003 <= X; re-entry 0.11 (entries always trade); flip to -0.2
    # (flips always trade); -0.16 is inside the band; NaN flat; 0.12 a new entry
    expected = [0.2, 0.2, 0.26, 0.26, 0.19, 0.3, 0.0, 0.11, -0.2, -0.2, 0.0, 0.12]
    np.testing.assert_allclose(target_weights(pred, BANDED), expected, rtol=0, atol=1e-15)
    no_band = target_weights(pred, LONG_SHORT)
    assert no_band[1] == pytest.approx(0.24)
    assert no_band[9] == pytest.approx(-0.16)


def test_order_targets_drop_unchanged_targets_and_a_flat_start() -> None:
    w = np.array([0.0, 0.0, 0.2, 0.2, 0.26, 0.0, 0.0, -0.1, -0.1])
    got = order_targets(w)
    assert np.isnan(got[[0, 1, 3, 6, 8]]).all()
    assert got[[2, 4, 5, 7]].tolist() == [0.2, 0.26, 0.0, -0.1]
    assert order_targets(np.array([0.3]))[0] == 0.3
    assert order_targets(np.empty(0)).shape == (0,)


def test_policy_state_step_matches_the_vectorized_weights_exactly() -> None:
    rng = np.random.default_rng(3)
    pred = rng.normal(scale=0.012, size=2_000)
    pred[rng.integers(0, 2_000, 50)] = np.nan
    for policy in (LONG, LONG_SHORT, BANDED):
        state = PolicyState(policy)
        stepped = np.array([state.step(p) for p in pred])
        vectorized = target_weights(pred, policy)
        assert stepped.tobytes() == vectorized.tobytes()


def test_exit_above_entry_is_a_config_error() -> None:
    bad = PolicyConfig(entry_threshold=0.001, exit_threshold=0.002)
    with pytest.raises(ConfigError, match="exit_threshold"):
        target_weights([0.0], bad)
    with pytest.raises(ConfigError, match="exit_threshold"):
        PolicyState(bad)


def test_gross_limit_scales_all_weights_down_proportionally() -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    weights = {
        "A": pd.Series([0.5, 0.5, 0.2], index=index),
        "B": pd.Series([0.5, 1.0, -0.3], index=index),
        "C": pd.Series([0.0, 0.5, 0.1], index=index),
    }
    out = limit_gross(weights, max_gross=1.0)
    np.testing.assert_allclose(out["A"].to_numpy(), [0.5, 0.25, 0.2], rtol=1e-15)
    np.testing.assert_allclose(out["B"].to_numpy(), [0.5, 0.5, -0.3], rtol=1e-15)
    np.testing.assert_allclose(out["C"].to_numpy(), [0.0, 0.25, 0.1], rtol=1e-15)
    assert list(out["A"].index) == list(index)


def test_gross_limit_with_calendars_keeps_held_weights_and_scales_the_trading_ones() -> None:
    crypto_index = pd.date_range("2024-01-05", periods=3, freq="D", tz="UTC")  # Fri Sat Sun
    equity_index = pd.DatetimeIndex(["2024-01-05 21:00"], tz="UTC")
    weights = {
        "BTC": pd.Series([0.2, 0.6, 0.9], index=crypto_index),
        "AAPL": pd.Series([0.7], index=equity_index),
    }
    out = limit_gross(weights, max_gross=1.0)
    # Fri 00:00 BTC 0.2 alone; Fri 21:00 AAPL 0.7 + held 0.2 = 0.9 fits; Sat BTC may use 0.3
    # of the budget (AAPL holds 0.7), and so on Sunday.
    np.testing.assert_allclose(out["BTC"].to_numpy(), [0.2, 0.3, 0.3], rtol=1e-15)
    np.testing.assert_allclose(out["AAPL"].to_numpy(), [0.7], rtol=1e-15)


def test_gross_limiter_step_never_exceeds_the_limit() -> None:
    rng = np.random.default_rng(5)
    limiter = GrossLimiter(4, max_gross=0.8)
    for _ in range(500):
        trading = sorted(rng.choice(4, size=rng.integers(1, 5), replace=False).tolist())
        limiter.step(trading, rng.uniform(-0.5, 0.5, len(trading)).tolist())
        assert sum(abs(w) for w in limiter.held) <= 0.8 * (1 + 1e-12)


def test_plan_orders_sells_first_caps_and_drops_dust() -> None:
    items = [
        (0, 0.5, 100.0, 0.0),  # capped at 0.4: buy 40 units
        (1, -0.1, 50.0, 100.0),  # target -20: sell 120 units
        (2, 0.2, 10.0, 200.0),  # already at target: dropped
        (3, 0.0, 20.0, 50.0),  # close: sell 50 units
    ]
    planned = plan_orders(10_000.0, items, caps=[0.4, 1.0, 1.0, 1.0])
    assert planned == [
        PlannedOrder(1, -20.0, -6_000.0),
        PlannedOrder(3, 0.0, -1_000.0),
        PlannedOrder(0, 40.0, 4_000.0),
    ]
    almost = plan_orders(10_000.0, [(0, 0.2, 10.0, 200.0 - MIN_ORDER_UNITS / 2)], caps=[1.0])
    assert almost == []
    just = plan_orders(10_000.0, [(0, 0.2, 10.0, 200.0 - 2 * MIN_ORDER_UNITS)], caps=[1.0])
    assert [o.target for o in just] == [200.0]


# --- the numba kernels against the pure-Python rules, bit for bit -------------------------


def _reference_limit_gross(
    weights: dict[str, pd.Series], max_gross: float
) -> dict[str, np.ndarray]:
    """The pure-Python :class:`GrossLimiter` stepped over the union timeline (stable order)."""
    symbols = list(weights)
    limiter = GrossLimiter(len(symbols), max_gross)
    arrays = {s: weights[s].to_numpy(dtype=np.float64).copy() for s in symbols}
    events = sorted(
        (int(t.value), i, r) for i, s in enumerate(symbols) for r, t in enumerate(weights[s].index)
    )
    k = 0
    while k < len(events):
        step = [e for e in events[k:] if e[0] == events[k][0]]
        trading = [i for _, i, _ in step]
        w = [float(arrays[symbols[i]][r]) for _, i, r in step]
        for (_, i, r), value in zip(step, limiter.step(trading, w), strict=True):
            arrays[symbols[i]][r] = value
        k += len(step)
    return arrays


@pytest.mark.parametrize(
    "policy", [LONG, LONG_SHORT, BANDED], ids=["long_only", "long_short", "banded"]
)
def test_numba_target_weights_equal_the_python_rules_bit_for_bit(policy: PolicyConfig) -> None:
    rng = np.random.default_rng(11)
    pred = rng.normal(scale=0.012, size=5_000)
    pred[rng.integers(0, 5_000, 200)] = np.nan
    # the thresholds themselves (hysteresis edges), signed zeros, infinities, the caps
    pred[:12] = [0.01, 0.004, -0.01, -0.004, 0.0, -0.0, np.inf, -np.inf, 0.03, -0.03, 0.011, 0.0]
    state = PolicyState(policy)
    stepped = np.array([state.step(p) for p in pred])
    assert target_weights(pred, policy).tobytes() == stepped.tobytes()
    assert target_weights(pred[:0], policy).shape == (0,)


def test_numba_target_weights_hysteresis_matches_the_python_rules() -> None:
    policy = PolicyConfig(
        entry_threshold=0.002, exit_threshold=0.002, scale=7.0, cap=0.05, long_short=True
    )
    rng = np.random.default_rng(12)
    pred = np.round(rng.normal(scale=0.003, size=3_000), 3)  # many exact threshold hits
    state = PolicyState(policy)
    stepped = np.array([state.step(p) for p in pred])
    assert target_weights(pred, policy).tobytes() == stepped.tobytes()


@pytest.mark.parametrize("max_gross", [0.5, 1.0, 2.5])
def test_numba_gross_limit_equals_the_python_limiter_on_mixed_calendars(max_gross: float) -> None:
    rng = np.random.default_rng(int(max_gross * 10))
    hours = pd.date_range("2024-01-01", periods=300, freq="1h", tz="UTC")
    weights: dict[str, pd.Series] = {}
    for j in range(7):
        if j % 3 == 0:  # a 24/7 symbol
            index = hours
        elif j % 3 == 1:  # a session calendar: some hours only
            index = hours[(hours.hour >= 14) & (hours.hour < 21) & (hours.day_of_week < 5)]
        else:  # sparse and irregular
            index = hours[np.sort(rng.choice(300, 40, replace=False))]
        values = rng.normal(scale=0.4, size=len(index))
        values[rng.random(len(index)) < 0.2] = 0.0
        weights[f"S{j}"] = pd.Series(values, index=index)
    weights["EMPTY"] = pd.Series([], index=hours[:0], dtype=np.float64)
    expected = _reference_limit_gross(weights, max_gross)
    out = limit_gross(weights, max_gross)
    assert list(out) == list(weights)
    for s, series in out.items():
        assert series.to_numpy().tobytes() == expected[s].tobytes(), s
        assert series.index.equals(weights[s].index)


def test_timeline_of_layout_rows_equals_the_sorted_timeline() -> None:
    """GrossTimeline.of_rows (a counting sort on a layout's rows) is GrossTimeline.of (the
    stable sort of the timestamps) on mixed calendars, and limits to the same bits."""
    from modelyard.strategies._vbt_layout import build_layout
    from modelyard.strategies.policy import GrossTimeline

    rng = np.random.default_rng(5)
    hours = pd.date_range("2024-01-01", periods=400, freq="1h", tz="UTC")
    indexes = [
        hours,
        hours[(hours.hour >= 14) & (hours.hour < 21)],
        hours[np.sort(rng.choice(400, 60, replace=False))],
        hours[:0],
        hours[100:130],
    ]
    bars = {
        f"S{j}": pd.DataFrame(
            {c: np.full(len(ix), 100.0) for c in ("open", "high", "low", "close", "volume")},
            index=ix,
        )
        for j, ix in enumerate(indexes)
    }
    layout = build_layout(bars, list(bars))
    by_rows = GrossTimeline.of_rows(layout.rows, len(layout.index))
    by_stamps = GrossTimeline.of(indexes)
    assert by_rows.lengths == by_stamps.lengths
    for field in ("order", "bounds", "symbol"):
        assert np.array_equal(getattr(by_rows, field), getattr(by_stamps, field)), field
    weights = {
        s: pd.Series(rng.normal(scale=0.5, size=len(ix)), index=ix)
        for s, ix in zip(bars, indexes, strict=True)
    }
    a = limit_gross(weights, 1.0, timeline=by_rows)
    b = limit_gross(weights, 1.0)
    assert all(a[s].to_numpy().tobytes() == b[s].to_numpy().tobytes() for s in weights)


def test_limit_gross_arrays_builds_the_timeline_only_when_the_limit_can_bind() -> None:
    from modelyard.strategies.policy import GrossTimeline, limit_gross_arrays

    index = pd.date_range("2024-01-01", periods=50, freq="1h", tz="UTC")
    small = [np.full(50, 0.2), np.full(50, -0.3)]
    calls: list[int] = []

    def timeline() -> GrossTimeline:
        calls.append(1)
        return GrossTimeline.of([index, index])

    out = limit_gross_arrays(small, 1.0, timeline=timeline)
    assert calls == []
    assert all(np.array_equal(a, b) for a, b in zip(out, small, strict=True))
    assert all(a is not b for a, b in zip(out, small, strict=True))  # copies, not the inputs
    big = [np.full(50, 0.8), np.full(50, -0.8)]
    out = limit_gross_arrays(big, 1.0, timeline=timeline)
    assert calls == [1]
    assert np.allclose(np.abs(out[0]) + np.abs(out[1]), 1.0)
    assert big[0][0] == 0.8  # the inputs are left alone


def test_account_task_weights_equal_the_driver_limit_of_the_policy_weights() -> None:
    """The account task turns predictions into weights and limits them across the symbols
    (``limited_weights``): the same bits as ``limit_gross`` over ``target_weights`` series on
    the symbols' own bars, on mixed calendars, with the limit binding."""
    from modelyard.config.schema import CostConfig
    from modelyard.scale.shared import SharedTask, limited_weights
    from modelyard.strategies._vbt_layout import build_layout
    from modelyard.strategies.signals import SymbolSetup

    rng = np.random.default_rng(11)
    hours = pd.date_range("2024-01-01", periods=500, freq="1h", tz="UTC")
    indexes = {
        "A": hours,
        "B": hours[(hours.hour >= 14) & (hours.hour < 21)],
        "C": hours[np.sort(rng.choice(500, 90, replace=False))],
        "D": hours[200:320],
    }
    bars = {
        s: pd.DataFrame(
            {c: np.full(len(ix), 100.0) for c in ("open", "high", "low", "close", "volume")},
            index=ix,
        )
        for s, ix in indexes.items()
    }
    layout = build_layout(bars, list(bars))
    policy = {"A": LONG, "B": LONG_SHORT, "C": BANDED, "D": LONG_SHORT}
    setups = tuple(SymbolSetup(s, "equities", "24/7", policy[s], CostConfig()) for s in indexes)
    preds = {
        v: {s: rng.normal(scale=0.03, size=len(ix)) for s, ix in indexes.items()}
        for v in ("universal", "asset_specific")
    }
    kept = {v: {s: p.copy() for s, p in by.items()} for v, by in preds.items()}
    task = SharedTask(setups, preds, 0.5, "orders", 1e5, {}, {}, {})
    got = limited_weights(task, layout)
    for variant, by_symbol in preds.items():
        raw = {
            s: pd.Series(target_weights(p, policy[s]), index=indexes[s])
            for s, p in by_symbol.items()
        }
        want = limit_gross(raw, 0.5)
        assert list(got[variant]) == list(indexes)
        for s in indexes:
            assert got[variant][s].tobytes() == want[s].to_numpy().tobytes(), (variant, s)
            assert np.array_equal(by_symbol[s], kept[variant][s])
        # the limit binds: some weights were cut
        assert any(not np.array_equal(want[s].to_numpy(), raw[s].to_numpy()) for s in indexes)
