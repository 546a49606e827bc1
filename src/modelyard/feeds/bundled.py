"""The real bars bundled in ``data/`` (origin, licence and sha256 in ``data/PROVENANCE.md``).

Symbols are found through the project's :class:`~modelyard.routing.classifier.AssetClassifier`
when ``config/assets.yaml`` loads; the classifier's canonical form, then the symbol as written,
are compared separator-free and upper-case with the catalog, so ``BTC-USD``, ``BTCUSD``,
``BTC/USD`` and ``btc/usd`` all find ``BTC/USD``. Without a usable config only the second
comparison runs, which finds the same entries.

``GSPC`` and ``IXIC`` are index levels (S&P 500, Nasdaq Composite), served under their own
symbols as stand-ins for ``SPY`` and ``QQQ``; the aliases ``SPY`` → ``GSPC`` and ``QQQ`` →
``IXIC`` are accepted (logged at INFO) so the paper-trading examples run on bundled data.

Timestamps: equity daily files carry the trading date, which means the 16:00
America/New_York session close, converted to UTC (DST-aware; early closes are not modelled).
Crypto files are UTC and label the bar start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd

from modelyard._paths import project_root
from modelyard.errors import DataError, InvalidSymbolError
from modelyard.feeds.files import finish_bars, read_table
from modelyard.feeds.quality import _classifier
from modelyard.feeds.resample import parse_timeframe, resample, timeframe_label
from modelyard.feeds.schema import DateMeans, check_structure, did_you_mean, parse_timestamps

__all__ = ["CATALOG", "BundledFile", "bundled", "canonical_symbol", "data_dir", "load_bars"]

logger = logging.getLogger(__name__)

NY = "America/New_York"
TimeLike = str | date | datetime | pd.Timestamp | None


@dataclass(frozen=True, slots=True)
class BundledFile:
    """One bundled file: the (symbol, timeframe) it serves and how to read its timestamps."""

    symbol: str  # canonical form (crypto BASE/QUOTE, equities the ticker)
    timeframe: str
    asset_class: str
    file: str  # relative to data/
    source_tz: str
    date_means: DateMeans
    aliases: tuple[str, ...] = ()
    note: str = ""


CATALOG: tuple[BundledFile, ...] = (
    BundledFile("AAPL", "1d", "equities", "equity/AAPL_1d.csv.gz", NY, "session_close",
                note="unadjusted; splits 2000-06-21, 2005-02-28 show as jumps"),
    BundledFile("MSFT", "1d", "equities", "equity/MSFT_1d.csv.gz", NY, "session_close",
                note="unadjusted; split 2003-02-18 shows as a jump"),
    BundledFile("IBM", "1d", "equities", "equity/IBM_1d.csv.gz", NY, "session_close"),
    BundledFile("GOOG", "1d", "equities", "equity/GOOG_1d.csv.gz", NY, "session_close"),
    BundledFile("GSPC", "1d", "equities", "equity/GSPC_1d.csv.gz", NY, "session_close",
                aliases=("SPY",), note="S&P 500 index level; stand-in for SPY"),
    BundledFile("IXIC", "1d", "equities", "equity/IXIC_1d.csv.gz", NY, "session_close",
                aliases=("QQQ",), note="Nasdaq Composite index level; stand-in for QQQ"),
    BundledFile("BTC/USD", "1h", "crypto", "crypto/BTC-USD_1h.csv.gz", "UTC", "start",
                note="Coinbase; 28 flat zero-volume filler bars"),
    BundledFile("BTC/USD", "1d", "crypto", "crypto/BTC-USD_1d.csv.gz", "UTC", "start",
                note="Coinbase; misses 2019-03-20..31"),
    BundledFile("ETH/USD", "1d", "crypto", "crypto/Bitstamp_ETHUSD_1d.csv.gz", "UTC", "start",
                note="Bitstamp; misses 2019-03-20..31"),
)  # fmt: skip


def _key(symbol: str) -> str:
    return "".join(ch for ch in symbol.upper() if ch.isalnum())


_BY_KEY: dict[str, str] = {}
for _item in CATALOG:
    _BY_KEY[_key(_item.symbol)] = _item.symbol
    for _alias in _item.aliases:
        _BY_KEY[_key(_alias)] = _item.symbol
_ALIASES: dict[str, str] = {a: e.symbol for e in CATALOG for a in e.aliases}


def data_dir() -> Path:
    """The ``data/`` folder of the project root (``MODELYARD_HOME`` overrides)."""
    return project_root() / "data"


def _symbols() -> list[str]:
    return sorted({e.symbol for e in CATALOG})


def canonical_symbol(symbol: str) -> str:
    """The catalog symbol ``symbol`` refers to; :class:`DataError` listing the bundled ones."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise DataError(f"symbol {symbol!r} is empty; bundled symbols: {_symbols()}")
    candidates: list[str] = []
    classifier = _classifier()
    if classifier is not None:
        try:
            candidates.append(classifier.classify(symbol).canonical)
        except InvalidSymbolError as exc:
            raise DataError(f"{exc}; bundled symbols: {_symbols()}") from exc
    candidates.append(symbol)
    for candidate in candidates:
        hit = _BY_KEY.get(_key(candidate))
        if hit is not None:
            if _key(candidate) in {_key(a) for a in _ALIASES}:
                logger.info("symbol %s served by bundled stand-in %s", symbol, hit)
            return hit
    hint = did_you_mean(symbol, [*_symbols(), *_ALIASES])
    raise DataError(
        f"symbol {symbol!r} is not bundled.{hint} Bundled symbols: {_symbols()} "
        f"(aliases {_ALIASES}); load other data with read_bars(path) or AlpacaHistory"
    )


