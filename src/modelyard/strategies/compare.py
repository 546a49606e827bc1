"""Universal vs asset-specific routing, side by side, in one vectorbt broadcast.

:func:`compare` runs the same bars, policy and costs under both routing variants
(``asset_specific`` off and on) and reports, per variant, at three levels:

* ``portfolio``: every symbol in one account (cash shared), the :class:`Result` that
  Backtrader's ``run_backtest`` would give for that variant (same schema, same orders);
* ``class``: the *sleeve* of one asset class in that portfolio: the full cash plus the profit
  and loss of the class's own fills, valued at each step's close;
* ``symbol``: each symbol's sleeve of the portfolio, the same way.

One vectorbt simulation per variant makes every level (both variants in one broadcast of
columns ``(variant, asset_class, symbol)``, ``from_orders`` or ``from_order_func``, see
:mod:`~modelyard.strategies.vectorized`): the sleeves are read from its order records
(:meth:`~modelyard.strategies.vectorized.Simulation.sleeve_values`). A symbol's row says what
that symbol did inside the portfolio, with the portfolio's own orders and fills, and the
symbols' sleeves add up to the portfolio: at every step the sum of their profit and loss is the
portfolio's (tested). (A symbol's sleeve is not the symbol traded alone: alone, sizes would
follow its own account's value, and cash would never run short.)

Prediction quality (``ic``, ``rank_ic``, ``hit_rate`` from :mod:`modelyard.models.metrics`)
compares the predictions with the realised forward log return over the serving model's
horizon (:func:`~modelyard.models.features.compute_target`), on rows where both are finite;
class and portfolio rows pool their symbols' rows.

Where it runs (``executor``, :mod:`modelyard.scale`): the per-symbol work (features,
predictions and the per-symbol quality) is split into shards of symbols, each one pure
function (:mod:`~modelyard.scale.shards`). Then the accounts run as one task per variant when
there are several workers, else one of both (:mod:`~modelyard.scale.shared`): each turns the
predictions into the policy's weights, applies the gross limit across every symbol (it couples
them bar by bar), simulates the portfolio and scores the pooled predictions. The driver ships
predictions, not weights, and gets back the accounts.
Pieces are combined in symbol order, so the result is the same to the last bit serially, on a
process pool or on a Dask cluster, for any shard size.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard._memory import retained_heap
from modelyard.config import AssetsConfig, load_config
from modelyard.errors import DataError, InvalidSymbolError
from modelyard.reports.tables import METRICS
from modelyard.routing.decision import RouteDecision
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.scale.executors import DEFAULT_RETRIES, WorkerLost, resolve_executor, symbol_shards
from modelyard.scale.shards import (
    RunParams,
    ShardFailure,
    ShardHook,
    SignalsPiece,
    SignalsTask,
    config_key,
    local_routing,
    run_signals,
    signals_shard,
)
from modelyard.scale.shared import (
    SharedPiece,
    SharedTask,
    class_members,
    merge_pieces,
    shared_shard,
    sleeve_curve,
    sleeve_steps,
)
from modelyard.strategies._vbt_layout import Layout, build_layout
from modelyard.strategies.backtest import DEFAULT_SYMBOLS, TimeLike
from modelyard.strategies.policy import DEFAULT_MAX_GROSS
from modelyard.strategies.results import (
    Result,
)
from modelyard.strategies.signals import SymbolSetup, symbol_setups
from modelyard.strategies.vectorized import choose_engine, load_inputs

__all__ = ["TABLE_COLUMNS", "VARIANTS", "Comparison", "ShardFailure", "compare"]

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("universal", "asset_specific")
TABLE_COLUMNS: tuple[str, ...] = ("level", "name", "variant", *METRICS, "model_id", "n_bars")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare` (see the module docstring)."""

    variants: tuple[str, ...]
    symbols: tuple[str, ...]
    asset_classes: dict[str, str]
    table: pd.DataFrame
    equity: dict[str, pd.Series]
    symbol_equity: dict[tuple[str, str], pd.Series]
    class_equity: dict[tuple[str, str], pd.Series]
    routes: dict[str, list[dict[str, object]]]
    predictions_sha256: dict[str, str]
    results: dict[str, Result]
    config: dict[str, object]
    #: shards that failed (their symbols are missing, see :class:`ShardFailure`); empty when
    #: every shard succeeded
    failures: tuple[ShardFailure, ...] = ()


