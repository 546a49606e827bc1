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

import numpy as np
import numpy.typing as npt

__all__ = ["Metrics", "hit_rate", "ic", "icir", "metrics", "rank_ic"]

FloatArray = npt.NDArray[np.float64]


def _pair(pred: npt.ArrayLike, target: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"prediction has {p.size} rows but target has {t.size}")
    keep = np.isfinite(p) & np.isfinite(t)
    return p[keep], t[keep]


def ic(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Pearson correlation; NaN when fewer than 2 rows or a side is constant."""
    p, t = _pair(pred, target)
    if p.size < 2:
        return float("nan")
    pc, tc = p - p.mean(), t - t.mean()
    denom = np.sqrt((pc @ pc) * (tc @ tc))
    return float(pc @ tc / denom) if denom > 0 else float("nan")


def _ranks(x: FloatArray) -> FloatArray:
    """1-based ranks; tied values share the average of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = (ends - counts + 1 + ends) / 2.0
    return np.asarray(average[inverse], dtype=np.float64)


def rank_ic(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Spearman correlation (ties get average ranks)."""
    p, t = _pair(pred, target)
    if p.size < 2:
        return float("nan")
    return ic(_ranks(p), _ranks(t))


def hit_rate(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Share of sign agreements over rows where both signs are non-zero."""
    p, t = _pair(pred, target)
    keep = (p != 0) & (t != 0)
    if not keep.any():
        return float("nan")
    return float(np.mean(np.sign(p[keep]) == np.sign(t[keep])))


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
    return Metrics(ic(p, t), rank_ic(p, t), hit_rate(p, t), int(p.size))
