"""Stage ``accounts`` of :func:`~modelyard.strategies.compare.compare`: the accounts, as one
pure task function.

The portfolio account (every symbol, per variant) shares cash across symbols, so it needs
every symbol's weights and no symbol shard can run it. It is one task (:func:`shared_shard`):
one vectorbt simulation of the portfolio (both variants in one broadcast, or one task per
variant when several workers share the work: groups simulate independently, so the bits are
the same), then every account from that simulation's order records:

* ``portfolio``: the variant's :class:`Result` (what ``run_backtest`` gives);
* ``class`` and ``symbol``: *sleeves* of the portfolio: the full cash plus the profit and loss
  of the class's (the symbol's) fills in the portfolio account, valued at each step's close
  (:meth:`~modelyard.strategies.vectorized.Simulation.sleeve_values`). The sleeves of the
  symbols add up to the portfolio (``sum(sleeve - cash) == portfolio - cash`` at every step,
  to rounding): a symbol's row says what that symbol did *inside* the portfolio, with the
  same orders, sizes and fills, not what a different account would have done.

The task also scores its variants' pooled predictions: IC, rank IC and hit rate of each
class's rows and of the portfolio's (the classes' rows in class order), against the forward
returns of each symbol's closes (:func:`pooled_quality`).

What travels to the task is the layout (the same for every task of a run, so an executor may
send it once per worker) and each symbol's predictions. The task turns them into the policy's
target weights (:func:`~modelyard.strategies.policy.target_weights`) and applies the gross
limit across every symbol of the variant (it couples the symbols bar by bar). The closes the
quality needs are the layout's. Serially the same function runs in-process, so the results are
the same bits on every executor.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard._blas import one_blas_thread
from modelyard.models.features import forward_log_return
from modelyard.models.metrics import Metrics, TargetRanks
from modelyard.routing.decision import RouteDecision
from modelyard.strategies._vbt_layout import Layout
from modelyard.strategies.policy import GrossTimeline, limit_gross_arrays, target_weights
from modelyard.strategies.results import (
    Result,
    account_periods_per_year,
    stats_of_fills,
    symbol_periods_per_year,
)
from modelyard.strategies.signals import SymbolSetup
from modelyard.strategies.vectorized import VARIANT_FLAGS, Simulation, result_of, simulate

__all__ = [
    "SharedPiece",
    "SharedTask",
    "class_members",
    "limited_weights",
    "merge_pieces",
    "pooled_quality",
    "shared_shard",
    "sleeve_curve",
    "sleeve_steps",
]


@dataclass(frozen=True)
class SharedTask:
    """The accounts and the pooled quality of some variants (every variant, or one per task)."""

    setups: tuple[SymbolSetup, ...]
    predictions: dict[str, dict[str, npt.NDArray[np.float64]]]  # variant -> symbol -> preds
    max_gross: float  # the gross limit, applied here (it couples every symbol of a variant)
    engine: str
    cash: float
    run: dict[str, Any]  # the run's config (the portfolio Result's ``config["run"]``)
    decisions: dict[str, tuple[RouteDecision, ...]]  # variant -> routes, symbol order
    horizons: dict[str, int]  # serving model -> its horizon (the forward returns scored on)

    def part(self, variants: Sequence[str]) -> SharedTask:
        """This task for only ``variants`` (what travels shrinks with it)."""
        return SharedTask(
            self.setups,
            {v: self.predictions[v] for v in variants},
            self.max_gross,
            self.engine,
            self.cash,
            self.run,
            {v: self.decisions[v] for v in variants},
            self.horizons,
        )


@dataclass(frozen=True)
class SharedPiece:
    """What :func:`shared_shard` returns, for its variants: the portfolio's Result per variant
    (config ``run`` only); the curve (values at :func:`sleeve_steps`: the caller has the
    timestamps) and statistics of each ``(variant, asset_class)`` and ``(variant, symbol)``
    sleeve, and the pooled quality."""

    results: dict[str, Result]
    class_equity: dict[tuple[str, str], npt.NDArray[np.float64]]
    class_stats: dict[tuple[str, str], dict[str, Any]]
    symbol_equity: dict[tuple[str, str], npt.NDArray[np.float64]]
    symbol_stats: dict[tuple[str, str], dict[str, Any]]
    #: IC, rank IC and hit rate of the portfolio's rows (key ``(variant, "")``) and of each
    #: class's (``(variant, asset_class)``)
    quality: dict[tuple[str, str], dict[str, float]]
    seconds: float
    pid: int


def merge_pieces(pieces: Sequence[SharedPiece]) -> SharedPiece:
    """Pieces of different variants as one (the same as one task of every variant)."""
    if not pieces:
        raise ValueError("no pieces to merge")
    return SharedPiece(
        {k: v for p in pieces for k, v in p.results.items()},
        {k: v for p in pieces for k, v in p.class_equity.items()},
        {k: v for p in pieces for k, v in p.class_stats.items()},
        {k: v for p in pieces for k, v in p.symbol_equity.items()},
        {k: v for p in pieces for k, v in p.symbol_stats.items()},
        {k: v for p in pieces for k, v in p.quality.items()},
        sum(p.seconds for p in pieces),
        pieces[0].pid,
    )


def pooled_quality(
    predictions: Mapping[str, npt.NDArray[np.float64]],
    decisions: Sequence[RouteDecision],
    members: Mapping[str, Sequence[str]],
    targets: Mapping[tuple[str, str], npt.NDArray[np.float64]],  # (symbol, model) -> returns
    ranks: TargetRanks,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """IC, rank IC and hit rate of each class's rows pooled (``members``: class -> symbols)
    and of every class's rows pooled (the portfolio), each symbol's predictions against the
    forward returns over its serving model's horizon (``ranks`` reuses target ranks and
    merges the classes' sorts for the portfolio: :meth:`TargetRanks.pooled`)."""
    model = {d.symbol: d.model_id for d in decisions}

    def rows(names: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        pred = np.concatenate([np.asarray(predictions[s], np.float64) for s in names])
        target = np.concatenate([np.asarray(targets[(s, model[s])], np.float64) for s in names])
        return pred, target

    by_class, whole = ranks.pooled({c: rows(names) for c, names in members.items()}, "pool")

    def scores(m: Metrics) -> dict[str, float]:
        return {"ic": m.ic, "rank_ic": m.rank_ic, "hit_rate": m.hit_rate}

    return {str(c): scores(m) for c, m in by_class.items()}, scores(whole)


def _closes(layout: Layout) -> dict[str, pd.DataFrame]:
    """Each symbol's closes on its own bars, from the layout (what ``result_of`` reads)."""
    return {
        s: pd.DataFrame({"close": layout.close[rows, j]}, index=layout.index[rows])
        for j, (s, rows) in enumerate(zip(layout.symbols, layout.rows, strict=True))
    }


def _targets(
    task: SharedTask, closes: Mapping[str, pd.DataFrame]
) -> dict[tuple[str, str], npt.NDArray[np.float64]]:
    """(symbol, serving model) -> the forward log returns over the model's horizon on the
    symbol's own bars (:func:`~modelyard.models.features.compute_target`, from its closes)."""
    by_horizon: dict[tuple[str, int], npt.NDArray[np.float64]] = {}
    out: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
    for decisions in task.decisions.values():
        for d in decisions:
            key = (d.symbol, task.horizons[d.model_id])
            if key not in by_horizon:
                close = closes[d.symbol]["close"].to_numpy(np.float64)
                by_horizon[key] = forward_log_return(close, key[1])
            out[(d.symbol, d.model_id)] = by_horizon[key]
    return out


def _quality(
    task: SharedTask, closes: Mapping[str, pd.DataFrame]
) -> dict[tuple[str, str], dict[str, float]]:
    """The pooled quality of ``task``'s variants (the same bits wherever it runs: the moments
    and ranks are numba passes, BLAS is not used)."""
    ranks = TargetRanks()
    members = class_members(task.setups)
    targets = _targets(task, closes)
    quality: dict[tuple[str, str], dict[str, float]] = {}
    for variant, routes in task.decisions.items():
        by_class, whole = pooled_quality(task.predictions[variant], routes, members, targets, ranks)
        quality[(variant, "")] = whole
        quality.update({(variant, cls): q for cls, q in by_class.items()})
    return quality


def sleeve_steps(layout: Layout, names: Sequence[str]) -> npt.NDArray[np.intp]:
    """The steps of ``layout`` where the sleeve of ``names`` can change: the union of their
    bars."""
    position = layout.column
    if len(names) == 1:
        return layout.rows[position[names[0]]]
    on = np.zeros(len(layout.index), dtype=bool)
    for s in names:
        on[layout.rows[position[s]]] = True
    return np.flatnonzero(on)


def sleeve_curve(layout: Layout, steps: npt.NDArray[np.intp], values: npt.ArrayLike) -> pd.Series:
    """A sleeve's values at ``steps`` as its equity curve (UTC timestamps)."""
    contiguous = len(steps) > 0 and int(steps[-1]) - int(steps[0]) + 1 == len(steps)
    index = layout.index[int(steps[0]) : int(steps[-1]) + 1] if contiguous else layout.index[steps]
    return pd.Series(np.asarray(values, dtype=np.float64), index=index, name="equity")


def class_members(setups: Sequence[SymbolSetup]) -> dict[str, list[str]]:
    """Asset class -> its symbols (in ``setups`` order), classes in order of first appearance."""
    classes = {s.symbol: s.asset_class for s in setups}
    return {c: [s for s in classes if classes[s] == c] for c in dict.fromkeys(classes.values())}


def shared_shard(task: SharedTask, layout: Layout) -> SharedPiece:
    """The accounts of ``task``'s variants on the run's ``layout`` (an argument of its own:
    every task of a run has the same, and an executor may send it once per worker): simulate
    the portfolio and take every account from it (BLAS on one thread)."""
    with one_blas_thread():
        return _shared_shard(task, layout)


def limited_weights(
    task: SharedTask, layout: Layout
) -> dict[str, dict[str, npt.NDArray[np.float64]]]:
    """The policy's target weights of ``task``'s predictions, after the gross limit: per
    variant across every symbol of the ``layout`` (:func:`~modelyard.strategies.policy.
    limit_gross` on the layout's timeline)."""
    policy = {s.symbol: s.policy for s in task.setups}
    timeline = functools.cache(lambda: GrossTimeline.of_rows(layout.rows, len(layout.index)))
    out = {}
    for variant, preds in task.predictions.items():
        raw = [target_weights(preds[s], policy[s]) for s in layout.symbols]
        limited = limit_gross_arrays(raw, task.max_gross, timeline=timeline)
        out[variant] = dict(zip(layout.symbols, limited, strict=True))
    return out


def _shared_shard(task: SharedTask, layout: Layout) -> SharedPiece:
    started = time.perf_counter()
    setups = list(task.setups)
    weights = limited_weights(task, layout)
    sim = simulate(layout, setups, weights, cash=task.cash, engine=task.engine)
    bars = _closes(layout)
    results: dict[str, Result] = {}
    members = class_members(setups)
    for variant in weights:
        routes = task.decisions[variant]
        results[variant] = result_of(
            sim,
            variant,
            bars,
            setups,
            routes=routes,
            config={**task.run, "variant": variant, "asset_specific": VARIANT_FLAGS[variant]},
        )
    sleeves = _Sleeves(sim, layout, bars, setups, members)
    class_equity, class_stats = sleeves.accounts("class")
    symbol_equity, symbol_stats = sleeves.accounts("symbol")
    return SharedPiece(
        results,
        class_equity,
        class_stats,
        symbol_equity,
        symbol_stats,
        _quality(task, bars),
        time.perf_counter() - started,
        os.getpid(),
    )


class _Sleeves:
    """The class and symbol sleeves of one portfolio simulation (module docstring)."""

    def __init__(
        self,
        sim: Simulation,
        layout: Layout,
        bars: Mapping[str, pd.DataFrame],
        setups: Sequence[SymbolSetup],
        members: Mapping[str, Sequence[str]],
    ) -> None:
        self.sim, self.layout, self.members = sim, layout, members
        calendar = {s.symbol: s.calendar for s in setups}
        self.ppy = {s: symbol_periods_per_year(bars[s].index, calendar[s]) for s in layout.symbols}
        self.stamps = np.asarray(layout.index.asi8, dtype=np.int64)

    def accounts(
        self, level: str
    ) -> tuple[
        dict[tuple[str, str], npt.NDArray[np.float64]], dict[tuple[str, str], dict[str, Any]]
    ]:
        """``(variant, name)`` -> the sleeve's values at its steps, and its statistics."""
        sim = self.sim
        values, keys = sim.sleeve_values(level)
        columns = sim.columns.to_frame(index=False)
        symbol_of = columns["symbol"].to_numpy(dtype=object)
        variant_of = columns["variant"].to_numpy(dtype=object)
        equity: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        stats: dict[tuple[str, str], dict[str, Any]] = {}
        for variant in dict.fromkeys(str(v) for v in variant_of):
            fills = sim.fills(variant=variant)
            by_column = np.argsort(fills.code, kind="stable")  # each column's fills, in order
            bounds = np.searchsorted(fills.code[by_column], np.arange(len(symbol_of) + 1))
            for g, key in enumerate(keys):
                if key[0] != variant:
                    continue
                name = key[-1]
                names = [name] if level == "symbol" else list(self.members[name])
                cols = np.flatnonzero((variant_of == variant) & np.isin(symbol_of, names))
                # the sleeve's fills in execution order
                picked = np.sort(
                    np.concatenate([by_column[bounds[c] : bounds[c + 1]] for c in cols])
                )
                rows = sleeve_steps(self.layout, names)
                ppy = account_periods_per_year(self.ppy[s] for s in names)
                curve = values[rows, g]
                stats[(variant, name)] = stats_of_fills(
                    self.stamps[rows], curve, fills.where(picked), ppy
                )
                equity[(variant, name)] = curve
        return equity, stats
