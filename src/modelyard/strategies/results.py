"""One result schema for every engine: equity, orders, trades, stats, routes, config.

Statistics (:func:`compute_stats`, pure):

* ``total_return`` = ``equity[-1] / equity[0] - 1``.
* ``cagr`` = ``(equity[-1] / equity[0]) ** (1 / years) - 1`` with ``years`` the calendar span
  of the equity index in days / 365.25 (0 when the span is 0).
* Period returns ``r``: with a daily ``periods_per_year`` (<= 366) the equity is first sampled
  at the last value of each UTC calendar day (a mixed crypto + equities run has two steps per
  weekday); otherwise every step is a period. ``ann_volatility = std(r, ddof=1) * sqrt(ppy)``;
  ``sharpe = mean(r) / std(r, ddof=1) * sqrt(ppy)`` (risk-free 0);
  ``sortino = mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(ppy)``. Undefined ratios are 0.
* ``max_drawdown`` = ``min(equity / cummax(equity) - 1)`` (<= 0, vectorbt's sign).
* ``n_trades`` = closed trades; ``win_rate`` = their share with ``pnl > 0`` (0 without trades).
* ``exposure`` = share of equity steps with any open position (after that step's fills).
* ``turnover`` = total traded notional (``size * price``) / mean equity, over the whole run.
* ``n_bars`` = number of equity steps (the union of the symbols' timelines).

``periods_per_year`` (:func:`infer_periods_per_year`) comes from each symbol's median bar
spacing: a daily (>= 20 h) symbol counts 252 periods on the ``XNYS`` calendar and 365 on
``24/7``; an intraday symbol ``365 days / spacing`` on ``24/7`` and ``252 * 6.5 h / spacing``
on ``XNYS``. The run uses the largest: 252 for daily equities only, 365 once daily crypto is in,
``24 * 365`` for hourly crypto.

Trades (:func:`trades_from_orders`) are flat-to-flat positions per symbol: ``size`` is the
signed total added in the position's direction, ``entry_price`` / ``exit_price`` the
size-weighted means of the adding / reducing fills, ``pnl`` = exit proceeds - entry cost -
every fee of the position, ``return`` = ``pnl / (entry_price * |size|)``. A fill that flips the
sign is split (its fee pro rata). A position still open at the end is listed with
``exit_time`` NaT, marked at the symbol's last close.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from numba import njit

from modelyard._atomic import write_dir_atomic
from modelyard._yaml import safe_load

__all__ = [
    "ORDER_COLUMNS",
    "STAT_KEYS",
    "TRADE_COLUMNS",
    "Fills",
    "Result",
    "account_periods_per_year",
    "compute_stats",
    "empty_orders",
    "infer_periods_per_year",
    "stats_of_fills",
    "symbol_periods_per_year",
    "trades_from_orders",
]

UTC_NS = "datetime64[ns, UTC]"
ORDER_COLUMNS: dict[str, str] = {
    "timestamp": UTC_NS,
    "symbol": "str",
    "side": "str",
    "size": "float64",
    "price": "float64",
    "fee": "float64",
}
TRADE_COLUMNS: dict[str, str] = {
    "symbol": "str",
    "entry_time": UTC_NS,
    "exit_time": UTC_NS,
    "size": "float64",
    "entry_price": "float64",
    "exit_price": "float64",
    "pnl": "float64",
    "return": "float64",
}
STAT_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "ann_volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "win_rate",
    "exposure",
    "turnover",
    "n_bars",
)
FLAT_EPS = 1e-9
_PANDAS_DTYPES: dict[str, Any] = {
    d: pd.api.types.pandas_dtype(d) for d in {*ORDER_COLUMNS.values(), *TRADE_COLUMNS.values()}
}
_FLOAT_FORMAT = "%.17g"


def _typed(frame: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` with exactly the ``schema`` columns, in order, with its dtypes."""
    if (
        list(frame.columns) == list(schema)
        and all(frame[c].dtype == _PANDAS_DTYPES[d] for c, d in schema.items())
        and isinstance(frame.index, pd.RangeIndex)
        and frame.index.equals(pd.RangeIndex(len(frame)))
        and frame.index.name is None
        and frame.columns.name is None
        and not frame.attrs
    ):  # already in shape (a Result's own frame): a new frame on the same data, copy on write
        return frame.copy(deep=False)
    data: dict[str, pd.Series] = {}
    for column, dtype in schema.items():
        if column in frame.columns:
            values = frame[column].reset_index(drop=True)
        elif len(frame) == 0:
            values = pd.Series([], dtype="float64")
        else:
            raise KeyError(f"column {column!r} is missing; expected {list(schema)}")
        if values.dtype == _PANDAS_DTYPES[dtype]:
            data[column] = values  # already typed: the conversions below leave it as it is
        elif dtype == UTC_NS:
            stamps = pd.to_datetime(values, utc=True, format="ISO8601")
            data[column] = stamps.astype("datetime64[ns, UTC]")
        else:
            target: Any = dtype
            data[column] = values.astype(target)
    return pd.DataFrame(data, index=pd.RangeIndex(len(frame)))


