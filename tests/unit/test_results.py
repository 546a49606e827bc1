"""The Result schema: exact save/load round trip, atomic folders, trades and stats by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from modelyard.strategies.results import (
    ORDER_COLUMNS,
    STAT_KEYS,
    TRADE_COLUMNS,
    Fills,
    Result,
    _positions_open,
    _typed,
    compute_stats,
    empty_orders,
    infer_periods_per_year,
    stats_of_fills,
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


def test_a_typed_frame_is_not_rebuilt_and_stays_independent() -> None:
    """A frame already in the schema is kept as it is (no copy of its columns), yet a change
    to either frame does not reach the other (copy on write); any other frame is rebuilt."""
    typed = _typed(_orders([("2024-01-02", "AAPL", "buy", 1.0, 10.0, 0.1)]), ORDER_COLUMNS)
    again = _typed(typed, ORDER_COLUMNS)
    assert again is not typed
    pdt.assert_frame_equal(again, typed, check_exact=True)
    assert np.shares_memory(again["price"].to_numpy(), typed["price"].to_numpy())
    again.loc[0, "price"] = 11.0
    assert typed.loc[0, "price"] == 10.0
    reordered = typed[list(reversed(ORDER_COLUMNS))].set_axis(pd.RangeIndex(5, 6))
    rebuilt = _typed(reordered, ORDER_COLUMNS)
    assert list(rebuilt.columns) == list(ORDER_COLUMNS)
    assert rebuilt.index.equals(pd.RangeIndex(1))
    pdt.assert_frame_equal(rebuilt, typed, check_exact=True)


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


# --- the array implementation against the reference loop -------------------------------------
FLAT_EPS = 1e-9


@dataclass(slots=True)
class _RefOpen:
    symbol: str
    sign: float
    entry_time: pd.Timestamp
    position: float = 0.0
    added: float = 0.0
    entry_value: float = 0.0
    reduced: float = 0.0
    exit_value: float = 0.0
    fees: float = 0.0

    def row(self, exit_time: Any, mark: float | None = None) -> dict[str, Any]:
        exit_size = self.reduced
        exit_value = self.exit_value
        if mark is not None and abs(self.position) > 0.0:
            exit_size += abs(self.position)
            exit_value += abs(self.position) * mark
        entry_price = self.entry_value / self.added
        exit_price = exit_value / exit_size if exit_size > 0 else math.nan
        pnl = self.sign * (exit_value - entry_price * exit_size) - self.fees
        return {
            "symbol": self.symbol,
            "entry_time": self.entry_time,
            "exit_time": exit_time,
            "size": self.sign * self.added,
            "entry_price": entry_price,
            "exit_price": exit_price,
            "pnl": pnl,
            "return": pnl / (entry_price * self.added),
        }


def _reference_trades(
    orders: pd.DataFrame, last_prices: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """The straightforward loop over every fill (the implementation before the numba one)."""
    rows: list[dict[str, Any]] = []
    open_: dict[str, _RefOpen] = {}
    for ts, symbol, side, size, price, fee in zip(
        orders["timestamp"],
        orders["symbol"],
        orders["side"],
        orders["size"].to_numpy(dtype=np.float64),
        orders["price"].to_numpy(dtype=np.float64),
        orders["fee"].to_numpy(dtype=np.float64),
        strict=True,
    ):
        signed = size if side == "buy" else -size
        remaining = signed
        trade = open_.get(symbol)
        if trade is not None and trade.sign * signed < 0:
            closing = min(abs(signed), abs(trade.position))
            share = closing / abs(signed) if signed else 0.0
            trade.reduced += closing
            trade.exit_value += closing * price
            trade.fees += fee * share
            trade.position -= trade.sign * closing
            remaining = signed + trade.sign * closing
            fee = fee * (1.0 - share)
            if abs(trade.position) <= FLAT_EPS * max(1.0, trade.added):
                rows.append(trade.row(ts))
                del open_[symbol]
                trade = None
        if abs(remaining) > 0.0:
            if trade is None:
                trade = _RefOpen(symbol, 1.0 if remaining > 0 else -1.0, ts)
                open_[symbol] = trade
            trade.added += abs(remaining)
            trade.entry_value += abs(remaining) * price
            trade.position += remaining
            trade.fees += fee
        elif trade is not None:
            trade.fees += fee
    if last_prices is not None:
        for symbol, trade in open_.items():
            rows.append(trade.row(pd.NaT, mark=float(last_prices[symbol])))
    frame = pd.DataFrame(rows, columns=list(TRADE_COLUMNS))
    frame = frame.sort_values(["entry_time", "symbol"], kind="stable").reset_index(drop=True)
    return _typed(frame, TRADE_COLUMNS)


def _reference_positions_open(orders: pd.DataFrame, index: pd.DatetimeIndex) -> np.ndarray:
    """Per step, any position open: per symbol ``groupby(ts).sum().cumsum()`` looked up."""
    if len(orders) == 0:
        return np.zeros(len(index), dtype=bool)
    signed = np.where(orders["side"].to_numpy() == "buy", 1.0, -1.0) * orders["size"].to_numpy(
        dtype=np.float64
    )
    gross = np.zeros(len(index), dtype=np.float64)
    for _symbol, part in pd.DataFrame(
        {"ts": orders["timestamp"], "sym": orders["symbol"], "q": signed}
    ).groupby("sym", sort=False):
        pos = part.groupby("ts")["q"].sum().cumsum()
        ts = pd.DatetimeIndex(pos.index).as_unit("ns").asi8
        at = np.searchsorted(ts, index.as_unit("ns").asi8, side="right") - 1
        values = np.where(at >= 0, pos.to_numpy()[np.maximum(at, 0)], 0.0)
        gross += np.abs(np.where(np.abs(values) <= FLAT_EPS, 0.0, values))
    return np.asarray(gross > 0.0)


def _random_fills(rng: np.random.Generator, n: int, n_symbols: int) -> pd.DataFrame:
    """Fills of several symbols: opens, adds, exact closes, flips, partial closes, closes
    within FLAT_EPS, fractional sizes, fee-free fills, several fills at one timestamp."""
    symbols = [f"S{j}" if j % 2 else f"C{j}/USD" for j in rng.permutation(n_symbols)]
    position = dict.fromkeys(symbols, 0.0)
    stamp = pd.Timestamp("2020-01-01", tz="UTC")
    rows = []
    for _ in range(n):
        if rng.random() < 0.7:
            stamp += pd.Timedelta(hours=int(rng.integers(1, 4)))
        symbol = symbols[int(rng.integers(n_symbols))]
        held = position[symbol]
        u = rng.random()
        if held and u < 0.25:
            delta = -held  # exact close
        elif held and u < 0.35:
            delta = -held * float(rng.uniform(1.2, 4.0))  # flip
        elif held and u < 0.45:
            delta = -held * float(rng.random())  # partial close
        elif held and u < 0.5:
            delta = -held + float(rng.choice([1e-10, -1e-10, 1e-8, -1e-8]))  # ~flat
        else:
            delta = float(rng.choice([1.0, -1.0]) * rng.lognormal(0.0, 2.0))
        if delta == 0.0:
            continue
        position[symbol] = held + delta
        fee = float(rng.random()) if rng.random() < 0.8 else 0.0
        side = "buy" if delta > 0 else "sell"
        rows.append((stamp, symbol, side, abs(delta), float(rng.lognormal(4.0, 1.0)), fee))
    frame = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex([r[0] for r in rows], dtype="datetime64[ns, UTC]"),
            "symbol": pd.Series([r[1] for r in rows], dtype="str"),
            "side": pd.Series([r[2] for r in rows], dtype="str"),
            "size": np.array([r[3] for r in rows], dtype=np.float64),
            "price": np.array([r[4] for r in rows], dtype=np.float64),
            "fee": np.array([r[5] for r in rows], dtype=np.float64),
        }
    )
    return _typed(frame, ORDER_COLUMNS)


def _assert_matches_reference(orders: pd.DataFrame, last: Mapping[str, float]) -> None:
    for marks in (last, None):
        fast = trades_from_orders(orders, marks)
        pdt.assert_frame_equal(fast, _reference_trades(orders, marks), check_exact=True)


@pytest.mark.parametrize("seed", range(40))
def test_trades_match_the_reference_loop_on_random_fills(seed: int) -> None:
    rng = np.random.default_rng(seed)
    orders = _random_fills(rng, int(rng.integers(1, 500)), int(rng.integers(1, 7)))
    last = {s: float(rng.lognormal(4.0, 1.0)) for s in orders["symbol"].unique()}
    _assert_matches_reference(orders, last)
    index = pd.date_range("2019-12-31 22:00", periods=3000, freq="30min", tz="UTC")
    np.testing.assert_array_equal(
        _positions_open(orders, index), _reference_positions_open(orders, index)
    )
    shuffled = index[rng.permutation(len(index))]  # an unsorted index is looked up as well
    np.testing.assert_array_equal(
        _positions_open(orders, pd.DatetimeIndex(shuffled)),
        _reference_positions_open(orders, pd.DatetimeIndex(shuffled)),
    )


def test_trades_edge_cases_match_the_reference_loop() -> None:
    empty = empty_orders()
    _assert_matches_reference(empty, {})
    index = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    assert not _positions_open(empty, index).any()
    # a NaN last price, same-timestamp round trips, naive and microsecond timestamps
    orders = _orders(
        [
            ("2024-01-01", "X", "buy", 1.5, 10.0, 0.1),
            ("2024-01-01", "X", "sell", 1.5, 11.0, 0.1),
            ("2024-01-01", "X", "buy", 2.0, 12.0, 0.0),
            ("2024-01-02", "Y", "sell", 0.25, 13.0, 0.2),
            ("2024-01-03", "X", "sell", 4.0, 9.0, 0.3),
        ]
    )
    _assert_matches_reference(orders, {"X": math.nan, "Y": 12.0})
    naive = orders.assign(timestamp=orders["timestamp"].dt.tz_localize(None).dt.as_unit("us"))
    pdt.assert_frame_equal(
        trades_from_orders(naive, {"X": 1.0, "Y": 2.0}),
        _reference_trades(orders, {"X": 1.0, "Y": 2.0}),
        check_exact=True,
    )
    with pytest.raises(KeyError):
        trades_from_orders(orders, {"X": 1.0})  # Y is still open and has no last price
    np.testing.assert_array_equal(
        _positions_open(orders, index), _reference_positions_open(orders, index)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("symbols", "start", "end"),
    [
        (["AAPL", "MSFT"], "2005-01-01", "2012-12-31"),
        (["GSPC", "BTC/USD"], "2015-01-01", "2017-12-31"),
        (["BTC/USD", "ETH/USD"], "2015-01-01", "2019-12-31"),
    ],
)
def test_trades_and_exposure_match_the_reference_on_real_runs(
    symbols: list[str], start: str, end: str
) -> None:
    from modelyard.feeds import load_bars
    from modelyard.strategies.backtest import run_backtest
    from modelyard.strategies.vectorized import run_vectorized

    for asset_specific in (False, True):
        kwargs: dict[str, Any] = {"start": start, "end": end, "asset_specific": asset_specific}
        for result in (run_backtest(symbols, **kwargs), run_vectorized(symbols, **kwargs)):
            last = {s: float(load_bars(s, "1d", start, end)["close"].iloc[-1]) for s in symbols}
            pdt.assert_frame_equal(
                result.trades, _reference_trades(result.orders, last), check_exact=True
            )
            np.testing.assert_array_equal(
                _positions_open(result.orders, pd.DatetimeIndex(result.equity.index)),
                _reference_positions_open(result.orders, pd.DatetimeIndex(result.equity.index)),
            )


def _stats_both_ways(
    equity: pd.Series, orders: pd.DataFrame, ppy: float
) -> tuple[dict[str, float | int], dict[str, float | int]]:
    last = {s: 100.0 for s in orders["symbol"].unique()}
    frames = compute_stats(equity, orders, trades_from_orders(orders, last), ppy)
    stamps = np.asarray(pd.DatetimeIndex(equity.index).as_unit("ns").asi8, dtype=np.int64)
    arrays = stats_of_fills(stamps, equity.to_numpy(np.float64), Fills.of_orders(orders), ppy)
    return frames, arrays


@pytest.mark.parametrize("seed", range(12))
def test_stats_from_arrays_equal_stats_from_frames_bit_for_bit(seed: int) -> None:
    """stats_of_fills (compare's class and standalone accounts) is compute_stats without the
    frames: the same values exactly, daily-sampled or not, sorted index or not, NaN or not."""
    rng = np.random.default_rng(seed)
    orders = _random_fills(rng, int(rng.integers(1, 400)), int(rng.integers(1, 5)))
    index = pd.date_range("2019-12-31 22:00", periods=2000, freq="30min", tz="UTC")
    values = 1e5 * np.cumprod(1.0 + rng.normal(0.0, 0.01, len(index)))
    cases = [pd.Series(values, index=index)]
    shuffled = rng.permutation(len(index))
    cases.append(pd.Series(values[shuffled], index=index[shuffled]))  # the pandas fallback
    with_nan = values.copy()
    with_nan[rng.integers(0, len(index), 5)] = np.nan
    cases.append(pd.Series(with_nan, index=index))
    for equity in cases:
        for ppy in (252.0, 365.0, 24 * 365.0):
            frames, arrays = _stats_both_ways(equity, orders, ppy)
            assert list(arrays) == list(STAT_KEYS)
            assert arrays.keys() == frames.keys()
            for key in STAT_KEYS:
                a, b = arrays[key], frames[key]
                assert type(a) is type(b), key
                assert a == b or (math.isnan(a) and math.isnan(b)), (key, a, b)


def test_stats_from_arrays_without_fills_or_bars() -> None:
    empty = empty_orders()
    index = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    frames, arrays = _stats_both_ways(pd.Series([1.0, 2.0, 1.5, 3.0, 2.5], index=index), empty, 252)
    assert frames == arrays
    none = pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype="float64")
    assert (
        _stats_both_ways(none, empty, 252)
        == ({k: 0 if k in ("n_trades", "n_bars") else 0.0 for k in STAT_KEYS},) * 2
    )
