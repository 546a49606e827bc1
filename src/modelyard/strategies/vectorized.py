"""The vectorbt engine: the same bars, router, policy and costs as Backtrader, as one broadcast.

Pipeline (shared with :func:`~modelyard.strategies.backtest.run_backtest` up to the weights):
features and predictions once per variant (:func:`~modelyard.strategies.signals.predict_history`,
one batched inference per model), the policy and the gross limit
(:func:`~modelyard.strategies.signals.target_weight_history`), then one vectorbt simulation of
every variant at once: the columns are a MultiIndex ``(variant, asset_class, symbol)`` and
``group_by`` picks the accounts:

* ``"portfolio"``: one account per variant (cash shared by all its symbols);
* ``"class"``: one account per (variant, asset class), each with the full cash;
* ``"symbol"``: every column alone with the full cash (standalone curves).

Execution (PARITY.md), chosen per run by :func:`choose_engine`:

* ``"orders"``: ``Portfolio.from_orders(close=close, price=open, size=target.shift(1),
  size_type="targetpercent", val_price=-np.inf, fees/slippage per column (asset class),
  allow_partial=False, cash_sharing=True, call_seq="auto", min_size=1e-6,
  update_value=False)``. ``target.shift(1)`` is taken in each symbol's own timeline; a symbol
  without a bar at a step has a NaN size and a NaN price there (no order) and its target holds.
  Exact when every symbol has a bar at every union step between its first and last bar
  (``Layout.contiguous``) and no policy is long-short.
* ``"order_func"``: ``Portfolio.from_order_func`` in flexible mode with the callbacks of
  :mod:`~modelyard.strategies._vbt_flex`, which keep Backtrader's order queue: units sized at
  the decision bar's close from that close's portfolio value, filled at the symbol's next bar,
  flips split into close + open (PARITY.md, "The one case from_orders cannot reproduce").
  Needed for interleaving calendars (equities + crypto in one account) and long-short.

Agreement with Backtrader (tests/integration/test_engine_parity.py): same orders (count, bar,
side), sizes equal to 1e-9 relative, equity to 1e-9 relative at every bar; measured
differences are floating-point noise (sizes <= 1.1e-10 relative, equity <= 7e-15).

Tied orders in one step agree too: both engines submit sells first, sorted by the order's
notional, and both compute it as vectorbt does, ``w * value - position * close``
(``routed.plan_orders`` is keyed exactly like vectorbt's ``call_seq="auto"``), so two orders of
mathematically equal notional (two symbols entering at their cap from flat at the same bar)
tie exactly in both and keep column (data) order; when cash cannot cover both, both engines
reject the same one.

vectorbt gets the union timeline as a naive (UTC) index: with a tz-aware index its ``value()``
goes through ``Timestamp`` objects, slowly. Nothing tz-naive leaves this module:
:meth:`Simulation.equity` and :meth:`Simulation.orders` label rows with the layout's UTC index.

Inherent differences left:

* ``min_size`` and vectorbt's cash check compare with a 1e-9 relative tolerance
  (``is_less_nb``), Backtrader exactly: an order within 1e-9 relative of 1e-6 units, or of the
  cash left, could be kept by one engine and dropped by the other (not seen on bundled data).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import vectorbt as vbt

from modelyard.config import AssetsConfig, load_config
from modelyard.errors import DataError
from modelyard.routing.decision import RouteDecision
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies._vbt_flex import flex_callbacks
from modelyard.strategies._vbt_layout import (
    FloatArray,
    Layout,
    build_layout,
    decided_targets,
    order_frame,
    previous_targets,
    record_fills,
)
from modelyard.strategies._vbt_values import compact_records, group_values, sleeve_values
from modelyard.strategies.backtest import TimeLike, _load, checked_names
from modelyard.strategies.policy import DEFAULT_MAX_GROSS, order_targets
from modelyard.strategies.results import (
    Fills,
    Result,
    compute_stats,
    infer_periods_per_year,
    trades_from_orders,
)
from modelyard.strategies.routed import MIN_ORDER_UNITS
from modelyard.strategies.signals import (
    SymbolSetup,
    predict_history,
    symbol_setups,
    target_weight_history,
)

__all__ = [
    "ENGINES",
    "GROUPINGS",
    "VARIANT_FLAGS",
    "Simulation",
    "VariantSignals",
    "choose_engine",
    "load_inputs",
    "result_of",
    "run_vectorized",
    "simulate",
    "variant_signals",
]

log = logging.getLogger(__name__)

VARIANT_FLAGS: dict[str, bool] = {"universal": False, "asset_specific": True}
ENGINES = ("auto", "orders", "order_func")
Grouping = Literal["portfolio", "class", "symbol"]
GROUPINGS: tuple[Grouping, ...] = ("portfolio", "class", "symbol")
_LEVELS: dict[str, list[str]] = {
    "portfolio": ["variant"],
    "class": ["variant", "asset_class"],
    "symbol": ["variant", "asset_class", "symbol"],
}


@dataclass(frozen=True)
class VariantSignals:
    """Predictions, target weights and routes of one routing variant (per symbol)."""

    variant: str
    predictions: dict[str, pd.Series]
    weights: dict[str, pd.Series]
    decisions: list[RouteDecision]


def variant_signals(
    router: AssetSpecificModelRouter,
    bars: Mapping[str, pd.DataFrame],
    setups: Sequence[SymbolSetup],
    *,
    max_gross: float = DEFAULT_MAX_GROSS,
    predictions: Mapping[str, pd.Series] | None = None,
) -> VariantSignals:
    """Features + batched inference (or given ``predictions``), policy and gross limit."""
    names = [s.symbol for s in setups]
    if predictions is None:
        preds, decisions = predict_history(router, {s: bars[s] for s in names})
    else:
        decisions = [router.route(s) for s in names]
        preds = {}
        for s in names:
            if s not in predictions:
                raise DataError(f"no predictions given for {s!r}")
            preds[s] = predictions[s].reindex(bars[s].index).astype("float64")
    weights = target_weight_history(preds, setups, max_gross=max_gross)
    variant = "asset_specific" if router.asset_specific else "universal"
    return VariantSignals(variant, preds, weights, decisions)


def choose_engine(layout: Layout, setups: Sequence[SymbolSetup], engine: str = "auto") -> str:
    """``"orders"`` when ``from_orders`` is exact (module docstring), else ``"order_func"``."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine != "auto":
        return engine
    long_short = any(s.policy.long_short for s in setups)
    return "orders" if layout.contiguous and not long_short else "order_func"


