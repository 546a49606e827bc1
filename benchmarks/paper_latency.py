"""Bar arrival -> order POST latency of the live path, 50 symbols on the emulator.

Measured side by side in one run:

* ``bare submit``: ``AlpacaClient.submit_order`` alone against the emulator (the venue's own
  response time, as seen by our client);
* ``bar -> POST``: from the moment the live feed parses a streamed bar (stream thread) to the
  moment the broker starts the POST for the order that bar caused (after the Backtrader loop,
  the strategy, the risk check and the journal's committed intent);
* ``bar -> answered``: the same until the POST has returned.

Every bar of every symbol causes one 1-share market buy. All 50 bars of a step arrive in one
websocket frame and are submitted as one batch (one durable journal commit, POSTs on the
executor's worker threads), so the later symbols of a step still queue behind the earlier
ones' POSTs: ``first of step`` isolates the per-step overhead.

``--venue thread`` (default) runs the emulator in this process, as a thread: it then shares the
GIL with the client, the POST workers and the trade-update thread, and every request pays for
that. ``--venue process`` runs it in a child process (as a real venue is), controlled over a
pipe. The journal goes to a temporary directory under ``$JOURNAL_DIR`` (default: the system
temporary directory; /tmp here is ext4).
Run: ``.venv/bin/python benchmarks/paper_latency.py [--venue process]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from modelyard.brokers.alpaca_client import AlpacaClient
from modelyard.brokers.alpaca_store import AlpacaStore
from modelyard.brokers.risk import RiskConfig
from modelyard.emulator import Emulator

N_SYMBOLS = 50
N_STEPS = 10
N_BARE = 500
PAUSE_S = 2.0  # between steps: every step is done before the next (no backlog)


def _bars(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    index = pd.date_range("2024-01-02 14:30", periods=n, freq="1min", tz="UTC")
    return pd.DataFrame(
        {"open": close, "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 1.0},
        index=index,
    )


class BuyEveryLiveBar(bt.Strategy):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen = [0] * len(self.datas)

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        for i, data in enumerate(self.datas):
            if len(data) > self.seen[i]:
                self.seen[i] = len(data)
                if data._laststatus == data.LIVE:
                    self.buy(data=data, size=1)


def _q(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {cuts[49] * 1e3:7.2f} ms   p99 {cuts[98] * 1e3:7.2f} ms   (n={len(values)})"


def _venue_bars() -> tuple[dict[str, pd.DataFrame], Any]:
    symbols = [f"SYM{i:02d}" for i in range(N_SYMBOLS)]
    bars = {s: _bars(i) for i, s in enumerate(symbols)}
    return bars, bars[symbols[0]].index[200].to_pydatetime()


def _emulator() -> Emulator:
    bars, start = _venue_bars()
    return Emulator(bars, speed=0, start=start, cash=1e12, rate_limit_per_minute=10**9)


def _serve(conn: Connection) -> None:
    """The child process of ``--venue process``: an emulator driven over ``conn``."""
    with _emulator() as emu:
        names = ("key_id", "secret_key", "base_url", "stock_stream_url", "crypto_stream_url")
        conn.send({name: getattr(emu, name) for name in (*names, "trading_stream_url")})
        while True:
            command, arg = conn.recv()
            if command == "stop":
                break
            if command == "advance":
                conn.send(emu.advance(arg))
            elif command == "wait_for_streams":
                emu.wait_for_streams(**arg)
                conn.send(None)


class _RemoteVenue(SimpleNamespace):
    def __init__(self, conn: Connection, urls: dict[str, str]) -> None:
        super().__init__(**urls)
        self._conn = conn

    def advance(self, n: int) -> Any:
        self._conn.send(("advance", n))
        return self._conn.recv()

    def wait_for_streams(self, **minimum: int) -> None:
        self._conn.send(("wait_for_streams", minimum))
        self._conn.recv()


@contextmanager
def _venue(kind: str) -> Iterator[Any]:
    if kind == "thread":
        with _emulator() as emu:
            yield emu
        return
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    try:
        yield _RemoteVenue(parent, parent.recv())
    finally:
        parent.send(("stop", None))
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venue", choices=("thread", "process"), default="thread")
    args = parser.parse_args()
    symbols = [f"SYM{i:02d}" for i in range(N_SYMBOLS)]
    risk = RiskConfig(
        timeframe=pd.Timedelta(minutes=1).to_pytimedelta(), stale_factor=3.0,
        max_orders_per_minute=None, enforce_market_hours=False,
    )  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="paper-latency-", dir=os.environ.get("JOURNAL_DIR")))
    print(f"venue: {args.venue}; journal: {tmp}")
    with _venue(args.venue) as emu:
        store = AlpacaStore.for_emulator(
            emu, journal=tmp / "journal.db", risk=risk, silence_timeout=60.0
        )
        # the venue's own response time, through the same client
        bare = []
        for i in range(N_BARE):
            t0 = time.perf_counter()
            store.client.submit_order("SYM00", "buy", client_order_id=f"bare-{i}", qty=1)
            bare.append(time.perf_counter() - t0)
        post_start: dict[str, float] = {}
        original = AlpacaClient.submit_order

        def timed_submit(self: AlpacaClient, *args: Any, **kwargs: Any) -> Any:
            post_start[kwargs["client_order_id"]] = time.perf_counter()
            return original(self, *args, **kwargs)

        # every client: the executor's POST workers have their own
        AlpacaClient.submit_order = timed_submit  # type: ignore[method-assign]
        cerebro = bt.Cerebro(stdstats=False)
        broker = store.getbroker()
        cerebro.setbroker(broker)
        for s in symbols:
            cerebro.adddata(store.getdata(s, "1min", backfill_bars=20), name=s)
        cerebro.addstrategy(BuyEveryLiveBar)
        thread = threading.Thread(target=cerebro.run, daemon=True)
        thread.start()
        while not all(src.state == "live" for src in store.sources.values()):
            time.sleep(0.01)
        emu.wait_for_streams(stock=1, trading=1)
        for _ in range(N_STEPS):
            emu.advance(1)
            time.sleep(PAUSE_S)
        store.stop()
        thread.join(30)
        steps = {r.client_order_id: r.decision_bar_ts for r in store.journal.orders()}
        store.close()
    to_post, answered, first = [], [], {}
    for coid, received, done in broker.timings:
        latency = post_start[coid] - received
        to_post.append(latency)
        answered.append(done - received)
        step = steps[coid]
        first[step] = min(first.get(step, latency), latency)
    print(f"bare submit (emulator):   {_q(bare)}")
    print(f"bar -> POST sent:         {_q(to_post)}")
    print(f"  first order of a step:  {_q(list(first.values()))}")
    print(f"bar -> POST answered:     {_q(answered)}")
    print(f"orders: {len(to_post)} ({N_STEPS} steps x {N_SYMBOLS} symbols, one 1-share buy each)")


if __name__ == "__main__":
    main()
