"""Backtrader's order queue in vectorbt's ``from_order_func`` (flexible mode), for exact parity.

Used when ``from_orders`` cannot reproduce Backtrader (PARITY.md):

* **calendars that interleave** (equities and crypto in one account): Backtrader sizes an
  order from the portfolio value at the close of the decision bar and fills it, unchanged in
  units, at the open of that symbol's next bar, which may be several union steps later.
  ``targetpercent`` in ``from_orders`` would size from the value at the fill step instead.
* **long-short flips with short cash**: Backtrader fills the closing part of a flip even when
  the opening part is unaffordable; the flip is sent here as two orders (close, then open).

The callbacks keep Backtrader's state per column: ``pending[col]`` is the order (units) decided
at the symbol's last bar and ``seq[col]`` its place in the broker's queue. At each step of a
group: pending orders of the columns with a bar fill first, in queue order (pre-segment +
flexible order function); then, after the step's close, every column with a bar decides
``units = w * value / close`` (value at this close), drops moves under ``min_units`` and joins
the queue sorted by ascending ``(units - position) * close`` (sells first), computed as
``w * value - position * close`` like vectorbt's ``call_seq="auto"`` (see vectorized.py on ties).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from vectorbt.portfolio import nb as vbt_nb
from vectorbt.portfolio.enums import Direction, SizeType

__all__ = ["flex_callbacks"]


@njit(cache=True)
def _pre_segment_nb(
    c: Any,
    has_bar: Any,
    pending: Any,
    seq: Any,
    exec_col: Any,
    exec_size: Any,
    exec_count: Any,
) -> tuple[()]:
    i = c.i
    base = 2 * c.from_col
    n = 0
    # columns with a bar and a pending order, by queue position (insertion sort)
    for col in range(c.from_col, c.to_col):
        if not has_bar[i, col] or np.isnan(pending[col]):
            continue
        j = n
        while j > 0 and seq[exec_col[base + j - 1]] > seq[col]:
            exec_col[base + j] = exec_col[base + j - 1]
            j -= 1
        exec_col[base + j] = col
        n += 1
    # expand flips into (close, open) and clear the queue entries
    m = 0
    cols = exec_col[base : base + n].copy()
    for col in cols:
        delta = pending[col]
        pos = c.last_position[col]
        target = pos + delta
        if pos != 0.0 and target != 0.0 and (pos > 0.0) != (target > 0.0):
            exec_col[base + m] = col
            exec_size[base + m] = -pos
            exec_col[base + m + 1] = col
            exec_size[base + m + 1] = target
            m += 2
        else:
            exec_col[base + m] = col
            exec_size[base + m] = delta
            m += 1
        pending[col] = np.nan
    exec_count[c.group] = m
    return ()


@njit(cache=True)
def _flex_order_nb(
    c: Any,
    open_: Any,
    fees: Any,
    slippage: Any,
    exec_col: Any,
    exec_size: Any,
    exec_count: Any,
) -> tuple[int, Any]:
    k = c.call_idx
    if k >= exec_count[c.group]:
        return -1, vbt_nb.order_nothing_nb()
    col = exec_col[2 * c.from_col + k]
    return col, vbt_nb.order_nb(
        size=exec_size[2 * c.from_col + k],
        price=open_[c.i, col],
        size_type=SizeType.Amount,
        direction=Direction.Both,
        fees=fees[col],
        slippage=slippage[col],
        allow_partial=False,
        raise_reject=False,
    )


@njit(cache=True)
def _post_segment_nb(
    c: Any,
    has_bar: Any,
    weight: Any,
    close: Any,
    cap: Any,
    pending: Any,
    seq: Any,
    counter: Any,
    min_units: float,
) -> None:
    i = c.i
    value = c.last_value[c.group]
    n = c.to_col - c.from_col
    cols = np.empty(n, dtype=np.int64)
    keys = np.empty(n, dtype=np.float64)
    m = 0
    for col in range(c.from_col, c.to_col):
        if not has_bar[i, col]:
            continue
        w = weight[i, col]
        px = close[i, col]
        if w > cap[col]:
            w = cap[col]
        elif w < -cap[col]:
            w = -cap[col]
        if not (px > 0.0 and np.isfinite(w)):
            continue
        pos = c.last_position[col]
        delta = w * value / px - pos
        if abs(delta) < min_units:
            continue
        key = w * value - pos * px  # = delta * px, rounded as vectorbt's call_seq="auto" does
        j = m
        while j > 0 and keys[j - 1] > key:  # stable: data order on ties, as Python's sort
            keys[j] = keys[j - 1]
            cols[j] = cols[j - 1]
            j -= 1
        keys[j] = key
        cols[j] = col
        pending[col] = delta
        m += 1
    for j in range(m):
        seq[cols[j]] = counter[c.group]
        counter[c.group] += 1


def flex_callbacks() -> dict[str, Any]:
    """The jitted callbacks, by ``from_order_func`` keyword."""
    return {
        "pre_segment_func_nb": _pre_segment_nb,
        "flex_order_func_nb": _flex_order_nb,
        "post_segment_func_nb": _post_segment_nb,
    }
