"""Comparison benchmark: ``compare()`` against bare vectorbt and against Backtrader.

    python benchmarks/compare.py [--symbols 100] [--bars 100000] [--quick] [--skip-bt]

(a) The full comparison (features, batched inference, policy, both routing variants, the
    portfolio simulation and the class and symbol sleeves read from it, orders/trades/stats/IC)
    on SYMBOLS x BARS synthetic random-walk hourly bars (fixed seed; half crypto symbols, half
    equity tickers, one timeline) against one bare ``vbt.Portfolio.from_orders`` call on
    precomputed target weights of the same shape (BARS x 2*SYMBOLS columns, grouped by variant,
    the same settings). Prints the ratio ours/bare (goal <= 3x) and the split of ours: router +
    features + inference + policy against the portfolio simulation (goal: <= 2x). With
    ``--workers N`` it also times ``compare(executor="threads", workers=N)``: N cores against
    the bare call's one (vectorbt's simulation holds the GIL; the rest mostly does not).
(b) The same comparison on 10 x 10,000 bars against Backtrader: ``run_backtest`` once per
    variant, each computing its own features and predictions, as ``compare()`` does; both
    give the portfolio's orders, and ``compare()`` also the sleeves and pooled IC. Prints the
    speedup (goal >= 50x).

numba kernels are compiled first on a small run: the times exclude compile time. ``compare()``
keeps freed memory in the process while it runs (``modelyard._memory``); run with
``MODELYARD_RETAIN_HEAP=0`` to time it with glibc's default trimming (the bare call always
runs with the defaults). Peak RSS
(``ru_maxrss``, the whole process so far) is printed after (a). ``--repeat N`` keeps the best
of N timings of ``compare()`` and of the bare call, run alternately (Backtrader runs once).
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt

from modelyard.strategies import vectorized
from modelyard.strategies.backtest import run_backtest
from modelyard.strategies.compare import compare

SEED = 20261130
log = logging.getLogger("benchmarks.compare")


def synthetic_bars(n_symbols: int, n_bars: int, seed: int = SEED) -> dict[str, pd.DataFrame]:
    """Hourly random walks on one timeline; symbols alternate crypto / equity tickers."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2010-01-01", periods=n_bars, freq="1h", tz="UTC", name="timestamp")
    out = {}
    for j in range(n_symbols):
        name = (
            f"C{j:03d}/USD" if j % 2 == 0 else "E" + "".join(chr(65 + int(d)) for d in f"{j:03d}")
        )
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
        open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.001, n_bars))
        high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.005, n_bars))
        low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.005, n_bars))
        volume = rng.lognormal(3.0, 1.0, n_bars) + 1.0
        out[name] = pd.DataFrame(
            {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
            index=index,
        )
    return out


class Timed:
    """Wraps a function and adds its wall time to ``total``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.total = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - started


@dataclass
class Timing:
    """Wall times (s) of one ``compare`` call.

    ``signals``: from the call to the first progress report of a later stage (config, routing,
    features, batched inference, policy, gross limit). ``simulation``: every
    ``vectorized.simulate`` call (vectorbt), wherever compare's modules call it from (this
    process: the serial executor), without ``values``: the value curves that ``Simulation``
    computes from the order records when it is built (vectorbt's ``value()``; counted with
    the rest, as when they were taken from the portfolio later). ``stages``: seconds per
    progress stage, in order.
    """

    total: float
    signals: float
    simulation: float
    values: float
    stages: dict[str, float]


def _simulate_users() -> list[ModuleType]:
    """The loaded modules that call ``vectorized.simulate`` by a name of their own."""
    names = ("modelyard.strategies.compare", "modelyard.scale.shards", "modelyard.scale.shared")
    return [m for n in names if (m := sys.modules.get(n)) is not None]


def timed_compare(bars: dict[str, pd.DataFrame]) -> tuple[Timing, Any]:
    """The :class:`Timing` of one ``compare`` call, and its result."""
    sim = Timed(vectorized.simulate)
    values = Timed(vectorized.group_values)
    patched = [m for m in _simulate_users() if getattr(m, "simulate", None) is vectorized.simulate]
    marks: list[tuple[str, float]] = []

    def progress(stage: str, done: int, total: int) -> None:
        marks.append((stage, time.perf_counter()))

    for module in patched:
        module.simulate = sim  # type: ignore[attr-defined]
    vectorized.group_values = values
    try:
        started = time.perf_counter()
        result = compare(list(bars), bars=bars, progress=progress)
        ended = time.perf_counter()
    finally:
        for module in patched:
            module.simulate = vectorized.simulate  # type: ignore[attr-defined]
        vectorized.group_values = values.fn
    stages: dict[str, float] = {}
    for k, (stage, at) in enumerate(marks):
        nxt = marks[k + 1][1] if k + 1 < len(marks) else ended
        stages[stage] = stages.get(stage, 0.0) + (nxt - at)
    first_other = next((at for stage, at in marks if stage != "signals"), ended)
    timing = Timing(
        ended - started, first_other - started, sim.total - values.total, values.total, stages
    )
    return timing, result


def bare_from_orders(bars: dict[str, pd.DataFrame], seed: int = SEED) -> float:
    """One ``from_orders`` on precomputed targets, BARS x 2*SYMBOLS, grouped by variant."""
    rng = np.random.default_rng(seed + 1)
    names = list(bars)
    close = np.column_stack([bars[s]["close"].to_numpy() for s in names] * 2)
    open_ = np.column_stack([bars[s]["open"].to_numpy() for s in names] * 2)
    raw = rng.normal(0.0, 0.004, close.shape)
    weights = np.where(raw > 0.0005, np.minimum(raw * 100.0, 0.5), 0.0) / len(names)
    size = np.vstack([np.full((1, close.shape[1]), np.nan), weights[:-1]])
    columns = pd.MultiIndex.from_product([["universal", "asset_specific"], names])
    frame = pd.DataFrame(close, index=next(iter(bars.values())).index, columns=columns)
    started = time.perf_counter()
    vbt.Portfolio.from_orders(
        close=frame,
        size=size,
        size_type="targetpercent",
        price=open_,
        val_price=-np.inf,
        fees=0.001,
        slippage=0.0005,
        min_size=1e-6,
        allow_partial=False,
        init_cash=100_000.0,
        cash_sharing=True,
        group_by=0,
        call_seq="auto",
        freq=None,
    )
    return time.perf_counter() - started


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20 symbols x 5,000 bars")
    parser.add_argument("--skip-bt", action="store_true", help="skip (b), the Backtrader run")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also time compare(executor='threads', workers=N), alternating with bare",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="time compare() and bare N times, keep the best"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("modelyard.feeds.quality", "modelyard.strategies.routed"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    n_sym, n_bars = (20, 5_000) if args.quick else (args.symbols, args.bars)

    warm = synthetic_bars(4, 600)
    started = time.perf_counter()
    timed_compare(warm)
    bare_from_orders(warm)
    print(f"warm-up (numba compile, excluded below): {time.perf_counter() - started:.1f} s")

    bars = synthetic_bars(n_sym, n_bars)
    # alternate the two (ours, bare, ours, bare, ...): both meet the same machine state (on
    # this VM the first touch of fresh memory is costly, and it varies over a session)
    timing, result = timed_compare(bars)
    bare = bare_from_orders(bars)
    for _ in range(args.repeat - 1):  # keep one result alive at a time (peak RSS)
        del result
        again, result = timed_compare(bars)
        timing = min(timing, again, key=lambda t: t.total)
        bare = min(bare, bare_from_orders(bars))
    best = f"best of {args.repeat}" if args.repeat > 1 else "one run"
    n_orders = sum(len(r.orders) for r in result.results.values())
    other = timing.total - timing.signals - timing.simulation
    values = f"(incl. {timing.values:.2f} s value curves from records)"
    print(f"(a) {n_sym} symbols x {n_bars:,} bars, 2 variants ({best})")
    print(
        f"    compare()                     {timing.total:8.2f} s  ({n_orders:,} portfolio orders)"
    )
    print(f"      router+features+inference   {timing.signals:8.2f} s  (+ policy, gross limit)")
    print(
        f"      portfolio simulation        {timing.simulation:8.2f} s  (vectorbt, every simulate)"
    )
    print(f"      orders/trades/sleeves/stats/IC {other:5.2f} s  (the rest) {values}")
    print("      by progress stage           " + ", ".join(
        f"{stage} {seconds:.2f} s" for stage, seconds in timing.stages.items()
    ))  # fmt: skip
    print(f"    bare from_orders (1 call)     {bare:8.2f} s")
    print(f"    ratio ours/bare               {timing.total / bare:8.2f} x   (goal <= 3)")
    ratio = timing.signals / timing.simulation
    print(f"    ratio signals/simulation      {ratio:8.2f} x   (goal <= 2)")
    print(f"    peak RSS                      {peak_rss_mib():8.0f} MiB")
    if args.workers:
        del result
        threaded = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = compare(list(bars), bars=bars, executor="threads", workers=args.workers)
            threaded.append(time.perf_counter() - started)
            del result
            bare = min(bare, bare_from_orders(bars))
        print(
            f"    compare(), {args.workers} threads        {min(threaded):8.2f} s  "
            f"= {min(threaded) / bare:.2f} x bare (bare best {bare:.2f} s; {args.workers} "
            "cores against its one)"
        )
        result = None

    if not args.skip_bt:
        small = synthetic_bars(10, 10_000)
        del result
        timing_b, result = timed_compare(small)
        for _ in range(args.repeat - 1):
            timing_b = min(timing_b, timed_compare(small)[0], key=lambda t: t.total)
        total_b = timing_b.total
        started = time.perf_counter()
        for flag in (False, True):
            run_backtest(list(small), bars=small, asset_specific=flag)
        backtrader = time.perf_counter() - started
        print("(b) 10 symbols x 10,000 bars, 2 variants")
        print(f"    compare() (vectorbt)          {total_b:8.2f} s  ({best})")
        print(f"    Backtrader                    {backtrader:8.2f} s  (2 run_backtest runs)")
        print(f"    speedup                       {backtrader / total_b:8.1f} x   (goal >= 50)")


if __name__ == "__main__":
    main()
