"""Bar arrival -> order POST latency of the live path, 50 symbols, against raw alpaca-py.

Issue #8's goal: "a p99 at most 5 ms above the emulator's own response time". For a step of
50 symbols the venue's own response time is not one order's latency: 50 orders sent at once
queue too (in the client's threads, its GIL and the venue). So the baseline is a burst of the
same 50 orders (1-share market buys, one per symbol, each with a ``client_order_id``) sent by
the raw library, alpaca-py's ``TradingClient.submit_order(MarketOrderRequest(...))`` with
``raw_data=True`` as ours, on as many threads as our POST workers (``POST_WORKERS``, each thread
with its own ``TradingClient`` and HTTP session, as ours), from the same process, to the same
venue. The raw clients' HTTP sessions read requests' environment settings once, as ours do
(``freeze_environment``): a per-request cost of the SDK's default session is not counted as
our pipeline's gain. Measured side by side in one run, the steps alternating:

* ``ours``: from the moment the live feed parses a streamed bar (stream thread) to the moment
  the broker starts the POST for the order that bar caused (after the Backtrader loop, the
  strategy, the risk checks and the journal's durable intents), and until it is answered;
* ``raw burst``: from the instant the burst starts to each order's POST start (the thread
  picked it up) and to its answer. Its orders are canceled off the clock, during the pause, so
  they never fill into our steps. Our trade-update thread is held during the burst, as during
  our steps (``TradeUpdateGate``), so the burst does not pay for its "new" events either,
  nor for a garbage collection (the gate defers the collector in both);
* ``ours - raw``: what our pipeline adds at p50 and p99 (feed parse, Backtrader loop, strategy,
  risk, journal). The goal line compares the p99 of ``bar -> POST answered`` minus the p99 of
  the raw burst's ``t0 -> answered`` with 5 ms;
* ``single order``: one raw ``submit_order`` at a time (the venue's unloaded response time);
* ``Backtrader's own bar step``: the framework's floor. The same 50 symbols and the same
  one-share buys, as a plain Backtrader backtest (``BackBroker``, bars from memory, no
  network, no journal, no risk checks): the time of one turn of its loop, from one
  ``next()`` to the next, with the last bar's 50 orders filling and 50 new ones placed (as in
  our steps: the emulator fills a bar's market orders at the next bar), and with no orders.
  Our step does that same Backtrader work before its first POST, live.

Our t0 is taken after the websocket frame was read and decoded, so the bar's transit from the
venue is not counted (it would be the same for any client). ``first of step`` isolates the
per-step overhead: the later orders of a step queue behind the earlier ones' POSTs.

``--venue process`` (default) runs the emulator in a child process, controlled over a pipe:
a real venue is another process (another machine), and in this process it would take the GIL
from the client threads for every request it serves, charging the venue's own CPU to both
sides. ``--venue thread`` keeps the in-process emulator. The machine has 2 cores: run it a few
times and read the spread. The journal goes to a temporary directory under ``$JOURNAL_DIR``
(default: the system temporary directory).
Run: ``.venv/bin/python benchmarks/paper_latency.py [--venue thread] [--steps 20]``.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import itertools
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from modelyard.brokers.alpaca_client import AlpacaClient, freeze_environment
from modelyard.brokers.alpaca_store import AlpacaStore
from modelyard.brokers.executor import POST_WORKERS
from modelyard.brokers.risk import RiskConfig
from modelyard.emulator import Emulator

N_SYMBOLS = 50
N_SINGLE = 300
PAUSE_S = 1.0  # after each step and each burst: every step is done before the next
GOAL_MS = 5.0
SYMBOLS = [f"SYM{i:02d}" for i in range(N_SYMBOLS)]


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


class _BuyEveryBar(bt.Strategy):  # type: ignore[misc]
    """The backtest twin of :class:`BuyEveryLiveBar` (``buy=False``: no orders), timing each
    bar step: from one ``next()`` to the next is one turn of Backtrader's loop (50 datas
    advanced, the broker's fills of the last bar's orders and their notifications)."""

    params = (("buy", True),)

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def next(self) -> None:
        self.stamps.append(time.perf_counter())
        if self.p.buy:
            for data in self.datas:
                self.buy(data=data, size=1)


def framework_floor(*, buy: bool) -> list[float]:
    """Seconds per bar step of Backtrader's own backtest loop on the benchmark's 50 symbols
    (``BackBroker``, bars from memory, no network, no journal; the garbage collector off, as
    in our steps): what any Backtrader-driven strategy pays per bar before its first order
    can leave, measured in this run."""
    cerebro = bt.Cerebro(stdstats=False, runonce=False, preload=False)
    cerebro.broker.setcash(1e12)
    for i, symbol in enumerate(SYMBOLS):
        frame = _bars(i).tz_convert(None)
        cerebro.adddata(bt.feeds.PandasData(dataname=frame), name=symbol)
    cerebro.addstrategy(_BuyEveryBar, buy=buy)
    gc.disable()  # as in our steps (TradeUpdateGate defers the collector)
    try:
        strategy = cerebro.run()[0]
    finally:
        gc.enable()
    stamps = strategy.stamps[20:]  # past the first bars (caches, the first orders' fills)
    return [b - a for a, b in itertools.pairwise(stamps)]


def _cuts(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49] * 1e3, cuts[98] * 1e3


def _q(values: list[float]) -> str:
    p50, p99 = _cuts(values)
    return f"p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   (n={len(values)})"


def _diff(ours: list[float], raw: list[float]) -> tuple[float, float]:
    (o50, o99), (r50, r99) = _cuts(ours), _cuts(raw)
    return o50 - r50, o99 - r99


def _emulator() -> Emulator:
    bars = {s: _bars(i) for i, s in enumerate(SYMBOLS)}
    start = bars[SYMBOLS[0]].index[200].to_pydatetime()
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


def _raw_client(emu: Any) -> TradingClient:
    """Raw alpaca-py, with the one session setting our client changes (requests' environment
    read once, not per request: ``freeze_environment``) so that ``ours - raw`` measures our
    pipeline, not a per-request cost the SDK's default session has and ours does not."""
    client = TradingClient(emu.key_id, emu.secret_key, raw_data=True, url_override=emu.base_url)
    freeze_environment(client._session, emu.base_url)
    return client