def _entry(symbol: str, timeframe: str) -> BundledFile | None:
    for entry in CATALOG:
        if entry.symbol == symbol and entry.timeframe == timeframe:
            return entry
    return None


@lru_cache(maxsize=32)
def _load_file(path: Path, source_tz: str, date_means: DateMeans) -> pd.DataFrame:
    raw = read_table(path)
    index = parse_timestamps(
        raw["timestamp"], where=str(path), naive_tz=source_tz, date_means=date_means
    )
    body = raw.drop(columns=["timestamp"])
    body.index = index
    return check_structure(body, source=path)


def _frame(entry: BundledFile) -> pd.DataFrame:
    """The parsed (cached) frame of one entry; callers must not mutate it."""
    return _load_file(data_dir() / entry.file, entry.source_tz, entry.date_means)


@lru_cache(maxsize=32)
def _resampled(symbol: str, source_tf: str, target_tf: str) -> pd.DataFrame:
    entry = _entry(symbol, source_tf)
    assert entry is not None
    return resample(_frame(entry), target_tf, source_timeframe=source_tf)


def _to_utc(value: TimeLike, *, name: str, end: bool) -> pd.Timestamp | None:
    """Naive means UTC; a date-only ``end`` covers that whole day."""
    if value is None:
        return None
    date_only = (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and len(value.strip()) == 10
    )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{name}={value!r} is not a date or timestamp; use e.g. 2019-01-31"
        ) from exc
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if end and date_only:
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(1, unit="ns")
    return ts


def load_bars(
    symbol: str,
    timeframe: str = "1d",
    start: TimeLike = None,
    end: TimeLike = None,
    *,
    quality: str = "warn",
) -> pd.DataFrame:
    """Bundled bars of ``symbol`` at ``timeframe`` between ``start`` and ``end`` (inclusive).

    ``start``/``end`` take str, date, datetime or Timestamp; naive means UTC, and a date-only
    ``end`` includes every bar of that day. A timeframe that is not bundled is resampled from
    the coarsest finer crypto file that divides it (e.g. ``4h`` from ``1h``); equity daily bars
    are not resampled. The quality report runs on the returned range under ``quality``.
    Returns a new frame each call (the parsed files are cached in memory).
    """
    canonical = canonical_symbol(symbol)
    tf = timeframe_label(timeframe)
    entries = [e for e in CATALOG if e.symbol == canonical]
    entry = _entry(canonical, tf)
    if entry is not None:
        frame = _frame(entry)
    else:
        target = parse_timeframe(tf)
        finer = [
            e
            for e in entries
            if e.date_means == "start"
            and parse_timeframe(e.timeframe) < target
            and target % parse_timeframe(e.timeframe) == pd.Timedelta(0)
        ]
        if not finer:
            raise DataError(
                f"{canonical}: no bundled {tf!r} bars and none can be resampled to it; "
                f"available timeframes: {[e.timeframe for e in entries]}"
            )
        entry = max(finer, key=lambda e: parse_timeframe(e.timeframe))
        logger.info("%s: resampling bundled %s bars to %s", canonical, entry.timeframe, tf)
        frame = _resampled(canonical, entry.timeframe, tf)
    lo = _to_utc(start, name="start", end=False)
    hi = _to_utc(end, name="end", end=True)
    if lo is not None and hi is not None and lo > hi:
        raise DataError(f"{canonical}: start {lo} is after end {hi}; swap them")
    sliced = frame.loc[lo:hi]
    if len(sliced) == 0:
        raise DataError(
            f"{canonical} {tf}: no bars between {lo or 'the start'} and {hi or 'the end'}; "
            f"the bundled data covers {frame.index[0]} .. {frame.index[-1]}"
        )
    out = finish_bars(
        sliced.copy(),
        symbol=canonical,
        where=f"{canonical} {tf} ({entry.file})",
        quality=quality,
        asset_class=entry.asset_class,
        timeframe=tf,
    )
    out.attrs = {"symbol": canonical, "timeframe": tf, "source": f"data/{entry.file}"}
    return out


def bundled() -> pd.DataFrame:
    """What is bundled: one row per file with symbol, timeframe, asset_class, start, end
    (UTC), rows, file and aliases. Parses each file once per process (cached)."""
    rows = []
    for entry in CATALOG:
        frame = _frame(entry)
        rows.append(
            {
                "symbol": entry.symbol,
                "timeframe": entry.timeframe,
                "asset_class": entry.asset_class,
                "start": frame.index[0],
                "end": frame.index[-1],
                "rows": len(frame),
                "file": f"data/{entry.file}",
                "aliases": ",".join(entry.aliases),
            }
        )
    return pd.DataFrame(rows)
