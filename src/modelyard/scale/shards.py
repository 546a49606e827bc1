"""The per-symbol work of :func:`~modelyard.strategies.compare.compare` as pure shard functions.

A shard is a few symbols. Its work is one pure function of what it is given (bars, config,
run parameters), so any executor can run it anywhere and a retry gives the same bits:
:func:`signals_shard` (stage ``signals``): per symbol and routing variant the route, the
features and the batched predictions, and the prediction quality (IC, rank IC, hit rate)
against the realised forward returns.

Then the accounts (portfolio, class and symbol sleeves: they need every symbol) run as tasks
of their own, one per variant when there are several workers (:mod:`~modelyard.scale.shared`):
they turn the predictions into the policy's weights and apply the gross limit across every
symbol (it couples the symbols bar by bar). Shards run BLAS on one thread
(:func:`one_blas_thread`), so their bits do not depend on the process's thread count.

Workers keep ONE routing set in a module-level cache (:func:`cached_routing`), keyed by the
config's hash and the model files' size and mtime: one :class:`ModelRegistry` whose ONNX
sessions load once per worker and model, and the two routers (flag off / on) that share it.
Only the config travels with a task (a few kB); the package and the model files are on the
workers. :func:`worker_state` reports what a worker holds.

A shard that fails for a modelyard reason (bad data, a contract, strict routing, a model that
cannot load) returns a :class:`ShardFailure` naming its symbols instead of raising, so that
executors do not retry a deterministic failure and the other shards' results still count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modelyard._blas import one_blas_thread
from modelyard._memory import retain_heap_for_process
from modelyard.config import AssetsConfig, load_config
from modelyard.errors import ModelyardError
from modelyard.models.features import compute_target
from modelyard.models.metrics import metrics
from modelyard.routing.decision import RouteDecision
from modelyard.routing.registry import ModelRegistry
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies._vbt_layout import build_layout
from modelyard.strategies.signals import predict_history, symbol_setups
from modelyard.strategies.vectorized import VARIANT_FLAGS

__all__ = [
    "RunParams",
    "ShardFailure",
    "SignalsPiece",
    "SignalsTask",
    "cached_routing",
    "config_key",
    "run_signals",
    "signals_shard",
    "warm_worker",
    "worker_state",
]

log = logging.getLogger(__name__)

Bars = Mapping[str, pd.DataFrame]
#: A test-only hook called at the start of every shard attempt (e.g. to crash a worker once).
ShardHook = Callable[[str, int, tuple[str, ...]], None]


@dataclass(frozen=True)
class ShardFailure:
    """A shard whose symbols are missing from the result, and why.

    ``stage`` is ``signals`` (the symbols are left out of every level). ``error`` is
    the exception's type name: a modelyard error (e.g. ``DataError``) or ``WorkerLost`` when
    the shard's worker died on every attempt.
    """

    shard: int
    symbols: tuple[str, ...]
    stage: str
    error: str
    message: str
    attempts: int = 1

    def describe(self) -> str:
        return (
            f"shard {self.shard} ({', '.join(self.symbols)}) failed in stage {self.stage} "
            f"after {self.attempts} attempt(s): {self.error}: {self.message}"
        )


@dataclass(frozen=True)
class RunParams:
    """What every shard of one run shares (small: this is what travels besides the bars)."""

    config: AssetsConfig
    config_key: str
    variants: tuple[str, ...]
    max_gross: float
    cash: float
    hook: ShardHook | None = None


@dataclass(frozen=True)
class SignalsTask:
    shard: int
    symbols: tuple[str, ...]
    params: RunParams


@dataclass(frozen=True)
class SignalsPiece:
    """Stage ``signals`` of one shard; every mapping is keyed by variant, then symbol."""

    shard: int
    symbols: tuple[str, ...]
    # arrays on each symbol's own bars (the driver has their index): less to send back
    predictions: dict[str, dict[str, np.ndarray]]
    decisions: dict[str, list[RouteDecision]]
    quality: dict[str, dict[str, dict[str, float]]]
    seconds: float
    pid: int


# --- the per-worker router cache -----------------------------------------------------------
@dataclass
class _Routing:
    """One registry (one ONNX session per model, loaded lazily) and a router per variant."""

    key: str
    stamp: tuple[tuple[str, int, int], ...]
    registry: ModelRegistry
    routers: dict[str, AssetSpecificModelRouter]
    shards: int = 0

    @classmethod
    def build(cls, config: AssetsConfig, key: str) -> _Routing:
        registry = ModelRegistry(config)
        routers = {
            variant: AssetSpecificModelRouter(config, registry=registry, asset_specific=flag)
            for variant, flag in VARIANT_FLAGS.items()
        }
        return cls(key, _stamp(config), registry, routers)


_LOCK = threading.Lock()
_CACHE: dict[str, _Routing] = {}  # at most one entry: the routing of the latest config
_BUILDS: Counter[str] = Counter()  # routing sets built in this process, by config key


def config_key(config: AssetsConfig) -> str:
    """A stable hash of a config (its JSON dump)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def _stamp(config: AssetsConfig) -> tuple[tuple[str, int, int], ...]:
    """Size and mtime of every model file: a retrained model invalidates the cache."""
    out = []
    for spec in config.models.values():
        try:
            st = spec.path.stat()
            out.append((str(spec.path), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(spec.path), -1, -1))
    return tuple(out)


