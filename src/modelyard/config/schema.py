"""Typed schema of ``config/assets.yaml``: frozen pydantic models that reject unknown keys."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ASSET_CLASSES",
    "AssetClassConfig",
    "AssetsConfig",
    "CostConfig",
    "ModelConfig",
    "PolicyConfig",
    "RoutingConfig",
]

AssetClassName = Literal["crypto", "equities", "options"]
ASSET_CLASSES: tuple[AssetClassName, ...] = ("crypto", "equities", "options")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyConfig(_Frozen):
    """How a prediction becomes a target weight (see ``strategies/policy.py``)."""

    entry_threshold: float = Field(default=0.0, ge=0.0)
    exit_threshold: float = Field(default=0.0, ge=0.0)
    scale: float = Field(default=1.0, gt=0.0)
    cap: float = Field(default=0.5, gt=0.0, le=1.0)
    long_short: bool = False
    # a held weight moves only by more than this (absolute weight); 0 = every bar
    rebalance_band: float = Field(default=0.0, ge=0.0, lt=1.0)


class CostConfig(_Frozen):
    """Fees and slippage as fractions of traded notional (0.001 = 0.1%)."""

    fees: float = Field(default=0.001, ge=0.0, lt=0.1)
    slippage: float = Field(default=0.0005, ge=0.0, lt=0.1)


class AssetClassConfig(_Frozen):
    """One asset class: how symbols are recognised and which model serves them."""

    model: str | None = None
    fallback: bool = True
    symbols: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    calendar: Literal["24/7", "XNYS"] = "XNYS"
    # The first date the shipped models never saw: training uses bars before it, and
    # `modelyard compare` scores the bars from it on (its out-of-sample window).
    oos_start: date | None = None
    policy: PolicyConfig = PolicyConfig()
    costs: CostConfig = CostConfig()

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"patterns[{index}] {pattern!r} is not a valid regular expression: {exc}"
                ) from exc
        return value


class ModelConfig(_Frozen):
    """One model: its ONNX file, its ordered feature list and optionally its sha256."""

    path: Path
    features: tuple[str, ...] = Field(min_length=1)
    spec: str
    contract: Path | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    horizon: int = Field(default=1, ge=1)


class RoutingConfig(_Frozen):
    asset_specific: bool = False
    strict: bool = False


class AssetsConfig(_Frozen):
    """The whole registry. Paths are absolute once loaded (resolved against the file)."""

    version: Literal[1] = 1
    default_class: AssetClassName = "equities"
    universal: str
    routing: RoutingConfig = RoutingConfig()
    asset_classes: dict[AssetClassName, AssetClassConfig]
    models: dict[str, ModelConfig]
    source: Path | None = None

    def class_config(self, name: str) -> AssetClassConfig:
        return self.asset_classes[name]  # type: ignore[index]
