"""Load bars from any CSV (gzip ok) or Parquet file into the bars schema."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from modelyard.errors import DataError
from modelyard.feeds.quality import asset_class_of, enforce_quality
from modelyard.feeds.resample import timeframe_label
from modelyard.feeds.schema import (
    BARS_COLUMNS,
    DateMeans,
    check_prices,
    check_structure,
    describe,
    did_you_mean,
    parse_timestamps,
)

__all__ = ["read_bars", "read_table"]

logger = logging.getLogger(__name__)

_PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV / CSV.gz / Parquet file as raw columns; read errors become :class:`DataError`.

    A gzip file cut short, a corrupt gzip header, bad CSV and unreadable Parquet all raise a
    :class:`DataError` that names the file (``from`` the original exception).
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: file not found; check the path (see bundled() for bundled data)")
    try:
        if file.name.lower().endswith(_PARQUET_SUFFIXES):
            frame = pd.read_parquet(file)
            # a frame written with to_parquet keeps its index (named "timestamp" for bars)
            return frame.reset_index() if frame.index.name is not None else frame
        return pd.read_csv(file, compression="infer", dtype={"timestamp": str})
    except (EOFError, zlib.error, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{file}: cannot be read ({type(exc).__name__}: {exc}); the file is truncated or "
            "corrupt: copy it again and compare its sha256 with data/PROVENANCE.md"
        ) from exc


def read_bars(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    tz: str = "UTC",
    timestamp_col: str = "timestamp",
    date_means: DateMeans = "start",
    symbol: str | None = None,
    quality: str = "warn",
    asset_class: str | None = None,
    timeframe: str | None = None,
) -> pd.DataFrame:
    """Read a bars file (CSV, CSV.gz or Parquet) into the bars schema.

    Args:
        path: the file; ``.parquet``/``.pq`` is Parquet, everything else CSV (``.gz`` inflated).
        columns: source name → our name, e.g. ``{"Date": "timestamp", "Adj Close": "close"}``;
            columns not mapped keep their name; extra columns are dropped.
        tz: the source's time zone. Naive timestamps are localized to it (DST-aware) and then
            converted to UTC; timestamps with a zone are converted and ``tz`` is ignored.
        timestamp_col: the column holding timestamps (after renaming).
        date_means: ``"start"`` (a timestamp labels the bar start) or ``"session_close"``
            (date-only values mean the 16:00 close of that session in ``tz``).
        symbol: used in messages and the quality report.
        quality: ``"warn"``, ``"drop"`` or ``"raise"`` (see :mod:`modelyard.feeds.quality`).
        asset_class: for the quality calendar; by default from the symbol's classification.
        timeframe: e.g. ``"1h"``; by default the most common spacing between bars.
    """
    where = describe(symbol, path)
    raw = read_table(path)
    if columns:
        unknown = [src for src in columns if src not in raw.columns]
        if unknown:
            hints = "".join(did_you_mean(src, raw.columns) for src in unknown)
            raise DataError(
                f"{where}: columns={dict(columns)} names {unknown}, which the file does not "
                f"have (it has {[str(c) for c in raw.columns]}).{hints}"
            )
        raw = raw.rename(columns=dict(columns))
    if timestamp_col not in raw.columns:
        raise DataError(
            f"{where}: no timestamp column {timestamp_col!r} (have "
            f"{[str(c) for c in raw.columns]}).{did_you_mean(timestamp_col, raw.columns)} "
            "Pass timestamp_col=... or columns={'Date': 'timestamp'}"
        )
    index = parse_timestamps(raw[timestamp_col], where=where, naive_tz=tz, date_means=date_means)
    body = raw.drop(columns=[timestamp_col])
    body.index = index
    frame = check_structure(body, symbol=symbol, source=path)
    return finish_bars(
        frame,
        symbol=symbol,
        where=where,
        quality=quality,
        asset_class=asset_class,
        timeframe=timeframe,
    )


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The most common spacing between bars as a timeframe label (``'1h'``, ``'1d'``)."""
    if len(index) < 2:
        return "1d"
    step = pd.Timedelta(index.to_series().diff().dropna().mode().iloc[0])
    if step >= pd.Timedelta("1D") and step < pd.Timedelta("4D"):
        return "1d"  # daily sessions are 1 day apart, or 3 over a weekend
    seconds = int(step.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def finish_bars(
    frame: pd.DataFrame,
    *,
    symbol: str | None,
    where: str,
    quality: str,
    asset_class: str | None = None,
    timeframe: str | None = None,
    jump_threshold: float | None = None,
) -> pd.DataFrame:
    """Quality report and policy, then the positive-price check; ``frame`` is schema-shaped.

    Without ``asset_class`` and ``symbol`` the class is ``"unknown"`` and gaps are not counted.
    """
    cls = asset_class or (asset_class_of(symbol) if symbol else "unknown")
    tf = timeframe_label(timeframe) if timeframe else infer_timeframe(pd.DatetimeIndex(frame.index))
    frame, _ = enforce_quality(
        frame,
        symbol=symbol or where,
        asset_class=cls,
        timeframe=tf,
        policy=quality,
        where=where,
        jump_threshold=jump_threshold,
    )
    if len(frame) == 0:
        raise DataError(f"{where}: no bars left after quality={quality!r}")
    check_prices(frame, where=where)
    return frame[list(BARS_COLUMNS)]
