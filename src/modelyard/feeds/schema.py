"""The bars schema: one frame per symbol, UTC index, float64 ``open high low close volume``.

A bars frame has

* a tz-aware ``datetime64[ns, UTC]`` index named ``timestamp``, strictly increasing and unique;
* exactly the float64 columns :data:`BARS_COLUMNS`, in that order.

:func:`validate_bars` enforces it. Every bad input either raises :class:`DataError` with a
message naming the symbol or file, the column and what to do, or is fixed in a documented way
with a logged warning (an unsorted index is sorted; numbers stored as strings are converted
when every value parses). Nothing is fixed silently.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from modelyard.errors import DataError

__all__ = [
    "BARS_COLUMNS",
    "INDEX_NAME",
    "PRICE_COLUMNS",
    "check_prices",
    "check_structure",
    "describe",
    "did_you_mean",
    "parse_timestamps",
    "validate_bars",
]

logger = logging.getLogger(__name__)

BARS_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
INDEX_NAME = "timestamp"
MAX_SHOWN = 5
DateMeans = Literal["start", "session_close"]

# An explicit zone on a timestamp string: ``...T10:00:00Z``, ``... 10:00+02:00``, ``-0500``.
_AWARE = r"[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2})$"
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"
_AWARE_RE = re.compile(_AWARE)


def describe(symbol: str | None, source: object | None) -> str:
    """How messages name the data: ``'AAPL (data/equity/AAPL_1d.csv.gz)'``."""
    if symbol and source:
        return f"{symbol} ({source})"
    if symbol or source:
        return str(symbol or source)
    return "bars"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'Close'?"`` via :func:`difflib.get_close_matches`, or ``""``."""
    options = [str(c) for c in choices]
    lowered = {c.lower(): c for c in options}
    matches = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.5)
    return f" Did you mean {lowered[matches[0]]!r}?" if matches else ""


def _shown(values: Sequence[object]) -> str:
    items = [str(v) for v in values[:MAX_SHOWN]]
    more = f" (+{len(values) - MAX_SHOWN} more)" if len(values) > MAX_SHOWN else ""
    return ", ".join(items) + more


# --- timestamps ---------------------------------------------------------------------
def parse_timestamps(
    values: pd.Series | pd.Index,
    *,
    where: str,
    naive_tz: str | None = "UTC",
    date_means: DateMeans = "start",
) -> pd.DatetimeIndex:
    """Turn a column or index of timestamps into a ``datetime64[ns, UTC]`` index.

    Aware values are converted to UTC. Naive values are localized to ``naive_tz`` (DST-aware)
    and then converted; ``naive_tz=None`` makes naive values an error. A mix of naive and aware
    values is always an error. ``date_means="session_close"`` takes date-only values as the
    16:00 close of that session in ``naive_tz`` (e.g. ``America/New_York``).
    """
    if len(values) == 0:
        raise DataError(f"{where}: no rows; a bars frame needs at least one bar")
    if isinstance(values, pd.DatetimeIndex) or pd.api.types.is_datetime64_any_dtype(values):
        index = pd.DatetimeIndex(values)
        aware = index.tz is not None
        date_only = not aware and bool((index == index.normalize()).all())
    else:
        index, aware, date_only = _parse_objects(pd.Series(values, copy=False), where)
    if index.hasnans:
        first = int(np.flatnonzero(index.isna())[0])
        raise DataError(f"{where}: timestamp at row {first} is missing (NaT); fix or drop that row")
    if date_means == "session_close":
        if aware or not date_only:
            raise DataError(
                f"{where}: date_means='session_close' expects dates without a time or zone "
                f"(e.g. 2000-03-01), got {index[0]}; use date_means='start' for timestamps"
            )
        if naive_tz is None:
            raise DataError(f"{where}: date_means='session_close' needs the exchange tz")
        index = index + pd.Timedelta(hours=16)
    if not aware:
        if naive_tz is None:
            raise DataError(
                f"{where}: timestamps have no time zone (first {index[0]}); localize them, "
                "e.g. frame.tz_localize('America/New_York'), or load with read_bars(tz=...)"
            )
        try:
            index = index.tz_localize(naive_tz, ambiguous="raise", nonexistent="raise")
        except (ValueError, TypeError) as exc:  # pytz/zoneinfo errors are ValueErrors
            raise DataError(
                f"{where}: cannot localize naive timestamps to {naive_tz!r}: {exc}; "
                "check the declared source time zone"
            ) from exc
    out = index.tz_convert("UTC").as_unit("ns")
    out.name = INDEX_NAME
    return out


def _parse_objects(values: pd.Series, where: str) -> tuple[pd.DatetimeIndex, bool, bool]:
    """Parse strings / datetime objects, refusing a naive-aware mix."""
    if values.map(lambda v: isinstance(v, str)).all():
        text = values.astype(str).str.strip()
        has_zone = text.str.contains(_AWARE, regex=True).to_numpy(dtype=bool)
        date_only = bool(text.str.match(_DATE_ONLY).all())
    else:
        has_zone = np.array([_is_aware(v) for v in values], dtype=bool)
        date_only = False
        text = values
    if has_zone.any() and not has_zone.all():
        naive_at = values.iloc[int(np.flatnonzero(~has_zone)[0])]
        aware_at = values.iloc[int(np.flatnonzero(has_zone)[0])]
        raise DataError(
            f"{where}: timestamps mix naive ({naive_at!s}) and zone-aware ({aware_at!s}) "
            "values; write every timestamp with its zone (or none, and pass tz=...)"
        )
    aware = bool(has_zone.all())
    try:
        if aware:
            index = pd.DatetimeIndex(pd.to_datetime(text, utc=True, format="ISO8601"))
        else:
            index = pd.DatetimeIndex(pd.to_datetime(text, format="ISO8601"))
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{where}: timestamps do not parse as ISO-8601 ({exc}); "
            "write them like 2020-01-02T14:30:00Z or 2020-01-02"
        ) from exc
    if not date_only and not aware:
        date_only = bool((index == index.normalize()).all()) and not isinstance(values.iloc[0], str)
    return index, aware, date_only