def cached_routing(config: AssetsConfig, key: str) -> _Routing:
    """This process's routing for ``config`` (built on first use, then reused).

    One entry is kept: a run with another config (or changed model files) replaces it, so a
    worker never holds more than one router set and one session per model.
    """
    with _LOCK:
        entry = _CACHE.get("current")
        if entry is None or entry.key != key or entry.stamp != _stamp(config):
            entry = _Routing.build(config, key)
            _CACHE["current"] = entry
            _BUILDS[key] += 1
            log.debug("pid %d: routing built for config %s", os.getpid(), key)
        entry.shards += 1
        return entry


def local_routing(config: AssetsConfig) -> _Routing:
    """A routing for one in-process run (not cached: fresh routers, as a serial run had)."""
    return _Routing.build(config, config_key(config))


def worker_state() -> dict[str, Any]:
    """What this process holds: ``routers`` (cached routing sets, 0 or 1), ``builds`` (sets
    built since start), ``model_loads`` (ONNX loads per model in the cached registry),
    ``sessions`` (models loaded now), ``shards`` (shards served by the cached set)."""
    with _LOCK:
        entry = _CACHE.get("current")
        return {
            "pid": os.getpid(),
            "routers": len(_CACHE),
            "variant_routers": len(entry.routers) if entry else 0,
            "config_key": entry.key if entry else None,
            "builds": sum(_BUILDS.values()),
            "model_loads": (
                {m: n for m, n in entry.registry.load_count.items() if n} if entry else {}
            ),
            "sessions": len(entry.registry._loaded) if entry else 0,
            "shards": entry.shards if entry else 0,
        }


# --- stage 1: signals ----------------------------------------------------------------------
def signals_shard(bars: Bars, task: SignalsTask) -> SignalsPiece | ShardFailure:
    """Stage ``signals`` on a worker, through this process's cached routing."""
    return run_signals(bars, task, cached_routing(task.params.config, task.params.config_key))


def run_signals(bars: Bars, task: SignalsTask, routing: _Routing) -> SignalsPiece | ShardFailure:
    """Stage ``signals`` of ``task.symbols`` (module docstring) with ``routing``."""
    with one_blas_thread():
        return _run_signals(bars, task, routing)


def _run_signals(bars: Bars, task: SignalsTask, routing: _Routing) -> SignalsPiece | ShardFailure:
    params = task.params
    if params.hook is not None:
        params.hook("signals", task.shard, task.symbols)
    started = time.perf_counter()
    names = list(task.symbols)
    try:
        frames = {s: bars[s] for s in names}
        predictions: dict[str, dict[str, np.ndarray]] = {}
        decisions: dict[str, list[RouteDecision]] = {}
        quality: dict[str, dict[str, dict[str, float]]] = {}
        targets: dict[tuple[str, int], np.ndarray] = {}
        features: dict[tuple[str, str], pd.DataFrame] = {}  # shared by the variants
        for variant in params.variants:
            preds, routes = predict_history(routing.routers[variant], frames, features=features)
            predictions[variant] = {s: p.to_numpy(np.float64) for s, p in preds.items()}
            decisions[variant] = routes
            quality[variant] = {}
            for d in routes:
                horizon = params.config.models[d.model_id].horizon
                key = (d.symbol, horizon)
                if key not in targets:
                    targets[key] = compute_target(frames[d.symbol], horizon).to_numpy(np.float64)
                m = metrics(preds[d.symbol].to_numpy(np.float64), targets[key])
                quality[variant][d.symbol] = {
                    "ic": m.ic,
                    "rank_ic": m.rank_ic,
                    "hit_rate": m.hit_rate,
                }
    except ModelyardError as exc:
        return _failure(task.shard, task.symbols, "signals", exc)
    return SignalsPiece(
        task.shard,
        task.symbols,
        predictions,
        decisions,
        quality,
        time.perf_counter() - started,
        os.getpid(),
    )


