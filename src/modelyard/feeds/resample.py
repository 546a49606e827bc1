"""Resample bars to a coarser timeframe: open first, high max, low min, close last, volume sum.

Buckets are left-closed and labelled by their start (the same convention as the crypto files).
Empty buckets (a gap in the source) are dropped, never filled. A bucket at either edge that the
source does not fully cover (the data starts mid-bucket, or the last bucket is still open) is
dropped unless ``keep_partial=True``: its open or close would not be the bucket's.
"""

from __future__ import annotations

import re

import pandas as pd

from modelyard.errors import DataError
from modelyard.feeds.schema import BARS_COLUMNS, INDEX_NAME, check_structure

__all__ = ["parse_timeframe", "resample", "timeframe_label"]

_TIMEFRAME = re.compile(
    r"^\s*(\d+)\s*(s|sec|second|seconds|m|min|minute|minutes|t|h|hour|hours|"
    r"d|day|days|w|week|weeks)\s*$",
    re.IGNORECASE,
)
_UNITS: dict[str, str] = {
    "s": "s",
    "sec": "s",
    "second": "s",
    "seconds": "s",
    "m": "min",
    "min": "min",
    "minute": "min",
    "minutes": "min",
    "t": "min",
    "h": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "w": "w",
    "week": "w",
    "weeks": "w",
}
_AGG: dict[str, str] = {
    "open": "first",
    "high": "max",
    "low": "min",
    "close": "last",
    "volume": "sum",
}


def timeframe_label(timeframe: str) -> str:
    """The canonical spelling: ``'4H'`` → ``'4h'``, ``'1D'`` → ``'1d'``, ``'15m'`` → ``'15min'``."""
    match = _TIMEFRAME.match(str(timeframe))
    if not match or int(match.group(1)) <= 0:
        raise DataError(
            f"timeframe {timeframe!r} is not understood; write a count and a unit such as "
            "'1min', '15min', '1h', '4h', '1d' or '1w' (months are not supported)"
        )
    return f"{int(match.group(1))}{_UNITS[match.group(2).lower()]}"


def parse_timeframe(timeframe: str) -> pd.Timedelta:
    """``'4h'`` → ``Timedelta('4h')``; raises :class:`DataError` on anything else."""
    label = timeframe_label(timeframe)
    number = int(label.rstrip("abcdefghijklmnopqrstuvwxyz"))
    unit = label[len(str(number)) :]
    seconds = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[unit]
    return pd.Timedelta(seconds=number * seconds)


def _rule(timeframe: str) -> str:
    label = timeframe_label(timeframe)
    if label.endswith("w"):  # weeks as 7-day buckets from the epoch (a Thursday), not W-SUN
        return f"{int(label[:-1]) * 7}D"
    return label.replace("d", "D") if label.endswith("d") else label


def resample(
    bars: pd.DataFrame,
    rule: str,
    *,
    keep_partial: bool = False,
    source_timeframe: str | None = None,
) -> pd.DataFrame:
    """Aggregate ``bars`` into ``rule`` buckets (``'4h'``, ``'1d'``), labelled by bucket start.

    ``source_timeframe`` is the length of one input bar (inferred as the smallest spacing
    between bars when omitted); it decides whether an edge bucket is complete. Buckets are
    aligned to midnight UTC for rules of a day or less, to the Unix epoch otherwise.
    """
    frame = check_structure(bars)
    target = parse_timeframe(rule)
    if source_timeframe is not None:
        step = parse_timeframe(source_timeframe)
    elif len(frame) > 1:
        step = pd.Timedelta(frame.index.to_series().diff().min())
    else:
        step = target
    if step > target:
        raise DataError(
            f"cannot resample {step} bars to {rule!r}: the target must be coarser than the source"
        )
    origin = "start_day" if target <= pd.Timedelta("1D") else "epoch"
    grouped = frame.resample(_rule(rule), label="left", closed="left", origin=origin)
    out = grouped.agg(_AGG)
    counts = grouped["open"].count()
    out = out[counts.to_numpy() > 0]
    if not keep_partial and len(out) > 0:
        firsts = frame.index.to_series().groupby(
            pd.Grouper(freq=_rule(rule), label="left", closed="left", origin=origin)
        )
        first_bar = firsts.min().reindex(out.index)
        last_bar = firsts.max().reindex(out.index)
        complete = pd.Series(True, index=out.index)
        if first_bar.iloc[0] > out.index[0]:
            complete.iloc[0] = False
        if last_bar.iloc[-1] + step < out.index[-1] + target:
            complete.iloc[-1] = False
        out = out[complete.to_numpy()]
    out = out.astype("float64")[list(BARS_COLUMNS)]
    out.index = pd.DatetimeIndex(out.index).as_unit("ns")
    out.index.name = INDEX_NAME
    return out
