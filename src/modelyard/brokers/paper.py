"""The paper runner: the routed strategy trading live through :class:`AlpacaStore`.

:class:`PaperSession` wires a store, one live data per symbol, :class:`RoutedStrategy` with
:class:`LiveTargets` (features, router, policy bar by bar), the journal and risk engine (in the
store's executor), a periodic reconciliation thread and a status snapshot. Orders are only
placed on ``LIVE`` bars: backfilled and gap-filled bars warm the features and the policy up
but trade nothing (the risk engine's stale-data guard is the second line).

On stop (duration over, :meth:`PaperSession.stop`, Ctrl-C in the CLI): the streams end, open
orders are canceled (``cancel_on_exit``) or kept, a last reconciliation runs and the result is
written in the backtest's :class:`Result` schema: equity = the broker's account value at each
live bar, orders = this session's journaled fills, trades from them, the routes.

:func:`run_paper` does it all, optionally against a local :class:`Emulator` on the bundled
bars (the offline rehearsal; see :func:`emulator_bars`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from modelyard.brokers.alpaca_store import AlpacaStore
from modelyard.brokers.reconcile import reconcile
from modelyard.brokers.risk import RiskConfig
from modelyard.config import AssetsConfig, load_config
from modelyard.feeds.bt_feeds import bt_num_to_utc
from modelyard.feeds.live import label_bar_time
from modelyard.feeds.resample import parse_timeframe
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies.policy import DEFAULT_MAX_GROSS
from modelyard.strategies.results import (
    Result,
    compute_stats,
    infer_periods_per_year,
    trades_from_orders,
)
from modelyard.strategies.routed import LiveTargets, RoutedStrategy, StrategyCore
from modelyard.strategies.signals import symbol_setups

__all__ = ["LiveRoutedStrategy", "PaperConfig", "PaperSession", "emulator_bars", "run_paper"]

logger = logging.getLogger(__name__)
DEFAULT_TIMEFRAMES = {"crypto": "1h", "equities": "1d"}  # the bundled bars (emulator)
LIVE_TIMEFRAME = "1min"  # what Alpaca's websockets stream


@dataclass(frozen=True)
class PaperConfig:
    """What a paper session trades, and how."""

    symbols: tuple[str, ...]
    duration: float | None = None  # seconds; None: until stop()
    dry_run: bool = False
    asset_specific: bool | None = None
    journal: Path = Path("paper-journal.db")
    out: Path | None = None
    cancel_on_exit: bool = True
    strategy_id: str = "paper"
    timeframes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TIMEFRAMES))
    backfill_bars: int = 200
    reconcile_every: float = 30.0
    risk: RiskConfig | None = None
    config: AssetsConfig | Path | None = None
    max_gross: float = DEFAULT_MAX_GROSS
    silence_timeout: float | None = None


class LiveGate:
    """Which datas are live, and how many orders were held back on non-live bars."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.history: list[tuple[str, str]] = []  # (data, status) as notified
        self.held_back = 0
        self.first_live_ns: int | None = None


class LiveRoutedStrategy(RoutedStrategy):
    """:class:`RoutedStrategy` that trades only on ``LIVE`` bars, and not while an order of
    the same data is still working (its fill would race the next bar); param ``gate``."""

    params = (("gate", None),)

    def notify_data(self, data: Any, status: int, *args: Any, **kwargs: Any) -> None:
        name = data._getstatusname(status)
        self.p.gate.status[data._name] = name
        self.p.gate.history.append((data._name, name))

    def order_target_size(self, data: Any = None, target: float = 0, **kwargs: Any) -> Any:
        gate: LiveGate = self.p.gate
        if data._laststatus != data.LIVE or self.broker.has_open_order(data):
            gate.held_back += 1  # warm-up bar, or an order of this data still working
            return None
        if gate.first_live_ns is None:
            gate.first_live_ns = int(bt_num_to_utc(data.datetime[0]).value)
        return super().order_target_size(data=data, target=target, **kwargs)


