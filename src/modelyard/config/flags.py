"""The routing flag ``FLAG_ASSET_SPECIFIC_MODELS``: the environment overrides the config."""

from __future__ import annotations

import os

from modelyard.config.schema import AssetsConfig
from modelyard.errors import ConfigError

__all__ = ["FLAG_ENV", "asset_specific_enabled"]

FLAG_ENV = "FLAG_ASSET_SPECIFIC_MODELS"
_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no", ""}


def asset_specific_enabled(config: AssetsConfig, override: bool | None = None) -> bool:
    """Whether asset-specific routing is on: ``override`` > environment > config."""
    if override is not None:
        return override
    raw = os.environ.get(FLAG_ENV)
    if raw is None:
        return config.routing.asset_specific
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {FLAG_ENV}={raw!r} must be 0 or 1")
