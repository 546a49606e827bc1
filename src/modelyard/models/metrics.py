"""Prediction-quality metrics: IC, rank IC, ICIR and hit rate (Qlib's vocabulary).

* IC: Pearson correlation of prediction and realised forward return.
* rank IC: Spearman correlation (Pearson of average ranks).
* ICIR: mean / standard deviation (ddof=1) of per-period ICs (here: per walk-forward fold).
* hit rate: share of rows where the prediction's sign equals the return's sign, over rows
  where neither is zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = ["Metrics", "TargetRanks", "hit_rate", "ic", "icir", "metrics", "rank_ic"]

FloatArray = npt.NDArray[np.float64]


def _pair(pred: npt.ArrayLike, target: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"prediction has {p.size} rows but target has {t.size}")
    keep = np.isfinite(p) & np.isfinite(t)
    return p[keep], t[keep]


def _ic(p: FloatArray, t: FloatArray) -> float:
    """:func:`ic` of rows already paired by :func:`_pair`."""
    if p.size < 2:
        return float("nan")
    pc, tc = p - p.mean(), t - t.mean()
    denom = np.sqrt((pc @ pc) * (tc @ tc))
    return float(pc @ tc / denom) if denom > 0 else float("nan")


def ic(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Pearson correlation; NaN when fewer than 2 rows or a side is constant."""
    return _ic(*_pair(pred, target))


def _ranks(x: FloatArray) -> FloatArray:
    """1-based ranks; tied values share the average of the ranks they span.

    One sort, then one pass over it (:func:`_ranks_nb`); the ranks are exact (half-)integers,
    whatever the sort: the same bits as ``np.unique(x, return_inverse=True,
    return_counts=True)`` would give them.
    """
    ranks: FloatArray = _ranks_nb(x, np.argsort(x))
    return ranks


@njit(cache=True, nogil=True)
def _ranks_nb(x: Any, order: Any) -> Any:
    """The average ranks of ``x`` from its ascending ``order``: each run of equal values
    (positions ``k .. j-1`` of the order) gets ``(k + 1 + j) / 2``."""
    n = x.size
    out = np.empty(n, dtype=np.float64)
    start = 0  # the first position of the current run of equal values
    previous = 0.0
    for k in range(n + 1):
        value = x[order[k]] if k < n else 0.0
        if k == n or (k > 0 and value != previous):
            average = (start + 1 + k) / 2.0
            for q in range(start, k):
                out[order[q]] = average
            start = k
        previous = value
    return out


def _rank_ic(p: FloatArray, t: FloatArray) -> float:
    if p.size < 2:
        return float("nan")
    return _ic(_ranks(p), _ranks(t))


def rank_ic(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Spearman correlation (ties get average ranks)."""
    return _rank_ic(*_pair(pred, target))


def _hit_rate(p: FloatArray, t: FloatArray) -> float:
    keep = (p != 0) & (t != 0)
    if not keep.any():
        return float("nan")
    return float(np.mean(np.sign(p[keep]) == np.sign(t[keep])))


def hit_rate(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Share of sign agreements over rows where both signs are non-zero."""
    return _hit_rate(*_pair(pred, target))


def icir(ics: Sequence[float]) -> float:
    values = np.asarray([v for v in ics if np.isfinite(v)], dtype=np.float64)
    if values.size < 2:
        return float("nan")
    sd = values.std(ddof=1)
    return float(values.mean() / sd) if sd > 0 else float("nan")


@dataclass(frozen=True, slots=True)
class Metrics:
    ic: float
    rank_ic: float
    hit_rate: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def metrics(pred: npt.ArrayLike, target: npt.ArrayLike) -> Metrics:
    p, t = _pair(pred, target)
    return Metrics(_ic(p, t), _rank_ic(p, t), _hit_rate(p, t), int(p.size))


class TargetRanks:
    """:func:`metrics` of several predictions of the same pooled targets, ranking each target
    set once: ``metrics(pred, target, key)`` reuses the ranks kept under ``key`` when the paired
    targets are the same values (e.g. two routing variants scored on the same rows), else
    ranks and keeps them. Gives exactly what :func:`metrics` gives."""

    def __init__(self) -> None:
        self._kept: dict[object, tuple[FloatArray, FloatArray]] = {}

    def metrics(self, pred: npt.ArrayLike, target: npt.ArrayLike, key: object) -> Metrics:
        p, t = _pair(pred, target)
        rank_ic = float("nan")
        if p.size >= 2:
            known = self._kept.get(key)
            if known is not None and np.array_equal(known[0], t):
                t_ranks = known[1]
            else:
                t_ranks = _ranks(t)
                self._kept[key] = (t, t_ranks)
            rank_ic = _ic(_ranks(p), t_ranks)
        return Metrics(_ic(p, t), rank_ic, _hit_rate(p, t), int(p.size))
