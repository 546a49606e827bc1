"""Training rows: features and forward-return targets of many symbols, stacked in time order."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard._blas import one_blas_thread
from modelyard._memory import retained_heap
from modelyard.errors import DataError
from modelyard.models.features import compute, compute_target, spec_for

__all__ = [
    "Dataset",
    "SymbolRows",
    "assemble_dataset",
    "build_dataset",
    "dataset_shard",
    "symbol_rows",
]


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


@dataclass(frozen=True)
class SymbolRows:
    """One symbol's usable training rows (what :func:`dataset_shard` returns per symbol)."""

    symbol: str
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.int64]
    target_end: npt.NDArray[np.int64]


def symbol_rows(symbol: str, frame: pd.DataFrame, spec_name: str, horizon: int) -> SymbolRows:
    """Features of ``spec_name`` and ``horizon``-bar forward log returns of one symbol's bars,
    without the rows that have a NaN feature (warm-up) or no target (the last ``horizon``)."""
    spec = spec_for(spec_name)
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
    return SymbolRows(symbol, features[keep], target[keep], stamps[keep], end[keep])


def dataset_shard(
    bars: Mapping[str, pd.DataFrame], spec_name: str, horizon: int
) -> list[SymbolRows]:
    """:func:`symbol_rows` of every symbol of ``bars``, in sorted order (a pure function: one
    shard of a scaled training, see :func:`modelyard.models.training.train_model`)."""
    with one_blas_thread(), retained_heap():
        return [symbol_rows(s, bars[s], spec_name, horizon) for s in sorted(bars)]


def assemble_dataset(pieces: Sequence[SymbolRows], spec_name: str, horizon: int) -> Dataset:
    """The :class:`Dataset` of per-symbol rows, sorted by (timestamp, symbol). The pieces go in
    sorted symbol order (what :func:`build_dataset` stacks): the bits do not depend on how
    they were computed or sharded."""
    if not pieces:
        raise DataError("no symbols to train on")
    pieces = sorted(pieces, key=lambda p: p.symbol)
    x = np.concatenate([p.x for p in pieces])
    y = np.concatenate([p.y for p in pieces])
    t = np.concatenate([p.timestamps for p in pieces])
    e = np.concatenate([p.target_end for p in pieces])
    s = np.concatenate([np.full(len(p.y), p.symbol) for p in pieces]).astype(str)
    order = np.lexsort((s, t))
    names = spec_for(spec_name).names
    return Dataset(x[order], y[order], t[order], e[order], s[order], names, horizon)


def build_dataset(
    bars: Mapping[str, pd.DataFrame],
    spec_name: str,
    horizon: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> Dataset:
    """Features of ``spec_name`` and ``horizon``-bar forward log returns for every symbol, in
    this process (:func:`symbol_rows` of each, then :func:`assemble_dataset`)."""
    pieces = []
    for symbol in sorted(bars):
        pieces.append(symbol_rows(symbol, bars[symbol], spec_name, horizon))
        if progress is not None:
            progress(symbol)
    return assemble_dataset(pieces, spec_name, horizon)


def symbols_of(dataset: Dataset) -> Sequence[str]:
    return sorted(set(dataset.symbols.tolist()))
