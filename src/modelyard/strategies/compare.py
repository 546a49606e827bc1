"""Universal vs asset-specific routing, side by side, in one vectorbt broadcast.

:func:`compare` runs the same bars, policy and costs under both routing variants
(``asset_specific`` off and on) and reports, per variant, at three levels:

* ``portfolio``: every symbol in one account (cash shared), the :class:`Result` that
  Backtrader's ``run_backtest`` would give for that variant (same schema, same orders);
* ``class``: the symbols of one asset class in one account with the full cash;
* ``symbol``: each symbol alone with the full cash (standalone).

All levels trade the same target weights: the portfolio's (policy, then the gross limit across
every symbol), so a symbol's standalone curve is its leg of the portfolio sized on its own
account. The three levels are three groupings of one broadcast of columns
``(variant, asset_class, symbol)``: one ``from_orders`` (or ``from_order_func``, see
:mod:`~modelyard.strategies.vectorized`) call per level, both variants in each call.

Prediction quality (``ic``, ``rank_ic``, ``hit_rate`` from :mod:`modelyard.models.metrics`)
compares the predictions with the realised forward log return over the serving model's
horizon (:func:`~modelyard.models.features.compute_target`), on rows where both are finite;
class and portfolio rows pool their symbols' rows.

The work is split into per-variant and per-level pure steps (:func:`variant_signals`,
:func:`~modelyard.strategies.vectorized.simulate`) so that a later executor can shard it;
``executor`` only accepts ``None`` for now.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelyard.config import AssetsConfig, load_config
from modelyard.errors import DataError, InvalidSymbolError
from modelyard.models.features import compute_target
from modelyard.models.metrics import metrics
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies._vbt_layout import build_layout
from modelyard.strategies.backtest import DEFAULT_SYMBOLS, TimeLike
from modelyard.strategies.policy import DEFAULT_MAX_GROSS
from modelyard.strategies.results import Result
from modelyard.strategies.signals import SymbolSetup, symbol_setups
from modelyard.strategies.vectorized import (
    GROUPINGS,
    VARIANT_FLAGS,
    Simulation,
    VariantSignals,
    load_inputs,
    result_of,
    simulate,
    variant_signals,
)

__all__ = ["TABLE_COLUMNS", "VARIANTS", "Comparison", "compare"]

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("universal", "asset_specific")
TABLE_COLUMNS: tuple[str, ...] = (
    "level",
    "name",
    "variant",
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "win_rate",
    "exposure",
    "turnover",
    "ic",
    "rank_ic",
    "hit_rate",
    "model_id",
    "n_bars",
)
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


def _predictions_sha256(signals: VariantSignals, symbols: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for s in symbols:
        digest.update(np.ascontiguousarray(signals.predictions[s].to_numpy(np.float32)).tobytes())
    return digest.hexdigest()


def _quality(
    signals: VariantSignals,
    names: Sequence[str],
    targets: Mapping[tuple[str, str], np.ndarray],
) -> dict[str, float]:
    pred = np.concatenate([signals.predictions[s].to_numpy(np.float64) for s in names])
    model = {d.symbol: d.model_id for d in signals.decisions}
    target = np.concatenate([targets[(s, model[s])] for s in names])
    m = metrics(pred, target)
    return {"ic": m.ic, "rank_ic": m.rank_ic, "hit_rate": m.hit_rate}


def _on(index: pd.Index, equity: pd.Series) -> pd.Series:
    """``equity`` restricted to the steps of ``index`` (the account cannot change elsewhere)."""
    return equity.loc[pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns")].rename("equity")


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
    progress: Progress | None = None,
) -> Comparison:
    """Compare universal and asset-specific routing (module docstring).

    ``symbols=None`` is the bundled default universe; ``bars`` (symbol -> frame) replaces the
    bundled bars. ``progress(stage, done, total)`` reports the stages ``signals``,
    ``simulate`` and ``stats``. A symbol without bars raises :class:`DataError` naming it.
    """
    if executor is not None:
        raise ValueError(
            "executor is reserved for distributed runs and not supported yet; pass executor=None"
        )
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

    signals: dict[str, VariantSignals] = {}
    setups: list[SymbolSetup] = []
    for k, variant in enumerate(VARIANTS):
        report("signals", k, len(VARIANTS))
        router = AssetSpecificModelRouter(cfg, asset_specific=VARIANT_FLAGS[variant])
        setups = symbol_setups(router, names)
        signals[variant] = variant_signals(router, data, setups, max_gross=max_gross)
    report("signals", len(VARIANTS), len(VARIANTS))
    classes = {s.symbol: s.asset_class for s in setups}
    layout = build_layout(data, names)
    weights = {v: signals[v].weights for v in VARIANTS}
    sims: dict[str, Simulation] = {}
    for k, grouping in enumerate(GROUPINGS):
        report("simulate", k, 3)
        sims[grouping] = simulate(layout, setups, weights, cash=cash, grouping=grouping)
    report("simulate", 3, 3)
    engine = sims["portfolio"].engine
    run: dict[str, Any] = {
        "engine": "vectorbt",
        "vectorbt_engine": engine,
        "symbols": names,
        "start": str(layout.index[0]),
        "end": str(layout.index[-1]),
        "timeframe": timeframe,
        "cash": float(cash),
        "max_gross": float(max_gross),
        "variants": list(VARIANTS),
    }

    horizons = {m: cfg.models[m].horizon for v in VARIANTS for m in _models(signals[v])}
    targets = {
        (s, m): compute_target(data[s], h).to_numpy(np.float64)
        for s in names
        for m, h in horizons.items()
    }
    rows: list[dict[str, Any]] = []
    results: dict[str, Result] = {}
    equity: dict[str, pd.Series] = {}
    symbol_equity: dict[tuple[str, str], pd.Series] = {}
    class_equity: dict[tuple[str, str], pd.Series] = {}
    class_curves = sims["class"].equity()
    symbol_curves = sims["symbol"].equity()
    members = {c: [s for s in names if classes[s] == c] for c in dict.fromkeys(classes.values())}
    steps = len(VARIANTS) * (1 + len(members) + len(names))
    done = 0
    for variant in VARIANTS:
        sig = signals[variant]
        model = {d.symbol: d.model_id for d in sig.decisions}
        res = result_of(
            sims["portfolio"],
            variant,
            data,
            setups,
            routes=sig.decisions,
            config={**run, "variant": variant, "asset_specific": VARIANT_FLAGS[variant]},
        )
        results[variant] = Result(
            equity=res.equity,
            orders=res.orders,
            trades=res.trades,
            stats=res.stats,
            routes=res.routes,
            config={"run": res.config["run"], "assets": cfg.model_dump(mode="json")},
        )
        equity[variant] = results[variant].equity
        rows.append(_row("portfolio", "portfolio", variant, res, sig, names, targets, model))
        done += 1
        report("stats", done, steps)
        fills = sims["class"].orders(variant=variant)
        single = sims["symbol"].orders(variant=variant)
        alone = {s: part for s, part in single.groupby("symbol", sort=False)}
        alone.update({s: single.iloc[:0] for s in names if s not in alone})
        for cls, syms in members.items():
            index = pd.DatetimeIndex(
                np.unique(
                    np.concatenate(
                        [pd.DatetimeIndex(data[s].index).as_unit("ns").asi8 for s in syms]
                    )
                )
            ).tz_localize("UTC")
            curve = _on(index, class_curves[(variant, cls)])
            class_equity[(variant, cls)] = curve
            part = result_of(
                sims["class"], variant, data, setups, equity=curve, symbols=syms, orders=fills
            )
            rows.append(_row("class", cls, variant, part, sig, syms, targets, model))
            done += 1
            report("stats", done, steps)
        for s in names:
            curve = _on(data[s].index, symbol_curves[(variant, classes[s], s)])
            symbol_equity[(variant, s)] = curve
            part = result_of(
                sims["symbol"], variant, data, setups, equity=curve, symbols=[s], orders=alone[s]
            )
            rows.append(_row("symbol", s, variant, part, sig, [s], targets, model))
            done += 1
            report("stats", done, steps)
    order = {"portfolio": 0, "class": 1, "symbol": 2}
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table = table.sort_values(
        by=["level", "variant"],
        key=lambda col: col.map(order) if col.name == "level" else col.map(VARIANTS.index),
        kind="stable",
    ).reset_index(drop=True)
    log.info(
        "compare: %d symbols x %d steps, 2 variants in %.2fs (%s)",
        len(names),
        len(layout.index),
        time.perf_counter() - started,
        engine,
    )
    return Comparison(
        variants=VARIANTS,
        symbols=tuple(names),
        asset_classes=classes,
        table=table,
        equity=equity,
        symbol_equity=symbol_equity,
        class_equity=class_equity,
        routes={v: [dict(d.as_dict()) for d in signals[v].decisions] for v in VARIANTS},
        predictions_sha256={v: _predictions_sha256(signals[v], names) for v in VARIANTS},
        results=results,
        config=run,
    )


def _models(sig: VariantSignals) -> list[str]:
    return list(dict.fromkeys(d.model_id for d in sig.decisions))


def _row(
    level: str,
    name: str,
    variant: str,
    result: Result,
    sig: VariantSignals,
    names: Sequence[str],
    targets: Mapping[tuple[str, str], np.ndarray],
    model: Mapping[str, str],
) -> dict[str, Any]:
    stats = result.stats
    quality = _quality(sig, names, targets)
    return {
        "level": level,
        "name": name,
        "variant": variant,
        **{k: stats[k] for k in TABLE_COLUMNS[3:11]},
        **quality,
        "model_id": ",".join(dict.fromkeys(model[s] for s in names)),
        "n_bars": stats["n_bars"],
    }
