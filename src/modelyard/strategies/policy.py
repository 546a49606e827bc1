"""The signal policy: prediction → target weight, shared by every engine (pure numpy).

Both engines (Backtrader here, vectorbt later) and live trading must reproduce these rules
trade for trade, so they are written once, exactly.

Per symbol, one bar at a time (``p`` = the prediction made at the close of bar ``t``; ``E`` =
``entry_threshold``, ``X`` = ``exit_threshold``, ``X <= E``; a state ``s`` in {-1, 0, +1} that
starts at 0):

1. ``p`` is NaN (warm-up, a broken row): ``s = 0``, weight 0 (flat).
2. ``s == +1``: stay long while ``p > X``; otherwise ``s = 0`` and go on to rule 4.
3. ``s == -1`` (long-short only): stay short while ``p < -X``; otherwise ``s = 0``, rule 4.
4. ``s == 0``: enter long when ``p > E``; else, with ``long_short``, enter short when
   ``p < -E``. A long may therefore flip to a short on one bar (and back) when ``p`` crosses
   the opposite entry threshold.
5. The weight is ``min(scale * p, cap)`` when long, ``max(scale * p, -cap)`` when short, 0
   when flat. Long-only never goes below 0 (rule 3 and the short entry never fire).
6. Rebalance band (``B`` = ``rebalance_band``, default 0): while the state stays the same and
   non-flat, the weight keeps its last value ``h`` unless the new one differs from it by more
   than ``B`` (``abs(w - h) > B``); entries, exits and flips always take the new weight. With
   ``B = 0`` the weight is rule 5's at every bar. The band stops a position being traded on
   every small wobble of the prediction, where fees cost more than the move is worth.

Across symbols, a gross-exposure limit (``max_gross``, default 1.0) acts at each step of the
union of the symbols' timelines. At a step, only the symbols with a bar at that timestamp
(the "trading" set ``T``) can change their target; the others hold their last target
(``held``). If ``sum(|held_j|, j not in T) + sum(|w_i|, i in T) > max_gross``, every ``w_i``
of ``T`` is multiplied by ``budget / sum(|w_i|, i in T)`` with
``budget = max(max_gross - sum(|held_j|, j not in T), 0)``. When all symbols share one calendar
this is plainly "scale all weights down proportionally". The targets never exceed the limit.

Execution (the engines' job): the target decided at the close of bar ``t`` is traded at the
open of the symbol's next bar ``t+1``, sized from the portfolio value at the close of ``t``
(``units = w * value / close[t]``), with the asset class's fees and slippage. A target equal to
the symbol's previous target (the same float, after the gross limit; the first is compared with
0) places no order: the position is left to drift with its price rather than traded back to the
weight every bar (:func:`order_targets`; an order the broker refused is therefore retried only
when the target next changes).

Implementation: :func:`target_weights` and :func:`limit_gross` run numba kernels that repeat
the pure-Python rules (:class:`PolicyState`, :class:`GrossLimiter`, kept for live use) with the
same floating-point operations in the same order (sums left to right, as Python 3.11's ``sum``;
``min``/``max`` with Python's tie and NaN behaviour), so both give bit-identical weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from numba import njit

from modelyard.config.schema import PolicyConfig
from modelyard.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_GROSS",
    "GrossLimiter",
    "GrossTimeline",
    "PolicyState",
    "limit_gross",
    "limit_gross_arrays",
    "order_targets",
    "target_weights",
]

FloatArray = npt.NDArray[np.float64]
DEFAULT_MAX_GROSS = 1.0


def _check(policy: PolicyConfig) -> None:
    if policy.exit_threshold > policy.entry_threshold:
        raise ConfigError(
            f"policy exit_threshold {policy.exit_threshold} exceeds entry_threshold "
            f"{policy.entry_threshold}; the exit must be at or below the entry",
            key="policy.exit_threshold",
        )


def _step(
    state: int,
    held: float,
    p: float,
    entry: float,
    exit_: float,
    scale: float,
    cap: float,
    long_short: bool,
    band: float,
) -> tuple[int, float]:
    """One bar of the rules in the module docstring: (new state, weight); ``held`` is the
    weight of the previous bar."""
    if math.isnan(p):
        return 0, 0.0
    before = state
    if (state == 1 and not p > exit_) or (state == -1 and not p < -exit_):
        state = 0  # rules 2 and 3: the position is closed, rule 4 may re-enter
    if state == 0:
        if p > entry:
            state = 1
        elif long_short and p < -entry:
            state = -1
    if state == 1:
        w = min(scale * p, cap)
    elif state == -1:
        w = max(scale * p, -cap)
    else:
        return 0, 0.0
    if state == before and not abs(w - held) > band:
        return state, held  # rule 6: inside the band
    return state, w


@njit(cache=True, nogil=True)
def _target_weights_nb(
    values: FloatArray,
    entry: float,
    exit_: float,
    scale: float,
    cap: float,
    long_short: bool,
    band: float,
) -> FloatArray:  # pragma: no cover - compiled
    """:func:`_step` over a whole series (same operations, same order)."""
    out = np.empty(values.shape[0], dtype=np.float64)
    state = 0
    held = 0.0
    for i in range(values.shape[0]):
        p = values[i]
        if np.isnan(p):
            state = 0
            held = 0.0
            out[i] = 0.0
            continue
        before = state
        if (state == 1 and not p > exit_) or (state == -1 and not p < -exit_):
            state = 0
        if state == 0:
            if p > entry:
                state = 1
            elif long_short and p < -entry:
                state = -1
        if state == 1:
            w = scale * p
            w = cap if cap < w else w  # Python's min(w, cap)
        elif state == -1:
            w = scale * p
            w = -cap if -cap > w else w  # Python's max(w, -cap)
        else:
            held = 0.0
            out[i] = 0.0
            continue
        if not (state == before and not abs(w - held) > band):
            held = w
        out[i] = held
    return out


def target_weights(pred: npt.ArrayLike, policy: PolicyConfig) -> FloatArray:
    """Target weights of one symbol over time (rules 1-5); float64, same length as ``pred``."""
    _check(policy)
    values = np.ascontiguousarray(np.asarray(pred, dtype=np.float64))
    if values.ndim != 1:
        raise ValueError(f"pred must be 1-D, got shape {values.shape}")
    out: FloatArray = _target_weights_nb(
        values,
        float(policy.entry_threshold),
        float(policy.exit_threshold),
        float(policy.scale),
        float(policy.cap),
        bool(policy.long_short),
        float(policy.rebalance_band),
    )
    return out


def order_targets(weights: npt.ArrayLike) -> FloatArray:
    """One symbol's targets as orders: NaN (no order) where the target equals the previous
    one, the first compared with 0 (module docstring, "Execution"). Same length as
    ``weights``; :class:`~modelyard.strategies.routed.StrategyCore` applies the same rule bar
    by bar."""
    w = np.asarray(weights, dtype=np.float64)
    out = w.copy()
    if len(w):
        previous = np.concatenate([[0.0], w[:-1]])
        out[w == previous] = np.nan
    return out


@dataclass(slots=True)
class PolicyState:
    """Incremental form of :func:`target_weights` for live use: ``step(pred) -> weight``.

    Feeding the predictions one by one gives exactly ``target_weights(preds, policy)``.
    """

    policy: PolicyConfig
    state: int = 0
    held: float = 0.0

    def __post_init__(self) -> None:
        _check(self.policy)

    def step(self, pred: float) -> float:
        p = self.policy
        self.state, self.held = _step(
            self.state,
            self.held,
            float(pred),
            p.entry_threshold,
            p.exit_threshold,
            p.scale,
            p.cap,
            p.long_short,
            p.rebalance_band,
        )
        return self.held


@dataclass(slots=True)
class GrossLimiter:
    """The cross-symbol gross-exposure rule, one step at a time (see the module docstring)."""

    n_symbols: int
    max_gross: float = DEFAULT_MAX_GROSS
    held: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.max_gross > 0:
            raise ConfigError(f"max_gross must be > 0, got {self.max_gross}", key="max_gross")
        if not self.held:
            self.held = [0.0] * self.n_symbols

    def step(self, trading: Sequence[int], weights: Sequence[float]) -> list[float]:
        """Weights of the ``trading`` symbols (indices) after the limit; updates ``held``."""
        held = self.held
        inside = sum(abs(w) for w in weights)
        total = inside + sum(abs(held[j]) for j in range(self.n_symbols) if j not in trading)
        out = list(weights)
        if total > self.max_gross and inside > 0.0:
            budget = max(self.max_gross - (total - inside), 0.0)
            factor = budget / inside
            out = [w * factor for w in weights]
        for i, w in zip(trading, out, strict=True):
            held[i] = w
        return out


@njit(cache=True, nogil=True)
def _limit_in_time_order_nb(
    flat: Any, order: Any, sym: Any, starts: Any, n_symbols: int, max_gross: float
) -> None:  # pragma: no cover - compiled
    """:func:`_limit_gross_nb` on ``flat[order]`` (the symbols' weights concatenated, taken in
    time order), written back to ``flat``."""
    values = np.empty(order.size, dtype=np.float64)
    for e in range(order.size):
        values[e] = flat[order[e]]
    _limit_gross_nb(values, sym, starts, n_symbols, max_gross)
    for e in range(order.size):
        flat[order[e]] = values[e]


@njit(cache=True, nogil=True)
def _limit_gross_nb(
    values: FloatArray,
    sym: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    n_symbols: int,
    max_gross: float,
) -> None:  # pragma: no cover - compiled
    """:meth:`GrossLimiter.step` at every step ``values[starts[k]:starts[k + 1]]`` (in place;
    ``sym`` = the symbol of each event). Same sums in the same order as the Python class."""
    held = np.zeros(n_symbols, dtype=np.float64)
    trading = np.zeros(n_symbols, dtype=np.bool_)
    for k in range(starts.shape[0] - 1):
        start = starts[k]
        stop = starts[k + 1]
        inside = 0.0
        for e in range(start, stop):
            inside += abs(values[e])
            trading[sym[e]] = True
        outside = 0.0
        for j in range(n_symbols):
            if not trading[j]:
                outside += abs(held[j])
        total = inside + outside
        if total > max_gross and inside > 0.0:
            budget = max_gross - (total - inside)
            if budget < 0.0:  # Python's max(budget, 0.0)
                budget = 0.0
            factor = budget / inside
            for e in range(start, stop):
                values[e] = values[e] * factor
        for e in range(start, stop):
            held[sym[e]] = values[e]
            trading[sym[e]] = False


@dataclass(frozen=True)
class GrossTimeline:
    """The bars of several symbols in time order, as :func:`limit_gross` walks them: build it
    once (:meth:`of`) and pass it to every call on the same indexes (e.g. two routing
    variants of one universe)."""

    lengths: tuple[int, ...]
    order: npt.NDArray[np.intp]  # positions in the symbols' bars concatenated, time order
    bounds: npt.NDArray[np.int64]  # the runs of equal timestamps in ``order``
    symbol: npt.NDArray[np.int64]  # the symbol of each position of ``order``

    @classmethod
    def of(cls, indexes: Sequence[pd.Index]) -> GrossTimeline:
        lengths = [len(i) for i in indexes]
        stamps = np.concatenate(
            [pd.DatetimeIndex(i).as_unit("ns").asi8 for i in indexes]
            or [np.empty(0, dtype=np.int64)]
        )
        # pandas' stable sort_index: NaT last, ties in (symbol, bar) order
        nat = stamps == np.iinfo(np.int64).min
        if nat.any():
            valid = np.flatnonzero(~nat)
            order = np.r_[valid[np.argsort(stamps[valid], kind="stable")], np.flatnonzero(nat)]
        else:
            order = np.argsort(stamps, kind="stable")
        sorted_stamps = stamps[order]
        n = len(sorted_stamps)
        starts = np.flatnonzero(np.r_[n > 0, sorted_stamps[1:] != sorted_stamps[:-1]])
        return cls(
            tuple(lengths),
            order.astype(np.intp, copy=False),
            np.r_[starts, n].astype(np.int64),
            np.repeat(np.arange(len(indexes), dtype=np.int64), lengths)[order],
        )

    @classmethod
    def of_rows(cls, rows: Sequence[npt.NDArray[np.intp]], steps: int) -> GrossTimeline:
        """:meth:`of` the indexes whose bars sit at ``rows`` (per symbol, ascending) of one
        timeline of ``steps`` sorted distinct timestamps (a vectorbt layout's): a counting
        sort by step, no comparison sort and no timestamps."""
        lengths = tuple(len(r) for r in rows)
        flat = np.concatenate(
            [np.asarray(r, dtype=np.intp) for r in rows] or [np.empty(0, np.intp)]
        )
        if flat.size and not (int(flat.min()) >= 0 and int(flat.max()) < steps):
            raise ValueError(f"GrossTimeline.of_rows: rows must lie in [0, {steps})")
        order, bounds, symbol = _timeline_nb(flat, np.asarray(lengths, dtype=np.int64), steps)
        return cls(lengths, order, bounds, symbol)


@njit(cache=True, nogil=True)
def _timeline_nb(flat: Any, lengths: Any, steps: int) -> Any:  # pragma: no cover - compiled
    """Order, run bounds and symbols of :meth:`GrossTimeline.of_rows`: each step's bars in
    symbol order, as the stable sort by timestamp gives them."""
    n = flat.size
    start = np.zeros(steps + 1, dtype=np.int64)
    for i in range(n):
        start[flat[i] + 1] += 1
    runs = 0
    for s in range(steps):
        runs += 1 if start[s + 1] > 0 else 0
        start[s + 1] += start[s]
    bounds = np.empty(runs + 1, dtype=np.int64)
    k = 0
    for s in range(steps):
        if start[s + 1] > start[s]:
            bounds[k] = start[s]
            k += 1
    bounds[k] = n
    order = np.empty(n, dtype=np.intp)
    symbol = np.empty(n, dtype=np.int64)
    i = 0
    for j in range(lengths.size):
        for _ in range(lengths[j]):
            at = start[flat[i]]
            order[at] = i
            symbol[at] = j
            start[flat[i]] = at + 1
            i += 1
    return order, bounds, symbol


def limit_gross(
    weights: Mapping[str, pd.Series],
    max_gross: float = DEFAULT_MAX_GROSS,
    *,
    timeline: GrossTimeline | None = None,
) -> dict[str, pd.Series]:
    """Apply :class:`GrossLimiter` over the union timeline of per-symbol weight series.

    Each series is indexed by its own bar timestamps; the result has the same indexes.
    ``timeline`` (:meth:`GrossTimeline.of` the series' indexes, in order) saves sorting them.
    """
    symbols = list(weights)
    limited = limit_gross_arrays(
        [weights[s].to_numpy(np.float64) for s in symbols],
        max_gross,
        timeline=(
            timeline
            if timeline is not None
            else lambda: GrossTimeline.of([weights[s].index for s in symbols])
        ),
    )
    return {
        s: pd.Series(w, index=weights[s].index, name="weight", dtype=np.float64)
        for s, w in zip(symbols, limited, strict=True)
    }


def limit_gross_arrays(
    weights: Sequence[npt.ArrayLike],
    max_gross: float,
    *,
    timeline: GrossTimeline | Callable[[], GrossTimeline],
) -> list[FloatArray]:
    """:func:`limit_gross` on bare arrays (one per symbol, in the ``timeline``'s symbol order):
    new float64 arrays, the inputs are not changed. ``timeline`` may be a callable that makes
    it: it is called only when some step can break the limit."""
    GrossLimiter(len(weights), max_gross)  # validates max_gross
    arrays = [np.asarray(w, dtype=np.float64) for w in weights]
    # Fast path: no step can break the limit when the sum of the largest |w| stays below it.
    if sum(float(np.max(np.abs(a), initial=0.0)) for a in arrays) <= max_gross:
        return [a.copy() for a in arrays]
    steps = timeline() if callable(timeline) else timeline
    lengths = [len(a) for a in arrays]
    if tuple(lengths) != steps.lengths:
        raise ValueError("limit_gross: the timeline was built on other indexes")
    flat = np.concatenate(arrays or [np.empty(0)])
    _limit_in_time_order_nb(
        flat, steps.order, steps.symbol, steps.bounds, len(arrays), float(max_gross)
    )
    edges = np.cumsum([0, *lengths])
    return [flat[edges[i] : edges[i + 1]] for i in range(len(arrays))]
