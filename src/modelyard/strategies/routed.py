"""RoutedStrategy: the routed model's target weights traded in Backtrader.

The Backtrader subclasses here are thin; the logic lives in plain objects:

* a *target source* gives the target weight of every data that has a new bar at a step:
  :class:`PrecomputedTargets` (backtests: weights computed up front for the whole history by
  :mod:`modelyard.strategies.signals`; ``next()`` only looks up ``weights[i][bar]``) or
  :class:`LiveTargets` (paper trading: :class:`OnlineFeatures` and ``router.predict`` bar by
  bar, :class:`PolicyState`, :class:`GrossLimiter`; nothing is assumed about the future);
* :func:`plan_orders` turns weights into target sizes (PARITY.md): at the close of bar ``t``,
  ``units = w * broker.getvalue() / close[t]`` (fractional), caps enforced, orders under
  :data:`MIN_ORDER_UNITS` dropped, sells first (ascending target − current notional);
* :class:`StrategyCore` runs a step: which datas have a new bar (``len(data)`` advanced; a
  data without one does not trade), the targets (a target equal to the data's previous one
  places no order, :func:`~modelyard.strategies.policy.order_targets`), the orders
  (``order_target_size``, filled by
  the broker at the open of that data's next bar), and records equity and fills
  (``order.executed.iterpending()``).

:class:`RoutedBroker` is Backtrader's ``BackBroker`` with slippage per data (Backtrader's own
slippage is broker-wide): it swaps ``slip_perc`` for the order's data while the order executes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import backtrader as bt
import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.config.schema import PolicyConfig
from modelyard.feeds.bt_feeds import bt_num_to_utc
from modelyard.models.features import OnlineFeatures, spec_for
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies.policy import DEFAULT_MAX_GROSS, GrossLimiter, PolicyState

__all__ = [
    "MIN_ORDER_UNITS",
    "Bar",
    "LiveTargets",
    "PlannedOrder",
    "PrecomputedTargets",
    "RoutedBroker",
    "RoutedStrategy",
    "StrategyCore",
    "TargetSource",
    "plan_orders",
]

log = logging.getLogger(__name__)

MIN_ORDER_UNITS = 1e-6
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar as the live target source sees it (UTC timestamp)."""

    timestamp: pd.Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float


class TargetSource(Protocol):
    """Target weights of the datas that have a new bar at a step."""

    needs_bars: bool

    def targets(
        self, ready: Sequence[int], positions: Sequence[int], bars: Sequence[Bar] | None
    ) -> list[float]: ...


class PrecomputedTargets:
    """Backtest mode: ``weights[i][k]`` is the target of data ``i`` at its ``k``-th bar."""

    needs_bars = False

    def __init__(self, weights: Sequence[npt.ArrayLike]) -> None:
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        self._lists = [w.tolist() for w in self.weights]

    def targets(
        self, ready: Sequence[int], positions: Sequence[int], bars: Sequence[Bar] | None
    ) -> list[float]:
        lists = self._lists
        return [lists[i][k] for i, k in zip(ready, positions, strict=True)]


class LiveTargets:
    """Live mode: features, prediction, policy and gross limit one bar at a time."""

    needs_bars = True

    def __init__(
        self,
        router: AssetSpecificModelRouter,
        symbols: Sequence[str],
        policies: Sequence[PolicyConfig],
        *,
        max_gross: float = DEFAULT_MAX_GROSS,
    ) -> None:
        self.router = router
        self.symbols = list(symbols)
        self.states = [PolicyState(p) for p in policies]
        self.limiter = GrossLimiter(len(self.symbols), max_gross)
        self.features: list[list[OnlineFeatures]] = []
        self.names: list[tuple[str, ...]] = []
        universal = router.universal_id
        for symbol in self.symbols:
            model_id = router.route(symbol).model_id
            specs = [router.registry.spec(model_id).spec, router.registry.spec(universal).spec]
            self.features.append([OnlineFeatures(spec_for(s)) for s in dict.fromkeys(specs)])
            self.names.append(router.registry.spec(model_id).features)
        self.last_predictions: dict[str, float] = {}

    def _predict(self, i: int, bar: Bar) -> float:
        row: dict[str, float] = {}
        ready = True
        for online in self.features[i]:
            values = online.update(bar)
            if values is None:
                ready = False
            else:
                for key, value in values.items():
                    row.setdefault(key, value)
        if not ready or not all(math.isfinite(row[n]) for n in self.names[i]):
            return math.nan
        return self.router.predict(self.symbols[i], row)

    def targets(
        self, ready: Sequence[int], positions: Sequence[int], bars: Sequence[Bar] | None
    ) -> list[float]:
        if bars is None:
            raise ValueError("LiveTargets needs the bars")
        weights = []
        for i, bar in zip(ready, bars, strict=True):
            pred = self._predict(i, bar)
            self.last_predictions[self.symbols[i]] = pred
            weights.append(self.states[i].step(pred))
        return self.limiter.step(list(ready), weights)


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    index: int
    target: float
    delta_notional: float