def empty_orders() -> pd.DataFrame:
    return _typed(pd.DataFrame(), ORDER_COLUMNS)


def _equity_series(equity: pd.Series) -> pd.Series:
    index = pd.DatetimeIndex(equity.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return pd.Series(
        equity.to_numpy(dtype=np.float64), index=index.as_unit("ns").rename("timestamp"),
        name="equity",
    )  # fmt: skip


@dataclass(frozen=True)
class Fills:
    """One account's fills as arrays, in execution order: the ``orders`` schema without
    strings or pandas (what :func:`stats_of_fills` reads).

    ``code`` numbers the account's symbols (any numbering: every statistic is per symbol or
    summed over symbols); ``stamp`` is the fill's time in int64 ns UTC; ``signed`` is ``size``
    for a buy and ``-size`` for a sell; ``size``, ``price`` and ``fee`` are the columns of
    ``orders``.
    """

    code: npt.NDArray[np.int64]
    stamp: npt.NDArray[np.int64]
    signed: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    price: npt.NDArray[np.float64]
    fee: npt.NDArray[np.float64]
    n_symbols: int

    def __len__(self) -> int:
        return len(self.code)

    @classmethod
    def of_orders(cls, orders: pd.DataFrame) -> Fills:
        """The fills of an ``orders`` frame (codes: the symbols in sorted order)."""
        codes, symbols = _symbol_codes(orders)
        return cls(
            codes,
            _utc_ns(orders["timestamp"]),
            _signed_sizes(orders),
            orders["size"].to_numpy(dtype=np.float64),
            orders["price"].to_numpy(dtype=np.float64),
            orders["fee"].to_numpy(dtype=np.float64),
            len(symbols),
        )

    def where(self, keep: npt.NDArray[Any]) -> Fills:
        """The fills ``keep`` selects (a boolean mask or increasing positions), in their order
        (codes unchanged)."""
        return Fills(
            self.code[keep],
            self.stamp[keep],
            self.signed[keep],
            self.size[keep],
            self.price[keep],
            self.fee[keep],
            self.n_symbols,
        )


# --- trades ---------------------------------------------------------------------------------
# Per-symbol state of the open trade, columns of a (n_symbols, 7) array.
_SIGN, _POSITION, _ADDED, _ENTRY_VALUE, _REDUCED, _EXIT_VALUE, _FEES = range(7)
_N_STATE = 7


@njit(cache=True, nogil=True)
def _trades_nb(
    code: Any, signed: Any, price: Any, fee: Any, n_symbols: int, flat_eps: float
) -> tuple[Any, Any, Any, Any]:
    """One pass over the fills (execution order): the trades as ``(symbol code, entry fill,
    exit fill or -1 while open, state row)``, closed ones in closing order, then the open ones
    by symbol code. Every float is computed in the order of the reference loop
    (tests/unit/test_results.py), so the values are the same bit for bit."""
    n = len(code)
    cap = n + n_symbols
    live = np.zeros(n_symbols, dtype=np.bool_)
    entry = np.zeros(n_symbols, dtype=np.int64)
    state = np.zeros((n_symbols, _N_STATE), dtype=np.float64)
    out_code = np.empty(cap, dtype=np.int64)
    out_entry = np.empty(cap, dtype=np.int64)
    out_exit = np.empty(cap, dtype=np.int64)
    out_state = np.empty((cap, _N_STATE), dtype=np.float64)
    m = 0
    for k in range(n):
        c = code[k]
        s = signed[k]
        p = price[k]
        f = fee[k]
        st = state[c]
        remaining = s
        if live[c] and st[_SIGN] * s < 0.0:
            a = abs(s)
            b = abs(st[_POSITION])
            closing = b if b < a else a  # min(a, b) as Python picks it
            share = closing / a if s != 0.0 else 0.0
            st[_REDUCED] += closing
            st[_EXIT_VALUE] += closing * p
            st[_FEES] += f * share
            st[_POSITION] -= st[_SIGN] * closing
            remaining = s + st[_SIGN] * closing
            f = f * (1.0 - share)
            added = st[_ADDED]
            if abs(st[_POSITION]) <= flat_eps * (added if added > 1.0 else 1.0):
                out_code[m] = c
                out_entry[m] = entry[c]
                out_exit[m] = k
                out_state[m] = st
                m += 1
                live[c] = False
        if abs(remaining) > 0.0:
            if not live[c]:
                live[c] = True
                entry[c] = k
                st[:] = 0.0
                st[_SIGN] = 1.0 if remaining > 0 else -1.0
            st[_ADDED] += abs(remaining)
            st[_ENTRY_VALUE] += abs(remaining) * p
            st[_POSITION] += remaining
            st[_FEES] += f
        elif live[c]:
            st[_FEES] += f
    for c in range(n_symbols):
        if live[c]:
            out_code[m] = c
            out_entry[m] = entry[c]
            out_exit[m] = -1
            out_state[m] = state[c]
            m += 1
    return out_code[:m], out_entry[:m], out_exit[:m], out_state[:m]


@njit(cache=True, nogil=True)
def _trade_values_nb(state: Any, marked: Any, mark: Any) -> Any:
    """``(size, entry_price, exit_price, pnl, return)`` per trade; where ``marked``, ``mark``
    values the position still open (the reference loop's ``row``, the same float operations)."""
    out = np.empty((len(state), 5), dtype=np.float64)
    for t in range(len(state)):
        st = state[t]
        sign = st[_SIGN]
        added = st[_ADDED]
        exit_size = st[_REDUCED]
        exit_value = st[_EXIT_VALUE]
        position = abs(st[_POSITION])
        if marked[t] and position > 0.0:
            exit_size += position
            exit_value += position * mark[t]
        entry_price = st[_ENTRY_VALUE] / added
        exit_price = exit_value / exit_size if exit_size > 0 else np.nan
        pnl = sign * (exit_value - entry_price * exit_size) - st[_FEES]
        out[t, 0] = sign * added
        out[t, 1] = entry_price
        out[t, 2] = exit_price
        out[t, 3] = pnl
        out[t, 4] = pnl / (entry_price * added)
    return out


def _utc_ns(values: Any) -> npt.NDArray[np.int64]:
    """Timestamps (any unit; naive = UTC) as int64 nanoseconds since the epoch, UTC."""
    stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True, format="ISO8601"))
    return np.asarray(stamps.as_unit("ns").asi8, dtype=np.int64)