@dataclass(frozen=True)
class Simulation:
    """One vectorbt simulation over every variant; columns ``(variant, asset_class, symbol)``.

    Construction takes what the accounts need from the vectorbt portfolio and drops it (its
    arrays copy the layout's; at 100 symbols x 100k bars each holds hundreds of MB):
    :attr:`values`, the value of every group (vectorbt's ``value()`` recomputed in one pass
    over the order records with its float operations in its order, the same bits:
    :func:`~modelyard.strategies._vbt_values.group_values`), and :attr:`records`, the order
    records. ``portfolio`` is None afterwards.
    """

    portfolio: Any  # vbt.Portfolio (untyped) when built; None once values/records are taken
    layout: Layout
    columns: pd.MultiIndex
    grouping: str
    engine: str
    cash: float  # each group's initial cash
    #: ``(n, groups)``: each group's value on the union timeline (groups in column order)
    values: FloatArray = field(init=False, repr=False, compare=False)
    #: vectorbt's order records (``col``, ``idx``, ``size``, ``price``, ``fees``, ``side``)
    records: npt.NDArray[np.void] = field(init=False, repr=False, compare=False)
    #: each group's key: its level values (``_LEVELS[grouping]``), in column order
    keys: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys, group_lens = _group_runs(self.columns, self.grouping)
        pf = self.portfolio
        if pf is None:
            raise ValueError("Simulation needs the vectorbt portfolio")
        values = group_values(pf, group_lens)
        if len(keys) != values.shape[1]:
            raise RuntimeError(f"{values.shape[1]} value columns for {len(keys)} groups")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "records", compact_records(pf.order_records))
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "portfolio", None)

    def equity(self) -> dict[tuple[str, ...], pd.Series]:
        """Value per group (key: the group's level values), on the union timeline."""
        return {
            key: pd.Series(self.values[:, g], index=self.layout.index, name="equity")
            for g, key in enumerate(self.keys)
        }

    def sleeve_values(self, level: str) -> tuple[FloatArray, tuple[tuple[str, ...], ...]]:
        """The value of each *sleeve* of ``level`` (``"class"``: ``(variant, asset_class)``,
        ``"symbol"``: ``(variant, asset_class, symbol)``) and its key, as ``(n, sleeves)``: the
        initial cash plus the profit and loss of the sleeve's columns in *this* simulation
        (their cash flows and their positions at each step's close), computed like
        :attr:`values` (:func:`~modelyard.strategies._vbt_values.sleeve_values`). In a
        portfolio simulation the sleeves of the symbols add up to the portfolio: the sum of
        ``sleeve - cash`` is ``value - cash`` at every step, to rounding."""
        if level not in ("class", "symbol"):
            raise ValueError(f"level must be 'class' or 'symbol', got {level!r}")
        keys, group_lens = _group_runs(self.columns, level)
        position = self.layout.column
        tile = [position[str(s)] for s in self.columns.get_level_values("symbol")]
        close = self.layout.close.T[tile].T  # (n, columns), Fortran order: one copy
        values = sleeve_values(len(self.layout.index), self.records, close, group_lens, self.cash)
        return values, keys

    def symbol_names(self, **match: str) -> list[str | None]:
        """Per column: its symbol if its levels equal ``match``, else None."""
        frame = self.columns.to_frame(index=False)
        ok = np.ones(len(frame), dtype=bool)
        for level, value in match.items():
            ok &= (frame[level] == value).to_numpy(dtype=bool)
        return [str(s) if keep else None for s, keep in zip(frame["symbol"], ok, strict=True)]

    def orders(self, **match: str) -> pd.DataFrame:
        """Fills of the columns whose levels equal ``match`` (e.g. ``variant="universal"``)."""
        return order_frame(self.records, self.layout.index, self.symbol_names(**match))

    def fills(self, **match: str) -> Fills:
        """:meth:`orders` as arrays (:class:`~modelyard.strategies.results.Fills`), the same
        rows in the same order; ``code`` is the column of ``columns``."""
        col, idx, signed, price, fee = record_fills(
            self.records, [n is not None for n in self.symbol_names(**match)]
        )
        return Fills(
            col,
            np.asarray(self.layout.index.asi8, dtype=np.int64)[idx],
            signed,
            np.abs(signed),
            price,
            fee,
            len(self.columns),
        )


