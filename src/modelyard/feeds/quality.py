"""The data-quality report that runs on every load, and the ``quality=`` policy.

Counted per report: gaps against the expected calendar, zero-volume bars, OHLC
inconsistencies, non-positive prices, and jumps (absolute log close-to-close return above a
threshold). A jump is reported with its timestamp and never smoothed: the bundled equity files
are unadjusted, so a split (AAPL 2000-06-21 and 2005-02-28, MSFT 2003-02-18) shows as a jump.

Calendars:

* crypto: one bar every ``timeframe``, 24/7, from the first bar to the last;
* equities daily: NYSE sessions, i.e. weekdays minus a small NYSE holiday rule set (New Year,
  MLK, Presidents, Good Friday, Memorial, Juneteenth from 2022, Independence, Labor,
  Thanksgiving, Christmas, with NYSE's weekend observance) and the unscheduled closures since
  2001. This is an approximation: pre-1998 rules and one-off closures before 2001 are missing.
* anything else (intraday equities, options, unknown classes): gaps are not counted.

A gap is a run of one or more consecutive expected bars that are missing.

Policies (``quality=``): ``"warn"`` logs one warning line per issue kind; ``"drop"`` removes
rows that are OHLC-inconsistent or have non-positive prices, logs one line per issue kind and
one for the drop (gaps, jumps and zero volume are reported only, never dropped or filled);
``"raise"`` raises :class:`DataError` with the one-line summary when any issue is found.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)

from modelyard.errors import ConfigError, DataError, InvalidSymbolError
from modelyard.feeds.resample import parse_timeframe, timeframe_label

if TYPE_CHECKING:
    from modelyard.routing.classifier import AssetClassifier

__all__ = [
    "QualityIssue",
    "QualityPolicy",
    "QualityReport",
    "asset_class_of",
    "default_jump_threshold",
    "enforce_quality",
    "nyse_sessions",
    "quality_report",
]

logger = logging.getLogger(__name__)

QualityPolicy = Literal["warn", "drop", "raise"]
POLICIES: tuple[str, ...] = ("warn", "drop", "raise")
MAX_EXAMPLES = 20
NYSE_TZ = "America/New_York"
# Unscheduled NYSE closures (weather, national mourning, 9/11) since 2001.
NYSE_SPECIAL_CLOSURES: tuple[str, ...] = (
    "2001-09-11",
    "2001-09-12",
    "2001-09-13",
    "2001-09-14",
    "2004-06-11",
    "2007-01-02",
    "2012-10-29",
    "2012-10-30",
    "2018-12-05",
    "2025-01-09",
)
_KINDS: tuple[tuple[str, str], ...] = (
    ("gaps", "gap(s) in the calendar"),
    ("zero_volume", "zero-volume bar(s)"),
    ("ohlc_inconsistent", "OHLC-inconsistent bar(s)"),
    ("non_positive", "bar(s) with zero or negative prices"),
    ("jumps", "jump(s)"),
)


class _NYSEHolidays(AbstractHolidayCalendar):
    rules = [  # noqa: RUF012 - pandas reads this class attribute
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas Day", month=12, day=25, observance=nearest_workday),
    ]


def nyse_sessions(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Naive session dates from ``start`` to ``end`` (inclusive) under the approximation above."""
    days = pd.bdate_range(start.normalize(), end.normalize())
    holidays = _NYSEHolidays().holidays(start=days.min(), end=days.max())
    closed = holidays.union(pd.DatetimeIndex(pd.to_datetime(list(NYSE_SPECIAL_CLOSURES))))
    return days.difference(closed)


@dataclass(frozen=True, slots=True)
class QualityIssue:
    """One kind of issue: how many, and the first timestamps (at most 20)."""

    kind: str
    count: int
    first: tuple[pd.Timestamp, ...]
    what: str

    def line(self) -> str:
        shown = ", ".join(_fmt(ts) for ts in self.first[:5])
        more = " …" if self.count > 5 else ""
        return f"{self.count} {self.what}, first at {shown}{more}"