def _canonical(
    names: Sequence[str], bars: Mapping[str, pd.DataFrame] | None, config: AssetsConfig
) -> tuple[list[str], dict[str, pd.DataFrame] | None]:
    router = AssetSpecificModelRouter(config, asset_specific=False)
    canon = [router.classifier.classify(s).canonical for s in names]
    if len(set(canon)) != len(canon):
        raise InvalidSymbolError(f"symbols repeat once made canonical: {canon}")
    if bars is None:
        return canon, None
    given: dict[str, pd.DataFrame] = {}
    for raw, c in zip(names, canon, strict=True):
        frame = bars.get(raw, bars.get(c))
        if frame is None:
            raise DataError(f"no bars given for {raw!r}; have {sorted(bars)}")
        given[c] = frame
    return canon, given


def _predictions_sha256(
    predictions: Mapping[str, npt.NDArray[np.float64]], symbols: Sequence[str]
) -> str:
    digest = hashlib.sha256()
    for s in symbols:
        digest.update(np.ascontiguousarray(predictions[s], dtype=np.float32).tobytes())
    return digest.hexdigest()


def compare(
    symbols: Sequence[str] | None = None,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    timeframe: str = "1d",
    cash: float = 100_000.0,
    config: AssetsConfig | str | Path | None = None,
    bars: Mapping[str, pd.DataFrame] | None = None,
    max_gross: float = DEFAULT_MAX_GROSS,
    executor: object | None = None,
    workers: int | None = None,
    shard_size: int | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: Progress | None = None,
    _shard_hook: ShardHook | None = None,
) -> Comparison:
    """Compare universal and asset-specific routing (module docstring).

    ``symbols=None`` is the bundled default universe; ``bars`` (symbol -> frame) replaces the
    bundled bars. A symbol without bars raises :class:`DataError` naming it.

    ``executor`` says where the per-symbol shards run (:func:`~modelyard.scale.resolve_executor`:
    None or ``"serial"``, ``"processes"``, ``"dask"``, ``"tcp://host:port"``, a
    ``concurrent.futures.Executor`` or a ``distributed.Client``); ``workers`` sizes the pool or
    cluster that ``"processes"`` / ``"dask"`` start. ``shard_size`` symbols per shard (default:
    all of them when serial, else ``ceil(n / (2 * workers))``). A shard whose worker dies is
    retried up to ``retries`` times. A shard that fails for a modelyard reason is listed in
    :attr:`Comparison.failures` with its symbols and the rest is returned. The result does not
    depend on the executor or the shard size, to the last bit.

    ``progress(stage, done, total)`` reports the stages ``signals`` (shards done / total),
    ``simulate`` (account tasks done / total)
    and ``stats``. ``_shard_hook`` is for tests only.

    While it runs, freed memory stays in the process for reuse (:mod:`modelyard._memory`;
    ``MODELYARD_RETAIN_HEAP=0`` turns that off); it is given back when the call returns.
    """
    with retained_heap():
        return _compare(
            symbols,
            start=start,
            end=end,
            timeframe=timeframe,
            cash=cash,
            config=config,
            bars=bars,
            max_gross=max_gross,
            executor=executor,
            workers=workers,
            shard_size=shard_size,
            retries=retries,
            progress=progress,
            _shard_hook=_shard_hook,
        )


