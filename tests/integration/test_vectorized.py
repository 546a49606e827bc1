"""The vectorbt engine and compare(): layouts, given predictions against Backtrader, the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modelyard.config import parse_config
from modelyard.errors import DataError
from modelyard.strategies._vbt_layout import build_layout, previous_targets
from modelyard.strategies.backtest import run_backtest
from modelyard.strategies.compare import TABLE_COLUMNS, VARIANTS, compare
from modelyard.strategies.vectorized import run_vectorized
from tests.integration.test_engine_parity import assert_same_run


def _bars(index: pd.DatetimeIndex, seed: int, price: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.02, len(index))))
    open_ = np.r_[price, close[:-1]] * (1 + rng.normal(0, 0.003, len(index)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "volume": 1_000.0,
        },
        index=index,
    )


def _mixed() -> dict[str, pd.DataFrame]:
    """Crypto every day at 00:00 UTC, equities on weekdays at 21:00 UTC (they interleave)."""
    days = pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC")
    weekdays = pd.bdate_range("2024-01-01", periods=42, tz="UTC") + pd.Timedelta(hours=21)
    return {"BTC/USD": _bars(days, 1, 40_000.0), "AAPL": _bars(weekdays, 2, 180.0)}


def _config(base: dict[str, Any], long_short: bool) -> Any:
    raw = yaml.safe_load(yaml.safe_dump(base))
    for cls in ("equities", "crypto"):
        raw["asset_classes"][cls]["policy"] = {
            "entry_threshold": 0.001,
            "exit_threshold": 0.0,
            "scale": 100.0,
            "cap": 0.6,
            "long_short": long_short,
        }
    raw["asset_classes"]["crypto"]["costs"] = {"fees": 0.0025, "slippage": 0.002}
    return parse_config(raw)


def test_layout_union_and_shifted_targets() -> None:
    bars = _mixed()
    layout = build_layout(bars, ["AAPL", "BTC/USD"])
    assert len(layout.index) == 60 + 42
    assert not layout.contiguous  # an AAPL decision on Friday fills on Monday
    assert layout.has_bar.sum(axis=0).tolist() == [42, 60]
    assert np.isfinite(layout.close).all()  # valued at the last close between its bars
    weights = {s: pd.Series(np.arange(len(b), dtype=float), index=b.index) for s, b in bars.items()}
    size = previous_targets(layout, weights)
    aapl = size[layout.rows[0], 0]
    assert np.isnan(aapl[0])
    np.testing.assert_array_equal(aapl[1:], np.arange(41.0))
    assert np.isnan(size[~layout.has_bar]).all()


@pytest.mark.slow
@pytest.mark.parametrize("long_short", [False, True], ids=["long_only", "long_short"])
def test_interleaved_calendars_match_backtrader(
    long_short: bool, base_config_dict: dict[str, Any]
) -> None:
    """Given predictions, one account, max_gross 0.8: every fill as Backtrader's; long-short
    flips (with short cash) go through the order-queue callbacks."""
    bars = _mixed()
    rng = np.random.default_rng(5)
    preds = {s: pd.Series(rng.normal(0.0, 0.01, len(b)), index=b.index) for s, b in bars.items()}
    kwargs: dict[str, Any] = {
        "bars": bars,
        "predictions": preds,
        "config": _config(base_config_dict, long_short),
        "max_gross": 0.8,
    }
    bt = run_backtest(["AAPL", "BTC/USD"], **kwargs)
    vb = run_vectorized(["AAPL", "BTC/USD"], **kwargs)
    assert vb.config["run"]["vectorbt_engine"] == "order_func"
    if long_short:
        assert (bt.trades["size"] < 0).any()
    assert_same_run(bt, vb)


@pytest.mark.slow
def test_compare_tables_both_variants(base_config_dict: dict[str, Any], tmp_path: Path) -> None:
    days = pd.date_range("2023-01-01", periods=400, freq="D", tz="UTC")
    bars = {"btc-usd": _bars(days, 3, 30_000.0), "AAPL": _bars(days, 4), "MSFT": _bars(days, 5)}
    stages: list[str] = []
    comp = compare(
        ["btc-usd", "AAPL", "MSFT"],
        bars=bars,
        progress=lambda stage, done, total: stages.append(stage),
    )
    assert comp.variants == VARIANTS
    assert comp.symbols == ("BTC/USD", "AAPL", "MSFT")
    assert comp.asset_classes == {"BTC/USD": "crypto", "AAPL": "equities", "MSFT": "equities"}
    assert list(comp.table.columns) == list(TABLE_COLUMNS)
    assert len(comp.table) == 2 * (1 + 2 + 3)
    assert comp.table["level"].tolist()[:2] == ["portfolio", "portfolio"]
    assert set(comp.equity) == set(VARIANTS)
    assert set(comp.symbol_equity) == {(v, s) for v in VARIANTS for s in comp.symbols}
    assert set(comp.class_equity) == {(v, c) for v in VARIANTS for c in ("crypto", "equities")}
    assert {"signals", "simulate", "stats"} <= set(stages)
    routes = {v: {r["symbol"]: r["model_id"] for r in comp.routes[v]} for v in VARIANTS}
    assert routes["universal"] == dict.fromkeys(comp.symbols, "universal_v1")
    assert routes["asset_specific"]["BTC/USD"] == "crypto_v1"
    assert comp.predictions_sha256["universal"] != comp.predictions_sha256["asset_specific"]
    # the portfolio rows are the Results: the same run as run_vectorized / run_backtest
    for variant, flag in (("universal", False), ("asset_specific", True)):
        single = run_vectorized(
            list(comp.symbols),
            bars={"BTC/USD": bars["btc-usd"], "AAPL": bars["AAPL"], "MSFT": bars["MSFT"]},
            asset_specific=flag,
        )
        assert_same_run(single, comp.results[variant])
        row = comp.table[(comp.table["level"] == "portfolio") & (comp.table["variant"] == variant)]
        assert row["total_return"].item() == comp.results[variant].stats["total_return"]
        assert row["n_bars"].item() == 400
    # a symbol's sleeve: its own fills in the portfolio, from the full cash
    alone = comp.symbol_equity[("universal", "AAPL")]
    assert alone.iloc[0] == 100_000.0  # no fill before its second bar
    assert comp.symbol_equity[("universal", "MSFT")].iloc[-1] != alone.iloc[-1]
    assert np.isfinite(comp.table[["ic", "rank_ic", "hit_rate"]].to_numpy()).all()
    again = compare(["btc-usd", "AAPL", "MSFT"], bars=bars)
    assert again.predictions_sha256 == comp.predictions_sha256
    pd.testing.assert_frame_equal(again.table, comp.table)


def test_compare_rejects_executor_and_missing_bars() -> None:
    with pytest.raises(ValueError, match="executor"):
        compare(["AAPL"], executor=object())
    with pytest.raises(DataError, match="AAPL"):
        compare(["BTC/USD", "AAPL"], start="2015-01-01", end="2015-03-01")
    with pytest.raises(DataError, match="MSFT"):
        compare(["AAPL", "MSFT"], bars={"AAPL": _bars(pd.date_range("2024", periods=5), 1)})


@pytest.mark.parametrize("group_by", [True, [0, 0, 1, 1], False])
def test_value_curves_from_records_are_vectorbt_values_bit_for_bit(group_by: Any) -> None:
    """Simulation takes each group's value from the order records with vectorbt's kernels
    (and drops the portfolio): the same bits as ``Portfolio.value()``, shorts and NaN closes
    included."""
    import vectorbt as vbt

    from modelyard.strategies._vbt_values import group_values

    rng = np.random.default_rng(5)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (400, 4)), axis=0))
    close[:7, 3] = np.nan  # a symbol that starts late
    size = np.where(rng.random(close.shape) < 0.3, rng.normal(0.0, 0.4, close.shape), np.nan)
    pf = vbt.Portfolio.from_orders(
        close=pd.DataFrame(close),
        size=size,
        size_type="targetpercent",
        fees=0.001,
        init_cash=100_000.0,
        cash_sharing=group_by is not False,
        group_by=group_by,
        freq=None,
    )
    assert len(pf.order_records) > 100
    want = np.asarray(pf.value(), dtype=np.float64).reshape(len(close), -1)
    got = group_values(pf)
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def _random_targets(
    bars: dict[str, pd.DataFrame], *, seed: int, high: float
) -> tuple[list[Any], dict[str, dict[str, pd.Series]]]:
    """The symbols' setups, and random weights in [0, high] (rounded to 0.1) per variant."""
    from modelyard.config import load_config
    from modelyard.routing.router import AssetSpecificModelRouter
    from modelyard.strategies.signals import symbol_setups

    names = list(bars)
    setups = symbol_setups(AssetSpecificModelRouter(load_config(None)), names)
    rng = np.random.default_rng(seed)
    weights = {
        v: {
            s: pd.Series(np.round(rng.uniform(0.0, high, len(bars[s])), 1), index=bars[s].index)
            for s in names
        }
        for v in ("universal", "asset_specific")
    }
    return setups, weights