def _failure(shard: int, symbols: tuple[str, ...], stage: str, exc: Exception) -> ShardFailure:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.warning("shard %d (%s) failed in %s: %s", shard, ", ".join(symbols), stage, message)
    return ShardFailure(shard, symbols, stage, type(exc).__name__, message)


# --- warm-up -------------------------------------------------------------------------------
def _warm_bars() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    out = {}
    for name, freq in (("WARM", "B"), ("WRM/USD", "D")):
        index = pd.date_range("2020-01-01", periods=260, freq=freq, tz="UTC", name="timestamp")
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(index))))
        open_ = np.r_[close[0], close[:-1]]
        out[name] = pd.DataFrame(
            {
                "open": open_,
                "high": np.maximum(open_, close) * 1.001,
                "low": np.minimum(open_, close) * 0.999,
                "close": close,
                "volume": rng.uniform(1.0, 100.0, len(index)),
            },
            index=index,
        )
    return out


def warm_worker() -> dict[str, Any]:
    """Compile what a shard runs, so the first real shard does not pay for it.

    Features, the contract checks and ONNX inference (through a throwaway router of the
    default config: the cache is left empty), and the accounts task with both vectorbt engines
    (``from_orders`` and the ``from_order_func`` callbacks, which numba compiles in every new
    process, about 3.5 s per array layout) on one column and on two. Best effort: a step
    that fails is logged, not raised. (``compare`` uses no ``from_signals``, so that kernel is
    not compiled.) It also keeps this process's freed memory in glibc's heap from now on
    (:func:`~modelyard._memory.retain_heap_for_process`): each shard reuses the last one's
    pages instead of faulting fresh ones.
    """
    started = time.perf_counter()
    steps: list[str] = []
    if retain_heap_for_process():
        steps.append("retained heap")
    bars = _warm_bars()
    names = list(bars)
    try:
        config = load_config(None)
        params = RunParams(config, config_key(config), tuple(VARIANT_FLAGS), 1.0, 100_000.0)
        piece = run_signals(bars, SignalsTask(-1, tuple(names), params), local_routing(config))
        if isinstance(piece, ShardFailure):
            raise RuntimeError(piece.describe())
        steps.append("signals")
        # shared imports this module
        from modelyard.scale.shared import SharedTask, shared_shard

        router = AssetSpecificModelRouter(config, asset_specific=False)
        setups = tuple(symbol_setups(router, names))
        variants = params.variants
        horizons = {m: spec.horizon for m, spec in config.models.items()}
        # one column and two: numba types the single-column arrays differently (C vs F order)
        for engine in ("orders", "order_func"):
            for part in (names, names[:1]):
                task = SharedTask(
                    setups[: len(part)],
                    {v: {s: piece.predictions[v][s] for s in part} for v in variants},
                    params.max_gross,
                    engine,
                    params.cash,
                    {},
                    {v: tuple(d for d in piece.decisions[v] if d.symbol in part) for v in variants},
                    horizons,
                )
                shared_shard(task.part(variants[:1]), build_layout(bars, list(part)))
            steps.append(engine)
    except Exception as exc:  # best effort: a cold worker is slower, not wrong
        log.warning("worker warm-up stopped after %s: %s", steps or "nothing", exc)
    seconds = time.perf_counter() - started
    log.info("pid %d warmed (%s) in %.1fs", os.getpid(), ", ".join(steps), seconds)
    return {"pid": os.getpid(), "seconds": seconds, "steps": steps}