def plan_orders(
    value: float,
    items: Sequence[tuple[int, float, float, float]],
    caps: Sequence[float],
) -> list[PlannedOrder]:
    """Target sizes from ``(data index, weight, close, current units)``, sells first.

    The weight is clipped to ``[-cap, cap]`` of its data; ``units = w * value / close``;
    orders moving less than :data:`MIN_ORDER_UNITS` are dropped; the rest are sorted by
    ascending ``(target - current) * close`` (PARITY.md), computed as vectorbt's
    ``call_seq="auto"`` computes it, ``w * value - current * close``: two orders of equal
    notional tie exactly and keep their data order, as in vectorbt.
    """
    out = []
    for i, weight, close, current in items:
        cap = caps[i]
        w = cap if weight > cap else (-cap if weight < -cap else weight)
        if not (close > 0.0 and math.isfinite(w)):
            continue
        target = w * value / close
        if abs(target - current) < MIN_ORDER_UNITS:
            continue
        # keyed as vectorbt's call_seq='auto' rounds it: exact ties stay in data order
        out.append(PlannedOrder(i, target, w * value - current * close))
    out.sort(key=lambda o: o.delta_notional)
    return out


class StrategyCore:
    """Everything :class:`RoutedStrategy` does, in plain Python (see the module docstring)."""

    def __init__(
        self,
        symbols: Sequence[str],
        source: TargetSource,
        caps: Sequence[float],
        *,
        indexes: Sequence[pd.DatetimeIndex] | None = None,
        progress: Progress | None = None,
        total_steps: int = 0,
        progress_every: int = 250,
    ) -> None:
        self.symbols = list(symbols)
        self.source = source
        self.caps = [float(c) for c in caps]
        self._stamps = (
            [pd.DatetimeIndex(ix).as_unit("ns").asi8 for ix in indexes] if indexes else None
        )
        self.progress = progress
        self.total_steps = total_steps
        self.progress_every = progress_every
        self.steps = 0
        self.equity_times: list[int] = []
        self.equity_values: list[float] = []
        self.fills: list[tuple[int, str, str, float, float, float]] = []
        self.rejected: list[tuple[int, str, str]] = []
        self._last_len = [0] * len(self.symbols)
        self._held = [0.0] * len(self.symbols)
        self._datas: list[Any] = []
        self._data_index: dict[int, int] = {}
        self._strategy: Any = None

    def bind(self, strategy: Any) -> None:
        self._strategy = strategy
        self._datas = list(strategy.datas)
        if len(self._datas) != len(self.symbols):
            raise ValueError(f"{len(self._datas)} datas for {len(self.symbols)} symbols")
        self._data_index = {id(d): i for i, d in enumerate(self._datas)}

    def _stamp(self, i: int, k: int) -> int:
        if self._stamps is not None:
            return int(self._stamps[i][k])
        return int(bt_num_to_utc(self._datas[i].datetime[0]).value)

    def step(self) -> None:
        """One Backtrader step: trade the datas that have a new bar."""
        datas = self._datas
        ready: list[int] = []
        positions: list[int] = []
        last = self._last_len
        for i, data in enumerate(datas):
            n = len(data)
            if n > last[i]:
                last[i] = n
                ready.append(i)
                positions.append(n - 1)
        if not ready:
            return
        strategy = self._strategy
        broker = strategy.broker
        value = broker.getvalue()
        self.equity_times.append(self._stamp(ready[0], positions[0]))
        self.equity_values.append(value)
        bars = None
        if self.source.needs_bars:
            bars = [self._bar(i, k) for i, k in zip(ready, positions, strict=True)]
        weights = self.source.targets(ready, positions, bars)
        held = self._held
        items = []
        for i, w in zip(ready, weights, strict=True):
            if w == held[i]:
                continue  # an unchanged target places no order (policy.order_targets)
            held[i] = w
            items.append((i, w, datas[i].close[0], broker.getposition(datas[i]).size))
        for order in plan_orders(value, items, self.caps):
            if strategy.order_target_size(data=datas[order.index], target=order.target) is None:
                held[order.index] = math.nan  # held back (live gate): try again next bar
        self.steps += 1
        if self.progress is not None and self.steps % self.progress_every == 0:
            self.progress(self.steps, self.total_steps)

    def _bar(self, i: int, k: int) -> Bar:
        d = self._datas[i]
        return Bar(
            pd.Timestamp(self._stamp(i, k), tz="UTC"),
            float(d.open[0]),
            float(d.high[0]),
            float(d.low[0]),
            float(d.close[0]),
            float(d.volume[0]),
        )

    def on_order(self, order: Any) -> None:
        """Record the fills of this notification; log orders the broker refused."""
        i = self._data_index[id(order.data)]
        status = order.status
        if status in (order.Partial, order.Completed):
            stamp = self._stamp(i, len(order.data) - 1)
            for bit in order.executed.iterpending():
                size = float(bit.size)
                if size == 0.0:
                    continue
                self.fills.append(
                    (
                        stamp,
                        self.symbols[i],
                        "buy" if size > 0 else "sell",
                        abs(size),
                        float(bit.price),
                        float(bit.closedcomm + bit.openedcomm),
                    )
                )
        elif status in (order.Margin, order.Rejected, order.Canceled):
            stamp = self._stamp(i, len(order.data) - 1)
            self.rejected.append((stamp, self.symbols[i], order.getstatusname()))
            log.warning(
                "%s: order of %.6g units %s at %s",
                self.symbols[i],
                order.created.size,
                order.getstatusname().lower(),
                pd.Timestamp(stamp, tz="UTC"),
            )

    def fills_frame(self) -> pd.DataFrame:
        rows = self.fills
        return pd.DataFrame(
            {
                "timestamp": pd.to_datetime([r[0] for r in rows], utc=True, unit="ns").as_unit(
                    "ns"
                ),
                "symbol": pd.Series([r[1] for r in rows], dtype="str"),
                "side": pd.Series([r[2] for r in rows], dtype="str"),
                "size": np.array([r[3] for r in rows], dtype=np.float64),
                "price": np.array([r[4] for r in rows], dtype=np.float64),
                "fee": np.array([r[5] for r in rows], dtype=np.float64),
            }
        )

    def equity_series(self) -> pd.Series:
        index = (
            pd.to_datetime(self.equity_times, utc=True, unit="ns").as_unit("ns").rename("timestamp")
        )
        return pd.Series(np.asarray(self.equity_values, dtype=np.float64), index, name="equity")


class RoutedStrategy(bt.Strategy):  # type: ignore[misc]
    """Thin Backtrader shell around a :class:`StrategyCore` (param ``core``)."""

    params = (("core", None),)

    def __init__(self) -> None:
        core = self.p.core
        if not isinstance(core, StrategyCore):
            raise TypeError("RoutedStrategy needs core=StrategyCore(...)")
        self.core = core
        core.bind(self)

    def notify_order(self, order: Any) -> None:
        self.core.on_order(order)

    def prenext(self) -> None:
        # Datas with different start dates: trade the ones that have started.
        self.core.step()

    def next(self) -> None:
        self.core.step()


class RoutedBroker(bt.brokers.BackBroker):  # type: ignore[misc]
    """``BackBroker`` with slippage per data name (``slippage``: name → fraction)."""

    def __init__(self, slippage: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.slippage = dict(slippage or {})

    def _try_exec(self, order: Any) -> None:
        slip = self.slippage.get(order.data._name)
        if slip is None:
            super()._try_exec(order)
            return
        saved = self.p.slip_perc
        self.p.slip_perc = slip
        try:
            super()._try_exec(order)
        finally:
            self.p.slip_perc = saved