@pytest.mark.parametrize("engine", ["orders", "order_func"])
@pytest.mark.parametrize("grouping", ["portfolio", "class", "symbol"])
def test_simulation_fills_are_its_orders(engine: str, grouping: Any) -> None:
    """The arrays the class and standalone statistics read are the orders frame's rows, in
    its order; the portfolio is dropped once its values are taken."""
    from modelyard.strategies.results import Fills
    from modelyard.strategies.vectorized import simulate

    days = pd.date_range("2024-01-01", periods=80, freq="D", tz="UTC")
    bars = {"BTC/USD": _bars(days, 1, 40_000.0), "AAPL": _bars(days, 2, 180.0)}
    setups, weights = _random_targets(bars, seed=3, high=0.45)
    layout = build_layout(bars, list(bars))
    sim = simulate(layout, setups, weights, cash=1e5, grouping=grouping, engine=engine)
    assert sim.portfolio is None
    assert sim.values.shape[0] == len(days)
    for variant in weights:
        orders = sim.orders(variant=variant)
        fills = sim.fills(variant=variant)
        assert len(orders) > 10
        want = Fills.of_orders(orders)
        for name in ("stamp", "signed", "size", "price", "fee"):
            np.testing.assert_array_equal(getattr(fills, name), getattr(want, name), name)
        symbol_of = sim.symbol_names(variant=variant)
        assert [symbol_of[c] for c in fills.code] == list(orders["symbol"])


