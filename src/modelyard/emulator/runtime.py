"""``Emulator``: the venue served on 127.0.0.1 from a daemon thread with its own event loop."""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
from aiohttp import web

from modelyard.emulator.clock import VirtualClock, datetime_to_ns
from modelyard.emulator.faults import Fault, FaultPlan
from modelyard.emulator.marketdata import BarStore
from modelyard.emulator.matching import Venue
from modelyard.emulator.server import RateLimiter, build_app
from modelyard.emulator.state import VenueState, position_key
from modelyard.emulator.streams import StreamHub
from modelyard.errors import BrokerUnavailable, DataError

__all__ = ["Emulator", "serve"]

logger = logging.getLogger(__name__)
DEFAULT_SYMBOLS = ("AAPL", "BTC/USD")


def _load_bundled(symbols: Sequence[str], timeframe: str) -> dict[str, pd.DataFrame]:
    """Bundled bars through ``modelyard.feeds.load_bars``, imported only when needed."""
    try:
        feeds = importlib.import_module("modelyard.feeds")
    except ImportError as exc:  # pragma: no cover - the package ships feeds
        raise DataError("modelyard.feeds is unavailable: pass bars= explicitly") from exc
    load_bars = getattr(feeds, "load_bars", None)
    if load_bars is None:
        raise DataError("modelyard.feeds.load_bars is unavailable: pass bars= explicitly")
    return {symbol: load_bars(symbol, timeframe) for symbol in symbols}


class _LoopThread:
    """One server lifetime: an event loop in a daemon thread running the aiohttp site."""

    def __init__(self, app: web.Application, port: int, emulator: Emulator) -> None:
        self._app = app
        self.port = port
        self._emu = emulator
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._replay: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run, name="modelyard-emulator", daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self._ready.wait(10.0) or self._error is not None:
            raise BrokerUnavailable(f"emulator failed to start: {self._error}") from self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self.loop.close()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._shutdown())
        self.loop.close()

    async def _startup(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._replay = asyncio.create_task(self._emu._replay_forever())

    async def _shutdown(self) -> None:
        if self._replay is not None:
            self._replay.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15.0)


