"""Stage ``shared`` of :func:`~modelyard.strategies.compare.compare`: the accounts that share
cash across symbols, as pure task functions.

The portfolio account (every symbol, per variant) and the class accounts (the symbols of one
asset class, per variant) need every symbol's weights, so no symbol shard can run them. Each
grouping is one task (:func:`shared_shard`): one vectorbt broadcast of both variants, then the
accounts' curves and statistics from arrays. The driver starts both tasks on the executor with
the standalone shards, largest first, so two workers share the simulations instead of the driver
running them alone while the workers wait; serially the same function runs in-process, so the
results are the same bits on every executor. Each task also scores its accounts' pooled
predictions (IC, rank IC, hit rate), so the driver only limits, dispatches and assembles.

What travels is arrays: the layout (the closes and bar timestamps of each symbol come from
it), the limited weights, the predictions and the realised forward returns they are scored on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.models.metrics import TargetRanks
from modelyard.routing.decision import RouteDecision
from modelyard.scale.shards import one_blas_thread
from modelyard.strategies._vbt_layout import Layout
from modelyard.strategies.results import (
    Result,
    account_periods_per_year,
    symbol_periods_per_year,
)
from modelyard.strategies.signals import SymbolSetup
from modelyard.strategies.vectorized import VARIANT_FLAGS, account_stats, result_of, simulate

__all__ = [
    "SHARED_GROUPINGS",
    "SharedPiece",
    "SharedTask",
    "class_members",
    "merge_pieces",
    "pooled_quality",
    "shared_shard",
]

SharedGrouping = Literal["portfolio", "class"]
SHARED_GROUPINGS: tuple[SharedGrouping, ...] = ("portfolio", "class")


@dataclass(frozen=True)
class SharedTask:
    """One grouping of the shared accounts, every variant at once."""

    grouping: SharedGrouping
    setups: tuple[SymbolSetup, ...]
    weights: dict[str, dict[str, npt.NDArray[np.float64]]]  # variant -> symbol -> after limit
    engine: str
    cash: float
    run: dict[str, Any]  # the run's config (the portfolio Result's ``config["run"]``)
    decisions: dict[str, tuple[RouteDecision, ...]]  # variant -> routes, symbol order
    predictions: dict[str, dict[str, npt.NDArray[np.float64]]]  # variant -> symbol -> preds
    targets: dict[tuple[str, str], npt.NDArray[np.float64]]  # (symbol, model) -> fwd returns

    def part(self, grouping: SharedGrouping, variants: Sequence[str]) -> SharedTask:
        """This task for ``grouping`` and only ``variants`` (what travels shrinks with it)."""
        return SharedTask(
            grouping,
            self.setups,
            {v: self.weights[v] for v in variants},
            self.engine,
            self.cash,
            self.run,
            {v: self.decisions[v] for v in variants},
            {v: self.predictions[v] for v in variants},
            {
                (d.symbol, d.model_id): self.targets[(d.symbol, d.model_id)]
                for v in variants
                for d in self.decisions[v]
                if (d.symbol, d.model_id) in self.targets
            },
        )


@dataclass(frozen=True)
class SharedPiece:
    """What :func:`shared_shard` returns: for ``portfolio`` the Result per variant (config
    ``run`` only), for ``class`` the curve and statistics per ``(variant, asset_class)``; the
    prediction quality of each account (key ``(variant, "")`` for the portfolio)."""

    grouping: SharedGrouping
    results: dict[str, Result]
    class_equity: dict[tuple[str, str], pd.Series]
    class_stats: dict[tuple[str, str], dict[str, Any]]
    quality: dict[tuple[str, str], dict[str, float]]
    seconds: float
    pid: int


def merge_pieces(pieces: Sequence[SharedPiece]) -> dict[str, SharedPiece]:
    """Pieces of the same grouping (one per variant, or one of all) merged, by grouping."""
    out: dict[str, SharedPiece] = {}
    for p in pieces:
        q = out.get(p.grouping)
        out[p.grouping] = (
            p
            if q is None
            else SharedPiece(
                p.grouping,
                {**q.results, **p.results},
                {**q.class_equity, **p.class_equity},
                {**q.class_stats, **p.class_stats},
                {**q.quality, **p.quality},
                q.seconds + p.seconds,
                q.pid,
            )
        )
    return out


def pooled_quality(
    predictions: Mapping[str, npt.NDArray[np.float64]],
    decisions: Sequence[RouteDecision],
    names: Sequence[str],
    targets: Mapping[tuple[str, str], npt.NDArray[np.float64]],
    ranks: TargetRanks,
) -> dict[str, float]:
    """IC, rank IC and hit rate of ``names``' rows pooled, each symbol's predictions against
    the forward returns over its serving model's horizon (``ranks`` reuses target ranks)."""
    model = {d.symbol: d.model_id for d in decisions}
    pred = np.concatenate([np.asarray(predictions[s], np.float64) for s in names])
    target = np.concatenate([np.asarray(targets[(s, model[s])], np.float64) for s in names])
    m = ranks.metrics(pred, target, tuple(names))
    return {"ic": m.ic, "rank_ic": m.rank_ic, "hit_rate": m.hit_rate}


