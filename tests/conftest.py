"""Shared fixtures: small real ONNX models built with skl2onnx, and registries around them."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelyard._paths import project_root

REPO = project_root()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden snapshots under tests/golden/ instead of comparing",
    )


def build_onnx(path: Path, features: Sequence[str], *, seed: int = 0, model_id: str = "m") -> Path:
    """Fit a tiny StandardScaler+Ridge pipeline on random data and write it as ONNX."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelyard.models.export import to_onnx_bytes

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, len(features)))
    y = x @ rng.normal(size=len(features)) * 1e-3 + rng.normal(scale=1e-4, size=256)
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_onnx_bytes(pipeline, list(features), model_id=model_id))
    return path


@pytest.fixture(scope="session")
def base_config_dict() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "config" / "assets.yaml").read_text())
    return loaded


@pytest.fixture
def registry_dir(tmp_path: Path, base_config_dict: dict[str, Any]) -> Path:
    """A copy of the registry whose universal, crypto and equities models are tiny real ONNX
    files in ``tmp_path/models``; options_v1 is absent. Contracts are left out."""
    raw = yaml.safe_load(yaml.safe_dump(base_config_dict))
    for seed, (model_id, spec) in enumerate(raw["models"].items()):
        spec.pop("contract", None)
        spec["path"] = f"models/{model_id}.onnx"
        if model_id != "options_v1":
            build_onnx(tmp_path / spec["path"], spec["features"], seed=seed, model_id=model_id)
    (tmp_path / "assets.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path


@pytest.fixture
def no_flag_env() -> Iterator[None]:
    """Run with FLAG_ASSET_SPECIFIC_MODELS unset, whatever the outer environment says."""
    saved = os.environ.pop("FLAG_ASSET_SPECIFIC_MODELS", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["FLAG_ASSET_SPECIFIC_MODELS"] = saved
