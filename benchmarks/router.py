"""Router overhead against raw onnxruntime, measured side by side in one run.

* ``predict_frame`` over 100 symbols × 1 row against ``session.run`` on the same batch taken
  from the same frame (``frame[features].to_numpy()`` then ``run``): goal ≤ 1.15×.
* Both run the shipped registry, models and per-row data-contract checks.
* ``predict`` for one symbol against ``session.run`` on one prepared row: goal ≤ 1.5×.

Run: ``python benchmarks/router.py [--repeat 2000]``.
"""

from __future__ import annotations

import argparse
import logging
import timeit

import numpy as np

from modelyard.config import load_config
from modelyard.feeds import load_bars
from modelyard.models.features import compute, spec_for
from modelyard.routing import AssetSpecificModelRouter


def _best(fn: object, repeat: int) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=7, number=repeat)) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if True:
        # The shipped registry and models, with their data contracts checked on every row.
        config = load_config()
        router = AssetSpecificModelRouter(config, asset_specific=True)
        names = list(config.models["equities_v1"].features)
        symbols = [f"SYM{i}" for i in range(100)]
        real = compute(load_bars("AAPL", "1d", quality="warn"), spec_for("equities"))
        frame = real.dropna().iloc[-100:].reset_index(drop=True)
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
