"""Backtrader and vectorbt agree trade for trade with the shipped models and config.

Same bundled bars, ``config/assets.yaml``, the shipped ONNX models, both routing variants:
``run_backtest`` (Backtrader) against ``run_vectorized`` (vectorbt, real numba JIT).

Tolerances asserted (measured on this data, in brackets):
* orders: same count, and per order the same timestamp, symbol and side; size, price and fee
  equal to 1e-9 relative (sizes <= 1.1e-10 relative, prices exact, fees <= 1.1e-10);
* equity: same index, every bar equal to 1e-9 relative (<= 7e-15); required: 1e-6;
* stats: ``n_trades``/``n_bars`` exact, the rest to 1e-9 relative.

Orders of equal notional in one step (two symbols entering at their cap from flat) tie exactly
in both engines: ``routed.plan_orders`` computes the sort key as vectorbt's
``call_seq="auto"`` does, ``w * value - current * close``, so when cash covers only one, both
reject the same one (BTC/USD + ETH/USD asset-specific, 2018-03-15).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import DataError
from modelyard.feeds import load_bars
from modelyard.strategies import routed
from modelyard.strategies.backtest import run_backtest
from modelyard.strategies.results import Result
from modelyard.strategies.vectorized import run_vectorized

CASES = {
    # name: (symbols, start, end, engine)
    "equities": (["AAPL", "MSFT"], "2005-01-01", "2012-12-31", "auto"),  # from_orders
    "crypto": (["BTC/USD"], "2015-01-01", "2019-12-31", "auto"),
    # ETH/USD starts 2017-11-09: one account, symbols starting at different bars
    "crypto_pair": (["BTC/USD", "ETH/USD"], "2017-06-01", "2018-02-01", "auto"),
    # equities (weekdays, 20:00/21:00 UTC) and crypto (every day, 00:00 UTC) in one account:
    # from_order_func with Backtrader's order queue
    "mixed_calendars": (["GSPC", "BTC/USD"], "2015-01-01", "2017-12-31", "auto"),
    # the order-queue path on the equity case too
    "equities_order_func": (["AAPL", "MSFT"], "2005-01-01", "2012-12-31", "order_func"),
}


def _sorted(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


def assert_same_run(bt: Result, vb: Result) -> None:
    a, b = _sorted(bt.orders), _sorted(vb.orders)
    assert len(a) == len(b) > 0
    cols = ["timestamp", "symbol", "side"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    for col in ("size", "price", "fee"):
        np.testing.assert_allclose(b[col].to_numpy(), a[col].to_numpy(), rtol=1e-9, atol=0.0)
    pd.testing.assert_index_equal(bt.equity.index, vb.equity.index)
    np.testing.assert_allclose(vb.equity.to_numpy(), bt.equity.to_numpy(), rtol=1e-9, atol=0.0)
    assert vb.stats["n_trades"] == bt.stats["n_trades"]
    assert vb.stats["n_bars"] == bt.stats["n_bars"]
    for key, value in bt.stats.items():
        assert vb.stats[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert vb.routes == bt.routes


@pytest.mark.slow
@pytest.mark.parametrize("asset_specific", [False, True], ids=["universal", "asset_specific"])
@pytest.mark.parametrize("case", list(CASES))
def test_engines_agree(case: str, asset_specific: bool) -> None:
    symbols, start, end, engine = CASES[case]
    kwargs = {"start": start, "end": end, "asset_specific": asset_specific}
    bt = run_backtest(symbols, **kwargs)  # type: ignore[arg-type]
    vb = run_vectorized(symbols, engine=engine, **kwargs)  # type: ignore[arg-type]
    expected = "order_func" if case.startswith(("mixed", "equities_order")) else "orders"
    assert vb.config["run"]["vectorbt_engine"] == expected
    assert vb.config["run"]["engine"] == "vectorbt"
    assert_same_run(bt, vb)


def test_plan_orders_keys_ties_like_vectorbt() -> None:
    """Two entries at the same weight from flat have the same notional ``w * value``; keyed as
    vectorbt keys them (``w * value - current * close``) they tie exactly and keep their data
    order. ``(w * value / close - current) * close`` would put data 1 first (24999.999...)."""
    value, w = 100_000.0, 0.25
    items = [(0, w, 8211.12351, 0.0), (1, w, 11.3, 0.0)]
    assert (w * value / 11.3) * 11.3 < (w * value / 8211.12351) * 8211.12351  # the rounding
    planned = routed.plan_orders(value, items, caps=[0.25, 0.25])
    assert [o.index for o in planned] == [0, 1]
    assert planned[0].delta_notional == planned[1].delta_notional == 25_000.0
    assert [o.target for o in planned] == [w * value / 8211.12351, w * value / 11.3]


@pytest.mark.slow
def test_tied_orders_agree_with_vectorbt(caplog: pytest.LogCaptureFixture) -> None:
    """BTC/USD + ETH/USD asset-specific over 2015-2019: on 2018-03-15 both enter at their cap
    (equal notionals) and cash covers one. ``plan_orders`` keys the sort as vectorbt does, so
    both engines reject the same one (ETH/USD) and agree exactly, on both vectorbt paths."""
    kwargs: dict[str, Any] = {"start": "2015-01-01", "end": "2019-12-31", "asset_specific": True}
    symbols = ["BTC/USD", "ETH/USD"]
    with caplog.at_level(logging.WARNING, logger="modelyard.strategies.routed"):
        bt = run_backtest(symbols, **kwargs)
    assert any("ETH/USD: order of" in m and "margin at 2018-03-15" in m for m in caplog.messages), (
        "the tie of 2018-03-15 is no longer exercised"
    )
    day = bt.orders[bt.orders["timestamp"] == pd.Timestamp("2018-03-15", tz="UTC")]
    assert day["symbol"].tolist() == ["BTC/USD"]
    assert_same_run(bt, run_vectorized(symbols, **kwargs))
    assert_same_run(bt, run_vectorized(symbols, engine="order_func", **kwargs))


def test_symbol_without_bars_names_it() -> None:
    # AAPL's bundled bars end in 2013: nothing in 2015 (fails before any simulation)
    with pytest.raises(DataError, match="AAPL"):
        run_vectorized(["BTC/USD", "AAPL"], start="2015-01-01", end="2015-06-30")
    aapl = load_bars("AAPL", "1d", "2010-01-01", "2010-12-31")
    with pytest.raises(DataError, match="MSFT"):
        run_vectorized(["AAPL", "MSFT"], bars={"AAPL": aapl})
    with pytest.raises(DataError, match="MSFT: no bars"):
        run_vectorized(["AAPL", "MSFT"], bars={"AAPL": aapl, "MSFT": aapl.iloc[:0]})
