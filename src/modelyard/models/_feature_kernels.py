"""Numba kernels shared by the vectorized and the online feature paths.

One function, :func:`row_kernel`, computes every feature of one bar ``t`` from a
``(N_SERIES, n)`` array of past bars. ``compute`` calls it for every ``t`` of a whole
frame; ``OnlineFeatures`` calls it on a window of a fixed-size ring buffer. Both run
the same compiled arithmetic in the same order, so the two paths agree bit for bit.
Window sums are recomputed from the window each bar (no running sums, no drift).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

__all__ = [
    "KIND_CODES",
    "N_SERIES",
    "SERIES",
    "push_kernel",
    "run_kernel",
]

# Rows of the series array.
_O, _H, _L, _C, _V, _R1, _HOUR = 0, 1, 2, 3, 4, 5, 6
SERIES: tuple[str, ...] = ("open", "high", "low", "close", "volume", "ret_1", "hour")
N_SERIES = len(SERIES)

_RET, _RET_LAG, _VOL, _MOM, _VOLM, _VOLZ = 0, 1, 2, 3, 4, 5
_RANGE_HL, _CLOSE_LOC, _RSI, _HOUR_SIN, _HOUR_COS, _GAP = 6, 7, 8, 9, 10, 11
KIND_CODES: dict[str, int] = {
    "ret": _RET,
    "ret_lag": _RET_LAG,
    "vol": _VOL,
    "mom": _MOM,
    "volm": _VOLM,
    "volz": _VOLZ,
    "range_hl": _RANGE_HL,
    "close_loc": _CLOSE_LOC,
    "rsi": _RSI,
    "hour_sin": _HOUR_SIN,
    "hour_cos": _HOUR_COS,
    "gap": _GAP,
}

_TWO_PI_OVER_24 = 2.0 * math.pi / 24.0
# volz is 0 when the window's std is at most this fraction of |mean| (a constant window).
_VOLZ_FLAT = 1e-12

_jit = njit(cache=True, nogil=True, error_model="numpy")
# Window sums may be reassociated (SIMD); NaN/inf semantics are kept.
_jit_sum = njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})


def _mean_impl(data: Any, s: int, t: int, k: int) -> float:
    acc = 0.0
    for i in range(t - k + 1, t + 1):
        acc += data[s, i]
    return acc / k


_mean = _jit_sum(_mean_impl)


def _std_mean_impl(data: Any, s: int, t: int, k: int) -> tuple[float, float]:
    m = _mean(data, s, t, k)
    ss = 0.0
    for i in range(t - k + 1, t + 1):
        d = data[s, i] - m
        ss += d * d
    return math.sqrt(ss / (k - 1)), m


_std_mean = _jit_sum(_std_mean_impl)


def _row_impl(kinds: Any, params: Any, data: Any, t: int, out: Any, r: int) -> None:
    """Write the features of bar ``t`` of ``data`` into ``out[r]`` (2-D indexing only:
    no per-bar array views, which cost reference counting)."""
    for j in range(kinds.shape[0]):
        kind = kinds[j]
        k = int(params[j, 0])
        if kind == _RET:
            out[r, j] = math.log(data[_C, t] / data[_C, t - k])
        elif kind == _RET_LAG:
            lag = int(params[j, 1])
            out[r, j] = math.log(data[_C, t - lag] / data[_C, t - lag - k])
        elif kind == _VOL:
            sd, _m = _std_mean(data, _R1, t, k)
            out[r, j] = sd
        elif kind == _MOM:
            out[r, j] = data[_C, t] / _mean(data, _C, t, k) - 1.0
        elif kind == _VOLM:
            long = int(params[j, 1])
            eps = params[j, 2]
            short_mean = _mean(data, _V, t, k)
            out[r, j] = math.log((short_mean + eps) / (_mean(data, _V, t, long) + eps))
        elif kind == _VOLZ:
            sd, m = _std_mean(data, _V, t, k)
            out[r, j] = 0.0 if sd <= _VOLZ_FLAT * abs(m) else (data[_V, t] - m) / sd
        elif kind == _RANGE_HL:
            out[r, j] = (data[_H, t] - data[_L, t]) / data[_C, t]
        elif kind == _CLOSE_LOC:
            rng = data[_H, t] - data[_L, t]
            out[r, j] = 0.5 if rng == 0.0 else (data[_C, t] - data[_L, t]) / rng
        elif kind == _RSI:
            gain = 0.0
            loss = 0.0
            for i in range(t - k + 1, t + 1):
                d = data[_C, i] - data[_C, i - 1]
                if d > 0.0:
                    gain += d
                else:
                    loss -= d
            tot = gain + loss
            out[r, j] = 50.0 if tot == 0.0 else 100.0 * gain / tot
        elif kind == _HOUR_SIN:
            out[r, j] = math.sin(_TWO_PI_OVER_24 * data[_HOUR, t])
        elif kind == _HOUR_COS:
            out[r, j] = math.cos(_TWO_PI_OVER_24 * data[_HOUR, t])
        else:  # _GAP
            out[r, j] = math.log(data[_O, t] / data[_C, t - 1])


_row = _jit(_row_impl)


def _log_ret_impl(c_now: float, c_prev: float) -> float:
    return math.log(c_now / c_prev)


_log_ret = _jit(_log_ret_impl)


def _run_impl(kinds: Any, params: Any, data: Any, warmup: int, out: Any) -> None:
    n = data.shape[1]
    data[_R1, 0] = np.nan
    for t in range(1, n):
        data[_R1, t] = _log_ret(data[_C, t], data[_C, t - 1])
    for t in range(min(warmup, n)):
        out[t, :] = np.nan
    for t in range(warmup, n):
        _row(kinds, params, data, t, out, t)


def _push_impl(
    kinds: Any,
    params: Any,
    buf: Any,
    head: int,
    count: int,
    warmup: int,
    bar: Any,
    out: Any,
) -> int:
    size = buf.shape[1] // 2
    prev = buf[_C, head + size - 1]
    r1 = _log_ret(bar[_C], prev) if count > 0 else np.nan
    for s in range(_R1):
        buf[s, head] = bar[s]
        buf[s, head + size] = bar[s]
    buf[_R1, head] = r1
    buf[_R1, head + size] = r1
    buf[_HOUR, head] = bar[_HOUR]
    buf[_HOUR, head + size] = bar[_HOUR]
    head = (head + 1) % size
    if count + 1 > warmup:
        _row(kinds, params, buf[:, head : head + size], size - 1, out, 0)
    return head


run_kernel: Callable[..., None] = _jit(_run_impl)
"""``run_kernel(kinds, params, data, warmup, out)``: fill ``out[t]`` for every bar."""

push_kernel: Callable[..., int] = _jit(_push_impl)
"""``push_kernel(kinds, params, buf, head, count, warmup, bar, out) -> head``.

``buf`` is ``(N_SERIES, 2 * size)``: each value is written twice so the last ``size``
bars are always the contiguous slice ``buf[:, head : head + size]``, oldest first.
``bar`` holds ``open, high, low, close, volume, <unused>, hour``; ``out`` is ``(1, m)``.
"""