def _group_runs(
    columns: pd.MultiIndex, grouping: str
) -> tuple[tuple[tuple[str, ...], ...], npt.NDArray[np.int64]]:
    """Each group's key (its ``_LEVELS[grouping]`` values) and column count, in column order:
    vectorbt's groups are the runs of equal keys (contiguous)."""
    levels = columns.to_frame(index=False)[_LEVELS[grouping]]
    per_column = [tuple(str(v) for v in row) for row in levels.itertuples(False)]
    starts = [j for j in range(len(per_column)) if j == 0 or per_column[j] != per_column[j - 1]]
    group_lens = np.diff(np.r_[starts, len(per_column)]).astype(np.int64)
    return tuple(dict.fromkeys(per_column)), group_lens


def _column_order(setups: Sequence[SymbolSetup]) -> list[int]:
    """Symbols grouped by asset class (first appearance), stable: vectorbt groups must be
    contiguous."""
    classes = list(dict.fromkeys(s.asset_class for s in setups))
    return sorted(range(len(setups)), key=lambda j: (classes.index(setups[j].asset_class), j))


def simulate(
    layout: Layout,
    setups: Sequence[SymbolSetup],
    weights: Mapping[str, Mapping[str, npt.ArrayLike]],
    *,
    cash: float,
    grouping: Grouping = "portfolio",
    engine: str = "auto",
) -> Simulation:
    """Run every variant of ``weights`` (variant -> symbol -> weights) as one broadcast."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    chosen = choose_engine(layout, setups, engine)
    order = _column_order(setups)
    variants = list(weights)
    columns = pd.MultiIndex.from_tuples(
        [(v, setups[j].asset_class, setups[j].symbol) for v in variants for j in order],
        names=["variant", "asset_class", "symbol"],
    )
    tile = np.tile(np.asarray(order, dtype=np.intp), len(variants))
    # naive UTC for vectorbt (module docstring); results are relabelled with layout.index
    naive = pd.DatetimeIndex(layout.index).tz_convert(None)
    close = pd.DataFrame(layout.close[:, tile], index=naive, columns=columns)
    fees = np.array([setups[j].costs.fees for j in tile], dtype=np.float64)
    slippage = np.array([setups[j].costs.slippage for j in tile], dtype=np.float64)
    group_by = _LEVELS[grouping]
    started = time.perf_counter()
    # an unchanged target places no order (policy.order_targets): NaN, in either engine
    targets = {v: {s: order_targets(w) for s, w in weights[v].items()} for v in variants}
    if chosen == "orders":
        size = np.concatenate([previous_targets(layout, targets[v])[:, order] for v in variants], 1)
        pf = vbt.Portfolio.from_orders(
            close=close,
            size=size,
            size_type="targetpercent",
            price=layout.open[:, tile],
            val_price=-np.inf,
            fees=fees[None, :],
            slippage=slippage[None, :],
            min_size=MIN_ORDER_UNITS,
            allow_partial=False,
            init_cash=cash,
            cash_sharing=True,
            group_by=group_by,
            call_seq="auto",
            update_value=False,
            max_orders=int(np.isfinite(size).sum()),
            freq=None,
        )
    else:
        pf = _from_order_func(
            layout, setups, targets, close, tile, order, fees, slippage, cash, group_by
        )
    log.debug(
        "vectorbt %s (%s): %d rows x %d columns in %.2fs",
        chosen,
        grouping,
        len(layout.index),
        len(columns),
        time.perf_counter() - started,
    )
    return Simulation(pf, layout, columns, grouping, chosen, float(cash))


def _from_order_func(
    layout: Layout,
    setups: Sequence[SymbolSetup],
    weights: Mapping[str, Mapping[str, npt.ArrayLike]],
    close: pd.DataFrame,
    tile: np.ndarray,
    order: list[int],
    fees: np.ndarray,
    slippage: np.ndarray,
    cash: float,
    group_by: list[str],
) -> Any:
    variants = list(weights)
    m = close.shape[1]
    n_groups = len(pd.MultiIndex.from_frame(close.columns.to_frame()[group_by]).unique())
    decided = np.concatenate([decided_targets(layout, weights[v])[:, order] for v in variants], 1)
    has_bar = np.ascontiguousarray(layout.has_bar[:, tile])
    open_ = np.ascontiguousarray(layout.open[:, tile])
    cap = np.array([setups[j].policy.cap for j in tile], dtype=np.float64)
    pending = np.full(m, np.nan)
    seq = np.zeros(m, dtype=np.int64)
    counter = np.zeros(n_groups, dtype=np.int64)
    exec_col = np.zeros(2 * m, dtype=np.int64)
    exec_size = np.zeros(2 * m, dtype=np.float64)
    exec_count = np.zeros(n_groups, dtype=np.int64)
    cb = flex_callbacks()
    return vbt.Portfolio.from_order_func(
        close,
        cb["flex_order_func_nb"],
        open_,
        fees,
        slippage,
        exec_col,
        exec_size,
        exec_count,
        flexible=True,
        init_cash=cash,
        cash_sharing=True,
        group_by=group_by,
        pre_segment_func_nb=cb["pre_segment_func_nb"],
        pre_segment_args=(has_bar, pending, seq, exec_col, exec_size, exec_count),
        post_segment_func_nb=cb["post_segment_func_nb"],
        post_segment_args=(
            has_bar,
            decided,
            np.ascontiguousarray(layout.close[:, tile]),
            cap,
            pending,
            seq,
            counter,
            MIN_ORDER_UNITS,
        ),
        call_post_segment=True,
        update_value=False,
        max_orders=2 * int(has_bar.sum()),
        freq=None,
    )


def load_inputs(
    symbols: Sequence[str] | None,
    *,
    config: AssetsConfig | str | Path | None,
    bars: Mapping[str, pd.DataFrame] | None,
    start: TimeLike,
    end: TimeLike,
    timeframe: str,
    cash: float,
) -> tuple[AssetsConfig, list[str], dict[str, pd.DataFrame]]:
    """Config, checked symbol names and their bars (bundled when ``bars`` is None), as
    :func:`~modelyard.strategies.backtest.run_backtest` loads them; no bars -> DataError."""
    cfg = config if isinstance(config, AssetsConfig) else load_config(config)
    names = checked_names(symbols, cash)
    data = _load(names, bars, start, end, timeframe)
    for name in names:
        if len(data[name]) == 0:
            raise DataError(
                f"{name}: no bars between {start or 'the start'} and {end or 'the end'}"
            )
    return cfg, names, data


def result_of(
    sim: Simulation,
    variant: str,
    bars: Mapping[str, pd.DataFrame],
    setups: Sequence[SymbolSetup],
    *,
    equity: pd.Series | None = None,
    symbols: Sequence[str] | None = None,
    routes: Sequence[RouteDecision] = (),
    config: Mapping[str, Any] | None = None,
    orders: pd.DataFrame | None = None,
) -> Result:
    """The :class:`Result` of one account of ``sim``: the variant's portfolio, or with
    ``symbols`` (and their account's ``equity``) a class or a single symbol. ``orders`` (the
    variant's fills in ``sim``, from :meth:`Simulation.orders`) saves rebuilding them."""
    names = list(symbols) if symbols is not None else [s.symbol for s in setups]
    if equity is None:
        equity = sim.equity()[(variant,)]
    if orders is None:
        orders = sim.orders(variant=variant)
    if symbols is not None:
        orders = orders[orders["symbol"].isin(names)].reset_index(drop=True)
    chosen = {s.symbol: s for s in setups if s.symbol in names}
    last_close = {s: float(bars[s]["close"].iloc[-1]) for s in names}
    trades = trades_from_orders(orders, last_close)
    ppy = infer_periods_per_year(
        {s: bars[s] for s in names}, {s: chosen[s].calendar for s in names}
    )
    stats = compute_stats(equity, orders, trades, ppy)
    run = dict(config or {})
    run.setdefault("periods_per_year", float(ppy))
    return Result(
        equity=equity,
        orders=orders,
        trades=trades,
        stats=stats,
        routes=[dict(d.as_dict()) for d in routes],
        config={"run": run},
    )


def run_vectorized(
    symbols: Sequence[str] | None = None,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    timeframe: str = "1d",
    asset_specific: bool | None = None,
    strict: bool | None = None,
    cash: float = 100_000.0,
    config: AssetsConfig | str | Path | None = None,
    bars: Mapping[str, pd.DataFrame] | None = None,
    predictions: Mapping[str, pd.Series] | None = None,
    max_gross: float = DEFAULT_MAX_GROSS,
    engine: str = "auto",
) -> Result:
    """:func:`~modelyard.strategies.backtest.run_backtest` in vectorbt: same arguments (plus
    ``engine``, see the module docstring), same :class:`Result` schema, the same orders."""
    started = time.perf_counter()
    cfg, names, data = load_inputs(
        symbols, config=config, bars=bars, start=start, end=end, timeframe=timeframe, cash=cash
    )
    router = AssetSpecificModelRouter(cfg, asset_specific=asset_specific, strict=strict)
    setups = symbol_setups(router, names)
    signals = variant_signals(router, data, setups, max_gross=max_gross, predictions=predictions)
    layout = build_layout(data, names)
    sim = simulate(layout, setups, {signals.variant: signals.weights}, cash=cash, engine=engine)
    run: dict[str, Any] = {
        "engine": "vectorbt",
        "vectorbt_engine": sim.engine,
        "symbols": names,
        "start": str(layout.index[0]),
        "end": str(layout.index[-1]),
        "timeframe": timeframe,
        "asset_specific": router.asset_specific,
        "cash": float(cash),
        "max_gross": float(max_gross),
        "predictions": "given" if predictions is not None else "models",
    }
    result = result_of(sim, signals.variant, data, setups, routes=signals.decisions, config=run)
    log.info(
        "vectorbt run of %d symbols, %d steps in %.2fs",
        len(names),
        len(layout.index),
        time.perf_counter() - started,
    )
    return Result(
        equity=result.equity,
        orders=result.orders,
        trades=result.trades,
        stats=result.stats,
        routes=result.routes,
        config={"run": result.config["run"], "assets": cfg.model_dump(mode="json")},
    )
