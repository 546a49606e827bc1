"""Model cards: ``<id>.card.json`` beside each ``.onnx``: training data and out-of-sample skill."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from modelyard._atomic import write_text_atomic
from modelyard.errors import ModelLoadError

__all__ = ["FoldMetrics", "ModelCard", "card_path", "package_versions", "read_card"]

_PACKAGES = ("numpy", "pandas", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "modelyard")


class FoldMetrics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fold: int | str
    start: str | None = None
    ic: float | None
    rank_ic: float | None
    hit_rate: float | None
    n: int


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    asset_class: str
    spec: str
    features: tuple[str, ...]
    horizon: int
    timeframe: str
    symbols: tuple[str, ...]
    training_start: str
    training_end: str
    # symbol -> (first, last) bar timestamp it contributed training rows from
    windows: dict[str, tuple[str, str]] = {}
    rows: int
    data_sha256: str
    penalty: dict[str, Any]
    parity_max_abs_diff: float
    sha256: str
    interface_version: str
    folds: tuple[FoldMetrics, ...]
    overall: FoldMetrics
    icir: float | None
    packages: dict[str, str]

    def write(self, path: Path) -> Path:
        return write_text_atomic(path, self.model_dump_json(indent=2) + "\n")


def card_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".card.json")


def package_versions() -> dict[str, str]:
    return {name: version(name) for name in _PACKAGES}


def read_card(onnx_path: Path) -> ModelCard | None:
    """The card beside ``onnx_path``; None when there is none; ``ModelLoadError`` when corrupt."""
    path = card_path(onnx_path)
    if not path.is_file():
        return None
    try:
        return ModelCard.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise ModelLoadError(
            f"model card {path} is corrupt ({first}); retrain the model or delete the card"
        ) from exc