def _compare(
    symbols: Sequence[str] | None,
    *,
    start: TimeLike,
    end: TimeLike,
    timeframe: str,
    cash: float,
    config: AssetsConfig | str | Path | None,
    bars: Mapping[str, pd.DataFrame] | None,
    max_gross: float,
    executor: object | None,
    workers: int | None,
    shard_size: int | None,
    retries: int,
    progress: Progress | None,
    _shard_hook: ShardHook | None,
) -> Comparison:
    started = time.perf_counter()
    cfg = config if isinstance(config, AssetsConfig) else load_config(config)
    raw = [s.strip() for s in (DEFAULT_SYMBOLS if symbols is None else symbols)]
    if not raw or any(not s for s in raw):
        raise InvalidSymbolError("empty symbol list; pass symbols such as AAPL,BTC/USD")
    canon, given = _canonical(raw, bars, cfg)
    cfg, names, data = load_inputs(
        canon, config=cfg, bars=given, start=start, end=end, timeframe=timeframe, cash=cash
    )
    report = progress or (lambda stage, done, total: None)
    params = RunParams(cfg, config_key(cfg), VARIANTS, float(max_gross), float(cash), _shard_hook)
    with resolve_executor(executor, workers=workers, retries=retries) as runner:
        shards = symbol_shards(data, names, runner.workers, shard_size)
        log.info(
            "compare: %d symbols in %d shard(s) of <= %d on %s",
            len(names),
            len(shards),
            len(shards[0]),
            runner.describe(),
        )
        local = local_routing(cfg) if runner.in_process and runner.kind == "serial" else None
        run_a = signals_shard if local is None else functools.partial(_signals_with, local)
        report("signals", 0, len(shards))
        signals_batch = runner.start(
            run_a,
            [
                ({s: data[s] for s in part}, SignalsTask(i, part, params))
                for i, part in enumerate(shards)
            ],
            name="signals",
        )
        # while the workers compute the signals: the accounts' timeline (rebuilt below only
        # if a shard fails and its symbols drop out)
        planned = list(names)
        layout = build_layout(data, names) if not runner.in_process else None
        outcome = signals_batch.gather(lambda done, total: report("signals", done, total))
        failures = [_as_failure(shards[i], i, "signals", r) for i, r in enumerate(outcome)]
        pieces = [r for r in outcome if isinstance(r, SignalsPiece)]
        lost = {s for f in failures if f is not None for s in f.symbols}
        names = [s for s in names if s not in lost]
        if not names:
            raise DataError(
                "every shard failed: " + "; ".join(f.describe() for f in failures if f is not None)
            )
        data = {s: data[s] for s in names}
        setups = symbol_setups(AssetSpecificModelRouter(cfg, asset_specific=False), names)
        classes = {s.symbol: s.asset_class for s in setups}
        routes = {v: _routes(pieces, names, v) for v in VARIANTS}
        predictions = {
            v: {s: p.predictions[v][s] for p in pieces for s in p.symbols} for v in VARIANTS
        }
        if layout is None or names != planned:
            layout = build_layout(data, names)
        engine = choose_engine(layout, setups)
        run = _run_config(layout, names, engine, timeframe, cash, max_gross)
        # the account tasks turn the predictions into weights and apply the gross limit (it
        # couples every symbol of a variant); they also score the pooled predictions
        task = SharedTask(
            tuple(setups),
            predictions,
            float(max_gross),
            engine,
            cash,
            run,
            routes,
            {d.model_id: cfg.models[d.model_id].horizon for v in VARIANTS for d in routes[v]},
        )
        # with several workers each variant is a task of its own (groups are simulated
        # independently: the same bits as one broadcast of both)
        parts = [(v,) for v in VARIANTS] if runner.workers > 1 else [VARIANTS]
        report("simulate", 0, len(parts))
        accounts_batch = runner.start(
            shared_shard, [(task.part(vs), layout) for vs in parts], name="accounts"
        )
        accounts = accounts_batch.gather(lambda done, total: report("simulate", done, total))
        driver = _shared_accounts(cfg, names, setups, routes, accounts, run, report, layout)
    rows = driver.rows
    scored = {v: {s: q for p in pieces for s, q in p.quality[v].items()} for v in VARIANTS}
    for variant in VARIANTS:
        model = {d.symbol: d.model_id for d in routes[variant]}
        for s in names:
            stats = driver.symbol_stats[(variant, s)]
            rows.append(_row("symbol", s, variant, stats, scored[variant][s], model, [s]))
    symbol_equity = driver.symbol_equity
    run = driver.run
    equity, class_equity, results = driver.equity, driver.class_equity, driver.results
    order = {"portfolio": 0, "class": 1, "symbol": 2}
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table = table.sort_values(
        by=["level", "variant"],
        key=lambda col: col.map(order) if col.name == "level" else col.map(VARIANTS.index),
        kind="stable",
    ).reset_index(drop=True)
    found = tuple(f for f in failures if f is not None)
    for failure in found:
        log.warning("compare: %s", failure.describe())
    log.info(
        "compare: %d symbols x %d steps, 2 variants in %.2fs (%s)%s",
        len(names),
        len(layout.index),
        time.perf_counter() - started,
        engine,
        f", {len(found)} failed shard(s)" if found else "",
    )
    return Comparison(
        variants=VARIANTS,
        symbols=tuple(names),
        asset_classes=classes,
        table=table,
        equity=equity,
        symbol_equity=symbol_equity,
        class_equity=class_equity,
        routes={v: [dict(d.as_dict()) for d in routes[v]] for v in VARIANTS},
        predictions_sha256={v: _predictions_sha256(predictions[v], names) for v in VARIANTS},
        results=results,
        config=run,
        failures=found,
    )


