"""Bars held by the emulator, and the historical bars endpoint with Alpaca's pagination.

``GET /v2/stocks/bars`` and ``GET /v1beta3/crypto/us/bars`` take ``symbols`` (comma
separated), ``timeframe`` (``1Min``, ``5Min``, ``1Hour``, ``1Day`` ...), ``start``, ``end``
(RFC 3339, naive means UTC), ``limit`` (1-10000, default 1000), ``page_token`` and ``sort``
(``asc`` only). Bars come grouped by symbol (alphabetical) and then by time; ``limit`` counts
bars across symbols, and ``next_page_token`` points at the first bar not returned, exactly as
alpaca-py's ``_get_marketdata`` pages and concatenates them.

Bars are clipped to the virtual clock (``end`` defaults to, and never goes past, ``now``), so a
strategy warming up on history cannot see the future it is about to be replayed. A coarser
timeframe than the bars' own is resampled (left-labelled, UTC boundaries); a finer one is a 422.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.errors import DataError

__all__ = ["Bar", "BarStore", "parse_timeframe", "parse_timestamp"]

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
_COLUMNS = ("open", "high", "low", "close", "volume")
_TIMEFRAME = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D|Week|W)$")
_UNIT_NS = {
    "Min": 60_000_000_000,
    "T": 60_000_000_000,
    "Hour": 3_600_000_000_000,
    "H": 3_600_000_000_000,
    "Day": 86_400_000_000_000,
    "D": 86_400_000_000_000,
    "Week": 7 * 86_400_000_000_000,
    "W": 7 * 86_400_000_000_000,
}


class Bar(NamedTuple):
    symbol: str
    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class _Arrays(NamedTuple):
    ts: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]  # shape (n, 5): open high low close volume


class BadRequest(ValueError):
    """A query the venue answers with 400 (``status``) or 422."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def parse_timeframe(text: str) -> int:
    """``1Min`` / ``15Min`` / ``1Hour`` / ``1Day`` / ``1Week`` to nanoseconds."""
    match = _TIMEFRAME.match(text)
    if match is None or int(match.group(1)) < 1:
        raise BadRequest(f"invalid timeframe: {text!r}", status=400)
    return int(match.group(1)) * _UNIT_NS[match.group(2)]