@dataclass(frozen=True)
class QualityReport:
    """Counts and first timestamps of every issue kind found in one bars frame."""

    symbol: str
    asset_class: str
    timeframe: str
    rows: int
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    calendar: str  # "24/7", "nyse" or "none" (gaps not counted)
    jump_threshold: float
    gaps: int = 0
    missing_bars: int = 0
    gaps_at: tuple[pd.Timestamp, ...] = ()  # first missing expected bar of each gap
    zero_volume: int = 0
    zero_volume_at: tuple[pd.Timestamp, ...] = ()
    ohlc_inconsistent: int = 0
    ohlc_inconsistent_at: tuple[pd.Timestamp, ...] = ()
    non_positive: int = 0
    non_positive_at: tuple[pd.Timestamp, ...] = ()
    jumps: int = 0
    jumps_at: tuple[pd.Timestamp, ...] = ()  # bar whose close jumped vs the previous close

    @property
    def issues(self) -> list[QualityIssue]:
        """The issue kinds with a non-zero count, in a fixed order."""
        out = []
        for kind, what in _KINDS:
            count = int(getattr(self, kind))
            if count:
                if kind == "gaps":
                    what = f"{what} ({self.missing_bars} missing {self.calendar} bar(s))"
                if kind == "jumps":
                    what = f"{what} (|log return| > {self.jump_threshold:g})"
                out.append(QualityIssue(kind, count, getattr(self, f"{kind}_at"), what))
        return out

    @property
    def ok(self) -> bool:
        return not self.issues

    def summary(self) -> str:
        """One line: ``'AAPL 1d: 3270 bars 2000-03-01..2013-03-01; 2 jump(s) …'``."""
        span = f"{_fmt(self.start)}..{_fmt(self.end)}" if self.start is not None else "empty"
        head = f"{self.symbol} {self.timeframe}: {self.rows} bars {span}"
        if self.ok:
            return f"{head}; no issues"
        parts = [f"{i.count} {i.kind}" for i in self.issues]
        return f"{head}; " + ", ".join(parts)


def _fmt(ts: pd.Timestamp | None) -> str:
    if ts is None:
        return "-"
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts.tzinfo is not None else str(ts)


def default_jump_threshold(asset_class: str, timeframe: str) -> float:
    """0.25 for equities daily (0.15 intraday); crypto 0.2 up to 1h, 0.3 above."""
    step = parse_timeframe(timeframe)
    if asset_class == "crypto":
        return 0.2 if step <= pd.Timedelta("1h") else 0.3
    return 0.25 if step >= pd.Timedelta("1D") else 0.15


def _firsts(index: pd.DatetimeIndex, mask: np.ndarray) -> tuple[pd.Timestamp, ...]:
    return tuple(index[mask][:MAX_EXAMPLES])


def _gaps(
    index: pd.DatetimeIndex, asset_class: str, step: pd.Timedelta
) -> tuple[str, int, int, tuple[pd.Timestamp, ...]]:
    if asset_class == "crypto":
        expected = pd.date_range(index[0], index[-1], freq=step)
        present = expected.isin(index)
        calendar = "24/7"
    elif asset_class == "equities" and step == pd.Timedelta("1D"):
        local = index.tz_convert(NYSE_TZ).tz_localize(None).normalize()
        sessions = nyse_sessions(local[0], local[-1])
        present = sessions.isin(local)
        expected = (sessions + pd.Timedelta(hours=16)).tz_localize(NYSE_TZ).tz_convert("UTC")
        calendar = "nyse"
    else:
        return "none", 0, 0, ()
    missing = ~present
    starts = missing & ~np.concatenate(([False], missing[:-1]))
    return calendar, int(starts.sum()), int(missing.sum()), _firsts(expected, starts)