@pytest.mark.parametrize("engine", ["orders", "order_func"])
def test_sleeves_add_up_to_the_portfolio(engine: str) -> None:
    """compare's class and symbol rows are sleeves of the portfolio simulation: the profit and
    loss of the symbols' sleeves sums to the portfolio's at every step, and a class's to its
    symbols'; a sleeve moves only with its own fills and closes."""
    from modelyard.strategies.vectorized import simulate

    days = pd.date_range("2024-01-01", periods=120, freq="D", tz="UTC")
    bars = {
        "BTC/USD": _bars(days, 1, 40_000.0),
        "ETH/USD": _bars(days, 7, 2_000.0),
        "AAPL": _bars(days, 2, 180.0),
    }
    setups, weights = _random_targets(bars, seed=11, high=0.3)
    cash = 1e5
    sim = simulate(build_layout(bars, list(bars)), setups, weights, cash=cash, engine=engine)
    symbols, symbol_keys = sim.sleeve_values("symbol")
    classes, class_keys = sim.sleeve_values("class")
    assert len(sim.records) > 50
    for g, key in enumerate(sim.keys):
        (variant,) = key
        mine = [k for k, sk in enumerate(symbol_keys) if sk[0] == variant]
        pnl = (symbols[:, mine] - cash).sum(axis=1)
        np.testing.assert_allclose(pnl, sim.values[:, g] - cash, rtol=0, atol=1e-6)
        for c, ck in enumerate(class_keys):
            if ck[0] != variant:
                continue
            members = [k for k, sk in enumerate(symbol_keys) if sk[:2] == ck]
            class_pnl = (symbols[:, members] - cash).sum(axis=1)
            np.testing.assert_allclose(class_pnl, classes[:, c] - cash, rtol=0, atol=1e-6)
    # a symbol with no fill keeps the cash; one with fills moves
    assert (symbols[0] == cash).all()
    assert (np.abs(symbols[-1] - cash) > 1.0).all()
