"""Feature benchmark: vectorized ``compute`` against a plain pandas rolling baseline, and
``OnlineFeatures.update`` latency, for the crypto spec.

    python benchmarks/features.py [--symbols 100] [--bars 100000] [--quick]

Prints times side by side and the ratio ours/baseline (goal <= 1.0), then the online
median and p99 per-bar latency (goal median <= 50 us). Bars are synthetic random walks
from a fixed seed. The baseline's output is checked against ours, so it is honest.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from modelyard.models.features import OnlineFeatures, compute, spec_for

SEED = 20261130


def synthetic_bars(n: int, seed: int) -> pd.DataFrame:
    """Hourly random-walk bars with some zero-volume runs."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.001, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.005, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.005, n))
    volume = rng.lognormal(3.0, 1.0, n) * (rng.uniform(size=n) > 0.01)
    index = pd.date_range("2015-01-01", periods=n, freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def pandas_baseline(bars: pd.DataFrame) -> pd.DataFrame:
    """The crypto spec written straightforwardly with pandas ``.rolling``."""
    c, v, h, lo = bars["close"], bars["volume"], bars["high"], bars["low"]
    r1 = np.log(c / c.shift(1))
    d = c.diff()
    gain = d.clip(lower=0.0).rolling(14).sum()
    loss = (-d).clip(lower=0.0).rolling(14).sum()
    vmean, vstd = v.rolling(24).mean(), v.rolling(24).std()
    hour = pd.Series(bars.index.hour, index=bars.index, dtype="float64")
    rng = h - lo
    out = pd.DataFrame(
        {
            "ret_1": r1,
            "ret_3": np.log(c / c.shift(3)),
            "ret_6": np.log(c / c.shift(6)),
            "ret_12": np.log(c / c.shift(12)),
            "ret_24": np.log(c / c.shift(24)),
            "ret_1_lag1": r1.shift(1),
            "vol_24": r1.rolling(24).std(),
            "vol_72": r1.rolling(72).std(),
            "mom_72": c / c.rolling(72).mean() - 1.0,
            "volm_24": np.log((v.rolling(6).mean() + 1e-9) / (vmean + 1e-9)),
            "volz_24": ((v - vmean) / vstd).where(vstd > 1e-12 * vmean.abs(), 0.0),
            "range_hl": rng / c,
            "close_loc": ((c - lo) / rng).where(rng != 0.0, 0.5),
            "rsi_14": (100.0 * gain / (gain + loss)).where(gain + loss != 0.0, 50.0),
            "hour_sin": np.sin(2.0 * np.pi * hour / 24.0),
            "hour_cos": np.cos(2.0 * np.pi * hour / 24.0),
        }
    )
    out.iloc[:72] = np.nan
    return out


def bench_vectorized(symbols: int, bars: int) -> None:
    spec = spec_for("crypto")
    compute(synthetic_bars(500, SEED), spec)  # JIT / cache load outside the timing
    t_ours = t_base = 0.0
    for i in range(symbols):  # one symbol at a time keeps memory flat
        bars_i = synthetic_bars(bars, SEED + i)
        t0 = time.perf_counter()
        ours = compute(bars_i, spec)
        t1 = time.perf_counter()
        base = pandas_baseline(bars_i)
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_base += t2 - t1
        np.testing.assert_allclose(ours.to_numpy(), base.to_numpy(), rtol=1e-7, atol=1e-9)
    cells = symbols * bars
    print(f"vectorized compute, crypto spec, {symbols} symbols x {bars} bars")
    print(f"  ours      {t_ours:8.3f} s  ({t_ours / cells * 1e9:7.1f} ns/bar)")
    print(f"  pandas    {t_base:8.3f} s  ({t_base / cells * 1e9:7.1f} ns/bar)")
    print(f"  ratio ours/baseline = {t_ours / t_base:.3f}  (goal <= 1.0; outputs agree)")


def bench_online(symbols: int, bars: int) -> None:
    spec = spec_for("crypto")
    frames = [synthetic_bars(bars, SEED + i) for i in range(symbols)]
    streams = [list(f.reset_index().itertuples(index=False)) for f in frames]
    online = [OnlineFeatures(spec) for _ in frames]
    lat = np.empty(symbols * bars, dtype=np.int64)
    k = 0
    clock = time.perf_counter_ns
    for i in range(bars):  # interleave symbols, as a live feed does
        for s in range(symbols):
            bar = streams[s][i]
            t0 = clock()
            online[s].update(bar)
            lat[k] = clock() - t0
            k += 1
    steady = lat[symbols * (spec.warmup + 1) :] / 1e3
    print(f"online update, crypto spec, {symbols} symbols x {bars} bars (after warm-up)")
    print(
        f"  median {np.median(steady):6.2f} us   p99 {np.percentile(steady, 99):6.2f} us"
        f"   (goal median <= 50 us)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--online-symbols", type=int, default=10)
    parser.add_argument("--online-bars", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="10 symbols x 10k bars")
    args = parser.parse_args()
    if args.quick:
        args.symbols, args.bars, args.online_symbols, args.online_bars = 10, 10_000, 5, 5_000
    bench_vectorized(args.symbols, args.bars)
    bench_online(args.online_symbols, args.online_bars)


if __name__ == "__main__":
    main()