def quality_report(
    bars: pd.DataFrame,
    *,
    symbol: str,
    asset_class: str,
    timeframe: str,
    jump_threshold: float | None = None,
) -> QualityReport:
    """Count the issues of ``bars`` (a frame of the bars schema; prices may be non-positive)."""
    timeframe = timeframe_label(timeframe)
    threshold = (
        default_jump_threshold(asset_class, timeframe) if jump_threshold is None else jump_threshold
    )
    index = pd.DatetimeIndex(bars.index)
    if len(bars) == 0:
        return QualityReport(symbol, asset_class, timeframe, 0, None, None, "none", threshold)
    o, h, lo, c, v = (
        bars[col].to_numpy(dtype=np.float64) for col in ("open", "high", "low", "close", "volume")
    )
    non_positive = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
    inconsistent = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    zero_volume = v == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_close = np.where(c > 0, np.log(np.where(c > 0, c, 1.0)), np.nan)
    returns = np.diff(log_close, prepend=np.nan)
    jumps = np.abs(np.nan_to_num(returns, nan=0.0)) > threshold
    calendar, gaps, missing, gaps_at = _gaps(index, asset_class, parse_timeframe(timeframe))
    return QualityReport(
        symbol=symbol,
        asset_class=asset_class,
        timeframe=timeframe,
        rows=len(bars),
        start=index[0],
        end=index[-1],
        calendar=calendar,
        jump_threshold=threshold,
        gaps=gaps,
        missing_bars=missing,
        gaps_at=gaps_at,
        zero_volume=int(zero_volume.sum()),
        zero_volume_at=_firsts(index, zero_volume),
        ohlc_inconsistent=int(inconsistent.sum()),
        ohlc_inconsistent_at=_firsts(index, inconsistent),
        non_positive=int(non_positive.sum()),
        non_positive_at=_firsts(index, non_positive),
        jumps=int(jumps.sum()),
        jumps_at=_firsts(index, jumps),
    )


def enforce_quality(
    bars: pd.DataFrame,
    *,
    symbol: str,
    asset_class: str,
    timeframe: str,
    policy: str,
    where: str,
    jump_threshold: float | None = None,
) -> tuple[pd.DataFrame, QualityReport]:
    """Run :func:`quality_report` and apply ``policy`` (see the module docstring)."""
    if policy not in POLICIES:
        raise DataError(f"quality={policy!r} is not a policy; use one of {list(POLICIES)}")
    report = quality_report(
        bars,
        symbol=symbol,
        asset_class=asset_class,
        timeframe=timeframe,
        jump_threshold=jump_threshold,
    )
    if report.ok:
        return bars, report
    if policy == "raise":
        raise DataError(
            f"{where}: data quality: {report.summary()}; fix the data or load with "
            "quality='warn' (report only) or quality='drop' (drop bad rows)"
        )
    for issue in report.issues:
        logger.warning("%s: %s", where, issue.line())
    if policy == "drop" and (report.ohlc_inconsistent or report.non_positive):
        o, h, lo, c = (bars[col].to_numpy() for col in ("open", "high", "low", "close"))
        bad = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
        bad |= (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
        logger.warning(
            "%s: quality='drop' dropped %d OHLC-inconsistent or non-positive bar(s)",
            where,
            int(bad.sum()),
        )
        bars = bars[~bad]
    return bars, report


# --- symbols ------------------------------------------------------------------------
@cache
def _classifier() -> AssetClassifier | None:
    """The classifier of the project's config/assets.yaml, or None when it does not load."""
    from modelyard.config import load_config
    from modelyard.routing.classifier import AssetClassifier

    try:
        return AssetClassifier(load_config())
    except ConfigError as exc:
        logger.debug("config/assets.yaml not usable (%s); using local symbol rules", exc)
        return None


def asset_class_of(symbol: str) -> str:
    """Asset class by the project classifier; without a config, pairs like BTC/USD are crypto."""
    classifier = _classifier()
    if classifier is not None:
        try:
            return classifier.classify(symbol).asset_class
        except InvalidSymbolError as exc:
            raise DataError(str(exc)) from exc
    text = symbol.strip().upper()
    compact = "".join(ch for ch in text if ch.isalnum())
    if any(sep in text for sep in "/-_") or compact.endswith(("USD", "USDT", "USDC")):
        return "crypto" if len(compact) > 4 else "equities"
    return "equities"
