"""Symbol → asset class → model: the classifier, the registry and the router."""

from modelyard.routing.classifier import AssetClassifier, Classification
from modelyard.routing.contract_checks import ContractCheck
from modelyard.routing.decision import FALLBACK_REASONS, RouteDecision
from modelyard.routing.registry import ModelRegistry
from modelyard.routing.router import AssetSpecificModelRouter

__all__ = [
    "FALLBACK_REASONS",
    "AssetClassifier",
    "AssetSpecificModelRouter",
    "Classification",
    "ContractCheck",
    "ModelRegistry",
    "RouteDecision",
]
