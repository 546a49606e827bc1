"""Scale benchmark: ``compare()`` serially against a 2-worker local Dask cluster (and a pool).

    python benchmarks/scale.py [--symbols 40] [--bars 20000] [--workers 2] [--repeat 3]

On SYMBOLS x BARS synthetic hourly random walks (fixed seed; half crypto, half equities, one
timeline) it times:

* serial: ``compare(executor=None)`` in this process (numba compiled first, excluded);
* dask cold: start ``local_cluster(n_workers=WORKERS)`` (tuned; warm-up of every worker) and
  the first run on it, as a user meets it;
* dask warm: later runs on the same cluster (median of REPEAT);
* pool warm: the same on ``ProcessPoolExecutor(WORKERS)`` (forkserver, warmed);
* per-shard overhead: a no-op shard through each executor (round trip), and a compare of
  SYMBOLS x 300 bars with one-symbol shards against one shard per worker;
* ``train_model`` of the universal model on the same bars, serially, on the warm cluster and
  on the warm pool (one run each; every one must write the same ONNX bytes).

Prints the speedups (goal: dask warm >= 1.6x serial on 2 cores), where the time goes (stages
from the progress callback: signals shards, then the account tasks, one per variant: weights,
gross limit, portfolio simulation, sleeves and pooled quality) and checks that every run gives
the serial tables exactly.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

# the same synthetic universe as the comparison benchmark (this script's folder is on sys.path)
from compare import synthetic_bars
from modelyard.config import load_config
from modelyard.models.training import train_model
from modelyard.scale import local_cluster, resolve_executor, warm_worker
from modelyard.scale.executors import process_pool
from modelyard.strategies.compare import Comparison, compare

log = logging.getLogger("benchmarks.scale")


class Stages:
    """Progress callback that keeps when each stage was last reported."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.last[stage] = time.perf_counter() - self.start

    def split(self) -> str:
        signals = self.last.get("signals", 0.0)
        accounts = self.last.get("simulate", signals) - signals
        return (
            f"signals {signals:4.2f} s, then account tasks (weights, limit, simulation, "
            f"sleeves, pooled quality) {accounts:4.2f} s"
        )


def timed(fn: Callable[[Stages], Comparison]) -> tuple[float, Comparison, Stages]:
    stages = Stages()
    started = time.perf_counter()
    result = fn(stages)
    return time.perf_counter() - started, result, stages


def check_same(got: Comparison, want: Comparison) -> None:
    pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)
    for key, curve in want.symbol_equity.items():
        assert got.symbol_equity[key].to_numpy().tobytes() == curve.to_numpy().tobytes()
    for key, curve in want.equity.items():
        assert got.equity[key].to_numpy().tobytes() == curve.to_numpy().tobytes()


def warm_runs(
    executor: Any, names: list[str], bars: dict[str, pd.DataFrame], repeat: int, base: Comparison
) -> tuple[float, Stages]:
    """``repeat`` runs on ``executor``, each checked equal to ``base``: (median s, last split)."""
    runs = [
        timed(lambda st: compare(names, bars=bars, executor=executor, progress=st))
        for _ in range(repeat)
    ]
    for _, got, _ in runs:
        check_same(got, base)
    return statistics.median(t for t, _, _ in runs), runs[-1][2]