class Emulator:
    """A local Alpaca venue for the real, unmodified alpaca-py client, with fault injection.

    ``with Emulator(bars) as emu:`` serves REST, the trading stream and the market-data streams
    on ``127.0.0.1`` (``port=0``: a free port). Point alpaca-py at ``emu.base_url`` and the
    ``*_stream_url`` properties with ``url_override``. The clock replays ``speed`` bars per
    second (``0``: only :meth:`advance` moves it; ``math.inf``: as fast as possible) from
    ``start`` (default: the first bar). ``bars=None`` loads ``symbols`` (default AAPL and
    BTC/USD) through ``modelyard.feeds.load_bars(symbol, timeframe)``.
    """

    def __init__(
        self,
        bars: Mapping[str, pd.DataFrame] | None = None,
        *,
        port: int = 0,
        speed: float = 60.0,
        rate_limit_per_minute: int = 200,
        cash: float = 100_000.0,
        state_path: Path | None = None,
        key_id: str = "emulator-key",
        secret_key: str = "emulator-secret",
        start: datetime | None = None,
        symbols: Sequence[str] | None = None,
        timeframe: str = "1d",
    ) -> None:
        self._bars = bars
        self._symbols = tuple(symbols or DEFAULT_SYMBOLS)
        self._timeframe = timeframe
        self._port = port
        self.speed = speed
        self.key_id = key_id
        self.secret_key = secret_key
        self.state_path = state_path
        self._cash = cash
        self._start = start
        self._limiter = RateLimiter(rate_limit_per_minute)
        self._requests: Counter[str] = Counter()  # REST requests by path (restarts included)
        self.faults = FaultPlan()
        self.faults.set_on_add(self._on_fault)
        self._venue: Venue | None = None
        self._hub: StreamHub | None = None
        self._server: _LoopThread | None = None
        self._created_at = datetime.now(UTC)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._venue is None:
            bars = (
                self._bars
                if self._bars is not None
                else _load_bundled(self._symbols, self._timeframe)
            )
            store = BarStore(bars)
            start_ns = None if self._start is None else datetime_to_ns(self._start)
            clock = VirtualClock(store.timeline, start_ns)
            state = VenueState(cash=self._cash, now_ns=clock.now_ns)
            if self.state_path is not None and self.state_path.exists():
                state = VenueState.load(self.state_path)
                clock.restore(state.now_ns or clock.now_ns)
            self._venue = Venue(store, clock, state, self.faults)
            self._venue.emit = self._emit
        self._serve()

    def _serve(self) -> None:
        venue = self.venue
        self._hub = StreamHub(self.key_id, self.secret_key, self.faults)
        app = build_app(
            venue,
            self._hub,
            key_id=self.key_id,
            secret_key=self.secret_key,
            limiter=self._limiter,
            requests=self._requests,
            created_at=self._created_at,
            advance=self.advance,
        )
        self._server = _LoopThread(app, self._port, self)
        self._server.start()
        self._port = self._server.port
        logger.info("emulator listening on %s", self.base_url)

    def stop(self) -> None:
        """Stop serving; with ``state_path`` the state is written there first."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        if self.state_path is not None and self._venue is not None:
            self._venue.state.save(self.state_path)

    def restart(self, *, downtime: float = 0.0) -> None:
        """Stop and start on the same port, keeping the state (reloaded from ``state_path``)."""
        self.stop()
        if self.state_path is not None:
            venue = self.venue
            venue.state = VenueState.load(self.state_path)
            venue.clock.restore(venue.state.now_ns or venue.clock.now_ns)
        time.sleep(downtime)
        self._serve()

    # -- urls --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def trading_stream_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/stream"

    @property
    def stock_stream_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v2/iex"

    @property
    def crypto_stream_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v1beta3/crypto/us"

    # -- clock -------------------------------------------------------------------------------
    @property
    def venue(self) -> Venue:
        if self._venue is None:
            raise BrokerUnavailable("the emulator is not started: use `with Emulator(...)`")
        return self._venue

    @property
    def now(self) -> datetime:
        """The virtual time: the timestamp of the latest published bar (UTC)."""
        with self.venue.state.lock:
            return self.venue.clock.now

    def advance(self, n_bars: int = 1) -> int:
        """Publish the next ``n_bars`` timestamps and match orders; returns how many stepped."""
        stepped = 0
        for _ in range(n_bars):
            result = self.venue.step()
            if result is None:
                break
            stepped += 1
            self._call_in_loop(self._publish_bars, result[1])
        return stepped

    def set_speed(self, speed: float) -> None:
        """Bars per second of the automatic replay (``0`` pauses it)."""
        self.speed = speed

    async def _replay_forever(self) -> None:
        while True:
            speed = self.speed
            if speed <= 0 or self.venue.clock.at_end:
                await asyncio.sleep(0.02)
                continue
            await asyncio.sleep(0.0 if math.isinf(speed) else 1.0 / speed)
            if self.speed > 0:
                self.advance(1)

    # -- state -------------------------------------------------------------------------------
    def request_counts(self) -> dict[str, int]:
        """REST requests received so far, by path (``/v2/stocks/bars``: ...), rate-limited ones
        included (Alpaca counts them too); the control endpoints and websockets are not
        counted."""
        return dict(self._requests)

    @property
    def cash(self) -> float:
        with self.venue.state.lock:
            return self.venue.state.cash

    def positions(self) -> dict[str, float]:
        """Position quantity by Alpaca position symbol (``AAPL``, ``BTCUSD``)."""
        with self.venue.state.lock:
            return {k: p.qty for k, p in self.venue.state.positions.items()}

    def orders(self) -> list[dict[str, Any]]:
        """Every order as Alpaca's JSON, oldest first."""
        with self.venue.state.lock:
            return [o.to_json() for o in self.venue.state.orders.values()]

    def set_position(
        self, symbol: str, qty: float, *, avg_entry_price: float | None = None
    ) -> None:
        """Change a position behind the client's back (no order, no event, cash untouched)."""
        venue = self.venue
        canonical = venue.canonical(symbol)
        with venue.state.lock:
            price = avg_entry_price if avg_entry_price is not None else venue.price(canonical)
            asset_class = "crypto" if "/" in canonical else "us_equity"
            venue.state.set_position(canonical, asset_class, qty, price)
        logger.info("position %s set to %s behind the client's back", position_key(canonical), qty)

    def stream_counts(self) -> dict[str, int]:
        """Subscribed websocket connections per stream (``trading``, ``stock``, ``crypto``)."""
        hub = self._hub
        if hub is None or self._server is None:
            return {"trading": 0, "stock": 0, "crypto": 0}
        future = asyncio.run_coroutine_threadsafe(_counts(hub), self._server.loop)
        return future.result(5.0)

    def wait_for_streams(self, *, timeout: float = 10.0, **minimum: int) -> None:
        """Block until e.g. ``trading=1`` listeners are connected; raise ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.stream_counts()
            if all(counts.get(name, 0) >= n for name, n in minimum.items()):
                return
            time.sleep(0.02)
        raise TimeoutError(
            f"streams {minimum} not connected within {timeout}s: {self.stream_counts()}"
        )

    # -- plumbing ----------------------------------------------------------------------------
    def _call_in_loop(self, func: Any, *args: Any) -> None:
        server = self._server
        if server is None:
            return  # the venue is down: what it would have sent is lost, as live
        try:
            server.loop.call_soon_threadsafe(func, *args)
        except RuntimeError:
            logger.debug("event loop closed; dropping a stream message")

    def _publish_bars(self, bars: Any) -> None:
        if self._hub is not None:
            self._hub.publish_bars(bars)

    def _publish_trade(self, event: dict[str, Any]) -> None:
        if self._hub is not None:
            self._hub.publish_trade(event)

    def _emit(self, event: dict[str, Any]) -> None:
        self._call_in_loop(self._publish_trade, event)

    def _on_fault(self, fault: Fault) -> None:
        if fault.kind != "ws_drop" or self._hub is None or self._server is None:
            return
        stream = str(fault.params.get("stream", "all"))
        future = asyncio.run_coroutine_threadsafe(self._hub.drop(stream), self._server.loop)
        if threading.current_thread() is not self._server.thread:
            future.result(5.0)


async def _counts(hub: StreamHub) -> dict[str, int]:
    return hub.counts()


def serve(port: int = 0, symbols: Sequence[str] | None = None, speed: float = 60.0) -> None:
    """Run an emulator on the bundled bars until Ctrl-C, logging its URLs."""
    with Emulator(port=port, symbols=symbols, speed=speed) as emu:
        logger.info("REST (url_override): %s", emu.base_url)
        logger.info("trading stream: %s", emu.trading_stream_url)
        logger.info("stock data stream: %s", emu.stock_stream_url)
        logger.info("crypto data stream: %s", emu.crypto_stream_url)
        logger.info("keys: APCA-API-KEY-ID=%s (secret: see Emulator.secret_key)", emu.key_id)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            logger.info("emulator stopped")
