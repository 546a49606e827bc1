"""Backtrader and vectorbt agree trade for trade with the shipped models and config.

Same bundled bars, ``config/assets.yaml``, the shipped ONNX models, both routing variants:
``run_backtest`` (Backtrader) against ``run_vectorized`` (vectorbt, real numba JIT).

Tolerances asserted (measured on this data, in brackets):
* orders: same count, and per order the same timestamp, symbol and side; size, price and fee
  equal to 1e-9 relative (sizes <= 1.1e-10 relative, prices exact, fees <= 1.1e-10);
* equity: same index, every bar equal to 1e-9 relative (<= 7e-15); required: 1e-6;
* stats: ``n_trades``/``n_bars`` exact, the rest to 1e-9 relative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def _plan_orders_keyed_like_vectorbt(
    value: float, items: Sequence[tuple[int, float, float, float]], caps: Sequence[float]
) -> list[routed.PlannedOrder]:
    """``routed.plan_orders`` with the sort key rounded as vectorbt's ``call_seq="auto"``."""
    out = []
    for i, weight, close, current in items:
        w = max(-caps[i], min(caps[i], weight))
        if not (close > 0.0 and math.isfinite(w)):
            continue
        target = w * value / close
        if abs(target - current) < routed.MIN_ORDER_UNITS:
            continue
        out.append(routed.PlannedOrder(i, target, w * value - current * close))
    out.sort(key=lambda o: o.delta_notional)
    return out


@pytest.mark.slow
def test_tied_orders_are_the_only_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    """BTC/USD + ETH/USD asset-specific over 2017-2019: on 2018-03-15 both enter at their cap
    (equal notionals) and cash covers one; which one is rejected follows the rounding of the
    sort key (vectorized.py docstring). Keyed the same way, the engines agree exactly."""
    kwargs: dict[str, Any] = {"start": "2017-01-01", "end": "2019-12-31", "asset_specific": True}
    symbols = ["BTC/USD", "ETH/USD"]
    vb = run_vectorized(symbols, **kwargs)
    plain = run_backtest(symbols, **kwargs)
    assert len(plain.orders) == len(vb.orders)
    assert not plain.orders["symbol"].equals(_sorted(vb.orders)["symbol"])
    monkeypatch.setattr(routed, "plan_orders", _plan_orders_keyed_like_vectorbt)
    assert_same_run(run_backtest(symbols, **kwargs), vb)
    assert_same_run(
        run_backtest(symbols, **kwargs), run_vectorized(symbols, engine="order_func", **kwargs)
    )


def test_symbol_without_bars_names_it() -> None:
    # AAPL's bundled bars end in 2013: nothing in 2015 (fails before any simulation)
    with pytest.raises(DataError, match="AAPL"):
        run_vectorized(["BTC/USD", "AAPL"], start="2015-01-01", end="2015-06-30")
    aapl = load_bars("AAPL", "1d", "2010-01-01", "2010-12-31")
    with pytest.raises(DataError, match="MSFT"):
        run_vectorized(["AAPL", "MSFT"], bars={"AAPL": aapl})
    with pytest.raises(DataError, match="MSFT: no bars"):
        run_vectorized(["AAPL", "MSFT"], bars={"AAPL": aapl, "MSFT": aapl.iloc[:0]})
