"""Walk-forward, time-ordered cross-validation with a purge gap.

The unique timestamps are cut into ``n_folds + 1`` consecutive blocks. Fold k validates on
block k and trains only on rows whose *target* is known before block k starts
(``target_end < block start``): no training row's target window overlaps a validation row,
which is a purge gap of at least the horizon.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelyard.models.dataset import Dataset

__all__ = ["Fold", "walk_forward_folds"]

IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Fold:
    index: int
    train: IntArray
    validate: IntArray
    validate_start: int  # ns since epoch


def walk_forward_folds(dataset: Dataset, n_folds: int = 5) -> Iterator[Fold]:
    if n_folds < 1:
        raise ValueError("n_folds must be at least 1")
    stamps = np.unique(dataset.timestamps)
    if stamps.size < 2 * (n_folds + 1):
        raise ValueError(f"{stamps.size} timestamps are too few for {n_folds} walk-forward folds")
    edges = np.linspace(0, stamps.size, n_folds + 2).astype(np.intp)
    for k in range(1, n_folds + 1):
        start = stamps[edges[k]]
        stop = stamps[edges[k + 1]] if k + 1 < edges.size - 1 else None
        in_block = dataset.timestamps >= start
        if stop is not None:
            in_block &= dataset.timestamps < stop
        train = np.flatnonzero(dataset.target_end < start)
        yield Fold(k - 1, train, np.flatnonzero(in_block), int(start))
