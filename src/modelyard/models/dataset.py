"""Training rows: features and forward-return targets of many symbols, stacked in time order."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.errors import DataError
from modelyard.models.features import compute, compute_target, spec_for

__all__ = ["Dataset", "build_dataset"]


@dataclass(frozen=True)
class Dataset:
    """Rows sorted by (timestamp, symbol); ``target_end`` is when each row's target is known."""

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.int64]  # ns since epoch, UTC
    target_end: npt.NDArray[np.int64]  # ns since epoch, UTC: timestamp of bar t + horizon
    symbols: npt.NDArray[np.str_]
    feature_names: tuple[str, ...]
    horizon: int

    def __len__(self) -> int:
        return int(self.y.size)

    def take(self, rows: npt.NDArray[np.intp]) -> Dataset:
        return Dataset(
            self.x[rows],
            self.y[rows],
            self.timestamps[rows],
            self.target_end[rows],
            self.symbols[rows],
            self.feature_names,
            self.horizon,
        )

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(int(self.timestamps.min()), tz="UTC")

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(int(self.timestamps.max()), tz="UTC")

    def sha256(self) -> str:
        """A hash of exactly what the model was trained on."""
        digest = hashlib.sha256()
        for array in (self.x, self.y, self.timestamps, self.target_end):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("\n".join(self.symbols.tolist()).encode())
        digest.update("\n".join(self.feature_names).encode())
        return digest.hexdigest()


def build_dataset(
    bars: Mapping[str, pd.DataFrame],
    spec_name: str,
    horizon: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> Dataset:
    """Features of ``spec_name`` and ``horizon``-bar forward log returns for every symbol.

    Rows with any NaN feature (warm-up) or no target (the last ``horizon`` bars) are dropped.
    """
    spec = spec_for(spec_name)
    xs, ys, ts, ends, syms = [], [], [], [], []
    for symbol in sorted(bars):
        frame = bars[symbol]
        features = compute(frame, spec).to_numpy()
        target = compute_target(frame, horizon).to_numpy()
        stamps = pd.DatetimeIndex(frame.index).as_unit("ns").asi8
        end = np.full(stamps.shape, np.iinfo(np.int64).max, dtype=np.int64)
        end[:-horizon] = stamps[horizon:]
        keep = np.isfinite(features).all(axis=1) & np.isfinite(target)
        if not keep.any():
            raise DataError(
                f"{symbol}: no usable training rows ({len(frame)} bars, warm-up {spec.warmup}, "
                f"horizon {horizon}); widen the date range"
            )
        xs.append(features[keep])
        ys.append(target[keep])
        ts.append(stamps[keep])
        ends.append(end[keep])
        syms.append(np.full(int(keep.sum()), symbol))
        if progress is not None:
            progress(symbol)
    if not xs:
        raise DataError("no symbols to train on")
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    t = np.concatenate(ts)
    e = np.concatenate(ends)
    s = np.concatenate(syms).astype(str)
    order = np.lexsort((s, t))
    return Dataset(x[order], y[order], t[order], e[order], s[order], spec.names, horizon)


def symbols_of(dataset: Dataset) -> Sequence[str]:
    return sorted(set(dataset.symbols.tolist()))
