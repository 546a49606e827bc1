"""Stage ``shared`` of :func:`~modelyard.strategies.compare.compare`: the accounts that share
cash across symbols, as pure task functions.

The portfolio account (every symbol, per variant) and the class accounts (the symbols of one
asset class, per variant) need every symbol's weights, so no symbol shard can run them. Each
grouping is one task (:func:`shared_shard`): one vectorbt broadcast of both variants, then the
accounts' curves and statistics from arrays. The driver starts both tasks on the executor with
the standalone shards, largest first, so two workers share the simulations instead of the driver
running them alone while the workers wait; serially the same function runs in-process, so the
results are the same bits on every executor.

A task needs only each symbol's closes and bar timestamps (last close, periods per year): the
bars travel as one ``close`` column.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from modelyard.routing.decision import RouteDecision
from modelyard.strategies._vbt_layout import Layout
from modelyard.strategies.results import (
    Result,
    account_periods_per_year,
    symbol_periods_per_year,
)
from modelyard.strategies.signals import SymbolSetup
from modelyard.strategies.vectorized import VARIANT_FLAGS, account_stats, result_of, simulate

__all__ = ["SHARED_GROUPINGS", "SharedPiece", "SharedTask", "closes_only", "shared_shard"]

SharedGrouping = Literal["portfolio", "class"]
SHARED_GROUPINGS: tuple[SharedGrouping, ...] = ("portfolio", "class")


@dataclass(frozen=True)
class SharedTask:
    """One grouping of the shared accounts, every variant at once."""

    grouping: SharedGrouping
    layout: Layout
    setups: tuple[SymbolSetup, ...]
    weights: dict[str, dict[str, pd.Series]]  # variant -> symbol -> weights after the limit
    engine: str
    cash: float
    run: dict[str, Any]  # the run's config (the portfolio Result's ``config["run"]``)
    decisions: dict[str, tuple[RouteDecision, ...]]  # variant -> routes, symbol order


@dataclass(frozen=True)
class SharedPiece:
    """What :func:`shared_shard` returns: for ``portfolio`` the Result per variant (config
    ``run`` only), for ``class`` the curve and statistics per ``(variant, asset_class)``."""

    grouping: SharedGrouping
    results: dict[str, Result]
    class_equity: dict[tuple[str, str], pd.Series]
    class_stats: dict[tuple[str, str], dict[str, Any]]
    seconds: float
    pid: int


def closes_only(bars: Mapping[str, pd.DataFrame], names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """What a shared task needs of the bars: each symbol's ``close`` column (and index)."""
    return {s: bars[s][["close"]] for s in names}


def shared_shard(bars: Mapping[str, pd.DataFrame], task: SharedTask) -> SharedPiece:
    """Simulate ``task.grouping`` for every variant and compute its accounts."""
    started = time.perf_counter()
    setups = list(task.setups)
    sim = simulate(
        task.layout,
        setups,
        task.weights,
        cash=task.cash,
        grouping=task.grouping,
        engine=task.engine,
    )
    results: dict[str, Result] = {}
    class_equity: dict[tuple[str, str], pd.Series] = {}
    class_stats: dict[tuple[str, str], dict[str, Any]] = {}
    if task.grouping == "portfolio":
        for variant in task.weights:
            results[variant] = result_of(
                sim,
                variant,
                bars,
                setups,
                routes=task.decisions[variant],
                config={**task.run, "variant": variant, "asset_specific": VARIANT_FLAGS[variant]},
            )
    else:
        class_equity, class_stats = _class_accounts(bars, task, sim)
    return SharedPiece(
        task.grouping,
        results,
        class_equity,
        class_stats,
        time.perf_counter() - started,
        os.getpid(),
    )


def _class_accounts(
    bars: Mapping[str, pd.DataFrame], task: SharedTask, sim: Any
) -> tuple[dict[tuple[str, str], pd.Series], dict[tuple[str, str], dict[str, Any]]]:
    """Each (variant, class) account's curve (on the union of its symbols' bars) and stats."""
    layout = task.layout
    names = [s.symbol for s in task.setups]
    classes = {s.symbol: s.asset_class for s in task.setups}
    members = {c: [s for s in names if classes[s] == c] for c in dict.fromkeys(classes.values())}
    calendar = {s.symbol: s.calendar for s in task.setups}
    symbol_ppy = {s: symbol_periods_per_year(bars[s].index, calendar[s]) for s in names}
    position = {s: j for j, s in enumerate(layout.symbols)}
    columns = sim.columns.to_frame(index=False)
    equity: dict[tuple[str, str], pd.Series] = {}
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for variant in task.weights:
        fills = sim.fills(variant=variant)
        in_variant = (columns["variant"] == variant).to_numpy(dtype=bool)
        for cls, syms in members.items():
            # the class's steps: the union of its symbols' bars
            on = np.zeros(len(layout.index), dtype=bool)
            for sym in syms:
                on[layout.rows[position[sym]]] = True
            rows = np.flatnonzero(on)
            key = (variant, cls)
            g = sim.keys.index(key)
            equity[key] = pd.Series(sim.values[rows, g], index=layout.index[rows], name="equity")
            cols = np.flatnonzero(in_variant & columns["symbol"].isin(syms).to_numpy(dtype=bool))
            own = fills.where(np.isin(fills.code, cols))
            ppy = account_periods_per_year(symbol_ppy[s] for s in syms)
            stats[key] = account_stats(sim, key, own, rows, ppy)
    return equity, stats
