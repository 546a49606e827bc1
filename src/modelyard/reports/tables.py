"""Comparison tables: universal against asset-specific, side by side, with the differences.

The input is the tidy :attr:`Comparison.table <modelyard.strategies.compare.Comparison>`: one
row per ``(level, name, variant)``, ``level`` in ``symbol`` / ``class`` / ``portfolio``. The
functions here only reshape and format it (pure pandas, no engine, no I/O):

* :func:`side_by_side` — one row per ``(level, name)``; columns ``(metric, variant)`` and
  ``(metric, "diff")`` with ``diff = asset_specific - universal`` (the last variant minus the
  first), plus ``("model_id", variant)`` and ``("n_bars", variant)``.
* :func:`differences` — only the ``diff`` columns, one column per metric.
* :func:`flat_side_by_side` — :func:`side_by_side` with ``metric.variant`` column names, the
  shape of ``comparison.csv``.
* :func:`format_value` / :func:`format_diff` — the one place numbers are turned into text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd

__all__ = [
    "DIFF",
    "HIGHER_IS_BETTER",
    "LABELS",
    "LEVELS",
    "METRICS",
    "differences",
    "flat_side_by_side",
    "format_diff",
    "format_value",
    "ordered",
    "side_by_side",
    "variant_label",
]

LEVELS: tuple[str, ...] = ("symbol", "class", "portfolio")
METRICS: tuple[str, ...] = (
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "win_rate",
    "exposure",
    "turnover",
    "ic",
    "rank_ic",
    "hit_rate",
)
DIFF = "diff"
LABELS: dict[str, str] = {
    "total_return": "return",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "max DD",
    "n_trades": "trades",
    "win_rate": "win rate",
    "exposure": "exposure",
    "turnover": "turnover",
    "ic": "IC",
    "rank_ic": "rank IC",
    "hit_rate": "hit rate",
    "model_id": "model",
    "n_bars": "bars",
}
# True: more is better; False: less is better; None: neither (a property, not a score).
# max_drawdown is <= 0, so a higher (less negative) value is better.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "total_return": True,
    "sharpe": True,
    "sortino": True,
    "max_drawdown": True,
    "n_trades": None,
    "win_rate": True,
    "exposure": None,
    "turnover": None,
    "ic": True,
    "rank_ic": True,
    "hit_rate": True,
}
_PERCENT = frozenset({"total_return", "max_drawdown", "win_rate", "exposure", "hit_rate"})
_RATIO2 = frozenset({"sharpe", "sortino", "turnover"})
_VARIANT_LABELS = {"universal": "universal", "asset_specific": "asset-specific"}


def variant_label(variant: str) -> str:
    """``asset_specific`` -> ``asset-specific`` (how people write it)."""
    return _VARIANT_LABELS.get(variant, variant.replace("_", "-"))


def _missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return False


def format_value(metric: str, value: object) -> str:
    """A metric as a person reads it: percentages for returns and shares, ``-`` when undefined."""
    if _missing(value):
        return "-"
    if metric in ("n_trades", "n_bars"):
        return f"{int(value):,}"  # type: ignore[call-overload]
    if not isinstance(value, int | float | np.number):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "-"
    if metric in _PERCENT:
        return f"{number * 100:.2f}%"
    if metric in _RATIO2:
        return f"{number:.2f}"
    return f"{number:.4f}"


def format_diff(metric: str, value: object) -> str:
    """A difference with its sign; percentage metrics in percentage points (``pp``)."""
    if _missing(value):
        return "-"
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        return "-"
    if metric in ("n_trades", "n_bars"):
        return f"{round(number):+,}"
    if metric in _PERCENT:
        return f"{number * 100:+.2f} pp"
    if metric in _RATIO2:
        return f"{number:+.2f}"
    return f"{number:+.4f}"


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by level (symbol, class, portfolio), then first appearance of the name."""
    level_rank = table["level"].map({level: i for i, level in enumerate(LEVELS)})
    names = list(dict.fromkeys(table["name"].tolist()))
    name_rank = table["name"].map({name: i for i, name in enumerate(names)})
    order = np.lexsort((name_rank.to_numpy(), level_rank.fillna(len(LEVELS)).to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def _variants(table: pd.DataFrame, variants: Sequence[str] | None) -> list[str]:
    if variants is not None:
        found = list(variants)
    else:
        found = list(dict.fromkeys(table["variant"].tolist()))
    missing = [v for v in found if v not in set(table["variant"])]
    if missing:
        raise ValueError(f"variants {missing} are not in the table; have {sorted(set(found))}")
    return found


def side_by_side(table: pd.DataFrame, variants: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per ``(level, name)`` with every variant's metrics and ``diff`` (last - first).

    Columns are a two-level index ``(field, variant-or-diff)``; the row index is
    ``(level, name)`` in :func:`ordered` order. With a single variant there is no ``diff``.
    """
    names = _variants(table, variants)
    tidy = ordered(table[table["variant"].isin(names)])
    keys = list(dict.fromkeys(zip(tidy["level"], tidy["name"], strict=True)))
    index = pd.MultiIndex.from_tuples(keys, names=["level", "name"])
    indexed = tidy.set_index(["level", "name", "variant"])
    columns: dict[tuple[str, str], pd.Series] = {}
    for field in ("model_id", *METRICS, "n_bars"):
        if field not in indexed.columns:
            continue
        per_variant = {}
        for variant in names:
            part = indexed.xs(variant, level="variant")[field]
            per_variant[variant] = part.reindex(index)
            columns[(field, variant)] = per_variant[variant]
        if field in METRICS and len(names) >= 2:
            first = pd.to_numeric(per_variant[names[0]], errors="coerce").astype("float64")
            last = pd.to_numeric(per_variant[names[-1]], errors="coerce").astype("float64")
            columns[(field, DIFF)] = last - first
    frame = pd.DataFrame(columns, index=index)
    frame.columns = pd.MultiIndex.from_tuples(list(columns), names=["field", "variant"])
    return frame


def differences(table: pd.DataFrame, variants: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``diff`` columns of :func:`side_by_side`: last variant minus first, per metric."""
    wide = side_by_side(table, variants)
    if DIFF not in wide.columns.get_level_values("variant"):
        raise ValueError("differences need at least two variants")
    diff = pd.DataFrame(wide.xs(DIFF, axis=1, level="variant"))
    return diff[[m for m in METRICS if m in diff.columns]].astype("float64")


def flat_side_by_side(
    table: pd.DataFrame,
    variants: Sequence[str] | None = None,
    asset_classes: dict[str, str] | None = None,
) -> pd.DataFrame:
    """:func:`side_by_side` with ``field.variant`` column names and ``level``, ``name`` (and
    ``asset_class`` of symbol rows) as columns: the layout of ``comparison.csv``."""
    wide = side_by_side(table, variants)
    flat = wide.copy()
    pairs = cast(list[tuple[str, str]], list(wide.columns))
    flat.columns = [f"{field}.{variant}" for field, variant in pairs]
    flat = flat.reset_index()
    if asset_classes is not None:
        classes = [
            asset_classes.get(name, "") if level == "symbol" else (name if level == "class" else "")
            for level, name in zip(flat["level"], flat["name"], strict=True)
        ]
        flat.insert(2, "asset_class", classes)
    return flat
