"""Prediction-quality metrics: IC, rank IC, ICIR and hit rate (Qlib's vocabulary).

* IC: Pearson correlation of prediction and realised forward return.
* rank IC: Spearman correlation (Pearson of average ranks).
* ICIR: mean / standard deviation (ddof=1) of per-period ICs (here: per walk-forward fold).
* hit rate: share of rows where the prediction's sign equals the return's sign, over rows
  where neither is zero.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from modelyard.models._ranks import SortedGroups, rank_corr, ranks_from, sort_order, spread

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
    return _Moments.of(p, t).ic


@dataclass(frozen=True, slots=True)
class _Moments:
    """Row count, means and centred sums of squares and products of paired rows: their
    Pearson correlation, and the union of disjoint row sets without a pass over it (the
    pairwise update of Chan, Golub and LeVeque)."""

    n: int
    mean_p: float
    mean_t: float
    pp: float
    tt: float
    pt: float

    @classmethod
    def of(cls, p: FloatArray, t: FloatArray) -> _Moments:
        if p.size == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        mp, mt, pp, tt, pt = _moments_nb(p, t)
        return cls(p.size, float(mp), float(mt), float(pp), float(tt), float(pt))

    def __add__(self, other: _Moments) -> _Moments:
        if self.n == 0 or other.n == 0:
            return other if self.n == 0 else self
        n = self.n + other.n
        dp, dt = other.mean_p - self.mean_p, other.mean_t - self.mean_t
        w = self.n * other.n / n
        return _Moments(
            n,
            self.mean_p + dp * other.n / n,
            self.mean_t + dt * other.n / n,
            self.pp + other.pp + dp * dp * w,
            self.tt + other.tt + dt * dt * w,
            self.pt + other.pt + dp * dt * w,
        )

    @property
    def ic(self) -> float:
        if self.n < 2:
            return float("nan")
        denom = np.sqrt(self.pp * self.tt)
        return float(self.pt / denom) if denom > 0 else float("nan")


_BLOCK = 4096  # rows per partial sum: sums of blocks keep the error near pairwise summation's


@njit(cache=True, nogil=True)
def _moments_nb(p: Any, t: Any) -> Any:
    """Means, then centred sums of squares and products (two passes, no temporaries; sums
    of ``_BLOCK``-row partial sums)."""
    n = p.size
    sp = 0.0
    st = 0.0
    for lo in range(0, n, _BLOCK):
        bp = 0.0
        bt = 0.0
        for i in range(lo, min(lo + _BLOCK, n)):
            bp += p[i]
            bt += t[i]
        sp += bp
        st += bt
    mp = sp / n
    mt = st / n
    pp = 0.0
    tt = 0.0
    pt = 0.0
    for lo in range(0, n, _BLOCK):
        bpp = 0.0
        btt = 0.0
        bpt = 0.0
        for i in range(lo, min(lo + _BLOCK, n)):
            dp = p[i] - mp
            dt = t[i] - mt
            bpp += dp * dp
            btt += dt * dt
            bpt += dp * dt
        pp += bpp
        tt += btt
        pt += bpt
    return mp, mt, pp, tt, pt


def ic(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Pearson correlation; NaN when fewer than 2 rows or a side is constant."""
    return _ic(*_pair(pred, target))


def _ranks(x: FloatArray) -> FloatArray:
    """1-based ranks; tied values share the average of the ranks they span.

    One sort, then one pass over it (:mod:`~modelyard.models._ranks`); the ranks are exact
    (half-)integers, whatever the sort: the same bits as ``np.unique(x, return_inverse=True,
    return_counts=True)`` would give them.
    """
    order, ordered = sort_order(x)
    ranks: FloatArray = ranks_from(ordered, order)
    return ranks


def _rank_ic(p: FloatArray, t: FloatArray) -> float:
    if p.size < 2:
        return float("nan")
    t_ranks = _ranks(t)
    order, ordered = sort_order(p)
    return float(rank_corr(ordered, order, t_ranks, spread(t_ranks)))