def _closes(layout: Layout) -> dict[str, pd.DataFrame]:
    """Each symbol's closes on its own bars, from the layout (what ``result_of`` reads)."""
    return {
        s: pd.DataFrame({"close": layout.close[rows, j]}, index=layout.index[rows])
        for j, (s, rows) in enumerate(zip(layout.symbols, layout.rows, strict=True))
    }


def class_members(setups: Sequence[SymbolSetup]) -> dict[str, list[str]]:
    """Asset class -> its symbols (in ``setups`` order), classes in order of first appearance."""
    classes = {s.symbol: s.asset_class for s in setups}
    return {c: [s for s in classes if classes[s] == c] for c in dict.fromkeys(classes.values())}


def shared_shard(task: SharedTask, layout: Layout) -> SharedPiece:
    """Simulate ``task.grouping`` for every variant on the run's ``layout`` (an argument of its
    own: every shared task has the same, and an executor may send it once per worker), compute
    the accounts, score them (BLAS on one thread, as every shard: the IC's last bits must not
    depend on the process)."""
    with one_blas_thread():
        return _shared_shard(task, layout)


def _shared_shard(task: SharedTask, layout: Layout) -> SharedPiece:
    started = time.perf_counter()
    setups = list(task.setups)
    names = [s.symbol for s in setups]
    sim = simulate(
        layout,
        setups,
        task.weights,
        cash=task.cash,
        grouping=task.grouping,
        engine=task.engine,
    )
    bars = _closes(layout)
    results: dict[str, Result] = {}
    class_equity: dict[tuple[str, str], pd.Series] = {}
    class_stats: dict[tuple[str, str], dict[str, Any]] = {}
    quality: dict[tuple[str, str], dict[str, float]] = {}
    ranks = TargetRanks()
    members = class_members(setups)
    for variant in task.weights:
        preds, routes = task.predictions[variant], task.decisions[variant]
        if task.grouping == "portfolio":
            results[variant] = result_of(
                sim,
                variant,
                bars,
                setups,
                routes=routes,
                config={**task.run, "variant": variant, "asset_specific": VARIANT_FLAGS[variant]},
            )
            quality[(variant, "")] = pooled_quality(preds, routes, names, task.targets, ranks)
        else:
            for cls, syms in members.items():
                quality[(variant, cls)] = pooled_quality(preds, routes, syms, task.targets, ranks)
    if task.grouping == "class":
        class_equity, class_stats = _class_accounts(bars, task, layout, sim, members)
    return SharedPiece(
        task.grouping,
        results,
        class_equity,
        class_stats,
        quality,
        time.perf_counter() - started,
        os.getpid(),
    )


def _class_accounts(
    bars: Mapping[str, pd.DataFrame],
    task: SharedTask,
    layout: Layout,
    sim: Any,
    members: Mapping[str, Sequence[str]],
) -> tuple[dict[tuple[str, str], pd.Series], dict[tuple[str, str], dict[str, Any]]]:
    """Each (variant, class) account's curve (on the union of its symbols' bars) and stats."""
    calendar = {s.symbol: s.calendar for s in task.setups}
    position = {s: j for j, s in enumerate(layout.symbols)}
    steps: dict[str, npt.NDArray[np.intp]] = {}
    ppy: dict[str, float] = {}
    for cls, syms in members.items():
        # the class's steps: the union of its symbols' bars (the same for every variant)
        on = np.zeros(len(layout.index), dtype=bool)
        for sym in syms:
            on[layout.rows[position[sym]]] = True
        steps[cls] = np.flatnonzero(on)
        ppy[cls] = account_periods_per_year(
            symbol_periods_per_year(bars[s].index, calendar[s]) for s in syms
        )
    columns = sim.columns.to_frame(index=False)
    equity: dict[tuple[str, str], pd.Series] = {}
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for variant in task.weights:
        fills = sim.fills(variant=variant)
        in_variant = (columns["variant"] == variant).to_numpy(dtype=bool)
        for cls, syms in members.items():
            rows = steps[cls]
            key = (variant, cls)
            g = sim.keys.index(key)
            equity[key] = pd.Series(sim.values[rows, g], index=layout.index[rows], name="equity")
            cols = np.flatnonzero(in_variant & columns["symbol"].isin(syms).to_numpy(dtype=bool))
            own = fills.where(np.isin(fills.code, cols))
            stats[key] = account_stats(sim, key, own, rows, ppy[cls])
    return equity, stats
