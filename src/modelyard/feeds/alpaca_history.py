"""Historical bars from Alpaca (alpaca-py), in the bars schema, cached as Parquet.

* Keys come from the arguments or from ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (alpaca-py
  does not read the environment itself). Crypto bars need no keys; stock bars do. Keys never
  reach a log line or ``repr``.
* Pagination: alpaca-py follows ``next_page_token`` itself when no ``limit`` is given
  (``RESTClient._get_marketdata``), 10,000 bars per page. :meth:`AlpacaHistory.fetch_many`
  asks for many symbols of one asset class in one request (a live catch-up after a reconnect
  then costs one request per kind of asset, not one per symbol, against Alpaca's 200 a minute).
* alpaca-py sets no HTTP timeout; every request made here gets ``timeout`` seconds.
* Timestamps: crypto bars keep Alpaca's label (bar start, UTC). Stock bars of a day or longer
  are labelled at the session date's 16:00 America/New_York close in UTC, like the bundled
  equity files; intraday stock bars keep Alpaca's bar-start label.
* Errors: HTTP 429, 5xx and connection failures become :class:`BrokerUnavailable` (retry);
  other HTTP errors (bad symbol, 401/403 keys, 422) become :class:`DataError`.
* Cache: ``cache_dir/<symbol>_<timeframe>_<start>_<end>.parquet``, written atomically (temp file
  then ``os.replace``); a hit is read back without any request.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pandas as pd
import requests

from modelyard._http import TimeoutAdapter
from modelyard.errors import BrokerUnavailable, DataError
from modelyard.feeds.bundled import TimeLike, _to_utc
from modelyard.feeds.files import finish_bars, read_table
from modelyard.feeds.quality import NYSE_TZ, _classifier, asset_class_of
from modelyard.feeds.resample import timeframe_label
from modelyard.feeds.schema import BARS_COLUMNS, check_structure, parse_timestamps
from modelyard.routing.classifier import CRYPTO_QUOTES

__all__ = ["AlpacaHistory"]

logger = logging.getLogger(__name__)

KEY_ENV = "APCA_API_KEY_ID"
SECRET_ENV = "APCA_API_SECRET_KEY"
_FIELDS: dict[str, str] = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}


def _alpaca_symbol(symbol: str, asset_class: str) -> str:
    classifier = _classifier()
    if classifier is not None:
        return classifier.classify(symbol).canonical
    text = symbol.strip().upper()
    if asset_class != "crypto":
        return text
    for sep in "-_":
        text = text.replace(sep, "/")
    if "/" in text:
        return text
    for quote in CRYPTO_QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            return f"{text[: -len(quote)]}/{quote}"
    return text


def _timeframe(label: str) -> Any:
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    units = {"min": TimeFrameUnit.Minute, "h": TimeFrameUnit.Hour, "d": TimeFrameUnit.Day}
    units["w"] = TimeFrameUnit.Week
    for suffix, unit in units.items():
        if label.endswith(suffix) and label[: -len(suffix)].isdigit():
            try:
                return TimeFrame(int(label[: -len(suffix)]), unit)
            except ValueError as exc:
                raise DataError(f"Alpaca has no {label!r} bars: {exc}") from exc
    raise DataError(f"Alpaca has no {label!r} bars; use minutes, hours, 1d or 1w")


class AlpacaHistory:
    """Fetch historical bars from Alpaca's market-data API into the bars schema."""

    def __init__(
        self,
        key_id: str | None = None,
        secret_key: str | None = None,
        *,
        url_override: str | None = None,
        cache_dir: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._key_id = key_id or os.environ.get(KEY_ENV) or None
        self._secret_key = secret_key or os.environ.get(SECRET_ENV) or None
        self._url_override = url_override
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout = timeout
        self._clients: dict[str, Any] = {}

    def __repr__(self) -> str:
        keys = "set" if self._key_id and self._secret_key else "not set"
        return (
            f"AlpacaHistory(url_override={self._url_override!r}, cache_dir={self.cache_dir!s}, "
            f"keys {keys})"
        )

    # --- clients ------------------------------------------------------------------
    def _client(self, asset_class: str) -> Any:
        kind = "crypto" if asset_class == "crypto" else "stock"
        if kind in self._clients:
            return self._clients[kind]
        from alpaca.data.historical.crypto import CryptoHistoricalDataClient
        from alpaca.data.historical.stock import StockHistoricalDataClient

        if kind == "stock" and not (self._key_id and self._secret_key):
            raise DataError(
                "Alpaca stock bars need API keys: pass key_id/secret_key or set "
                f"{KEY_ENV} and {SECRET_ENV}"
            )
        factory = CryptoHistoricalDataClient if kind == "crypto" else StockHistoricalDataClient
        try:
            client = factory(
                api_key=self._key_id,
                secret_key=self._secret_key,
                raw_data=True,
                url_override=self._url_override,
            )
        except ValueError as exc:  # alpaca-py's credential check; the message holds no keys
            raise DataError(f"Alpaca {kind} client: {exc}; check {KEY_ENV}/{SECRET_ENV}") from exc
        adapter = TimeoutAdapter(self.timeout)
        client._session.mount("http://", adapter)
        client._session.mount("https://", adapter)
        self._clients[kind] = client
        return client

    def close(self) -> None:
        """Close the HTTP sessions of the clients created so far."""
        for client in self._clients.values():
            client._session.close()
        self._clients.clear()

    def __enter__(self) -> AlpacaHistory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- fetching -----------------------------------------------------------------
    def cache_path(self, symbol: str, timeframe: str, start: TimeLike, end: TimeLike) -> Path:
        """Where the Parquet cache of one request lives (``cache_dir`` must be set)."""
        if self.cache_dir is None:
            raise DataError("AlpacaHistory has no cache_dir; pass cache_dir=... to cache")
        lo, hi = self._range(start, end)
        safe = "".join(ch if ch.isalnum() else "-" for ch in symbol)
        stamp = "%Y%m%dT%H%M%S"
        return self.cache_dir / (
            f"{safe}_{timeframe_label(timeframe)}_{lo.strftime(stamp)}Z_{hi.strftime(stamp)}Z.parquet"
        )

    @staticmethod
    def _range(start: TimeLike, end: TimeLike) -> tuple[pd.Timestamp, pd.Timestamp]:
        lo = _to_utc(start, name="start", end=False)
        hi = _to_utc(end, name="end", end=False)
        if lo is None or hi is None:
            raise DataError("AlpacaHistory.fetch needs both start and end (naive means UTC)")
        if lo >= hi:
            raise DataError(f"start {lo} must be before end {hi}")
        return lo, hi

    def fetch(
        self,
        symbol: str,
        timeframe: str,
        start: TimeLike,
        end: TimeLike,
        *,
        quality: str = "warn",
    ) -> pd.DataFrame:
        """Bars of ``symbol`` from ``start`` to ``end`` (UTC; naive means UTC), every page once."""
        asset_class = asset_class_of(symbol)
        alpaca_symbol = _alpaca_symbol(symbol, asset_class)
        lo, hi = self._range(start, end)
        where = _where(alpaca_symbol, timeframe_label(timeframe), lo, hi)
        frames = self.fetch_many([symbol], timeframe, lo, hi, quality=quality)
        if symbol not in frames:
            raise DataError(
                f"{where}: Alpaca returned no bars; check the symbol, the range and the feed"
            )
        return frames[symbol]

    def fetch_many(
        self,
        symbols: Sequence[str],
        timeframe: str,
        start: TimeLike,
        end: TimeLike,
        *,
        quality: str = "warn",
    ) -> dict[str, pd.DataFrame]:
        """Bars of every symbol of ``symbols`` from ``start`` to ``end``, keyed as given, in
        one request per asset class (stocks, crypto) and every page of it; two spellings of
        one symbol (``BTCUSD``, ``BTC/USD``) are asked for once. A symbol Alpaca has no bars
        for in that range is left out. With a ``cache_dir``, each symbol is cached on its own,
        as :meth:`fetch` does, and only the symbols not cached yet are requested."""
        label = timeframe_label(timeframe)
        lo, hi = self._range(start, end)
        wanted: dict[str, tuple[str, str]] = {}  # given -> (Alpaca symbol, asset class)
        for symbol in symbols:
            asset_class = asset_class_of(symbol)
            wanted[symbol] = (_alpaca_symbol(symbol, asset_class), asset_class)
        unique = dict(wanted.values())  # Alpaca symbol -> asset class
        paths = {s: self._cached(s, label, lo, hi) for s in unique}
        frames: dict[str, pd.DataFrame] = {}  # by Alpaca symbol
        by_class: dict[str, list[str]] = {}
        for alpaca_symbol, asset_class in unique.items():
            path = paths[alpaca_symbol]
            if path is not None and path.is_file():
                where = _where(alpaca_symbol, label, lo, hi)
                logger.info("%s: read from cache %s", where, path)
                frames[alpaca_symbol] = check_structure(
                    read_table(path), symbol=alpaca_symbol, source=path
                )
            else:
                by_class.setdefault(asset_class, []).append(alpaca_symbol)
        for asset_class, names in by_class.items():
            where = _where(",".join(names), label, lo, hi)
            for alpaca_symbol, rows in self._request(names, asset_class, label, lo, hi, where):
                one = _where(alpaca_symbol, label, lo, hi)
                frame = self._to_frame(rows, asset_class, label, one)
                path = paths[alpaca_symbol]
                if path is not None:
                    _write_atomic(frame, path)
                frames[alpaca_symbol] = frame
        finished = {
            s: finish_bars(
                frames[s],
                symbol=s,
                where=_where(s, label, lo, hi),
                quality=quality,
                asset_class=asset_class,
                timeframe=label,
            )
            for s, asset_class in unique.items()
            if s in frames
        }
        return {given: finished[s] for given, (s, _) in wanted.items() if s in finished}

    def _cached(self, symbol: str, label: str, lo: pd.Timestamp, hi: pd.Timestamp) -> Path | None:
        return self.cache_path(symbol, label, lo, hi) if self.cache_dir is not None else None

    def _request(
        self,
        symbols: Sequence[str],
        asset_class: str,
        label: str,
        lo: pd.Timestamp,
        hi: pd.Timestamp,
        where: str,
    ) -> list[tuple[str, Sequence[Mapping[str, Any]]]]:
        """``(symbol, bars)`` of each of ``symbols`` that has bars, from one request (all of
        its pages)."""
        from alpaca.common.exceptions import APIError
        from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest

        client = self._client(asset_class)
        params: dict[str, Any] = {
            "symbol_or_symbols": list(symbols),
            "timeframe": _timeframe(label),
            "start": lo.to_pydatetime(),
            "end": hi.to_pydatetime(),
        }
        call: Callable[[Any], Any]
        request: Any
        if asset_class == "crypto":
            call, request = client.get_crypto_bars, CryptoBarsRequest(**params)
        else:
            call, request = client.get_stock_bars, StockBarsRequest(**params)
        try:
            raw = call(request)
        except APIError as exc:
            raise _map_api_error(exc, where) from exc
        except requests.RequestException as exc:
            raise BrokerUnavailable(
                f"{where}: Alpaca unreachable ({type(exc).__name__}); retry later"
            ) from exc
        if not isinstance(raw, Mapping):
            raise DataError(f"{where}: unexpected answer from Alpaca ({type(raw).__name__})")
        return [
            (s, cast(Sequence[Mapping[str, Any]], bars)) for s in symbols if (bars := raw.get(s))
        ]

    @staticmethod
    def _to_frame(
        rows: Sequence[Mapping[str, Any]], asset_class: str, label: str, where: str
    ) -> pd.DataFrame:
        try:
            data = {ours: [row[theirs] for row in rows] for theirs, ours in _FIELDS.items()}
            stamps = pd.Series([row["t"] for row in rows])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: unexpected bar shape from Alpaca (missing {exc})") from exc
        index = parse_timestamps(stamps, where=where, naive_tz="UTC")
        daily = label.endswith(("d", "w"))
        if asset_class != "crypto" and daily:
            local = index.tz_convert(NYSE_TZ).normalize() + pd.Timedelta(hours=16)
            index = pd.DatetimeIndex(local).tz_convert("UTC")
        frame = pd.DataFrame(data, index=index)[list(BARS_COLUMNS)]
        return check_structure(frame, source=where)


def _where(symbols: str, label: str, lo: pd.Timestamp, hi: pd.Timestamp) -> str:
    return f"{symbols} {label} (Alpaca {lo:%Y-%m-%dT%H:%M}Z..{hi:%Y-%m-%dT%H:%M}Z)"


def _map_api_error(exc: Exception, where: str) -> Exception:
    status = getattr(exc, "status_code", None)
    detail = ""
    if status is not None:
        try:
            detail = f": {exc.message}"  # type: ignore[attr-defined]
        except (ValueError, KeyError, TypeError):  # an HTML body is not JSON
            detail = ""
    if status is None or status == 429 or status >= 500:
        return BrokerUnavailable(
            f"{where}: Alpaca HTTP {status}{detail}; retry later", status=status
        )
    hint = "check API keys" if status in (401, 403) else "check the symbol, timeframe and range"
    return DataError(f"{where}: Alpaca HTTP {status}{detail}; {hint}")


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
