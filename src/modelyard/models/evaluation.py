"""``modelyard eval``: universal model against each class's own model, on the same rows.

For each asset class both models are refitted walk-forward (with the penalty from their model
cards, or a fresh search) on the same time blocks, and scored on the same out-of-sample rows:
the class's symbols in each validation block. The universal model trains on every bundled
symbol, the class model on its class's symbols. The difference in IC gets a t-statistic over
folds and a paired moving-block bootstrap 95% interval (fixed seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.config.schema import AssetsConfig
from modelyard.models.cards import read_card
from modelyard.models.dataset import Dataset, build_dataset
from modelyard.models.metrics import ic, icir, metrics
from modelyard.models.training import ALPHAS, _choose_alpha, default_symbols, fit_pipeline

__all__ = ["ClassComparison", "evaluate_class"]

N_FOLDS = 5
BOOTSTRAP = 1000
BLOCK = 20


@dataclass(frozen=True)
class ModelScore:
    model_id: str
    ic: float
    rank_ic: float
    icir: float
    hit_rate: float
    n: int


@dataclass(frozen=True)
class ClassComparison:
    asset_class: str
    symbols: tuple[str, ...]
    universal: ModelScore
    specific: ModelScore
    ic_diff: float
    t_stat: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _alpha(config: AssetsConfig, model_id: str, dataset: Dataset) -> float:
    card = (
        read_card(config.models[model_id].path) if config.models[model_id].path.exists() else None
    )
    if card is not None:
        return float(card.penalty["alpha"])
    return _choose_alpha(dataset, ALPHAS)[0]


def _keys(d: Dataset) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([d.symbols, d.timestamps])


def _oos(
    dataset: Dataset, alpha: float, starts: npt.NDArray[np.int64], rows: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Predictions for ``rows`` from walk-forward fits; fold id per row (-1: not scored)."""
    pred = np.full(rows.size, np.nan)
    fold_of = np.full(rows.size, -1, dtype=np.intp)
    t = dataset.timestamps[rows]
    for k in range(starts.size - 1):
        train = np.flatnonzero(dataset.target_end < starts[k])
        block = (t >= starts[k]) & (t < starts[k + 1])
        if train.size == 0 or not block.any():
            continue
        pipeline = fit_pipeline(dataset.x[train], dataset.y[train], alpha)
        pred[block] = pipeline.predict(dataset.x[rows[block]])
        fold_of[block] = k
    return pred, fold_of


def _block_bootstrap(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[float, float]:
    rng = np.random.default_rng(12345)
    n = y.size
    n_blocks = max(1, int(np.ceil(n / BLOCK)))
    diffs = np.empty(BOOTSTRAP)
    for i in range(BOOTSTRAP):
        starts = rng.integers(0, max(1, n - BLOCK + 1), size=n_blocks)
        idx = (starts[:, None] + np.arange(BLOCK)[None, :]).ravel()[:n]
        idx = idx[idx < n]
        diffs[i] = ic(a[idx], y[idx]) - ic(b[idx], y[idx])
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def evaluate_class(
    config: AssetsConfig,
    asset_class: str,
    *,
    bars: Mapping[str, pd.DataFrame] | None = None,
    timeframe: str = "1d",
    progress: Callable[[str], None] | None = None,
) -> ClassComparison:
    """Score the universal model and ``asset_class``'s model on the same out-of-sample rows."""
    from modelyard.feeds import load_bars

    universal_id = config.universal
    specific_id = config.class_config(asset_class).model or universal_id
    if bars is None:
        every = default_symbols(config, "universal", timeframe)
        bars = {s: load_bars(s, timeframe) for s in every}
    class_symbols = tuple(s for s in default_symbols(config, asset_class, timeframe) if s in bars)
    if not class_symbols:
        raise ValueError(f"no bundled {timeframe} symbols for asset class '{asset_class}'")
    horizon = config.models[specific_id].horizon
    u_data = build_dataset(bars, config.models[universal_id].spec, horizon)
    s_data = build_dataset(
        {s: bars[s] for s in class_symbols}, config.models[specific_id].spec, horizon
    )
    # the rows both can score: the class's symbols where both feature sets exist
    u_keys, s_keys = _keys(u_data), _keys(s_data)
    common = s_keys.intersection(u_keys).sort_values()
    u_rows = u_keys.get_indexer(common).astype(np.intp)
    s_rows = s_keys.get_indexer(common).astype(np.intp)
    stamps = np.unique(s_data.timestamps[s_rows])
    edges = np.linspace(0, stamps.size, N_FOLDS + 2).astype(np.intp)
    starts = np.append(stamps[edges[1:-1]], np.iinfo(np.int64).max)
    if progress is not None:
        progress(f"{asset_class}: {len(common)} common rows, {N_FOLDS} folds")
    u_pred, fold_of = _oos(u_data, _alpha(config, universal_id, u_data), starts, u_rows)
    s_pred, _ = _oos(s_data, _alpha(config, specific_id, s_data), starts, s_rows)
    y = s_data.y[s_rows]
    scored = fold_of >= 0
    u_fold, s_fold = [], []
    for k in range(N_FOLDS):
        m = fold_of == k
        u_fold.append(metrics(u_pred[m], y[m]).ic)
        s_fold.append(metrics(s_pred[m], y[m]).ic)
    diffs = np.asarray(s_fold) - np.asarray(u_fold)
    diffs = diffs[np.isfinite(diffs)]
    t_stat = (
        float(diffs.mean() / (diffs.std(ddof=1) / np.sqrt(diffs.size)))
        if diffs.size > 1 and diffs.std(ddof=1) > 0
        else float("nan")
    )
    low, high = _block_bootstrap(s_pred[scored], u_pred[scored], y[scored])

    def score(model_id: str, pred: npt.NDArray[np.float64], fold_ics: list[float]) -> ModelScore:
        m = metrics(pred[scored], y[scored])
        return ModelScore(model_id, m.ic, m.rank_ic, icir(fold_ics), m.hit_rate, m.n)

    u_score = score(universal_id, u_pred, u_fold)
    s_score = score(specific_id, s_pred, s_fold)
    return ClassComparison(
        asset_class,
        class_symbols,
        u_score,
        s_score,
        s_score.ic - u_score.ic,
        t_stat,
        low,
        high,
    )
