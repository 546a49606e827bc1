"""Fixtures for the emulator tests: bars passed explicitly, real alpaca-py clients."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from alpaca.trading.client import TradingClient

from modelyard.emulator import Emulator

MARKET = Path("/work/shared/data/market")
_SHARED_BARS = MARKET / "equity" / "AAPL_1d.csv.gz"


def read_bars(path: Path, rows: int) -> pd.DataFrame:
    """The last ``rows`` bars of a bundled CSV, with a tz-aware UTC index and float64 columns."""
    frame = pd.read_csv(path, index_col=0, parse_dates=True)
    index = pd.DatetimeIndex(frame.index)
    frame.index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return frame.loc[:, ["open", "high", "low", "close", "volume"]].astype("float64").iloc[-rows:]


def synthetic_bars(start: str, periods: int, freq: str, price: float, seed: int) -> pd.DataFrame:
    """A random walk with consistent OHLC, volume > 0."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    close = price * np.exp(np.cumsum(rng.normal(0.0, 0.002, periods)))
    open_ = np.concatenate([[price], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.001, periods)) * close
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(1.0, 1000.0, periods),
        },
        index=index,
    )


@pytest.fixture(scope="session")
def venue_bars() -> dict[str, pd.DataFrame]:
    """Real daily AAPL and MSFT (bundled CSVs) and synthetic hourly BTC/USD on the same days."""
    aapl = read_bars(_SHARED_BARS, 300)
    msft = read_bars(MARKET / "equity" / "MSFT_1d.csv.gz", 300)
    btc = synthetic_bars(str(aapl.index[0]), 24 * 30, "1h", 30_000.0, seed=7)
    return {"AAPL": aapl, "MSFT": msft, "BTC/USD": btc}


@pytest.fixture
def emulator(venue_bars: dict[str, pd.DataFrame]) -> Iterator[Emulator]:
    """A paused emulator (``speed=0``): only ``emu.advance`` moves the clock."""
    with Emulator(venue_bars, speed=0, rate_limit_per_minute=100_000) as emu:
        yield emu


def make_trading_client(emu: Emulator) -> TradingClient:
    client = TradingClient(emu.key_id, emu.secret_key, paper=True, url_override=emu.base_url)
    client._retry = 0  # alpaca-py retries 429/504 three times with 3 s waits by default
    return client


@pytest.fixture
def trading_client(emulator: Emulator) -> Iterator[TradingClient]:
    client = make_trading_client(emulator)
    yield client
    client._session.close()


class StreamRunner:
    """Runs an alpaca-py stream's ``run()`` in a thread and collects what its handler gets."""

    def __init__(self, emu: Emulator, stream: Any, kind: str) -> None:
        self.emu = emu
        self.stream = stream
        self.kind = kind
        self.received: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=stream.run, daemon=True)

    async def handler(self, item: Any) -> None:
        self.received.put(item)

    def get(self, n: int, timeout: float = 5.0) -> list[Any]:
        return [self.received.get(timeout=timeout) for _ in range(n)]

    def drain(self, wait: float = 0.2) -> list[Any]:
        items = []
        try:
            while True:
                items.append(self.received.get(timeout=wait))
        except queue.Empty:
            return items

    def stop(self) -> None:
        """``stop()`` then drop the socket so ``recv`` returns at once (it waits up to 5 s)."""
        self.stream.stop()
        self.emu.faults.add("ws_drop", stream=self.kind)
        self.thread.join(timeout=10.0)
        assert not self.thread.is_alive(), f"{self.kind} stream did not stop"


@pytest.fixture
def run_stream() -> Iterator[Callable[..., StreamRunner]]:
    """Start a stream (``subscribe`` registers ``runner.handler``); all are stopped at teardown."""
    runners: list[StreamRunner] = []

    def start(
        emu: Emulator, stream: Any, kind: str, subscribe: Callable[[StreamRunner], None]
    ) -> StreamRunner:
        runner = StreamRunner(emu, stream, kind)
        subscribe(runner)
        runner.thread.start()
        runners.append(runner)
        emu.wait_for_streams(timeout=10.0, **{kind: 1})
        return runner

    yield start
    for runner in runners:
        if runner.thread.is_alive():
            runner.stop()


def _advance_until_bar(emu: Emulator, symbol: str, limit: int = 1_000) -> None:
    """Step the clock until it publishes a bar of ``symbol`` (other symbols have other times)."""
    for _ in range(limit):
        if emu.advance(1) == 0:
            break
        if emu.venue.store.bar_at(symbol, emu.venue.clock.now_ns) is not None:
            return
    raise AssertionError(f"no bar of {symbol} within {limit} steps")


@pytest.fixture
def advance_until_bar() -> Callable[..., None]:
    """``advance_until_bar(emu, "AAPL")`` steps the clock to the next AAPL bar."""
    return _advance_until_bar


@pytest.fixture
def client_factory() -> Iterator[Callable[[Emulator], TradingClient]]:
    """``client_factory(emu)`` builds TradingClients (no retries) closed at teardown."""
    clients: list[TradingClient] = []

    def build(emu: Emulator) -> TradingClient:
        client = make_trading_client(emu)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client._session.close()
