"""Tiny real ONNX models whose predictions are centred on real features, for backtests.

``tests/conftest.build_onnx`` fits on standard-normal inputs, so on real features (an RSI near
50, say) its predictions sit far from 0 and the policy never trades. Here each model's scaler
is fitted on the features of a synthetic random walk (fixed seed), so predictions are a few
1e-3 around 0 and cross the thresholds. Everything is deterministic: same seed, same bytes.

Import: ``from tests.integration.conftest_backtest import calibrated_registry``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

SEEDS = {"universal_v1": 101, "crypto_v1": 202, "equities_v1": 303}


def random_walk_bars(
    n: int, *, seed: int, freq: str = "D", start: str = "2015-01-01", price: float = 100.0
) -> pd.DataFrame:
    """Random-walk OHLCV bars with a UTC index (consistent OHLC, positive volume)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    close = price * np.exp(np.cumsum(rng.normal(0.0, 0.015, n)))
    open_ = np.concatenate([[price], close[:-1]]) * np.exp(rng.normal(0.0, 0.003, n))
    spread = np.abs(rng.normal(0.0, 0.006, n)) * close
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.lognormal(10.0, 0.5, n),
        },
        index=index,
    )


def build_calibrated_onnx(path: Path, spec_name: str, features: list[str], *, seed: int) -> Path:
    """StandardScaler + Ridge fitted on the spec's features of a synthetic random walk."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelyard.models.export import to_onnx_bytes
    from modelyard.models.features import compute, spec_for

    freq = "h" if spec_name == "crypto" else "D"
    frame = compute(random_walk_bars(3_000, seed=seed, freq=freq), spec_for(spec_name))
    x = frame[features].dropna().to_numpy()
    rng = np.random.default_rng(seed)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    y = z @ rng.normal(size=len(features)) * 1e-3 + rng.normal(scale=1e-3, size=len(x))
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_onnx_bytes(pipeline, list(features), model_id=path.stem))
    return path


def calibrated_registry(folder: Path, base: dict[str, Any]) -> Path:
    """``folder/assets.yaml``: the project registry with calibrated universal, crypto and
    equities models in ``folder/models``; options_v1 absent; contracts left out."""
    raw = yaml.safe_load(yaml.safe_dump(base))
    for model_id, spec in raw["models"].items():
        spec.pop("contract", None)
        spec["path"] = f"models/{model_id}.onnx"
        if model_id in SEEDS:
            build_calibrated_onnx(
                folder / spec["path"], spec["spec"], spec["features"], seed=SEEDS[model_id]
            )
    path = folder / "assets.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
