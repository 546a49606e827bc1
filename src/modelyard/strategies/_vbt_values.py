"""Group values of a vectorbt portfolio from its order records (used by ``Simulation``).

:func:`group_values` gives ``pf.value()`` of a grouped portfolio as an ``(n, groups)`` array,
the same bits (tests/integration/test_vectorized.py compares them byte for byte), in one numba
pass over the order records instead of vectorbt's chain of ``(n, m)`` intermediates and its
pandas wrapping (about 30x faster at 100k x 200, and without the intermediates' memory).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit
from vectorbt.base.reshape_fns import to_1d_array, to_2d_array
from vectorbt.portfolio import nb as vbt_nb
from vectorbt.utils.math_ import add_nb

__all__ = ["compact_records", "group_values", "sleeve_values"]

FloatArray = npt.NDArray[np.float64]


def compact_records(records: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    """``records`` without the unused tail of vectorbt's preallocated buffer (``max_orders``
    rows) when that tail is large: a view would keep the whole buffer alive."""
    base = records.base
    if isinstance(base, np.ndarray) and base.nbytes > 2 * records.nbytes + (1 << 20):
        return np.array(records, copy=True)
    return records


def group_values(pf: Any, group_lens: npt.NDArray[np.int64] | None = None) -> FloatArray:
    """``pf.value()`` of a grouped portfolio as an ``(n, groups)`` array: the same bits, in one
    pass over the order records (:func:`_values_nb`) instead of vectorbt's chain of ``(n, m)``
    intermediates and pandas wrapping. ``group_lens`` (columns per group, contiguous) saves
    vectorbt's grouper, which factorizes the column MultiIndex."""
    records = pf.order_records
    shape = tuple(int(d) for d in pf.wrapper.shape_2d)
    if group_lens is None:
        group_lens = pf.wrapper.grouper.get_group_lens()
    if isinstance(pf._init_cash, int):  # an InitCashMode: let vectorbt resolve it
        init_cash = np.asarray(pf.get_init_cash(), dtype=np.float64).reshape(-1)
    else:  # Portfolio.get_init_cash of a grouped portfolio, without the wrapping
        raw = np.asarray(to_1d_array(pf._init_cash), dtype=np.float64)
        init_cash = vbt_nb.init_cash_grouped_nb(raw, group_lens, pf.cash_sharing)
    close = to_2d_array(pf.close)
    if pf.fillna_close and np.isnan(close).any():  # ffill + bfill changes nothing without NaN
        close = to_2d_array(pf.get_filled_close())
    values: FloatArray = _values_nb(
        shape[0],
        records,
        np.asfortranarray(close, dtype=np.float64),  # one layout: one numba specialization
        np.asarray(group_lens, dtype=np.int64),
        np.ascontiguousarray(init_cash, dtype=np.float64),
    )
    return values


def sleeve_values(
    n: int,
    records: npt.NDArray[np.void],
    close: npt.ArrayLike,
    group_lens: npt.NDArray[np.int64],
    cash: float,
) -> FloatArray:
    """``(n, groups)``: for each run of ``group_lens`` columns (a *sleeve*), ``cash`` plus the
    cash flows of its columns' ``records`` so far plus their positions at ``close`` (``(n,
    columns)``, no NaN): :func:`group_values`'s pass, every sleeve starting from ``cash``."""
    out: FloatArray = _values_nb(
        n,
        records,
        np.asfortranarray(close, dtype=np.float64),
        np.asarray(group_lens, dtype=np.int64),
        np.full(len(group_lens), float(cash)),
    )
    return out


@njit(cache=True, nogil=True)
def _values_nb(n: int, records: Any, close: Any, group_lens: Any, init_cash: Any) -> Any:
    """Each group's value at each step from vectorbt's order records, with vectorbt's float
    operations in vectorbt's order: per column and step the asset and cash flows summed with
    ``add_nb`` in record order (``asset_flow_nb``, ``cash_flow_nb``), positions cumulated with
    ``add_nb`` every step (``assets_nb``), per group the cash flows and the ``close * position``
    values summed from 0 in column order (``sum_grouped_nb``: numba's ``np.sum(axis=1)``),
    cash cumulated with ``add_nb`` from the initial cash (``cash_grouped_nb``), value = cash +
    asset value (``value_nb``); a zero position is valued 0 whatever its close.

    The records come group by group (``from_orders``) or step by step (flexible): they are
    taken step by step, each step's in record order (a stable counting sort)."""
    m = close.shape[1]
    n_records = len(records)
    start = np.zeros(n + 1, dtype=np.int64)
    for k in range(n_records):
        start[records[k]["idx"] + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    by_step = np.empty(n_records, dtype=np.int64)
    fill = start[:n].copy()
    for k in range(n_records):
        i = records[k]["idx"]
        by_step[fill[i]] = k
        fill[i] += 1
    out = np.empty((n, len(group_lens)), dtype=np.float64)
    position = np.zeros(m, dtype=np.float64)
    asset_flow = np.zeros(m, dtype=np.float64)
    cash_flow = np.zeros(m, dtype=np.float64)
    cash = init_cash.copy()
    for i in range(n):
        for q in range(start[i], start[i + 1]):
            record = records[by_step[q]]
            j = record["col"]
            amount = record["size"]
            if record["side"] == 1:  # OrderSide.Sell
                amount *= -1
            asset_flow[j] = add_nb(asset_flow[j], amount)
            cash_flow[j] = add_nb(cash_flow[j], -amount * record["price"] - record["fees"])
        first = 0
        for g in range(len(group_lens)):
            last = first + group_lens[g]
            flows = 0.0
            value = 0.0
            for j in range(first, last):
                flows += cash_flow[j]
                position[j] = add_nb(position[j], asset_flow[j])
                if position[j] != 0.0:
                    value += close[i, j] * position[j]
                else:
                    value += 0.0 * position[j]
            cash[g] = add_nb(cash[g], flows)
            out[i, g] = cash[g] + value
            first = last
        for q in range(start[i], start[i + 1]):
            j = records[by_step[q]]["col"]
            asset_flow[j] = 0.0
            cash_flow[j] = 0.0
    return out
