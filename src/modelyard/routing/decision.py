"""The traceable record of which model served a symbol, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["FALLBACK_REASONS", "Reason", "RouteDecision"]

Reason = Literal[
    "flag_off",  # asset-specific routing is off: the universal model serves everything
    "asset_specific",  # the class's own model serves
    "no_model",  # the class names no model; the universal model serves by design
    "missing",  # the class's model file does not exist
    "load_error",  # the file exists but does not load (corrupt, sha256 mismatch, bad shape)
    "feature_mismatch",  # the model's declared features differ from the config's list
    "contract_violation",  # the feature row broke the class's data contract
]
FALLBACK_REASONS: frozenset[str] = frozenset(
    {"missing", "load_error", "feature_mismatch", "contract_violation"}
)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    symbol: str
    canonical: str
    asset_class: str
    model_id: str
    model_sha256: str | None
    reason: Reason
    detail: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.reason in FALLBACK_REASONS

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)
