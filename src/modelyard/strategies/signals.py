"""Features and predictions for whole bar histories through the router (both engines).

:func:`predict_history` computes each symbol's features with the vectorized
:func:`~modelyard.models.features.compute` for the spec of the model that serves it (plus the
universal model's spec, which a contract fallback needs) and passes every symbol's feature
columns to :meth:`AssetSpecificModelRouter.predict_arrays` at once: one batched inference per
model, each model's matrix built directly in its dtype (no stacked frame).
Rows whose served-model features are not all finite (the warm-up) get a NaN prediction, which
the policy turns into "flat".

:func:`target_weight_history` then applies the policy per symbol and the gross limit across
symbols, giving the per-bar target weights an engine trades.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from modelyard.config.schema import AssetsConfig, CostConfig, PolicyConfig
from modelyard.models.features import compute, spec_for
from modelyard.routing.decision import RouteDecision
from modelyard.routing.router import AssetSpecificModelRouter
from modelyard.strategies.policy import DEFAULT_MAX_GROSS, limit_gross, target_weights

__all__ = [
    "SymbolSetup",
    "predict_history",
    "symbol_setups",
    "target_weight_history",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SymbolSetup:
    """What the engines need to know about one symbol: its class, policy and costs."""

    symbol: str
    asset_class: str
    calendar: str
    policy: PolicyConfig
    costs: CostConfig


def symbol_setups(router: AssetSpecificModelRouter, symbols: Sequence[str]) -> list[SymbolSetup]:
    """Asset class, policy, costs and calendar of each symbol, by the router's classifier."""
    out = []
    for symbol in symbols:
        cls = router.classifier.classify(symbol).asset_class
        conf = router.config.class_config(cls)
        out.append(SymbolSetup(symbol, cls, conf.calendar, conf.policy, conf.costs))
    return out


def _feature_names(config: AssetsConfig, model_id: str) -> tuple[str, ...]:
    return config.models[model_id].features


def predict_history(
    router: AssetSpecificModelRouter,
    bars: Mapping[str, pd.DataFrame],
    *,
    features: dict[tuple[str, str], pd.DataFrame] | None = None,
) -> tuple[dict[str, pd.Series], list[RouteDecision]]:
    """Predictions (float64, NaN in warm-up) per symbol on its own bar index, and the routes.

    ``features`` (``(symbol, feature spec) -> frame``), when given, keeps the feature frames
    computed here and reuses those already in it: the two routing variants of one run share
    the universal model's features (the asset-specific variant computes them too, for its
    fallback rows). Only pass the same dict for the same ``bars``."""
    decisions = [router.route(symbol) for symbol in bars]
    universal = router.universal_id
    universal_names = _feature_names(router.config, universal)
    blocks: list[dict[str, np.ndarray]] = []
    keep_masks: dict[str, np.ndarray] = {}
    for decision in decisions:
        symbol = decision.symbol
        frame = bars[symbol]
        spec_names = [router.registry.spec(decision.model_id).spec]
        if decision.model_id != universal:
            spec_names.append(router.registry.spec(universal).spec)
        columns: dict[str, np.ndarray] = {}
        for name in dict.fromkeys(spec_names):
            part = None if features is None else features.get((symbol, name))
            if part is None:
                part = compute(frame, spec_for(name))
                if features is not None:
                    features[(symbol, name)] = part
            # one conversion per frame, not one lookup per column (a DataFrame column lookup
            # costs about 20 us; a feature frame is one float64 block, so these are views)
            matrix = part.to_numpy(dtype=np.float64)
            for i, column in enumerate(part.columns):
                if column not in columns:
                    columns[column] = matrix[:, i]
        served = _feature_names(router.config, decision.model_id)
        keep = np.ones(len(frame), dtype=bool)
        for column in served:
            keep &= np.isfinite(np.asarray(columns[column], dtype=np.float64))
        keep_masks[symbol] = keep
        needed = dict.fromkeys((*served, *universal_names))
        # warm-up rows lead: the kept rows are then a suffix, and the block views the columns
        first = int(np.argmax(keep)) if keep.any() else len(keep)
        rows: slice | np.ndarray = slice(first, None) if keep[first:].all() else keep
        blocks.append({c: columns[c][rows] for c in needed if c in columns})
    values = router.predict_arrays(list(keep_masks), blocks)
    predictions: dict[str, pd.Series] = {}
    for (symbol, keep), pred in zip(keep_masks.items(), values, strict=True):
        out = np.full(len(keep), np.nan, dtype=np.float64)
        out[keep] = pred
        predictions[symbol] = pd.Series(out, index=bars[symbol].index, name="prediction")
        log.debug("%s: %d predictions, %d warm-up rows", symbol, len(pred), len(keep) - len(pred))
    return predictions, decisions


def target_weight_history(
    predictions: Mapping[str, pd.Series],
    setups: Sequence[SymbolSetup],
    *,
    max_gross: float = DEFAULT_MAX_GROSS,
) -> dict[str, pd.Series]:
    """Per-symbol target weights (policy, then the gross limit across symbols)."""
    raw = {
        s.symbol: pd.Series(
            target_weights(predictions[s.symbol].to_numpy(dtype=np.float64), s.policy),
            index=predictions[s.symbol].index,
        )
        for s in setups
    }
    return limit_gross(raw, max_gross)
