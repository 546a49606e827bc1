"""Numba kernels for the vectorized and the online feature paths.

``_row`` computes every feature of one bar ``t`` from a ``(N_SERIES, n)`` array of past
bars, recomputing each window sum from the window (no running sums, no drift).
``OnlineFeatures`` calls it (``push_kernel``) on a window of a fixed-size ring buffer.
``compute`` (``run_kernel``) fills a whole frame column by column with O(1)-per-bar
window sums that only ever add values of their own window (``_window_sums``), and falls
back to ``_row``'s exact two-pass std where a windowed std is ill-conditioned (flat or
near-flat windows), so the volz flat rule decides identically. The two paths agree to
rounding (well within 1e-9 relative), not bit for bit.
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
            out[r, j] = 50.0 if tot == 0.0 else 100.0 * (gain / tot)
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


def _window_sums_impl(x: Any, k: int, start: int, suf: Any, sums: Any) -> None:
    """``sums[t] = x[t-k+1] + ... + x[t]`` for ``t >= max(start, k-1)``, in O(1) per bar.

    The array is cut into blocks of ``k`` bars; a window is the suffix of one block plus
    the prefix of the next (van Herk / Gil-Werman), so every sum only adds values of its
    own window: no running subtraction, no drift, NaN stays in its windows, and a sum of
    non-negative values is exactly 0 only when all of them are 0.
    """
    n = x.shape[0]
    first = max(start, k - 1)
    if first >= n:
        return
    # Suffix sums of the blocks that windows start in: blocks of first-k+1 .. n-k.
    b0 = (first - k + 1) // k
    for b in range(b0, n // k + 1):
        lo = b * k
        hi = min(lo + k, n)
        acc = 0.0
        for i in range(hi - 1, lo - 1, -1):
            acc += x[i]
            suf[i] = acc
    pre = 0.0
    for i in range((first // k) * k, first):
        pre += x[i]
    for t in range(first, n):
        if t % k == 0:
            pre = 0.0
        pre += x[t]
        if t % k == k - 1:
            sums[t] = pre
        else:
            sums[t] = suf[t - k + 1] + pre


_window_sums = _jit(_window_sums_impl)

# A windowed std from running sums is used when the window's centred sum of squares is
# above this fraction of its raw sum of squares (then the cancellation in
# ``sum(x^2) - sum(x)^2 / k`` costs at most ~100x rounding); otherwise, e.g. for flat or
# all-zero windows, the exact two-pass ``_std_mean`` of the online path decides.
_STD_WELL_CONDITIONED = 0.01


def _std_column_impl(
    data: Any, s: int, k: int, start: int, scratch: Any, out: Any, j: int, zscore: bool
) -> None:
    x = data[s]
    n = x.shape[0]
    suf, s1, s2, sq = scratch[0], scratch[1], scratch[2], scratch[3]
    _window_sums(x, k, start, suf, s1)
    for i in range(n):
        sq[i] = x[i] * x[i]
    _window_sums(sq, k, start, suf, s2)
    for t in range(start, n):
        a = s1[t]
        q = s2[t]
        num = q - a * a / k
        if num > _STD_WELL_CONDITIONED * q:
            sd = math.sqrt(num / (k - 1))
            m = a / k
        else:
            sd, m = _std_mean(data, s, t, k)
        if zscore:
            out[t, j] = 0.0 if sd <= _VOLZ_FLAT * abs(m) else (x[t] - m) / sd
        else:
            out[t, j] = sd


_std_column = _jit(_std_column_impl)


def _run_impl(kinds: Any, params: Any, data: Any, warmup: int, out: Any) -> None:
    """Column by column; window sums in O(1) per bar (``_window_sums``), so the result
    matches ``_row`` (the online path) to rounding, not bit for bit."""
    n = data.shape[1]
    data[_R1, 0] = np.nan
    for t in range(1, n):
        data[_R1, t] = _log_ret(data[_C, t], data[_C, t - 1])
    for t in range(min(warmup, n)):
        out[t, :] = np.nan
    if warmup >= n:
        return
    c = data[_C]
    v = data[_V]
    r1 = data[_R1]
    scratch = np.empty((4, n), dtype=np.float64)
    suf, s1, s2, tmp = scratch[0], scratch[1], scratch[2], scratch[3]
    for j in range(kinds.shape[0]):
        kind = kinds[j]
        k = int(params[j, 0])
        if kind == _RET:
            if k == 1:
                for t in range(warmup, n):
                    out[t, j] = r1[t]
            else:
                for t in range(warmup, n):
                    out[t, j] = math.log(c[t] / c[t - k])
        elif kind == _RET_LAG:
            lag = int(params[j, 1])
            if k == 1:
                for t in range(warmup, n):
                    out[t, j] = r1[t - lag]
            else:
                for t in range(warmup, n):
                    out[t, j] = math.log(c[t - lag] / c[t - lag - k])
        elif kind == _VOL:
            _std_column(data, _R1, k, warmup, scratch, out, j, False)
        elif kind == _VOLZ:
            _std_column(data, _V, k, warmup, scratch, out, j, True)
        elif kind == _MOM:
            _window_sums(c, k, warmup, suf, s1)
            for t in range(warmup, n):
                out[t, j] = c[t] / (s1[t] / k) - 1.0
        elif kind == _VOLM:
            long = int(params[j, 1])
            eps = params[j, 2]
            _window_sums(v, k, warmup, suf, s1)
            _window_sums(v, long, warmup, suf, s2)
            for t in range(warmup, n):
                out[t, j] = math.log((s1[t] / k + eps) / (s2[t] / long + eps))
        elif kind == _RANGE_HL:
            for t in range(warmup, n):
                out[t, j] = (data[_H, t] - data[_L, t]) / c[t]
        elif kind == _CLOSE_LOC:
            for t in range(warmup, n):
                rng = data[_H, t] - data[_L, t]
                out[t, j] = 0.5 if rng == 0.0 else (c[t] - data[_L, t]) / rng
        elif kind == _RSI:
            tmp[0] = 0.0
            for i in range(1, n):
                d = c[i] - c[i - 1]
                tmp[i] = d if d > 0.0 else 0.0
            _window_sums(tmp, k, warmup, suf, s1)
            for i in range(1, n):
                d = c[i] - c[i - 1]
                tmp[i] = 0.0 if d > 0.0 else -d
            _window_sums(tmp, k, warmup, suf, s2)
            for t in range(warmup, n):
                gain = s1[t]
                tot = gain + s2[t]
                out[t, j] = 50.0 if tot == 0.0 else 100.0 * (gain / tot)
        elif kind in (_HOUR_SIN, _HOUR_COS):
            table = np.empty(24, dtype=np.float64)
            for h in range(24):
                arg = _TWO_PI_OVER_24 * float(h)
                table[h] = math.sin(arg) if kind == _HOUR_SIN else math.cos(arg)
            for t in range(warmup, n):
                hour = data[_HOUR, t]
                if 0.0 <= hour < 24.0 and float(int(hour)) == hour:
                    out[t, j] = table[int(hour)]
                elif kind == _HOUR_SIN:
                    out[t, j] = math.sin(_TWO_PI_OVER_24 * hour)
                else:
                    out[t, j] = math.cos(_TWO_PI_OVER_24 * hour)
        else:  # _GAP
            for t in range(warmup, n):
                out[t, j] = math.log(data[_O, t] / c[t - 1])


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