def _is_aware(value: object) -> bool:
    if isinstance(value, datetime):
        return value.tzinfo is not None
    if isinstance(value, str):
        return bool(_AWARE_RE.search(value.strip()))
    return False


# --- the frame ----------------------------------------------------------------------
def check_structure(
    frame: pd.DataFrame, *, symbol: str | None = None, source: object | None = None
) -> pd.DataFrame:
    """Everything of :func:`validate_bars` except the positive-price check (a copy)."""
    where = describe(symbol, source)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise DataError(
            f"{where}: the frame is empty; load a range that holds bars "
            "(see modelyard.feeds.bundled() for what is available)"
        )
    if not isinstance(frame.index, pd.DatetimeIndex) and INDEX_NAME in frame.columns:
        frame = frame.set_index(INDEX_NAME)
    missing = [c for c in BARS_COLUMNS if c not in frame.columns]
    if missing:
        hints = "".join(did_you_mean(c, frame.columns) for c in missing)
        raise DataError(
            f"{where}: missing column(s) {missing} (have {[str(c) for c in frame.columns]})."
            f"{hints} Rename them, e.g. read_bars(path, columns={{'Close': 'close'}})"
        )
    index = parse_timestamps(frame.index, where=where, naive_tz=None)
    out = pd.DataFrame(index=index)
    for column in BARS_COLUMNS:
        out[column] = _as_float(frame[column], column, where, index)
    out.columns.name = None
    for column in BARS_COLUMNS:
        values = out[column].to_numpy()
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(
                f"{where}: column '{column}' has {int(bad.sum())} NaN/inf value(s), first at "
                f"{_shown(list(out.index[bad]))}; fill or drop those rows before loading"
            )
    if not out.index.is_monotonic_increasing:
        logger.warning("%s: timestamps were not sorted; sorted them (stable)", where)
        out = out.sort_index(kind="stable")
    duplicated = out.index.duplicated(keep=False)
    if duplicated.any():
        firsts = list(dict.fromkeys(out.index[duplicated]))
        raise DataError(
            f"{where}: {len(firsts)} duplicate timestamp(s), first {_shown(firsts)}; "
            "keep one bar per timestamp (e.g. frame[~frame.index.duplicated()])"
        )
    return out


def _as_float(series: pd.Series, column: str, where: str, index: pd.Index) -> np.ndarray:
    values = series.to_numpy()
    if pd.api.types.is_bool_dtype(series.dtype) or not (
        pd.api.types.is_numeric_dtype(series.dtype)
    ):
        coerced = pd.to_numeric(series, errors="coerce")
        bad = coerced.isna().to_numpy() & series.notna().to_numpy()
        if pd.api.types.is_bool_dtype(series.dtype) or bad.any():
            position = int(np.flatnonzero(bad)[0]) if bad.any() else 0
            raise DataError(
                f"{where}: column '{column}' holds non-numbers, first "
                f"{series.iloc[position]!r} at {index[position]}; fix the source or map the "
                "right column with columns={...}"
            )
        logger.warning(
            "%s: column '%s' held numbers stored as text; converted them to float64", where, column
        )
        values = coerced.to_numpy()
    return np.asarray(values, dtype=np.float64)


def check_prices(frame: pd.DataFrame, *, where: str) -> None:
    """Prices must be > 0 and volume >= 0."""
    for column in PRICE_COLUMNS:
        bad = frame[column].to_numpy() <= 0
        if bad.any():
            raise DataError(
                f"{where}: column '{column}' has {int(bad.sum())} zero or negative price(s), "
                f"first at {_shown(list(frame.index[bad]))}; fix the source or load with "
                "quality='drop' to drop those rows"
            )
    bad = frame["volume"].to_numpy() < 0
    if bad.any():
        raise DataError(
            f"{where}: column 'volume' has {int(bad.sum())} negative value(s), first at "
            f"{_shown(list(frame.index[bad]))}; volume must be >= 0"
        )


def validate_bars(
    frame: pd.DataFrame, *, symbol: str | None = None, source: object | None = None
) -> pd.DataFrame:
    """Check ``frame`` against the bars schema and return a clean copy.

    Raises :class:`DataError` on: an empty frame, missing columns (with a did-you-mean), values
    that are not numbers, NaN/inf, zero/negative prices, negative volume, naive timestamps,
    naive timestamps mixed with aware ones, duplicate timestamps. Fixes with a logged warning:
    an unsorted index (sorted, stable) and numbers stored as strings (converted when all parse).
    Extra columns are dropped; a ``timestamp`` column is used as the index when the index is
    not a DatetimeIndex. The result's index is ``datetime64[ns, UTC]``.
    """
    out = check_structure(frame, symbol=symbol, source=source)
    check_prices(out, where=describe(symbol, source))
    return out
