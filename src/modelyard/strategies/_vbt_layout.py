"""The broadcast layout of the vectorbt engine: union timeline, price and order arrays (numpy).

Pure functions, no vectorbt: the bars of ``k`` symbols become ``(n, k)`` arrays on the union
``n`` of their timestamps. ``open`` is NaN where a symbol has no bar (no order can fill
there); ``close`` is forward- then back-filled, so a symbol without a bar is valued at its last
close (Backtrader's ``data.close[0]``) and a symbol that has not started yet is valued at its
first close while it holds nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from numba import njit

from modelyard.strategies.results import ORDER_COLUMNS

__all__ = [
    "Layout",
    "build_layout",
    "decided_targets",
    "order_frame",
    "previous_targets",
    "record_fills",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Layout:
    """``k`` symbols on the union timeline ``index`` (UTC, ns)."""

    index: pd.DatetimeIndex
    symbols: tuple[str, ...]
    open: FloatArray  # (n, k), NaN without a bar
    close: FloatArray  # (n, k), ffilled then bfilled
    has_bar: BoolArray  # (n, k)
    rows: tuple[npt.NDArray[np.intp], ...]  # per symbol: its bars' rows in ``index``

    @functools.cached_property
    def column(self) -> dict[str, int]:
        """Each symbol's column in the arrays (built once: a sleeve per symbol asks)."""
        return {s: j for j, s in enumerate(self.symbols)}

    @property
    def contiguous(self) -> bool:
        """Every symbol has a bar at every union step between its first and last bar.

        Then the next bar of a symbol is always the next union step, and vectorbt's
        ``from_orders`` with ``targetpercent`` sizes from the value the decision saw.
        """
        return all(len(r) == 0 or int(r[-1]) - int(r[0]) + 1 == len(r) for r in self.rows)


def _ffill_bfill(values: FloatArray) -> FloatArray:
    """Each column forward-filled, then back-filled (``DataFrame.ffill().bfill()``), in place."""
    _ffill_bfill_nb(values)
    return values


@njit(cache=True, nogil=True)
def _ffill_bfill_nb(values: Any) -> None:
    """Row by row (the array's order): carry each column's last value down, then copy each
    column's first value up over its leading NaNs."""
    n, k = values.shape
    last = np.full(k, np.nan)
    first = np.full(k, -1)
    for i in range(n):
        for j in range(k):
            v = values[i, j]
            if v == v:
                last[j] = v
                if first[j] < 0:
                    first[j] = i
            else:
                values[i, j] = last[j]
    for j in range(k):
        for i in range(first[j]):
            values[i, j] = values[first[j], j]


def _union(stamps: Sequence[IntArray]) -> IntArray:
    """The sorted distinct timestamps of every symbol (``np.unique`` of them all, by one sort:
    a hash-based unique of 10M stamps costs ~8x more); the shared index when all are equal."""
    if not stamps:
        return np.empty(0, dtype=np.int64)
    first = stamps[0]
    same = all(len(ts) == len(first) and np.array_equal(ts, first) for ts in stamps[1:])
    if same and (len(first) < 2 or bool(np.all(first[1:] > first[:-1]))):
        return np.asarray(first, dtype=np.int64)
    every = np.concatenate(stamps).astype(np.int64, copy=False)
    every.sort()
    keep = np.empty(len(every), dtype=bool)
    keep[:1] = True
    np.not_equal(every[1:], every[:-1], out=keep[1:])
    return every[keep]


def build_layout(bars: Mapping[str, pd.DataFrame], symbols: Sequence[str]) -> Layout:
    """Union timeline and ``(n, k)`` open/close arrays of ``symbols`` (keys of ``bars``)."""
    stamps = [pd.DatetimeIndex(bars[s].index).tz_convert("UTC").as_unit("ns").asi8 for s in symbols]
    union = _union(stamps)
    n, k = len(union), len(symbols)
    open_ = np.full((n, k), np.nan)
    close = np.full((n, k), np.nan)
    has_bar = np.zeros((n, k), dtype=bool)
    rows = []
    for j, (symbol, ts) in enumerate(zip(symbols, stamps, strict=True)):
        same = len(ts) == n and np.array_equal(ts, union)  # a shared timeline: no search
        pos = np.arange(n) if same else np.searchsorted(union, ts)
        frame = bars[symbol]
        open_[pos, j] = frame["open"].to_numpy(dtype=np.float64)
        close[pos, j] = frame["close"].to_numpy(dtype=np.float64)
        has_bar[pos, j] = True
        rows.append(pos.astype(np.intp))
    index = pd.DatetimeIndex(pd.to_datetime(union, utc=True).as_unit("ns"), name="timestamp")
    return Layout(index, tuple(symbols), open_, _ffill_bfill(close), has_bar, tuple(rows))