class PaperSession:
    """One live run of the routed strategy on ``store`` (see the module docstring)."""

    def __init__(self, store: AlpacaStore, config: PaperConfig) -> None:
        self.store = store
        self.config = config
        cfg = (
            config.config if isinstance(config.config, AssetsConfig) else load_config(config.config)
        )
        self.assets = cfg
        self.router = AssetSpecificModelRouter(cfg, asset_specific=config.asset_specific)
        self.symbols = list(config.symbols)
        self.setups = symbol_setups(self.router, self.symbols)
        self.routes = [self.router.route(s) for s in self.symbols]
        self.timeframes = {
            s.symbol: config.timeframes.get(s.asset_class, LIVE_TIMEFRAME) for s in self.setups
        }
        self.gate = LiveGate()
        source = LiveTargets(
            self.router, self.symbols, [s.policy for s in self.setups], max_gross=config.max_gross
        )
        self.core = StrategyCore(self.symbols, source, [s.policy.cap for s in self.setups])
        self.cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
        self.broker = store.getbroker()
        self.cerebro.setbroker(self.broker)
        for symbol in self.symbols:
            data = store.getdata(
                symbol, self.timeframes[symbol], backfill_bars=config.backfill_bars
            )
            self.cerebro.adddata(data, name=symbol)
        self.cerebro.addstrategy(LiveRoutedStrategy, core=self.core, gate=self.gate)
        self.started_at = datetime.now(UTC)
        self.start_value: float | None = None
        self.last_reconcile: str = "-"
        self._last_status: dict[str, Any] = {
            "bars": 0, "live": 0, "datas": len(self.symbols), "orders": 0, "failed": 0,
            "fills": 0, "value": 0.0, "pnl": 0.0, "risk": "ok", "reconcile": "-", "reconnects": 0,
        }  # fmt: skip
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- running -----------------------------------------------------------------------------
    def run(self) -> Result:
        """Recover, reconcile, trade until :meth:`stop` or the duration; returns the result."""
        self.started_at = datetime.now(UTC)
        self.store.executor.recover()
        self._reconcile()
        if self.config.duration is not None:
            timer = threading.Timer(self.config.duration, self.stop)
            timer.daemon = True
            timer.start()
        self._spawn(self._reconcile_loop, "modelyard-reconcile")
        try:
            self.cerebro.run()
        finally:
            self.stop()
            self._finish()
        return self.result()

    def stop(self) -> None:
        """Thread-safe and signal-safe: ends the streams, so ``cerebro.run()`` returns."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.cerebro.runstop()
        threading.Thread(target=self.store.stop, name="modelyard-stop", daemon=True).start()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _reconcile(self) -> None:
        report = reconcile(
            self.store.journal, self.store.client, self.store.risk,
            prices=self.store.executor.prices,
        )  # fmt: skip
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self.last_reconcile = f"{'ok' if report.ok else report.error or 'breach'} at {stamp}"
        if self.store._broker is not None:
            self.broker.resync()

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.config.reconcile_every):
            try:
                self._reconcile()
                self.broker.refresh_account()
            except Exception:
                logger.exception("periodic reconciliation failed; trading goes on")

    def _finish(self) -> None:
        self.store.stop()
        for thread in self._threads:
            thread.join(10.0)
        if self.config.cancel_on_exit and not self.config.dry_run:
            canceled = self.store.executor.cancel_open_orders()
            logger.info("cancelled %d open orders on exit", canceled)
        try:
            self._reconcile()
        except Exception:
            logger.exception("final reconciliation failed")

    # -- reporting ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot for the status line (safe from another thread; after the journal has
        closed, the last snapshot)."""
        try:
            self._last_status = self._status()
        except Exception as exc:  # closed journal at the end, a transient sqlite lock
            logger.debug("status unavailable: %s", exc)
        return self._last_status

    def _status(self) -> dict[str, Any]:
        rows = self._session_orders()
        value = self.broker.getvalue()
        if self.start_value is None and self.core.equity_values:
            self.start_value = self.core.equity_values[0]
        kill = self.store.risk.kill_switch
        return {
            "bars": sum(d.p.channel.accepted for d in self.store.datas.values()),
            "live": sum(1 for s in self.gate.status.values() if s == "LIVE"),
            "datas": len(self.symbols),
            "orders": len(rows),
            "failed": sum(1 for r in rows if r[0] == "failed"),
            "fills": sum(1 for r in rows if r[1] > 0),
            "value": value,
            "pnl": value - (self.start_value if self.start_value is not None else value),
            "risk": f"KILL SWITCH: {kill.reason}" if kill.active else "ok",
            "reconcile": self.last_reconcile,
            "reconnects": sum(s.reconnects for s in self.store.sources.values()),
        }

    def _session_orders(self) -> list[tuple[str, float]]:
        with sqlite3.connect(f"file:{self.store.journal.path}?mode=ro", uri=True) as db:
            return db.execute(
                "SELECT state, filled_qty FROM orders WHERE strategy_id = ? AND created_at >= ?",
                (self.store.executor.strategy_id, self.started_at.isoformat()),
            ).fetchall()

    def fills_frame(self) -> pd.DataFrame:
        """This session's journaled fills in the Result's order schema."""
        with sqlite3.connect(f"file:{self.store.journal.path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT f.at, o.symbol, o.side, f.qty, f.price FROM fills f "
                "JOIN orders o USING (client_order_id) WHERE o.strategy_id = ? "
                "AND o.created_at >= ? ORDER BY f.rowid",
                (self.store.executor.strategy_id, self.started_at.isoformat()),
            ).fetchall()
        frame = pd.DataFrame(rows, columns=["timestamp", "symbol", "side", "size", "price"])
        frame["fee"] = 0.0
        return frame

    def result(self) -> Result:
        equity = self.core.equity_series()
        if self.gate.first_live_ns is not None:
            equity = equity[equity.index >= pd.Timestamp(self.gate.first_live_ns, tz="UTC")]
        orders = self.fills_frame()
        last = {}
        for symbol, data in self.store.datas.items():
            canonical = self.store.classifier.classify(symbol).canonical
            last[canonical] = float(data.close[0]) if len(data) else 0.0
        orders = Result(equity, orders, pd.DataFrame(), {}).orders
        trades = trades_from_orders(orders, last)
        spans = {
            s: pd.DataFrame(
                index=pd.date_range(
                    "2000-01-03", periods=2, freq=parse_timeframe(self.timeframes[s])
                )
            )
            for s in self.symbols
        }
        ppy = infer_periods_per_year(spans, {s.symbol: s.calendar for s in self.setups})
        run = {
            "engine": "alpaca-paper",
            "symbols": self.symbols,
            "timeframes": self.timeframes,
            "started_at": self.started_at.isoformat(),
            "dry_run": self.config.dry_run,
            "asset_specific": self.router.asset_specific,
            "journal": str(self.store.journal.path),
            "strategy_id": self.store.executor.strategy_id,
            "url_override": self.store.url_override,
            "held_back_orders": self.gate.held_back,
            "reconnects": sum(s.reconnects for s in self.store.sources.values()),
            "gap_filled_bars": sum(s.gap_filled for s in self.store.sources.values()),
            "gaps_unchecked": sum(s.gaps_unchecked for s in self.store.sources.values()),
            "rest_bar_rounds": sum(s.rest_rounds for s in self.store.sources.values()),
            "posts": self.store.executor.request_counts().get("POST /v2/orders", 0),
        }
        return Result(
            equity=equity,
            orders=orders,
            trades=trades,
            stats=compute_stats(equity, orders, trades, ppy),
            routes=[dict(d.as_dict()) for d in self.routes],
            config={"run": run, "assets": self.assets.model_dump(mode="json")},
        )