class RawBurst:
    """The baseline: the step's 50 orders sent at once by raw alpaca-py on ``workers`` threads,
    each with its own ``TradingClient`` (as our POST workers)."""

    def __init__(self, emu: Any, workers: int) -> None:
        self._emu = emu
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="raw-post")
        self._local = threading.local()
        self._clients: list[TradingClient] = []
        self._lock = threading.Lock()
        self.to_post: list[float] = []
        self.answered: list[float] = []
        self.first: list[float] = []
        self._order_ids: list[str] = []
        self._n = 0

    def _client(self) -> TradingClient:
        client: TradingClient | None = getattr(self._local, "client", None)
        if client is None:
            emu = self._emu
            client = _raw_client(emu)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _send(self, symbol: str, coid: str) -> tuple[float, float, str]:
        client = self._client()
        start = time.perf_counter()
        request = MarketOrderRequest(
            symbol=symbol, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
            client_order_id=coid,
        )  # fmt: skip
        raw: Any = client.submit_order(request)
        return start, time.perf_counter(), str(raw["id"])

    def burst(self, *, record: bool = True) -> None:
        self._n += 1
        t0 = time.perf_counter()
        futures = [self._pool.submit(self._send, s, f"raw-{self._n}-{s}") for s in SYMBOLS]
        results = [f.result() for f in futures]
        self._order_ids = [r[2] for r in results]
        if record:
            self.to_post += [r[0] - t0 for r in results]
            self.answered += [r[1] - t0 for r in results]
            self.first.append(min(r[0] for r in results) - t0)

    def cancel(self) -> None:
        """Off the clock: the burst's orders must not fill into our next step."""
        ids, self._order_ids = self._order_ids, []
        list(self._pool.map(lambda oid: self._client().cancel_order_by_id(oid), ids))

    def close(self) -> None:
        self._pool.shutdown()
        for client in self._clients:
            client._session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venue", choices=("thread", "process"), default="process")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    risk = RiskConfig(
        timeframe=pd.Timedelta(minutes=1).to_pytimedelta(), stale_factor=3.0,
        max_orders_per_minute=None, enforce_market_hours=False,
    )  # fmt: skip
    floor_idle, floor_buy = framework_floor(buy=False), framework_floor(buy=True)
    tmp = Path(tempfile.mkdtemp(prefix="paper-latency-", dir=os.environ.get("JOURNAL_DIR")))
    atexit.register(shutil.rmtree, tmp, True)  # the journal is scratch: gone however we exit
    print(f"venue: {args.venue}; journal: {tmp}; POST threads: {POST_WORKERS} (ours and raw)")
    with _venue(args.venue) as emu:
        store = AlpacaStore.for_emulator(
            emu, journal=tmp / "journal.db", risk=risk, silence_timeout=60.0
        )
        single = []  # the venue's unloaded response time, raw alpaca-py
        client = _raw_client(emu)
        for i in range(N_SINGLE):
            request = MarketOrderRequest(
                symbol="SYM00", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                client_order_id=f"single-{i}",
            )  # fmt: skip
            t0 = time.perf_counter()
            raw: Any = client.submit_order(request)
            single.append(time.perf_counter() - t0)
            client.cancel_order_by_id(raw["id"])
        client._session.close()
        raw_burst = RawBurst(emu, POST_WORKERS)
        raw_burst.burst(record=False)  # warm: every thread's connection is open
        raw_burst.cancel()
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
        for s in SYMBOLS:
            cerebro.adddata(store.getdata(s, "1min", backfill_bars=20), name=s)
        cerebro.addstrategy(BuyEveryLiveBar)
        thread = threading.Thread(target=cerebro.run, daemon=True)
        thread.start()
        while not all(src.state == "live" for src in store.sources.values()):
            time.sleep(0.01)
        emu.wait_for_streams(stock=1, trading=1)
        emu.advance(1)  # warm: our POST workers' connections are opened on the first step
        time.sleep(PAUSE_S)
        warm = {coid for coid, _, _ in broker.timings}
        gate = store.executor.trade_update_gate
        for _ in range(args.steps):  # alternating: one step of ours, one raw burst
            emu.advance(1)
            time.sleep(PAUSE_S)
            gate.hold()  # as in our steps: the burst's own "new" events wait until it is done
            raw_burst.burst()
            gate.release()
            raw_burst.cancel()
            time.sleep(PAUSE_S)
        store.stop()
        thread.join(30)
        steps = {r.client_order_id: r.decision_bar_ts for r in store.journal.orders()}
        store.close()
        raw_burst.close()
    to_post, answered, first = [], [], {}
    for coid, received, done in broker.timings:
        if coid in warm:
            continue
        latency = post_start[coid] - received
        to_post.append(latency)
        answered.append(done - received)
        step = steps[coid]
        first[step] = min(first.get(step, latency), latency)
    n = f"{args.steps} steps x {N_SYMBOLS} symbols"
    print(f"single order, raw alpaca-py (unloaded venue):   {_q(single)}")
    print(f"raw burst of {N_SYMBOLS}, t0 -> POST start:            {_q(raw_burst.to_post)}")
    print(f"  first order of a burst:                       {_q(raw_burst.first)}")
    print(f"raw burst of {N_SYMBOLS}, t0 -> POST answered:         {_q(raw_burst.answered)}")
    print(f"ours, bar -> POST start:                        {_q(to_post)}")
    print(f"  first order of a step:                        {_q(list(first.values()))}")
    print(f"ours, bar -> POST answered:                     {_q(answered)}")
    for label, ours, raw_values in (
        ("POST start   ", to_post, raw_burst.to_post),
        ("first of step", list(first.values()), raw_burst.first),
        ("POST answered", answered, raw_burst.answered),
    ):
        d50, d99 = _diff(ours, raw_values)
        print(f"ours - raw, {label}:  p50 {d50:+7.2f} ms   p99 {d99:+7.2f} ms")
    print(f"Backtrader's own bar step (backtest, BackBroker, {N_SYMBOLS} datas, no I/O):")
    print(f"  {N_SYMBOLS} fills + {N_SYMBOLS} new orders a bar:              {_q(floor_buy)}")
    print(f"  no orders (the datas advance):                {_q(floor_idle)}")
    d99 = _diff(answered, raw_burst.answered)[1]
    verdict = "met" if d99 <= GOAL_MS else "NOT met"
    print(
        f"GOAL (issue #8): p99(ours bar -> POST answered) - p99(raw burst -> answered) = "
        f"{d99:+.2f} ms, goal <= {GOAL_MS:.0f} ms: {verdict}"
    )
    print(f"orders: {len(to_post)} ours, {len(raw_burst.answered)} raw ({n}, 1-share buys)")


if __name__ == "__main__":
    main()
