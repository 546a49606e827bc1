"""``run_backtest``: bars → routed predictions → target weights → Backtrader → :class:`Result`.

Broker settings (PARITY.md): ``set_checksubmit(False)``; slippage as a percentage on every
fill including opening fills and outside the bar's range
(``set_slippage_perc(p, slip_open=True, slip_match=True, slip_out=True)``), with ``p`` per
asset class through :class:`~modelyard.strategies.routed.RoutedBroker`; commission per data
with ``setcommission(commission=fees, name=symbol)``; no ``cheat_on_open``; one cash account.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from modelyard.config import AssetsConfig, load_config
from modelyard.errors import DataError, InvalidSymbolError
from modelyard.feeds.bt_feeds import make_feed
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies.policy import DEFAULT_MAX_GROSS
from modelyard.strategies.results import (
    Result,
    compute_stats,
    infer_periods_per_year,
    trades_from_orders,
)
from modelyard.strategies.routed import (
    PrecomputedTargets,
    RoutedBroker,
    RoutedStrategy,
    StrategyCore,
)
from modelyard.strategies.signals import (
    SymbolSetup,
    predict_history,
    symbol_setups,
    target_weight_history,
)

__all__ = ["DEFAULT_SYMBOLS", "build_cerebro", "run_backtest"]

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS: tuple[str, ...] = ("AAPL", "MSFT", "IBM", "GOOG", "BTC/USD", "ETH/USD")
Progress = Callable[[int, int], None]
TimeLike = str | pd.Timestamp | None


def _utc(value: TimeLike, *, end: bool) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{'end' if end else 'start'}={value!r} is not a date") from exc
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if end and isinstance(value, str) and len(value.strip()) == 10:
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(1, unit="ns")
    return ts


def _load(
    symbols: Sequence[str],
    bars: Mapping[str, pd.DataFrame] | None,
    start: TimeLike,
    end: TimeLike,
    timeframe: str,
) -> dict[str, pd.DataFrame]:
    if bars is None:
        from modelyard.feeds import load_bars

        return {s: load_bars(s, timeframe, start, end) for s in symbols}
    lo, hi = _utc(start, end=False), _utc(end, end=True)
    out = {}
    for symbol in symbols:
        if symbol not in bars:
            raise DataError(f"no bars given for {symbol!r}; have {sorted(bars)}")
        frame = bars[symbol]
        if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
            raise DataError(f"{symbol}: bars need a tz-aware DatetimeIndex")
        frame = frame.sort_index()
        frame = frame.loc[lo:hi]
        if len(frame) == 0:
            raise DataError(f"{symbol}: no bars between {lo or 'the start'} and {hi or 'the end'}")
        out[symbol] = frame
    return out


def build_cerebro(
    bars: Mapping[str, pd.DataFrame], setups: Sequence[SymbolSetup], cash: float
) -> bt.Cerebro:
    """A Cerebro with one data per symbol and the PARITY.md broker settings (no strategy)."""
    cerebro = bt.Cerebro(stdstats=False, runonce=True, preload=True, cheat_on_open=False)
    slippage = {s.symbol: s.costs.slippage for s in setups}
    broker = RoutedBroker(slippage)
    broker.setcash(cash)
    broker.set_checksubmit(False)
    broker.set_slippage_perc(
        max(slippage.values(), default=0.0), slip_open=True, slip_match=True, slip_out=True
    )
    for setup in setups:
        broker.setcommission(commission=setup.costs.fees, name=setup.symbol)
    cerebro.setbroker(broker)
    for setup in setups:
        cerebro.adddata(make_feed(bars[setup.symbol], setup.symbol), name=setup.symbol)
    return cerebro


def checked_names(symbols: Sequence[str] | None, cash: float) -> list[str]:
    """The run's symbol names (``None``: :data:`DEFAULT_SYMBOLS`), stripped; both engines
    refuse an empty list, a repeated symbol and non-positive cash the same way."""
    names = [s.strip() for s in (DEFAULT_SYMBOLS if symbols is None else symbols)]
    if not names or any(not s for s in names):
        raise InvalidSymbolError("empty symbol list; pass symbols such as AAPL,BTC/USD")
    if len(set(names)) != len(names):
        raise InvalidSymbolError(f"symbols repeat: {names}")
    if not cash > 0:
        raise ValueError(f"cash must be > 0, got {cash}")
    return names


def run_backtest(
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
    progress: Progress | None = None,
) -> Result:
    """Backtest the routed strategy in Backtrader; see the module docstring for the broker.

    ``bars=None`` loads the bundled bars (``feeds.load_bars``); ``symbols=None`` is
    :data:`DEFAULT_SYMBOLS`; ``timeframe`` applies to bundled loading (given ``bars`` are used
    as they are, cut to ``start``..``end``). ``predictions`` (per symbol, indexed like its
    bars) replaces the models, e.g. for hand-checked tests; routes are still reported.
    ``progress(done, total)`` is called every few hundred steps and at the end.
    """
    started = time.perf_counter()
    cfg = config if isinstance(config, AssetsConfig) else load_config(config)
    names = checked_names(symbols, cash)
    router = AssetSpecificModelRouter(cfg, asset_specific=asset_specific, strict=strict)
    setups = symbol_setups(router, names)  # classifies: bad symbols fail here
    data = _load(names, bars, start, end, timeframe)
    if predictions is None:
        preds, decisions = predict_history(router, data)
    else:
        decisions = [router.route(s) for s in names]
        preds = {}
        for s in names:
            if s not in predictions:
                raise DataError(f"no predictions given for {s!r}")
            preds[s] = predictions[s].reindex(data[s].index).astype("float64")
    weights = target_weight_history(preds, setups, max_gross=max_gross)
    indexes = [pd.DatetimeIndex(data[s].index).as_unit("ns") for s in names]
    total = len(pd.DatetimeIndex(np.unique(np.concatenate([ix.asi8 for ix in indexes]))))
    core = StrategyCore(
        names,
        PrecomputedTargets([weights[s].to_numpy() for s in names]),
        [s.policy.cap for s in setups],
        indexes=indexes,
        progress=progress,
        total_steps=total,
    )
    cerebro = build_cerebro(data, setups, cash)
    cerebro.addstrategy(RoutedStrategy, core=core)
    cerebro.run()
    if progress is not None:
        progress(total, total)
    equity = core.equity_series()
    orders = core.fills_frame()
    last_close = {s: float(data[s]["close"].iloc[-1]) for s in names}
    trades = trades_from_orders(orders, last_close)
    ppy = infer_periods_per_year(data, {s.symbol: s.calendar for s in setups})
    stats = compute_stats(equity, orders, trades, ppy)
    run: dict[str, Any] = {
        "engine": "backtrader",
        "symbols": names,
        "start": str(equity.index[0]) if len(equity) else None,
        "end": str(equity.index[-1]) if len(equity) else None,
        "timeframe": timeframe,
        "asset_specific": router.asset_specific,
        "cash": float(cash),
        "max_gross": float(max_gross),
        "periods_per_year": float(ppy),
        "predictions": "given" if predictions is not None else "models",
        "rejected_orders": len(core.rejected),
    }
    log.info(
        "backtest of %d symbols, %d steps in %.2fs",
        len(names),
        total,
        time.perf_counter() - started,
    )
    return Result(
        equity=equity,
        orders=orders,
        trades=trades,
        stats=stats,
        routes=[dict(d.as_dict()) for d in decisions],
        config={"run": run, "assets": cfg.model_dump(mode="json")},
    )
