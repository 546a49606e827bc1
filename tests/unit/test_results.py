"""The Result schema: exact save/load round trip, atomic folders, trades and stats by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from modelyard.strategies.results import (
    STAT_KEYS,
    Result,
    compute_stats,
    empty_orders,
    infer_periods_per_year,
    trades_from_orders,
)


def _orders(rows: list[tuple[str, str, str, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime([r[0] for r in rows], utc=True),
            "symbol": [r[1] for r in rows],
            "side": [r[2] for r in rows],
            "size": [r[3] for r in rows],
            "price": [r[4] for r in rows],
            "fee": [r[5] for r in rows],
        }
    )


def _result() -> Result:
    rng = np.random.default_rng(11)
    index = pd.date_range("2024-01-01 21:00", periods=30, freq="D", tz="UTC")
    equity = pd.Series(100_000 * np.cumprod(1 + rng.normal(0, 0.01, 30)), index=index)
    orders = _orders(
        [
            ("2024-01-02 21:00", "BTC/USD", "buy", 1 / 3, 42_000.123456789, 0.1 + 0.2),
            ("2024-01-05 21:00", "AAPL", "sell", 12.5, 185.3, 2.3),
            ("2024-01-09 21:00", "BTC/USD", "sell", 1 / 3, 43_001.5, 1e-17),
        ]
    )
    trades = trades_from_orders(orders, {"BTC/USD": 43_000.0, "AAPL": 190.0})
    stats = compute_stats(equity, orders, trades, 252)
    return Result(
        equity=equity,
        orders=orders,
        trades=trades,
        stats=stats,
        routes=[{"symbol": "AAPL", "model_id": "universal_v1", "model_sha256": None}],
        config={"run": {"cash": 100_000.0, "symbols": ["AAPL", "BTC/USD"]}},
    )


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    result = _result()
    assert result.trades["exit_time"].isna().tolist() == [False, True]  # NaT survives too
    folder = result.save(tmp_path / "run")
    assert sorted(p.name for p in folder.iterdir()) == sorted(Result.FILES)
    back = Result.load(folder)
    pdt.assert_series_equal(back.equity, result.equity, check_exact=True, check_freq=False)
    pdt.assert_frame_equal(back.orders, result.orders, check_exact=True)
    pdt.assert_frame_equal(back.trades, result.trades, check_exact=True)
    assert str(back.equity.index.dtype) == "datetime64[ns, UTC]"
    assert back.orders.dtypes.astype(str).tolist() == [
        "datetime64[ns, UTC]",
        "str",
        "str",
        "float64",
        "float64",
        "float64",
    ]
    assert back.stats == result.stats
    assert all(
        np.float64(back.stats[k]).tobytes() == np.float64(result.stats[k]).tobytes()
        for k in STAT_KEYS
    )
    assert back.routes == result.routes
    assert back.config == result.config


def test_empty_result_round_trips(tmp_path: Path) -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    equity = pd.Series([1.0, 1.0, 1.0], index=index)
    orders = empty_orders()
    trades = trades_from_orders(orders, {})
    result = Result(equity, orders, trades, compute_stats(equity, orders, trades, 365))
    back = Result.load(result.save(tmp_path / "empty"))
    pdt.assert_frame_equal(back.orders, result.orders)
    pdt.assert_frame_equal(back.trades, result.trades)


def test_save_refuses_a_non_empty_folder_and_leaves_no_temp_folders(tmp_path: Path) -> None:
    result = _result()
    folder = result.save(tmp_path / "run")
    with pytest.raises(FileExistsError):
        result.save(folder)
    result.save(folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_trades_split_a_sign_flip_and_charge_fees_pro_rata() -> None:
    orders = _orders(
        [
            ("2024-01-01", "X", "buy", 10.0, 100.0, 1.0),
            ("2024-01-02", "X", "buy", 10.0, 110.0, 1.1),
            ("2024-01-03", "X", "sell", 30.0, 120.0, 3.0),  # closes 20, opens -10
            ("2024-01-04", "X", "buy", 10.0, 90.0, 0.9),
        ]
    )
    trades = trades_from_orders(orders, {"X": 0.0})
    assert trades["size"].tolist() == [20.0, -10.0]
    assert trades["entry_price"].tolist() == [105.0, 120.0]
    assert trades["exit_price"].tolist() == [120.0, 90.0]
    # long: 20 * (120 - 105) - 1 - 1.1 - 2/3 * 3 ; short: 10 * (120 - 90) - 1 - 0.9
    assert trades["pnl"].tolist() == pytest.approx([300 - 4.1, 300 - 1.9], rel=1e-15)
    assert trades["return"].tolist() == pytest.approx([295.9 / 2100, 298.1 / 1200], rel=1e-15)
    assert trades["exit_time"].tolist() == [
        pd.Timestamp("2024-01-03", tz="UTC"),
        pd.Timestamp("2024-01-04", tz="UTC"),
    ]


def test_stats_by_hand() -> None:
    index = pd.to_datetime(
        ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"], utc=True
    )
    values = [100.0, 110.0, 99.0, 108.9, 108.9]
    equity = pd.Series(values, index=index)
    orders = _orders(
        [
            ("2024-01-02", "X", "buy", 1.0, 50.0, 0.0),
            ("2024-01-04", "X", "sell", 1.0, 60.0, 0.0),
        ]
    )
    trades = trades_from_orders(orders, {"X": 60.0})
    stats = compute_stats(equity, orders, trades, 365)
    r = np.array([0.1, -0.1, 0.1, 0.0])
    assert list(stats) == list(STAT_KEYS)
    assert stats["total_return"] == pytest.approx(0.089, rel=1e-12)
    assert stats["cagr"] == pytest.approx(1.089 ** (365.25 / 4) - 1, rel=1e-12)
    assert stats["ann_volatility"] == pytest.approx(np.std(r, ddof=1) * math.sqrt(365))
    assert stats["sharpe"] == pytest.approx(r.mean() / np.std(r, ddof=1) * math.sqrt(365))
    assert stats["sortino"] == pytest.approx(r.mean() / math.sqrt(0.01 / 4) * math.sqrt(365))
    assert stats["max_drawdown"] == pytest.approx(-0.1, rel=1e-12)
    assert (stats["n_trades"], stats["win_rate"], stats["n_bars"]) == (1, 1.0, 5)
    assert stats["exposure"] == pytest.approx(2 / 5)  # open after the fills of Jan 2 and 3
    assert stats["turnover"] == pytest.approx(110.0 / np.mean(values))


def test_periods_per_year_follows_the_finest_calendar() -> None:
    daily = pd.DataFrame(index=pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC"))
    hourly = pd.DataFrame(index=pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC"))
    assert infer_periods_per_year({"AAPL": daily}, {"AAPL": "XNYS"}) == 252
    assert infer_periods_per_year({"A": daily, "B": daily}, {"A": "XNYS", "B": "24/7"}) == 365
    assert infer_periods_per_year({"B": hourly}, {"B": "24/7"}) == pytest.approx(24 * 365)
