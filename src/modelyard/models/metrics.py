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

from modelyard.models._ranks import (
    SortedGroups,
    rank_corr,
    ranks_from,
    sort_order,
    spread,
    subset,
)

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
    portfolio) with one sort per group: the union's sorts are merged from the groups', and
    the targets' sorts serve every prediction scored against them."""

    def __init__(self) -> None:
        self._kept: dict[object, _Kept] = {}
        self._sorts: dict[object, _TargetSorts] = {}

    def _target(self, t: FloatArray, key: object) -> _Kept:
        """The ranks of the paired targets ``t``, kept under ``key``."""
        known = self._kept.get(key)
        if known is not None and np.array_equal(known.values, t):
            return known
        ranks = _ranks(t)
        kept = _Kept(t, ranks, float(spread(ranks)))
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
        """:func:`metrics` of each group's ``(pred, target)`` rows and of all groups' rows
        pooled (the union), the same numbers as :func:`metrics` of the groups' rows
        concatenated in group order (Pearson and rank correlations do not depend on the row
        order; the last bits of their sums may).

        The targets' finite rows are sorted once per group and merged once for the union
        (:class:`_TargetSorts`, kept under ``key`` while the targets are the same values);
        each call takes the subset of those sorts where its predictions are finite too (the
        routing variants differ in their warm-up rows) instead of sorting again. The
        predictions are sorted per group and merged for the union."""
        raw = [
            (g, np.asarray(p, dtype=np.float64).ravel(), np.asarray(t, dtype=np.float64).ravel())
            for g, (p, t) in groups.items()
        ]
        for _, p, t in raw:
            if p.shape != t.shape:
                raise ValueError(f"prediction has {p.size} rows but target has {t.size}")
        targets = [t for _, _, t in raw]
        sorts = self._sorts.get(key)
        if sorts is None or not sorts.holds(targets):
            sorts = _TargetSorts(targets)
            self._sorts[key] = sorts
        paired = [
            np.isfinite(p) & finite for (_, p, _), finite in zip(raw, sorts.finite, strict=True)
        ]
        kept = [r[finite] for r, finite in zip(paired, sorts.finite, strict=True)]  # among finite
        pairs = [(p[r], t[r]) for (_, p, t), r in zip(raw, paired, strict=True)]
        p_sorts = SortedGroups([p.size for p, _ in pairs])
        out: dict[Hashable, Metrics] = {}
        moments = _Moments.of(np.empty(0), np.empty(0))
        agree = counted = 0
        for k, ((g, _, _), (p, t)) in enumerate(zip(raw, pairs, strict=True)):
            order, ordered = p_sorts.sort(k, p)
            rank_ic = float("nan")
            if p.size >= 2:
                t_ranks, t_spread = sorts.ranks(k, kept[k])
                rank_ic = float(rank_corr(ordered, order, t_ranks, t_spread))
            m = _Moments.of(p, t)
            hits, rows = _hits_nb(p, t)
            moments, agree, counted = moments + m, agree + hits, counted + rows
            out[g] = Metrics(m.ic, rank_ic, _rate(hits, rows), p.size)
        rank_ic = float("nan")
        if moments.n >= 2:
            keep = np.concatenate(kept) if len(kept) > 1 else kept[0]
            t_ranks, t_spread = sorts.ranks(None, keep)
            order, ordered = p_sorts.merged()
            rank_ic = float(rank_corr(ordered, order, t_ranks, t_spread))
        return out, Metrics(moments.ic, rank_ic, _rate(agree, counted), moments.n)


class _TargetSorts:
    """The finite rows of disjoint groups' targets, each group sorted once and the union's
    sort merged from theirs (on first use); :meth:`ranks` of any subset of those rows from
    them, without sorting again."""

    def __init__(self, targets: Sequence[FloatArray]) -> None:
        self.targets = [t.copy() for t in targets]  # the caller may refill its arrays
        self.finite = [np.isfinite(t) for t in self.targets]
        values = [t[f] for t, f in zip(self.targets, self.finite, strict=True)]
        self.sorts = SortedGroups([v.size for v in values])
        for g, v in enumerate(values):
            self.sorts.sort(g, v)
        self._union: tuple[npt.NDArray[np.intp], FloatArray] | None = None
        self._whole: dict[int | None, tuple[FloatArray, float]] = {}

    def holds(self, targets: Sequence[FloatArray]) -> bool:
        """Whether these are the sorted targets (the same values, NaN where they are)."""
        return len(targets) == len(self.targets) and all(
            a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
            for a, b in zip(targets, self.targets, strict=True)
        )

    def ranks(self, group: int | None, keep: npt.NDArray[np.bool_]) -> tuple[FloatArray, float]:
        """Average ranks (in row order) and :func:`spread` of the kept finite rows of
        ``group`` (``None``: the union, rows in group order); ``keep`` masks those rows. All
        kept: computed once and kept."""
        whole = bool(keep.all())
        if whole and group in self._whole:
            return self._whole[group]
        if group is None:
            if self._union is None:
                self._union = self.sorts.merged()
            order, ordered = self._union
        else:
            order, ordered = self.sorts.group(group)
        if not whole:
            order, ordered = subset(order, ordered, keep)
        ranks: FloatArray = ranks_from(ordered, order)
        result = (ranks, float(spread(ranks)))
        if whole:
            self._whole[group] = result
        return result


@dataclass(frozen=True, slots=True)
class _Kept:
    """A target set's ranks: its values, ranks and spread."""

    values: FloatArray
    ranks: FloatArray
    spread: float
