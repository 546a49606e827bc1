"""RoutedStrategy (backtest mode) against a plain SMA-crossover ``bt.Strategy`` on the same bars.

Synthetic hourly random-walk bars (fixed seed), crypto symbols, a tiny real ONNX model
(StandardScaler + Ridge, fitted like ``tests/conftest.build_onnx`` but on the bars' own
features so it trades). Prints throughput in bars/s and the ratio ours / SMA (goal >= 0.8).
"ours (bt)" times only ``cerebro.run()``; "ours (all)" adds features, inference and policy.
"replay" is a plain ``bt.Strategy`` placing exactly our orders from a dict: the same order
flow without our machinery, so ``ours/replay`` isolates our overhead from Backtrader's own
per-order cost.

Backtrader's cost per order (about 0.1 ms here) dominates both strategies, so the ratio to the
SMA depends first on how often each trades. Two policies are run, each on its own line:

* ``shipped``: the shipped crypto policy (``config/assets.yaml``) on the tiny model, whose
  predictions are far noisier than its thresholds: it trades on 30-45% of bars (most of them
  entries and exits, which the rebalance band cannot remove), the SMA on about 4%;
* ``matched``: the same model and policy with the entry threshold raised until its number of
  orders, counted from the policy's order targets before any Backtrader run, is the nearest to
  the SMA's (the chosen threshold is printed). This is the like-for-like line: the same bars
  and the same number of orders, so the ratio is what our machinery costs over a plain
  strategy. The goal (>= 0.8) is read on it; the ``shipped`` line and ``ours/replay`` are
  printed too.

    .venv/bin/python benchmarks/backtrader_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import yaml

from modelyard._paths import default_config_path
from modelyard.config import load_config
from modelyard.feeds.bt_feeds import make_feed
from modelyard.models.export import to_onnx_bytes
from modelyard.models.features import compute, spec_for
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies import backtest as bt_module
from modelyard.strategies.policy import order_targets, target_weights
from modelyard.strategies.signals import predict_history


def random_walk(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2010-01-01", periods=n, freq="h", tz="UTC")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.003, n)) * close
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.lognormal(8.0, 0.5, n),
        },
        index=index,
    )


def tiny_registry(folder: Path, bars: pd.DataFrame, entry: float | None = None) -> Path:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    raw: dict[str, Any] = yaml.safe_load(default_config_path().read_text())
    spec = raw["models"]["universal_v1"]
    features = spec["features"]
    x = compute(bars.iloc[:5_000], spec_for(spec["spec"]))[features].dropna().to_numpy()
    rng = np.random.default_rng(0)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    y = z @ rng.normal(size=len(features)) * 1e-3 + rng.normal(scale=1e-3, size=len(x))
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, y)
    (folder / "universal_v1.onnx").write_bytes(
        to_onnx_bytes(model, list(features), model_id="universal_v1")
    )
    for item in raw["models"].values():
        item["path"] = str(folder / "universal_v1.onnx")
        item.pop("contract", None)
    if entry is not None:
        raw["asset_classes"]["crypto"]["policy"]["entry_threshold"] = entry
    path = folder / f"assets_{entry}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def policy_orders(bars: dict[str, pd.DataFrame], config: Path, entries: np.ndarray) -> np.ndarray:
    """Orders the crypto policy would place at each entry threshold (no Backtrader run):
    non-NaN order targets, summed over symbols."""
    cfg = load_config(config)
    router = AssetSpecificModelRouter(cfg, asset_specific=False)
    preds, _ = predict_history(router, bars)
    policy = cfg.asset_classes["crypto"].policy
    counts = np.zeros(len(entries), dtype=np.int64)
    for k, entry in enumerate(entries):
        chosen = policy.model_copy(update={"entry_threshold": float(entry)})
        for pred in preds.values():
            counts[k] += int(np.isfinite(order_targets(target_weights(pred, chosen))).sum())
    return counts


def matched_entry(bars: dict[str, pd.DataFrame], config: Path, n_orders: int) -> float:
    """The entry threshold whose order count is the nearest to ``n_orders``."""
    entries = np.geomspace(5e-4, 2e-2, 60)
    counts = policy_orders(bars, config, entries)
    return float(entries[int(np.argmin(np.abs(counts - n_orders)))])


class SmaCross(bt.Strategy):  # type: ignore[misc]
    params = (("fast", 10), ("slow", 30))

    def __init__(self) -> None:
        self.cross = [
            bt.ind.CrossOver(bt.ind.SMA(d, period=self.p.fast), bt.ind.SMA(d, period=self.p.slow))
            for d in self.datas
        ]
        self.weight = 1.0 / len(self.datas)

    def next(self) -> None:
        for data, cross in zip(self.datas, self.cross, strict=True):
            if cross[0] > 0:
                self.order_target_percent(data=data, target=self.weight)
            elif cross[0] < 0:
                self.order_target_percent(data=data, target=0.0)


class _Counted(SmaCross):
    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            self.filled += 1

    def start(self) -> None:
        self.filled = 0


def run_sma(bars: dict[str, pd.DataFrame], count: bool = False) -> tuple[float, int]:
    """(seconds inside cerebro.run, filled orders; counted only with ``count``, a run apart
    from the timed one)."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.set_checksubmit(False)
    for name, frame in bars.items():
        cerebro.adddata(make_feed(frame, name), name=name)
    cerebro.addstrategy(_Counted if count else SmaCross)
    start = time.perf_counter()
    strategies = cerebro.run()
    seconds = time.perf_counter() - start
    return seconds, int(strategies[0].filled) if count else 0