def previous_targets(layout: Layout, weights: Mapping[str, npt.ArrayLike]) -> FloatArray:
    """``(n, k)``: at each bar of a symbol, the target decided at its previous bar; else NaN.

    This is ``target.shift(1)`` in each symbol's own timeline, placed on the union timeline:
    the size array of ``from_orders`` (NaN = no order).
    """
    out = np.full(layout.open.shape, np.nan)
    for j, symbol in enumerate(layout.symbols):
        w = np.asarray(weights[symbol], dtype=np.float64)
        rows = layout.rows[j]
        out[rows[1:], j] = w[:-1]
    return out


def decided_targets(layout: Layout, weights: Mapping[str, npt.ArrayLike]) -> FloatArray:
    """``(n, k)``: the target decided at each bar of a symbol (NaN without a bar)."""
    out = np.full(layout.open.shape, np.nan)
    for j, symbol in enumerate(layout.symbols):
        out[layout.rows[j], j] = np.asarray(weights[symbol], dtype=np.float64)
    return out


def record_fills(
    records: npt.NDArray[np.void], wanted: Sequence[bool]
) -> tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray]:
    """The fills of vectorbt order records of the columns where ``wanted[col]``:
    ``(col, idx, signed size, price, fee)`` arrays, in execution order.

    Two records of one column at one step, adjacent among the wanted ones (the closing and
    opening halves of a long-short flip) become one fill, as Backtrader reports them; a merged
    fill of size 0 is dropped.
    """
    keep_col = np.asarray(wanted, dtype=bool)
    col = np.asarray(records["col"], dtype=np.int64)
    keep_rec = keep_col[col]
    col = col[keep_rec]
    idx = np.asarray(records["idx"], dtype=np.int64)[keep_rec]
    size = np.asarray(records["size"], dtype=np.float64)[keep_rec]
    signed = np.where(np.asarray(records["side"])[keep_rec] == 0, size, -size)
    price = np.asarray(records["price"], dtype=np.float64)[keep_rec]
    fee = np.asarray(records["fees"], dtype=np.float64)[keep_rec]
    if len(col) > 1:
        same = np.concatenate([[False], (idx[1:] == idx[:-1]) & (col[1:] == col[:-1])])
        if same.any():
            starts = np.flatnonzero(~same)
            group = np.cumsum(~same) - 1
            signed = np.bincount(group, weights=signed)
            fee = np.bincount(group, weights=fee)
            col, idx, price = col[starts], idx[starts], price[starts]
            keep = signed != 0.0
            col, idx, price, signed, fee = (a[keep] for a in (col, idx, price, signed, fee))
    return col, idx, signed, price, fee


def order_frame(
    records: npt.NDArray[np.void],
    index: pd.DatetimeIndex,
    col_names: Sequence[str | None],
) -> pd.DataFrame:
    """vectorbt order records as the Result ``orders`` schema (timestamp, symbol, side, size,
    price, fee); ``col_names[col]`` names a column's symbol, None leaves the column out.

    Records are kept in execution order, flips merged (:func:`record_fills`).
    """
    col, idx, signed, price, fee = record_fills(records, [n is not None for n in col_names])
    # the strings are taken from a short array per column / side (no Python object per fill)
    names = pd.array([name or "" for name in col_names], dtype="str")
    sides = pd.array(["sell", "buy"], dtype="str")
    frame = pd.DataFrame(
        {
            "timestamp": index[idx],
            "symbol": names.take(col),
            "side": sides.take((signed > 0).astype(np.intp)),
            "size": np.abs(signed),
            "price": price,
            "fee": fee,
        }
    )
    return frame[list(ORDER_COLUMNS)]
