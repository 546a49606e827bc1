"""The signal policy (pure), RoutedStrategy (Backtrader), ``run_backtest`` and the Result schema."""

from modelyard.strategies.backtest import DEFAULT_SYMBOLS, run_backtest
from modelyard.strategies.policy import (
    GrossLimiter,
    GrossTimeline,
    PolicyState,
    limit_gross,
    target_weights,
)
from modelyard.strategies.results import Result, compute_stats, trades_from_orders
from modelyard.strategies.routed import (
    LiveTargets,
    PrecomputedTargets,
    RoutedBroker,
    RoutedStrategy,
    StrategyCore,
)
from modelyard.strategies.signals import predict_history, target_weight_history

__all__ = [
    "DEFAULT_SYMBOLS",
    "GrossLimiter",
    "GrossTimeline",
    "LiveTargets",
    "PolicyState",
    "PrecomputedTargets",
    "Result",
    "RoutedBroker",
    "RoutedStrategy",
    "StrategyCore",
    "compute_stats",
    "limit_gross",
    "predict_history",
    "run_backtest",
    "target_weight_history",
    "target_weights",
    "trades_from_orders",
]
