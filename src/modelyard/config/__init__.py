"""The registry schema, its loader and the routing flag."""

from modelyard.config.flags import FLAG_ENV, asset_specific_enabled
from modelyard.config.loader import config_summary, load_config, parse_config
from modelyard.config.schema import (
    ASSET_CLASSES,
    AssetClassConfig,
    AssetsConfig,
    CostConfig,
    ModelConfig,
    PolicyConfig,
    RoutingConfig,
)

__all__ = [
    "ASSET_CLASSES",
    "FLAG_ENV",
    "AssetClassConfig",
    "AssetsConfig",
    "CostConfig",
    "ModelConfig",
    "PolicyConfig",
    "RoutingConfig",
    "asset_specific_enabled",
    "config_summary",
    "load_config",
    "parse_config",
]