def _signals_with(
    routing: Any, bars: Mapping[str, pd.DataFrame], task: SignalsTask
) -> SignalsPiece | ShardFailure:
    return run_signals(bars, task, routing)


def _as_failure(
    symbols: tuple[str, ...], shard: int, stage: str, outcome: object
) -> ShardFailure | None:
    if isinstance(outcome, ShardFailure):
        return outcome
    if isinstance(outcome, WorkerLost):
        return ShardFailure(shard, symbols, stage, "WorkerLost", outcome.message, outcome.attempts)
    return None


def _routes(
    pieces: Sequence[SignalsPiece], names: Sequence[str], variant: str
) -> tuple[RouteDecision, ...]:
    """The variant's routes in symbol order."""
    by_symbol = {d.symbol: d for p in pieces for d in p.decisions[variant]}
    return tuple(by_symbol[s] for s in names)


def _run_config(
    layout: Layout, names: Sequence[str], engine: str, timeframe: str, cash: float, max_gross: float
) -> dict[str, Any]:
    return {
        "engine": "vectorbt",
        "vectorbt_engine": engine,
        "symbols": list(names),
        "start": str(layout.index[0]),
        "end": str(layout.index[-1]),
        "timeframe": timeframe,
        "cash": float(cash),
        "max_gross": float(max_gross),
        "variants": list(VARIANTS),
    }


@dataclass
class _Shared:
    """Every account's rows, Results and curves, from the ``accounts`` stage."""

    run: dict[str, Any]
    rows: list[dict[str, Any]]
    results: dict[str, Result]
    equity: dict[str, pd.Series]
    class_equity: dict[tuple[str, str], pd.Series]
    symbol_equity: dict[tuple[str, str], pd.Series]
    symbol_stats: dict[tuple[str, str], dict[str, Any]]


def _shared_accounts(
    cfg: AssetsConfig,
    names: Sequence[str],
    setups: Sequence[SymbolSetup],
    routes: Mapping[str, Sequence[RouteDecision]],
    shared: Sequence[object],
    run: dict[str, Any],
    report: Progress,
    layout: Layout,
) -> _Shared:
    """The portfolio and class rows, the Results and every curve, from the ``accounts`` stage
    (:mod:`~modelyard.scale.shared`); the symbol rows are the caller's (they pool the
    shards' per-symbol quality)."""
    lost = [str(p) for p in shared if not isinstance(p, SharedPiece)]
    if lost:
        raise DataError(f"the accounts (portfolio, class, symbol) failed: {'; '.join(lost)}")
    got = merge_pieces([p for p in shared if isinstance(p, SharedPiece)])
    quality = got.quality
    members = class_members(setups)
    out = _Shared(run, [], {}, {}, {}, {}, got.symbol_stats)
    out.symbol_equity = {
        (v, s): sleeve_curve(layout, sleeve_steps(layout, [s]), got.symbol_equity[(v, s)])
        for v in VARIANTS
        for s in names
    }
    steps = len(VARIANTS) * (1 + len(members))
    done = 0
    assets = cfg.model_dump(mode="json")
    for variant in VARIANTS:
        model = {d.symbol: d.model_id for d in routes[variant]}
        res = got.results[variant]
        out.results[variant] = Result(
            equity=res.equity,
            orders=res.orders,
            trades=res.trades,
            stats=res.stats,
            routes=res.routes,
            config={"run": res.config["run"], "assets": assets},
        )
        out.equity[variant] = out.results[variant].equity
        pooled = quality[(variant, "")]
        out.rows.append(_row("portfolio", "portfolio", variant, res.stats, pooled, model, names))
        done += 1
        report("stats", done, steps)
        for cls, syms in members.items():
            key = (variant, cls)
            at = sleeve_steps(layout, syms)
            out.class_equity[key] = sleeve_curve(layout, at, got.class_equity[key])
            stats = got.class_stats[key]
            out.rows.append(_row("class", cls, variant, stats, quality[key], model, syms))
            done += 1
            report("stats", done, steps)
    return out


def _row(
    level: str,
    name: str,
    variant: str,
    stats: Mapping[str, Any],
    quality: Mapping[str, float],
    model: Mapping[str, str],
    names: Sequence[str],
) -> dict[str, Any]:
    return {
        "level": level,
        "name": name,
        "variant": variant,
        **{k: stats[k] for k in TABLE_COLUMNS[3:11]},
        **quality,
        "model_id": ",".join(dict.fromkeys(model[s] for s in names)),
        "n_bars": stats["n_bars"],
    }