# -- the emulator rehearsal ----------------------------------------------------------------------
def emulator_bars(
    symbols: Sequence[str], timeframes: Mapping[str, str] | None = None
) -> dict[str, pd.DataFrame]:
    """Bundled bars for the emulator, shifted by whole weeks so that every symbol ends in the
    same week as the latest one (AAPL ends in 2013, hourly BTC starts in 2017); equity daily
    bars keep their 16:00 New York label. Real prices, rehearsal dates."""
    from modelyard.feeds import load_bars
    from modelyard.feeds.quality import asset_class_of

    frames = timeframes or DEFAULT_TIMEFRAMES
    out: dict[str, pd.DataFrame] = {}
    for symbol in symbols:
        asset_class = asset_class_of(symbol)
        key = "crypto" if asset_class == "crypto" else "equities"
        out[symbol] = load_bars(symbol, frames.get(key, "1d"), quality="warn")
    end = max(f.index[-1] for f in out.values())
    for symbol, frame in out.items():
        weeks = int((end - frame.index[-1]) / pd.Timedelta(days=7))
        if weeks <= 0:
            continue
        index = pd.DatetimeIndex(frame.index) + pd.Timedelta(days=7 * weeks)
        if asset_class_of(symbol) != "crypto":
            tf = frames.get("equities", "1d")
            index = pd.DatetimeIndex(
                [label_bar_time(int(t), "equities", tf) for t in index.as_unit("ns").asi8],
                tz="UTC",
            )
        out[symbol] = frame.set_axis(index.rename(frame.index.name))
    return out


