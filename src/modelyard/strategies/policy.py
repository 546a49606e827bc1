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

Across symbols, a gross-exposure limit (``max_gross``, default 1.0) acts at each step of the
union of the symbols' timelines. At a step, only the symbols with a bar at that timestamp
(the "trading" set ``T``) can change their target; the others hold their last target
(``held``). If ``sum(|held_j|, j not in T) + sum(|w_i|, i in T) > max_gross``, every ``w_i``
of ``T`` is multiplied by ``budget / sum(|w_i|, i in T)`` with
``budget = max(max_gross - sum(|held_j|, j not in T), 0)``. When all symbols share one calendar
this is plainly "scale all weights down proportionally". The targets never exceed the limit.

Execution (the engines' job): the target decided at the close of bar ``t`` is traded at the
open of the symbol's next bar ``t+1``, sized from the portfolio value at the close of ``t``
(``units = w * value / close[t]``), with the asset class's fees and slippage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.config.schema import PolicyConfig
from modelyard.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_GROSS",
    "GrossLimiter",
    "PolicyState",
    "limit_gross",
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
    state: int, p: float, entry: float, exit_: float, scale: float, cap: float, long_short: bool
) -> tuple[int, float]:
    """One bar of the rules in the module docstring: (new state, weight)."""
    if math.isnan(p):
        return 0, 0.0
    if (state == 1 and not p > exit_) or (state == -1 and not p < -exit_):
        state = 0  # rules 2 and 3: the position is closed, rule 4 may re-enter
    if state == 0:
        if p > entry:
            state = 1
        elif long_short and p < -entry:
            state = -1
    if state == 1:
        return 1, min(scale * p, cap)
    if state == -1:
        return -1, max(scale * p, -cap)
    return 0, 0.0


def target_weights(pred: npt.ArrayLike, policy: PolicyConfig) -> FloatArray:
    """Target weights of one symbol over time (rules 1-5); float64, same length as ``pred``."""
    _check(policy)
    values = np.asarray(pred, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"pred must be 1-D, got shape {values.shape}")
    out = np.empty(values.shape[0], dtype=np.float64)
    state = 0
    args = (
        policy.entry_threshold,
        policy.exit_threshold,
        policy.scale,
        policy.cap,
        policy.long_short,
    )
    for i, p in enumerate(values.tolist()):
        state, out[i] = _step(state, p, *args)
    return out


@dataclass(slots=True)
class PolicyState:
    """Incremental form of :func:`target_weights` for live use: ``step(pred) -> weight``.

    Feeding the predictions one by one gives exactly ``target_weights(preds, policy)``.
    """

    policy: PolicyConfig
    state: int = 0

    def __post_init__(self) -> None:
        _check(self.policy)

    def step(self, pred: float) -> float:
        p = self.policy
        self.state, weight = _step(
            self.state,
            float(pred),
            p.entry_threshold,
            p.exit_threshold,
            p.scale,
            p.cap,
            p.long_short,
        )
        return weight


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


def limit_gross(
    weights: Mapping[str, pd.Series], max_gross: float = DEFAULT_MAX_GROSS
) -> dict[str, pd.Series]:
    """Apply :class:`GrossLimiter` over the union timeline of per-symbol weight series.

    Each series is indexed by its own bar timestamps; the result has the same indexes.
    """
    symbols = list(weights)
    limiter = GrossLimiter(len(symbols), max_gross)
    caps_ok = False
    arrays = {s: np.asarray(weights[s], dtype=np.float64).copy() for s in symbols}
    # Fast path: no step can break the limit when the sum of the largest |w| stays below it.
    if sum(float(np.max(np.abs(a), initial=0.0)) for a in arrays.values()) <= max_gross:
        caps_ok = True
    if not caps_ok:
        frames = [
            pd.DataFrame(
                {"sym": i, "pos": np.arange(len(weights[s]))},
                index=pd.DatetimeIndex(weights[s].index).as_unit("ns"),
            )
            for i, s in enumerate(symbols)
        ]
        events = pd.concat(frames).sort_index(kind="stable")
        stamps = pd.DatetimeIndex(events.index).asi8
        sym = events["sym"].to_numpy()
        pos = events["pos"].to_numpy()
        n = len(stamps)
        start = 0
        while start < n:
            stop = start + 1
            while stop < n and stamps[stop] == stamps[start]:
                stop += 1
            trading = sym[start:stop].tolist()
            rows = pos[start:stop].tolist()
            w = [float(arrays[symbols[i]][r]) for i, r in zip(trading, rows, strict=True)]
            limited = limiter.step(trading, w)
            for i, r, value in zip(trading, rows, limited, strict=True):
                arrays[symbols[i]][r] = value
            start = stop
    return {
        s: pd.Series(arrays[s], index=weights[s].index, name="weight", dtype=np.float64)
        for s in symbols
    }
