"""Router overhead against raw onnxruntime, measured side by side in one run.

* ``predict_frame`` over 100 symbols × 1 row against ``session.run`` on the same batch taken
  from the same frame (``frame[features].to_numpy()`` then ``run``): goal ≤ 1.15×.
* ``predict`` for one symbol against ``session.run`` on one prepared row: goal ≤ 1.5×.

Run: ``python benchmarks/router.py [--repeat 2000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from modelyard.config import load_config
from modelyard.routing import AssetSpecificModelRouter


def _build_registry(folder: Path) -> Path:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelyard.models.export import to_onnx_bytes

    raw = yaml.safe_load(Path("config/assets.yaml").read_text())
    rng = np.random.default_rng(0)
    for model_id, spec in raw["models"].items():
        spec.pop("contract", None)
        spec["path"] = f"{model_id}.onnx"
        x = rng.normal(size=(500, len(spec["features"])))
        pipe = make_pipeline(StandardScaler(), Ridge()).fit(x, x @ rng.normal(size=x.shape[1]))
        (folder / spec["path"]).write_bytes(
            to_onnx_bytes(pipe, spec["features"], model_id=model_id)
        )
    (folder / "assets.yaml").write_text(yaml.safe_dump(raw))
    return folder / "assets.yaml"


def _best(fn: object, repeat: int) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=7, number=repeat)) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(_build_registry(Path(tmp)))
        router = AssetSpecificModelRouter(config, asset_specific=True)
        names = list(config.models["equities_v1"].features)
        symbols = [f"SYM{i}" for i in range(100)]
        rng = np.random.default_rng(1)
        frame = pd.DataFrame(rng.normal(scale=0.01, size=(100, len(names))), columns=names)
        frame.insert(0, "symbol", symbols)
        model = router.model("equities_v1")
        session, inp = model._session, model._input
        router.predict_frame(frame)

        def raw_batch() -> object:
            return session.run(None, {inp: frame[names].to_numpy(dtype=np.float64)})

        def ours_batch() -> object:
            return router.predict_frame(frame)

        row = frame[names].to_numpy()[0]
        one = row.reshape(1, -1).astype(np.float64)
        router.predict("SYM0", row)

        def raw_one() -> object:
            return session.run(None, {inp: one})

        def ours_one() -> object:
            return router.predict("SYM0", row)

        t_raw_b, t_ours_b = _best(raw_batch, args.repeat), _best(ours_batch, args.repeat)
        t_raw_1, t_ours_1 = _best(raw_one, args.repeat), _best(ours_one, args.repeat)
    print(
        f"predict_frame 100x1: ours {t_ours_b * 1e6:8.1f} us  raw {t_raw_b * 1e6:8.1f} us  "
        f"ratio {t_ours_b / t_raw_b:.2f}x (goal <= 1.15x)"
    )
    print(
        f"predict 1 row     : ours {t_ours_1 * 1e6:8.1f} us  raw {t_raw_1 * 1e6:8.1f} us  "
        f"ratio {t_ours_1 / t_raw_1:.2f}x (goal <= 1.5x)"
    )


if __name__ == "__main__":
    main()