class Replay(bt.Strategy):  # type: ignore[misc]
    """A plain strategy that places exactly the orders RoutedStrategy placed, read from a dict:
    the same order flow with none of our machinery, to isolate our overhead."""

    params = (("orders", None),)

    def next(self) -> None:
        orders: dict[tuple[str, Any], float] = self.p.orders
        for data in self.datas:
            size = orders.get((data._name, data.datetime.datetime(0)))
            if size is not None:
                (self.buy if size > 0 else self.sell)(data=data, size=abs(size))


def run_replay(bars: dict[str, pd.DataFrame], orders: pd.DataFrame) -> float:
    signed = np.where(orders["side"] == "buy", 1.0, -1.0) * orders["size"].to_numpy()
    book: dict[tuple[str, Any], float] = {}
    for symbol, fill_ts, size in zip(orders["symbol"], orders["timestamp"], signed, strict=True):
        index = bars[symbol].index
        decision = index[index.get_loc(fill_ts) - 1]
        book[(symbol, decision.tz_convert(None).to_pydatetime())] = float(size)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.set_checksubmit(False)
    for name, frame in bars.items():
        cerebro.adddata(make_feed(frame, name), name=name)
    cerebro.addstrategy(Replay, orders=book)
    start = time.perf_counter()
    cerebro.run()
    return time.perf_counter() - start


def run_ours(bars: dict[str, pd.DataFrame], config: Path) -> tuple[float, float, pd.DataFrame]:
    """(seconds of the whole run_backtest, seconds inside cerebro.run, orders)."""
    inner = [0.0]
    original = bt.Cerebro.run

    def timed_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            inner[0] += time.perf_counter() - start

    bt.Cerebro.run = timed_run
    try:
        start = time.perf_counter()
        result = bt_module.run_backtest(
            list(bars), bars=bars, config=load_config(config), asset_specific=False
        )
        total = time.perf_counter() - start
    finally:
        bt.Cerebro.run = original
    return total, inner[0], result.orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 x 20k and 10 x 2k bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    cases = [(1, 20_000), (10, 2_000)] if args.quick else [(1, 100_000), (10, 10_000)]
    with tempfile.TemporaryDirectory() as tmp:
        warm = random_walk(5_000, seed=99)
        shipped = tiny_registry(Path(tmp), warm)
        print(f"{'case':<14}{'policy':<16}{'SMA bars/s':>12}{'ours bt':>12}{'ours all':>12}"
              f"{'ratio bt':>10}{'ratio all':>10}{'orders':>8}{'SMA orders':>12}"
              f"{'replay bars/s':>15}{'ours/replay':>13}")  # fmt: skip
        for n_symbols, n_bars in cases:
            bars = {f"S{i:02d}/USD": random_walk(n_bars, seed=1_000 + i) for i in range(n_symbols)}
            total_bars = n_symbols * n_bars
            _, sma_orders = run_sma(bars, count=True)
            entry = matched_entry(bars, shipped, sma_orders)
            matched = tiny_registry(Path(tmp), warm, entry=entry)
            for label, config in (("shipped", shipped), (f"matched {entry:.4f}", matched)):
                sma, _ = run_sma(bars)
                total, inner, orders = run_ours(bars, config)
                replay = run_replay(bars, orders)
                print(
                    f"{f'{n_symbols} x {n_bars}':<14}{label:<16}{total_bars / sma:>12,.0f}"
                    f"{total_bars / inner:>12,.0f}{total_bars / total:>12,.0f}"
                    f"{sma / inner:>10.2f}{sma / total:>10.2f}{len(orders):>8}{sma_orders:>12}"
                    f"{total_bars / replay:>15,.0f}{replay / total:>13.2f}"
                )


if __name__ == "__main__":
    main()