def rehearsal_start(bars: Mapping[str, pd.DataFrame], duration: float, speed: float) -> datetime:
    """Where the replay starts: enough steps left for the whole session at ``speed``."""
    timeline = pd.DatetimeIndex(sorted({t for f in bars.values() for t in f.index}))
    steps = int(duration * speed * 1.5) + 50
    position = max(len(timeline) - steps, min(len(timeline) - 1, 400))
    return pd.Timestamp(timeline[position]).to_pydatetime()


def emulator_risk(timeframes: Mapping[str, str]) -> RiskConfig:
    """Risk limits for an accelerated replay: the stale guard at 3x the shortest timeframe,
    no wall-clock order rate limit, no market hours (daily equity bars close the session)."""
    shortest = min(parse_timeframe(t) for t in timeframes.values())
    return RiskConfig(
        timeframe=shortest.to_pytimedelta(), stale_factor=3.0, max_orders_per_minute=None,
        enforce_market_hours=False,
    )  # fmt: skip


def run_paper(
    config: PaperConfig,
    *,
    emulator: bool = False,
    speed: float = 20.0,
    on_session: Callable[[PaperSession], None] | None = None,
    key_id: str | None = None,
    secret_key: str | None = None,
    live: bool = False,
) -> Result:
    """Run a paper session and save its result (``config.out``); returns the result.

    ``emulator=True`` trades a local :class:`Emulator` replaying :func:`emulator_bars` at
    ``speed`` bars per second once the streams are connected; otherwise Alpaca (paper unless
    ``live``) with keys from the environment. ``on_session`` receives the session before it
    runs (the CLI uses it for Ctrl-C and the status line).
    """
    if not emulator:
        timeframes = {k: LIVE_TIMEFRAME for k in ("crypto", "equities")}
        if config.timeframes == DEFAULT_TIMEFRAMES:
            config = _replace(config, timeframes=timeframes)
        with AlpacaStore(
            key_id, secret_key, journal=config.journal, live=live, risk=config.risk,
            strategy_id=config.strategy_id, dry_run=config.dry_run,
            silence_timeout=config.silence_timeout,
        ) as store:  # fmt: skip
            return _run(PaperSession(store, config), on_session)
    from modelyard.emulator import Emulator

    bars = emulator_bars(config.symbols, config.timeframes)
    start = rehearsal_start(bars, config.duration or 60.0, speed)
    with Emulator(bars, speed=0, start=start, rate_limit_per_minute=1_000_000) as emu:
        risk = config.risk or emulator_risk(config.timeframes)
        silence = config.silence_timeout or max(2.0, 100.0 / speed)
        with AlpacaStore.for_emulator(
            emu, journal=config.journal, risk=risk, strategy_id=config.strategy_id,
            dry_run=config.dry_run, silence_timeout=silence,
        ) as store:  # fmt: skip
            session = PaperSession(store, config)
            threading.Thread(
                target=_release, args=(emu, session, speed), name="modelyard-release", daemon=True
            ).start()
            result = _run(session, on_session, save=False)
            result.config["run"]["emulator_orders"] = len(emu.orders())
    if config.out is not None:
        result.save(config.out, overwrite=True)
    return result


def _replace(config: PaperConfig, **changes: Any) -> PaperConfig:
    from dataclasses import replace

    return replace(config, **changes)


def _release(emu: Any, session: PaperSession, speed: float) -> None:
    """Start the replay once the streams listen and the backfill is done (nothing is lost)."""
    kinds = {k: 1 for k in session.store.sources}
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and not session._stop.is_set():
        counts = emu.stream_counts()
        ready = all(s.state == "live" for s in session.store.sources.values())
        if ready and counts.get("trading", 0) >= 1 and all(counts[k] >= 1 for k in kinds):
            emu.set_speed(speed)
            return
        time.sleep(0.02)
    logger.error("emulator streams not ready in 30 s; replay not started")


def _run(
    session: PaperSession,
    on_session: Callable[[PaperSession], None] | None,
    *,
    save: bool = True,
) -> Result:
    if on_session is not None:
        on_session(session)
    result = session.run()
    if save and session.config.out is not None:
        result.save(session.config.out, overwrite=True)
    return result
