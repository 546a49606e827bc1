"""Batch and single-row inference: onnxruntime against scikit-learn's ``predict``, side by side.

Uses the shipped equities model's pipeline refitted from its card's penalty on the bundled
data, and the shipped ONNX file, on the same rows. Prints both ratios.

Run: ``python benchmarks/inference.py [--rows 100000]``.
"""

from __future__ import annotations

import argparse
import logging
import timeit

import numpy as np

from modelyard.config import load_config
from modelyard.feeds import load_bars
from modelyard.models.cards import read_card
from modelyard.models.dataset import build_dataset
from modelyard.models.onnx_model import OnnxModel
from modelyard.models.training import default_symbols, fit_pipeline


def _best(fn: object, number: int) -> float:
    return min(timeit.Timer(fn).repeat(repeat=5, number=number)) / number  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    config = load_config()
    spec = config.models["equities_v1"]
    card = read_card(spec.path)
    assert card is not None, "train the shipped models first: modelyard train --model equities"
    bars = {s: load_bars(s, "1d") for s in default_symbols(config, "equities", "1d")}
    dataset = build_dataset(bars, spec.spec, spec.horizon)
    pipeline = fit_pipeline(dataset.x, dataset.y, float(card.penalty["alpha"]))
    model = OnnxModel(spec.path, model_id="equities_v1")
    reps = int(np.ceil(args.rows / len(dataset)))
    x = np.ascontiguousarray(np.tile(dataset.x, (reps, 1))[: args.rows])
    diff = np.max(np.abs(model.predict(x) - pipeline.predict(x)))
    one = x[:1]

    t_onnx = _best(lambda: model.run_raw(x), 5)
    t_sk = _best(lambda: pipeline.predict(x), 5)
    t_onnx1 = _best(lambda: model.run_raw(one), 2000)
    t_sk1 = _best(lambda: pipeline.predict(one), 2000)
    print(f"rows={len(x)} features={x.shape[1]} max|onnx-sklearn|={diff:.2e}")
    print(
        f"batch     : onnxruntime {t_onnx * 1e3:8.2f} ms  sklearn {t_sk * 1e3:8.2f} ms  "
        f"ratio onnx/sklearn {t_onnx / t_sk:.2f}x"
    )
    print(
        f"single row: onnxruntime {t_onnx1 * 1e6:8.1f} us  sklearn {t_sk1 * 1e6:8.1f} us  "
        f"ratio onnx/sklearn {t_onnx1 / t_sk1:.2f}x"
    )


if __name__ == "__main__":
    main()