def _signed_sizes(orders: pd.DataFrame) -> npt.NDArray[np.float64]:
    """``size`` for buys, ``-size`` for everything else."""
    buy = orders["side"].eq("buy").to_numpy(dtype=bool, na_value=False)
    size = orders["size"].to_numpy(dtype=np.float64)
    return np.where(buy, size, -size)


def _symbol_codes(orders: pd.DataFrame) -> tuple[npt.NDArray[np.int64], pd.Index]:
    """Codes of ``orders["symbol"]`` in sorted order of the symbols (a missing one last)."""
    codes, uniques = pd.factorize(orders["symbol"], sort=True, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), pd.Index(uniques)


def trades_from_orders(
    orders: pd.DataFrame, last_prices: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Flat-to-flat trades from fills (see the module docstring); ``last_prices`` marks the
    positions still open (without it they are left out).

    The fills are taken in their row order (execution order); the trades come sorted by
    ``(entry_time, symbol)``, stable (a symbol's trades in the order they opened)."""
    codes, symbols = _symbol_codes(orders)
    stamps = _utc_ns(orders["timestamp"])
    code, entry, exit_, state = _trades_nb(
        codes,
        _signed_sizes(orders),
        orders["price"].to_numpy(dtype=np.float64),
        orders["fee"].to_numpy(dtype=np.float64),
        len(symbols),
        FLAT_EPS,
    )
    still_open = exit_ < 0
    if last_prices is None:
        keep = ~still_open
        code, entry, exit_, state, still_open = (
            a[keep] for a in (code, entry, exit_, state, still_open)
        )
    mark = np.full(len(code), np.nan)
    for t in np.flatnonzero(still_open):
        assert last_prices is not None
        mark[t] = float(last_prices[symbols[code[t]]])
    values = _trade_values_nb(state, still_open, mark)
    entry_ns = stamps[entry]
    exit_ns = np.where(still_open, np.iinfo(np.int64).min, stamps[np.maximum(exit_, 0)])
    order = np.lexsort((code, entry_ns))  # stable: ties keep the emission order
    frame = pd.DataFrame(
        {
            "symbol": symbols.take(code[order]).array,
            "entry_time": pd.DatetimeIndex(entry_ns[order].view("M8[ns]")).tz_localize("UTC"),
            "exit_time": pd.DatetimeIndex(exit_ns[order].view("M8[ns]")).tz_localize("UTC"),
            "size": values[order, 0],
            "entry_price": values[order, 1],
            "exit_price": values[order, 2],
            "pnl": values[order, 3],
            "return": values[order, 4],
        }
    )
    return _typed(frame, TRADE_COLUMNS)


# --- stats ----------------------------------------------------------------------------------
def infer_periods_per_year(bars: Mapping[str, pd.DataFrame], calendars: Mapping[str, str]) -> float:
    """Periods per year of a run (see the module docstring); the largest over symbols."""
    return account_periods_per_year(
        symbol_periods_per_year(frame.index, calendars.get(symbol))
        for symbol, frame in bars.items()
    )


def account_periods_per_year(per_symbol: Iterable[float]) -> float:
    """The periods per year of an account from its symbols'
    (:func:`symbol_periods_per_year`): the largest, or 252 when none is positive."""
    best = max(per_symbol, default=0.0)
    return best if best > 0 else 252.0


def symbol_periods_per_year(index: pd.Index, calendar: str | None) -> float:
    """One symbol's periods per year from its bars' ``index`` (0 with fewer than 2 bars):
    :func:`infer_periods_per_year` of several symbols is the largest of these, or 252 when
    every one is 0."""
    stamps = pd.DatetimeIndex(index).as_unit("ns")
    if len(stamps) < 2:
        return 0.0
    spacing = float(np.median(np.diff(stamps.asi8))) / 1e9
    crypto = calendar == "24/7"
    if spacing >= 20 * 3600:
        return 365.0 if crypto else 252.0
    if crypto:
        return 365.0 * 86400.0 / spacing
    return 252.0 * 6.5 * 3600.0 / spacing


@njit(cache=True, nogil=True)
def _position_steps_nb(code: Any, stamp: Any, signed: Any) -> tuple[Any, Any, Any]:
    """Fills sorted by (symbol code, timestamp), stable: per (symbol, timestamp) group the
    position after it, ``(code, timestamp, position)``. A group's fills are summed as pandas'
    ``groupby().sum()`` does (compensated, NaN skipped), the groups cumulated as ``cumsum``
    (a NaN sum stays NaN, later positions skip it)."""
    n = len(code)
    out_code = np.empty(n, dtype=np.int64)
    out_stamp = np.empty(n, dtype=np.int64)
    out_pos = np.empty(n, dtype=np.float64)
    m = 0
    k = 0
    position = 0.0
    while k < n:
        c = code[k]
        if m == 0 or out_code[m - 1] != c:
            position = 0.0
        total = 0.0
        comp = 0.0
        j = k
        while j < n and code[j] == c and stamp[j] == stamp[k]:
            val = signed[j]
            if val == val:
                y = val - comp
                t = total + y
                comp = t - total - y
                if comp != comp:
                    comp = 0.0
                total = t
            j += 1
        out_code[m] = c
        out_stamp[m] = stamp[k]
        if total == total:
            position += total
            out_pos[m] = position
        else:
            out_pos[m] = np.nan
        m += 1
        k = j
    return out_code[:m], out_stamp[:m], out_pos[:m]


def _positions_open(orders: pd.DataFrame, index: pd.DatetimeIndex) -> npt.NDArray[np.bool_]:
    """Per equity step: is any position open after that step's fills?

    A symbol's position at a step is the sum of its fills up to that step's timestamp; it is
    open when above :data:`FLAT_EPS` in size (a NaN position makes the step count as flat)."""
    steps = np.asarray(pd.DatetimeIndex(index).as_unit("ns").asi8, dtype=np.int64)
    if len(orders) == 0:
        return np.zeros(len(steps), dtype=bool)
    return _open_steps(Fills.of_orders(orders), steps)


def _open_steps(fills: Fills, steps: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """:func:`_positions_open` of ``fills`` at the equity steps ``steps`` (int64 ns UTC)."""
    n = len(steps)
    if len(fills) == 0:
        return np.zeros(n, dtype=bool)
    by = np.lexsort((fills.stamp, fills.code))
    code, stamp, pos = _position_steps_nb(fills.code[by], fills.stamp[by], fills.signed[by])
    sorted_steps = np.all(steps[1:] >= steps[:-1])
    order = np.arange(n) if sorted_steps else np.argsort(steps, kind="stable")
    steps = steps[order]
    # group g holds from its timestamp up to the next group of its symbol (or the end)
    start = np.searchsorted(steps, stamp, side="left")
    end = np.r_[start[1:], n]
    end[np.r_[code[1:] != code[:-1], True]] = n
    is_open = np.abs(pos) > FLAT_EPS
    is_nan = np.isnan(pos)
    opened = np.bincount(start[is_open], minlength=n + 1) - np.bincount(
        end[is_open], minlength=n + 1
    )
    nans = np.bincount(start[is_nan], minlength=n + 1) - np.bincount(end[is_nan], minlength=n + 1)
    flags = (np.cumsum(opened[:n]) > 0) & (np.cumsum(nans[:n]) == 0)
    out = np.empty(n, dtype=bool)
    out[order] = flags
    return out


def compute_stats(
    equity: pd.Series,
    orders: pd.DataFrame,
    trades: pd.DataFrame,
    periods_per_year: float,
) -> dict[str, float | int]:
    """Every statistic of :data:`STAT_KEYS` (definitions in the module docstring)."""
    eq = _equity_series(equity)
    closed = trades[trades["exit_time"].notna()] if len(trades) else trades
    pnl = closed["pnl"].to_numpy(dtype=np.float64) if len(closed) else np.empty(0)
    return _stats(
        np.asarray(pd.DatetimeIndex(eq.index).asi8, dtype=np.int64),
        eq.to_numpy(),
        Fills.of_orders(orders),
        pnl,
        periods_per_year,
    )


def stats_of_fills(
    stamps: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    fills: Fills,
    periods_per_year: float,
) -> dict[str, float | int]:
    """:func:`compute_stats` of an account from arrays: its equity ``values`` at ``stamps``
    (int64 ns UTC) and its ``fills``; the trades are the flat-to-flat positions of the fills
    (:func:`trades_from_orders`). The same numbers, without building frames."""
    _, _, exit_, state = _trades_nb(
        fills.code, fills.signed, fills.price, fills.fee, fills.n_symbols, FLAT_EPS
    )
    closed = exit_ >= 0
    n_closed = int(closed.sum())
    pnl = _trade_values_nb(
        state[closed], np.zeros(n_closed, dtype=np.bool_), np.full(n_closed, np.nan)
    )
    return _stats(stamps, values, fills, pnl[:, 3], periods_per_year)


def _daily_last(
    stamps: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The last value of each UTC calendar day, days in order (``groupby(normalize).last()``)."""
    if len(stamps) > 1 and np.all(stamps[1:] >= stamps[:-1]) and not np.isnan(values).any():
        day = stamps // _DAY_NS
        return values[np.r_[day[1:] != day[:-1], True]]
    index = pd.DatetimeIndex(stamps.view("M8[ns]")).tz_localize("UTC")
    series = pd.Series(values, index=index)
    return np.asarray(series.groupby(index.normalize()).last().to_numpy(), dtype=np.float64)


_DAY_NS = 86_400 * 10**9


def _stats(
    stamps: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    fills: Fills,
    closed_pnl: npt.NDArray[np.float64],
    periods_per_year: float,
) -> dict[str, float | int]:
    n = len(values)
    if n == 0:
        return {k: (0 if k in ("n_trades", "n_bars") else 0.0) for k in STAT_KEYS}
    total_return = float(values[-1] / values[0] - 1.0)
    span_days = pd.Timedelta(int(stamps[-1] - stamps[0]), unit="ns") / pd.Timedelta(days=1)
    years = span_days / 365.25
    cagr = float((values[-1] / values[0]) ** (1.0 / years) - 1.0) if years > 0 else 0.0
    sampled = _daily_last(stamps, values) if periods_per_year <= 366 else values
    r = sampled[1:] / sampled[:-1] - 1.0
    root = math.sqrt(periods_per_year)
    vol = sharpe = sortino = 0.0
    if len(r) >= 2:
        std = float(np.std(r, ddof=1))
        mean = float(np.mean(r))
        vol = std * root
        sharpe = mean / std * root if std > 0 else 0.0
        downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
        sortino = mean / downside * root if downside > 0 else 0.0
    max_dd = float(np.min(values / np.maximum.accumulate(values) - 1.0))
    n_trades = len(closed_pnl)
    win_rate = float((closed_pnl > 0).mean()) if n_trades else 0.0
    exposure = float(_open_steps(fills, stamps).mean())
    notional = float(np.sum(fills.size * fills.price))
    turnover = notional / float(np.mean(values))
    return {
        "total_return": total_return,
        "cagr": cagr,
        "ann_volatility": vol,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": max_dd,
        "n_trades": n_trades,
        "win_rate": win_rate,
        "exposure": exposure,
        "turnover": turnover,
        "n_bars": n,
    }


# --- the result -----------------------------------------------------------------------------
def _csv(frame: pd.DataFrame, *, index: bool) -> str:
    buf = StringIO()
    frame.to_csv(buf, index=index, float_format=_FLOAT_FORMAT)
    return buf.getvalue()


def _read_frame(text: str, schema: Mapping[str, str]) -> pd.DataFrame:
    dtypes = {c: ("str" if d == "str" else "float64") for c, d in schema.items() if d != UTC_NS}
    frame = pd.read_csv(StringIO(text), dtype=dtypes, keep_default_na=False, na_values=[""])
    return _typed(frame, schema)


@dataclass(frozen=True)
class Result:
    """A run's output; the same schema for the Backtrader and vectorbt engines."""

    equity: pd.Series
    orders: pd.DataFrame
    trades: pd.DataFrame
    stats: dict[str, float | int]
    routes: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    FILES = (
        "equity.csv",
        "orders.csv",
        "trades.csv",
        "stats.json",
        "routes.json",
        "config.yaml",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "equity", _equity_series(self.equity))
        object.__setattr__(self, "orders", _typed(self.orders, ORDER_COLUMNS))
        object.__setattr__(self, "trades", _typed(self.trades, TRADE_COLUMNS))

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the six files into ``directory`` all at once (a temp folder, then a rename)."""
        target = Path(directory)
        if target.exists() and not overwrite and any(target.iterdir()):
            raise FileExistsError(f"{target} exists and is not empty; pass overwrite=True")
        return write_dir_atomic(
            target,
            {
                "equity.csv": _csv(self.equity.to_frame(), index=True),
                "orders.csv": _csv(self.orders, index=False),
                "trades.csv": _csv(self.trades, index=False),
                "stats.json": json.dumps(self.stats, indent=2) + "\n",
                "routes.json": json.dumps(self.routes, indent=2) + "\n",
                "config.yaml": yaml.safe_dump(self.config, sort_keys=False),
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> Result:
        """Read a folder written by :meth:`save`; floats come back bit for bit."""
        root = Path(directory)
        eq = pd.read_csv(root / "equity.csv", dtype={"equity": "float64"})
        index = pd.to_datetime(eq["timestamp"], utc=True, format="ISO8601")
        equity = pd.Series(eq["equity"].to_numpy(), index=pd.DatetimeIndex(index), name="equity")
        stats = json.loads((root / "stats.json").read_text())
        return cls(
            equity=equity,
            orders=_read_frame((root / "orders.csv").read_text(), ORDER_COLUMNS),
            trades=_read_frame((root / "trades.csv").read_text(), TRADE_COLUMNS),
            stats=stats,
            routes=json.loads((root / "routes.json").read_text()),
            config=safe_load((root / "config.yaml").read_text()) or {},
        )
