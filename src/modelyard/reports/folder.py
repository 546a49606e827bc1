"""The output folder of ``modelyard compare``: ``report.html``, ``comparison.csv``,
``comparison.json``, written all at once (each file atomically into a temp folder, then one
rename), so a reader never sees half a report.

* ``comparison.json`` — ``{"format", "variants", "symbols", "asset_classes",
  "predictions_sha256", "routes", "config", "table"}``; ``table`` is the tidy
  :attr:`Comparison.table` as records; undefined numbers (NaN) are ``null``.
* ``comparison.csv`` — the side-by-side table (:func:`~modelyard.reports.tables.flat_side_by_side`):
  one row per symbol, class and the portfolio; ``metric.universal``, ``metric.asset_specific``,
  ``metric.diff`` columns; floats written with 17 significant digits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modelyard._atomic import write_dir_atomic
from modelyard.errors import ModelyardError
from modelyard.reports.html import render_html
from modelyard.reports.tables import flat_side_by_side, ordered

if TYPE_CHECKING:
    from modelyard.strategies.compare import Comparison

__all__ = ["FILES", "comparison_csv", "comparison_document", "write_comparison"]

FILES: tuple[str, ...] = ("report.html", "comparison.csv", "comparison.json")
FORMAT = "modelyard.comparison/1"


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types: NaN and infinities become ``None``, numpy scalars
    Python numbers, timestamps ISO strings, tuples lists, anything else its ``str``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def comparison_document(c: Comparison) -> dict[str, Any]:
    """The content of ``comparison.json`` (see the module docstring)."""
    table = ordered(c.table)
    records = [
        {str(k): jsonable(v) for k, v in row.items()} for row in table.to_dict(orient="records")
    ]
    return {
        "format": FORMAT,
        "variants": list(c.variants),
        "symbols": list(c.symbols),
        "asset_classes": dict(c.asset_classes),
        "predictions_sha256": dict(c.predictions_sha256),
        "routes": jsonable(c.routes),
        "config": jsonable(c.config),
        "table": records,
    }


def comparison_csv(c: Comparison) -> str:
    """The content of ``comparison.csv``: the side-by-side table."""
    buf = StringIO()
    flat_side_by_side(c.table, c.variants, c.asset_classes).to_csv(
        buf, index=False, float_format="%.17g"
    )
    return buf.getvalue()


def _check_target(target: Path, overwrite: bool) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise ModelyardError(f"{target} exists and is not a folder; choose another --out")
    found = {p.name for p in target.iterdir()}
    if not found:
        return
    if not overwrite:
        raise ModelyardError(f"{target} exists and is not empty; choose another --out")
    foreign = sorted(found - set(FILES))
    if foreign:
        raise ModelyardError(
            f"{target} holds files that are not a comparison ({', '.join(foreign[:3])}); "
            "choose another --out"
        )


def write_comparison(
    c: Comparison,
    directory: str | Path,
    *,
    overwrite: bool = False,
    document: Mapping[str, Any] | None = None,
) -> Path:
    """Write :data:`FILES` into ``directory`` all at once and return it.

    Everything is rendered in memory first; then each file is written atomically into a temp
    folder beside ``directory``, which is renamed into place. An existing ``directory`` is
    replaced only with ``overwrite=True`` and only when it holds nothing but a previous
    comparison; otherwise :class:`~modelyard.errors.ModelyardError` is raised.
    """
    target = Path(directory)
    _check_target(target, overwrite)
    if c.table.empty:
        raise ModelyardError("the comparison has no rows; nothing to report")
    doc = dict(document) if document is not None else comparison_document(c)
    texts = {
        "report.html": render_html(c),
        "comparison.csv": comparison_csv(c),
        "comparison.json": json.dumps(doc, indent=2, allow_nan=False) + "\n",
    }
    return write_dir_atomic(target, {name: texts[name] for name in FILES})
