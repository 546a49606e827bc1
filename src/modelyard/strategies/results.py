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
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from modelyard._atomic import write_text_atomic

__all__ = [
    "ORDER_COLUMNS",
    "STAT_KEYS",
    "TRADE_COLUMNS",
    "Result",
    "compute_stats",
    "empty_orders",
    "infer_periods_per_year",
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
_FLOAT_FORMAT = "%.17g"


def _typed(frame: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` with exactly the ``schema`` columns, in order, with its dtypes."""
    data: dict[str, pd.Series] = {}
    for column, dtype in schema.items():
        if column in frame.columns:
            values = frame[column].reset_index(drop=True)
        elif len(frame) == 0:
            values = pd.Series([], dtype="float64")
        else:
            raise KeyError(f"column {column!r} is missing; expected {list(schema)}")
        if dtype == UTC_NS:
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


# --- trades ---------------------------------------------------------------------------------
@dataclass(slots=True)
class _Open:
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


def trades_from_orders(
    orders: pd.DataFrame, last_prices: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Flat-to-flat trades from fills (see the module docstring); ``last_prices`` marks the
    positions still open (without it they are left out)."""
    rows: list[dict[str, Any]] = []
    open_: dict[str, _Open] = {}
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
                trade = _Open(symbol, 1.0 if remaining > 0 else -1.0, ts)
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


# --- stats ----------------------------------------------------------------------------------
def infer_periods_per_year(bars: Mapping[str, pd.DataFrame], calendars: Mapping[str, str]) -> float:
    """Periods per year of a run (see the module docstring); the largest over symbols."""
    best = 0.0
    for symbol, frame in bars.items():
        index = pd.DatetimeIndex(frame.index).as_unit("ns")
        if len(index) < 2:
            continue
        spacing = float(np.median(np.diff(index.asi8))) / 1e9
        crypto = calendars.get(symbol) == "24/7"
        if spacing >= 20 * 3600:
            ppy = 365.0 if crypto else 252.0
        elif crypto:
            ppy = 365.0 * 86400.0 / spacing
        else:
            ppy = 252.0 * 6.5 * 3600.0 / spacing
        best = max(best, ppy)
    return best if best > 0 else 252.0


def _positions_open(orders: pd.DataFrame, index: pd.DatetimeIndex) -> np.ndarray:
    """Per equity step: is any position open after that step's fills?"""
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
    return gross > 0.0


def compute_stats(
    equity: pd.Series,
    orders: pd.DataFrame,
    trades: pd.DataFrame,
    periods_per_year: float,
) -> dict[str, float | int]:
    """Every statistic of :data:`STAT_KEYS` (definitions in the module docstring)."""
    eq = _equity_series(equity)
    n = len(eq)
    values = eq.to_numpy()
    if n == 0:
        return {k: (0 if k in ("n_trades", "n_bars") else 0.0) for k in STAT_KEYS}
    total_return = float(values[-1] / values[0] - 1.0)
    span_days = (eq.index[-1] - eq.index[0]) / pd.Timedelta(days=1)
    years = span_days / 365.25
    cagr = float((values[-1] / values[0]) ** (1.0 / years) - 1.0) if years > 0 else 0.0
    sampled = eq
    if periods_per_year <= 366:
        sampled = eq.groupby(pd.DatetimeIndex(eq.index).normalize()).last()
    r = sampled.to_numpy()[1:] / sampled.to_numpy()[:-1] - 1.0
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
    closed = trades[trades["exit_time"].notna()] if len(trades) else trades
    n_trades = len(closed)
    win_rate = float((closed["pnl"].to_numpy() > 0).mean()) if n_trades else 0.0
    exposure = float(_positions_open(orders, pd.DatetimeIndex(eq.index)).mean())
    notional = float(
        np.sum(orders["size"].to_numpy(dtype=np.float64) * orders["price"].to_numpy(np.float64))
    )
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
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            write_text_atomic(tmp / "equity.csv", _csv(self.equity.to_frame(), index=True))
            write_text_atomic(tmp / "orders.csv", _csv(self.orders, index=False))
            write_text_atomic(tmp / "trades.csv", _csv(self.trades, index=False))
            write_text_atomic(tmp / "stats.json", json.dumps(self.stats, indent=2) + "\n")
            write_text_atomic(tmp / "routes.json", json.dumps(self.routes, indent=2) + "\n")
            write_text_atomic(tmp / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
            old: Path | None = None
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

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
            config=yaml.safe_load((root / "config.yaml").read_text()) or {},
        )