def rank_ic(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Spearman correlation (ties get average ranks)."""
    return _rank_ic(*_pair(pred, target))


def _hit_rate(p: FloatArray, t: FloatArray) -> float:
    return _rate(*_hits_nb(p, t))


def _rate(agree: int, counted: int) -> float:
    return float(agree / counted) if counted else float("nan")


@njit(cache=True, nogil=True)
def _hits_nb(p: Any, t: Any) -> Any:
    """(rows where the signs agree, rows where neither side is zero)."""
    agree = 0
    counted = 0
    for i in range(p.size):
        if p[i] != 0.0 and t[i] != 0.0:
            counted += 1
            if (p[i] > 0.0) == (t[i] > 0.0):
                agree += 1
    return agree, counted


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
    ranks and keeps them. Gives exactly what :func:`metrics` gives.

    :meth:`pooled` scores disjoint groups of rows (asset classes) and their union (the
    portfolio) with one sort per group: the union's sorts are merged from the groups'."""

    def __init__(self) -> None:
        self._kept: dict[object, _Kept] = {}

    def _target(self, t: FloatArray, key: object) -> _Kept:
        """The ranks (and sort) of the paired targets ``t``, kept under ``key``."""
        known = self._kept.get(key)
        if known is not None and np.array_equal(known.values, t):
            return known
        order, ordered = sort_order(t)
        ranks = ranks_from(ordered, order)
        kept = _Kept(t, ranks, float(spread(ranks)), order, ordered)
        self._kept[key] = kept
        return kept

    def metrics(self, pred: npt.ArrayLike, target: npt.ArrayLike, key: object) -> Metrics:
        p, t = _pair(pred, target)
        rank_ic = float("nan")
        if p.size >= 2:
            kept = self._target(t, key)
            order, ordered = sort_order(p)
            rank_ic = float(rank_corr(ordered, order, kept.ranks, kept.spread))
        return Metrics(_ic(p, t), rank_ic, _hit_rate(p, t), int(p.size))

    def pooled(
        self,
        groups: Mapping[Hashable, tuple[npt.ArrayLike, npt.ArrayLike]],
        key: object,
    ) -> tuple[dict[Hashable, Metrics], Metrics]:
        """:func:`metrics` of each group's ``(pred, target)`` rows (target ranks kept under
        ``(key, group)``) and of all groups' rows pooled (kept under ``key``), the union's
        sorts merged from the groups' (no second sort). The union's numbers are
        :func:`metrics` of the groups' rows concatenated in group order (Pearson and rank
        correlations do not depend on the row order; the last bits of their sums may)."""
        pairs = {g: _pair(p, t) for g, (p, t) in groups.items()}
        out: dict[Hashable, Metrics] = {}
        sizes = [p.size for p, _ in pairs.values()]
        p_sorts = SortedGroups(sizes)
        moments = _Moments.of(np.empty(0), np.empty(0))
        agree = counted = 0
        kept_groups: list[_Kept] = []
        for k, (g, (p, t)) in enumerate(pairs.items()):
            order, ordered = p_sorts.sort(k, p)
            kept = self._target(t, (key, g))
            kept_groups.append(kept)
            rank_ic = float("nan")
            if p.size >= 2:
                rank_ic = float(rank_corr(ordered, order, kept.ranks, kept.spread))
            m = _Moments.of(p, t)
            hits, rows = _hits_nb(p, t)
            moments, agree, counted = moments + m, agree + hits, counted + rows
            out[g] = Metrics(m.ic, rank_ic, _rate(hits, rows), p.size)
        rank_ic = float("nan")
        if moments.n >= 2:
            # the union's targets are the groups' concatenated: the same when theirs are
            union = self._kept.get(key)
            if (
                union is None
                or len(union.parts) != len(kept_groups)
                or any(a is not b for a, b in zip(union.parts, kept_groups, strict=True))
            ):
                t_sorts = SortedGroups(sizes)
                for k, kept in enumerate(kept_groups):
                    t_sorts.put(k, kept.order, kept.ordered)
                order, ordered = t_sorts.merged()
                ranks = ranks_from(ordered, order)
                spreads = float(spread(ranks))
                union = _Kept(np.empty(0), ranks, spreads, order, ordered, tuple(kept_groups))
                self._kept[key] = union
            order, ordered = p_sorts.merged()
            rank_ic = float(rank_corr(ordered, order, union.ranks, union.spread))
        return out, Metrics(moments.ic, rank_ic, _rate(agree, counted), moments.n)


@dataclass(frozen=True, slots=True)
class _Kept:
    """A target set's ranks: its values, ranks, spread and sort (order, sorted values)."""

    values: FloatArray
    ranks: FloatArray
    spread: float
    order: npt.NDArray[np.intp]
    ordered: FloatArray
    parts: tuple[_Kept, ...] = ()  # a union's: its groups' entries (kept alive, by identity)
