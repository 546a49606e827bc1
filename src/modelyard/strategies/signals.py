"""Features and predictions for whole bar histories through the router (both engines).

:func:`predict_history` computes each symbol's features with the vectorized
:func:`~modelyard.models.features.compute` for the spec of the model that serves it (plus the
universal model's spec, which a contract fallback needs), stacks every symbol into one frame
and calls :meth:`AssetSpecificModelRouter.predict_frame` once: one batched inference per model.
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
    router: AssetSpecificModelRouter, bars: Mapping[str, pd.DataFrame]
) -> tuple[dict[str, pd.Series], list[RouteDecision]]:
    """Predictions (float64, NaN in warm-up) per symbol on its own bar index, and the routes."""
    decisions = [router.route(symbol) for symbol in bars]
    universal = router.universal_id
    blocks: list[pd.DataFrame] = []
    keep_masks: dict[str, np.ndarray] = {}
    for decision in decisions:
        symbol = decision.symbol
        frame = bars[symbol]
        spec_names = [router.registry.spec(decision.model_id).spec]
        if decision.model_id != universal:
            spec_names.append(router.registry.spec(universal).spec)
        feats: pd.DataFrame | None = None
        for name in dict.fromkeys(spec_names):
            part = compute(frame, spec_for(name))
            if feats is None:
                feats = part
            else:
                extra = [c for c in part.columns if c not in feats.columns]
                feats = pd.concat([feats, part[extra]], axis=1)
        assert feats is not None
        served = list(_feature_names(router.config, decision.model_id))
        keep = np.isfinite(feats[served].to_numpy(dtype=np.float64)).all(axis=1)
        keep_masks[symbol] = keep
        block = feats[keep].reset_index(drop=True)
        block.insert(0, "symbol", symbol)
        blocks.append(block)
    predictions: dict[str, pd.Series] = {}
    stacked = pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame()
    values = (
        np.asarray(router.predict_frame(stacked), dtype=np.float64)
        if len(stacked)
        else np.empty(0, dtype=np.float64)
    )
    offset = 0
    for symbol, keep in keep_masks.items():
        out = np.full(len(keep), np.nan, dtype=np.float64)
        n = int(keep.sum())
        out[keep] = values[offset : offset + n]
        offset += n
        predictions[symbol] = pd.Series(out, index=bars[symbol].index, name="prediction")
        log.debug("%s: %d predictions, %d warm-up rows", symbol, n, len(keep) - n)
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
