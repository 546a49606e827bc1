"""Emulator throughput through the real alpaca-py clients.

Prints: orders/second sustained by ``TradingClient.submit_order`` (one client, sequential),
p50/p99 submit latency, and bars/second a ``StockDataStream`` receives from an unthrottled
replay (``speed=math.inf``). Run: ``.venv/bin/python benchmarks/emulator.py``.
"""

from __future__ import annotations

import math
import statistics
import threading
import time

import numpy as np
import pandas as pd
from alpaca.data.live import StockDataStream
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from modelyard.emulator import Emulator

N_ORDERS = 500
N_BARS = 20_000


def _bars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    index = pd.date_range("2024-01-02 14:30", periods=n, freq="1min", tz="UTC")
    return pd.DataFrame(
        {"open": close, "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 1.0},
        index=index,
    )


def bench_orders() -> None:
    with Emulator({"AAPL": _bars(100, 1)}, speed=0, cash=1e12, rate_limit_per_minute=10**9) as emu:
        client = TradingClient(emu.key_id, emu.secret_key, paper=True, url_override=emu.base_url)
        request = MarketOrderRequest(
            symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        )
        client.submit_order(request)  # warm-up: connection, imports
        latencies = []
        started = time.perf_counter()
        for _ in range(N_ORDERS):
            t0 = time.perf_counter()
            client.submit_order(request)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        client._session.close()
    q = statistics.quantiles(latencies, n=100)
    print(f"orders: {N_ORDERS} in {elapsed:.2f} s = {N_ORDERS / elapsed:,.0f} orders/s")
    print(f"submit_order latency: p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms")


def bench_stream() -> None:
    with Emulator({"AAPL": _bars(N_BARS + 1, 2)}, speed=0) as emu:
        stream = StockDataStream(emu.key_id, emu.secret_key, url_override=emu.stock_stream_url)
        received = 0
        done = threading.Event()

        async def on_bar(bar: object) -> None:
            nonlocal received
            received += 1
            if received >= N_BARS:
                done.set()

        stream.subscribe_bars(on_bar, "AAPL")
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        emu.wait_for_streams(stock=1)
        started = time.perf_counter()
        emu.set_speed(math.inf)
        finished = done.wait(120.0)
        elapsed = time.perf_counter() - started
        stream.stop()
        emu.faults.add("ws_drop", stream="stock")
        thread.join(10.0)
    state = "" if finished else f" (timed out with {received})"
    print(f"stream: {N_BARS} bars in {elapsed:.2f} s = {received / elapsed:,.0f} bars/s{state}")


if __name__ == "__main__":
    bench_orders()
    bench_stream()