def parse_timestamp(text: str) -> int:
    """RFC 3339 or a date; naive means UTC. Returns nanoseconds since the epoch."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"invalid timestamp: {text!r}", status=400) from exc
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)


def _encode_token(symbol: str, ts_ns: int) -> str:
    raw = json.dumps([symbol, ts_ns]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[str, int]:
    try:
        symbol, ts_ns = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(symbol), int(ts_ns)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadRequest("invalid page_token", status=400) from exc


def _to_arrays(symbol: str, frame: pd.DataFrame) -> _Arrays:
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise DataError(f"bars for {symbol}: need a tz-aware UTC DatetimeIndex")
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"bars for {symbol}: missing columns {missing}")
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise DataError(f"bars for {symbol}: index must be strictly increasing")
    ts = np.asarray(index.tz_convert("UTC").as_unit("ns").asi8, dtype=np.int64)
    values = frame.loc[:, list(_COLUMNS)].to_numpy(dtype=np.float64, copy=True)
    return _Arrays(ts, values)


class BarStore:
    """Immutable bars per canonical symbol (``AAPL``, ``BTC/USD``) plus resampled views."""

    def __init__(self, bars: Mapping[str, pd.DataFrame]) -> None:
        self._native = {sym: _to_arrays(sym, frame) for sym, frame in bars.items()}
        self._frames = dict(bars)
        self._step = {sym: _native_step(arr.ts) for sym, arr in self._native.items()}
        self._resampled: dict[tuple[str, int], _Arrays] = {}
        stamps = [arr.ts for arr in self._native.values()]
        self.timeline: npt.NDArray[np.int64] = (
            np.unique(np.concatenate(stamps)) if stamps else np.empty(0, dtype=np.int64)
        )

    @property
    def symbols(self) -> list[str]:
        return sorted(self._native)

    def has(self, symbol: str) -> bool:
        return symbol in self._native

    def bar_at(self, symbol: str, ts_ns: int) -> Bar | None:
        arr = self._native.get(symbol)
        if arr is None:
            return None
        i = int(np.searchsorted(arr.ts, ts_ns))
        if i >= len(arr.ts) or arr.ts[i] != ts_ns:
            return None
        o, h, low, c, v = (float(x) for x in arr.values[i])
        return Bar(symbol, ts_ns, o, h, low, c, v)

    def last_close(self, symbol: str, ts_ns: int) -> float | None:
        """Close of the latest bar at or before ``ts_ns`` (the first open if none yet)."""
        arr = self._native.get(symbol)
        if arr is None or not len(arr.ts):
            return None
        i = int(np.searchsorted(arr.ts, ts_ns, side="right")) - 1
        return float(arr.values[i, 3]) if i >= 0 else float(arr.values[0, 0])

    def previous_close(self, symbol: str, ts_ns: int) -> float | None:
        """Close of the bar before the latest one (Alpaca's ``lastday_price``, roughly)."""
        arr = self._native.get(symbol)
        if arr is None or not len(arr.ts):
            return None
        i = int(np.searchsorted(arr.ts, ts_ns, side="right")) - 2
        return float(arr.values[max(i, 0), 3])

    def _arrays(self, symbol: str, step_ns: int) -> _Arrays:
        native = self._native[symbol]
        native_step = self._step[symbol]
        if step_ns == native_step or len(native.ts) < 2:
            return native
        if step_ns < native_step or step_ns % native_step:
            raise BadRequest(
                f"timeframe of {step_ns // 60_000_000_000} min not available for {symbol}: "
                f"the emulator holds {native_step // 60_000_000_000}-min bars"
            )
        key = (symbol, step_ns)
        if key not in self._resampled:
            frame = self._frames[symbol].loc[:, list(_COLUMNS)]
            agg = frame.resample(pd.Timedelta(step_ns, unit="ns"), label="left", closed="left")
            out = agg.agg(
                {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
            ).dropna(subset=["open"])
            self._resampled[key] = _to_arrays(symbol, out)
        return self._resampled[key]

    def query(
        self,
        symbols: list[str],
        step_ns: int,
        start_ns: int,
        end_ns: int,
        limit: int,
        page_token: str | None,
    ) -> tuple[dict[str, list[dict[str, object]]], str | None]:
        """One page of bars; returns ``(bars by symbol, next_page_token)``."""
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"invalid limit: {limit} (1-{MAX_LIMIT})")
        token_symbol, token_ts = _decode_token(page_token) if page_token else ("", start_ns)
        out: dict[str, list[dict[str, object]]] = {}
        remaining = limit
        for symbol in sorted(set(symbols)):
            if symbol < token_symbol or symbol not in self._native:
                continue
            arr = self._arrays(symbol, step_ns)
            begin = max(start_ns, token_ts) if symbol == token_symbol else start_ns
            lo = int(np.searchsorted(arr.ts, begin, side="left"))
            hi = int(np.searchsorted(arr.ts, end_ns, side="right"))
            if lo >= hi:
                continue
            if remaining == 0:
                return out, _encode_token(symbol, int(arr.ts[lo]))
            take = min(remaining, hi - lo)
            out[symbol] = _bar_dicts(arr, lo, lo + take)
            remaining -= take
            if lo + take < hi:
                return out, _encode_token(symbol, int(arr.ts[lo + take]))
        return out, None


def _native_step(ts: npt.NDArray[np.int64]) -> int:
    if len(ts) < 2:
        return _UNIT_NS["Day"]
    return int(np.median(np.diff(ts)))


def _bar_dicts(arr: _Arrays, lo: int, hi: int) -> list[dict[str, object]]:
    stamps = np.datetime_as_string(arr.ts[lo:hi].astype("datetime64[ns]"), unit="s")
    rows = arr.values[lo:hi].tolist()
    return [
        {
            "t": f"{stamp}Z",
            "o": o,
            "h": h,
            "l": low,
            "c": c,
            "v": v,
            "n": 0,
            "vw": (h + low + c) / 3.0,
        }
        for stamp, (o, h, low, c, v) in zip(stamps.tolist(), rows, strict=True)
    ]