def train_time(bars: dict[str, pd.DataFrame], executor: Any) -> float:
    """Seconds of ``train_model`` (the universal model, every default) on ``bars``: features in
    shards, then the penalty search split over the workers; the final fit stays here."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train_model(
            load_config(), "universal", bars=bars, out=Path(tmp) / "m.onnx", executor=executor
        )
        elapsed = time.perf_counter() - started
        TRAINED.setdefault("onnx", result.onnx_path.read_bytes())
        assert result.onnx_path.read_bytes() == TRAINED["onnx"], "training bytes differ"
    return elapsed


TRAINED: dict[str, bytes] = {}


def _noop() -> None:
    return None


def shard_overhead(executor: Any, n: int = 40) -> float:
    """Seconds per no-op call through a runner on ``executor`` (after one warm-up round)."""
    with resolve_executor(executor) as runner:
        runner.map(_noop, [()] * 4, name="noop", done=lambda d, t: None)
        started = time.perf_counter()
        runner.map(_noop, [()] * n, name="noop", done=lambda d, t: None)
        return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("modelyard.feeds.quality", "modelyard.strategies.routed", "distributed"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    bars = synthetic_bars(args.symbols, args.bars)
    names = list(bars)
    tiny = synthetic_bars(args.symbols, 300)

    warm_worker()  # compile in this process too: serial times exclude numba's compile
    compare(names, bars=tiny)
    serial_runs = [
        timed(lambda st: compare(names, bars=bars, progress=st)) for _ in range(args.repeat)
    ]
    serial = statistics.median(t for t, _, _ in serial_runs)
    base = serial_runs[0][1]
    print(f"{args.symbols} symbols x {args.bars:,} bars, 2 variants, {args.workers} workers")
    print(f"  serial                        {serial:7.2f} s   ({serial_runs[-1][2].split()})")
    train_serial = train_time(bars, None)

    started = time.perf_counter()
    cluster = local_cluster(n_workers=args.workers)
    startup = time.perf_counter() - started
    from distributed import Client

    try:
        with Client(cluster) as client:
            first, got, _ = timed(
                lambda st: compare(names, bars=bars, executor=client, progress=st)
            )
            check_same(got, base)
            warm, warm_stages = warm_runs(client, names, bars, args.repeat, base)
            dask_noop = shard_overhead(client)
            t1, _, _ = timed(lambda st: compare(names, bars=tiny, executor=client, shard_size=1))
            tw, _, _ = timed(lambda st: compare(names, bars=tiny, executor=client))
            train_dask = train_time(bars, client)
    finally:
        cluster.close()
    print(f"  dask cold: cluster + warm-up  {startup:7.2f} s")
    print(f"             first run          {first:7.2f} s   (total {startup + first:.2f} s)")
    print(f"  dask warm                     {warm:7.2f} s   ({warm_stages.split()})")
    print(f"  speedup dask warm / serial    {serial / warm:7.2f} x   (goal >= 1.6)")
    print(f"  speedup dask cold / serial    {serial / (startup + first):7.2f} x")

    with process_pool(args.workers) as pool:
        timed(lambda st: compare(names, bars=tiny, executor=pool))  # start + warm the processes
        pool_warm, pool_stages = warm_runs(pool, names, bars, args.repeat, base)
        pool_noop = shard_overhead(pool)
        train_pool = train_time(bars, pool)
    print(f"  pool warm                     {pool_warm:7.2f} s   ({pool_stages.split()})")
    print(f"  speedup pool warm / serial    {serial / pool_warm:7.2f} x")

    n_shards = args.symbols  # one shard stage (signals)
    default = min(2 * args.workers, args.symbols)
    print("  per-shard overhead")
    print(f"    no-op shard, dask           {dask_noop * 1e3:7.1f} ms")
    print(f"    no-op shard, process pool   {pool_noop * 1e3:7.1f} ms")
    per_extra = (
        f"{(t1 - tw) / (n_shards - default) * 1e3:.1f} ms per extra shard"
        if n_shards > default
        else "no extra shards at this size"
    )
    print(
        f"    {args.symbols} x 300 bars on dask: one-symbol shards {t1:.2f} s, default shards "
        f"{tw:.2f} s -> {per_extra}"
    )
    print(
        f"  train_model (universal, {args.symbols} x {args.bars:,} bars): serial "
        f"{train_serial:.2f} s, dask warm {train_dask:.2f} s ({train_serial / train_dask:.2f} x), "
        f"pool warm {train_pool:.2f} s ({train_serial / train_pool:.2f} x)"
    )
    print("  every run gave the serial tables and curves exactly, every training the same bytes")


if __name__ == "__main__":
    main()
