"""Historical bars through the real alpaca-py data clients, pages concatenated by the SDK."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from conftest import synthetic_bars
from modelyard.emulator import Emulator

N_PER_SYMBOL = 8_400  # x 3 symbols = 25,200 bars: three 10,000-bar pages


@pytest.fixture(scope="module")
def minute_bars() -> dict[str, pd.DataFrame]:
    start = "2024-01-02 00:00"
    stocks = {
        s: synthetic_bars(start, N_PER_SYMBOL, "1min", 100.0 + i, seed=i)
        for i, s in enumerate(("AAPL", "MSFT", "IBM"))
    }
    crypto = {
        s: synthetic_bars(start, N_PER_SYMBOL, "1min", 1_000.0 * (i + 1), seed=10 + i)
        for i, s in enumerate(("BTC/USD", "ETH/USD", "SOL/USD"))
    }
    return stocks | crypto


@pytest.fixture(scope="module")
def data_emulator(minute_bars):  # type: ignore[no-untyped-def]
    end = minute_bars["AAPL"].index[-1].to_pydatetime() + timedelta(minutes=1)
    with Emulator(minute_bars, speed=0, start=end, rate_limit_per_minute=100_000) as emu:
        yield emu


def _check_all(barset, frames: dict[str, pd.DataFrame]) -> None:  # type: ignore[no-untyped-def]
    for symbol, frame in frames.items():
        got = barset.data[symbol]
        stamps = [b.timestamp for b in got]
        assert len(stamps) == len(set(stamps)) == len(frame)
        assert stamps == list(frame.index.to_pydatetime())
        assert [b.close for b in got] == frame["close"].tolist()


def test_stock_bars_page_25k_across_three_symbols(data_emulator, minute_bars) -> None:
    client = StockHistoricalDataClient(
        data_emulator.key_id, data_emulator.secret_key, url_override=data_emulator.base_url
    )
    request = StockBarsRequest(
        symbol_or_symbols=["MSFT", "AAPL", "IBM"],
        timeframe=TimeFrame.Minute,
        start=datetime(2024, 1, 1),
    )
    barset = client.get_stock_bars(request)
    client._session.close()
    _check_all(barset, {s: minute_bars[s] for s in ("AAPL", "MSFT", "IBM")})
    assert sum(len(v) for v in barset.data.values()) == 3 * N_PER_SYMBOL


def test_crypto_bars_page_without_keys(data_emulator, minute_bars) -> None:
    client = CryptoHistoricalDataClient(url_override=data_emulator.base_url)
    request = CryptoBarsRequest(
        symbol_or_symbols=["BTC/USD", "ETH/USD", "SOL/USD"],
        timeframe=TimeFrame.Minute,
        start=datetime(2024, 1, 1),
    )
    barset = client.get_crypto_bars(request)
    client._session.close()
    _check_all(barset, {s: minute_bars[s] for s in ("BTC/USD", "ETH/USD", "SOL/USD")})


def test_limit_and_resample(data_emulator, minute_bars) -> None:
    client = StockHistoricalDataClient(
        data_emulator.key_id, data_emulator.secret_key, url_override=data_emulator.base_url
    )
    hourly = client.get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols="AAPL",
            timeframe=TimeFrame(1, TimeFrameUnit.Hour),
            start=datetime(2024, 1, 1),
            limit=5,
        )
    )
    client._session.close()
    expected = (
        minute_bars["AAPL"]
        .resample("1h")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last"})
        .iloc[:5]
    )
    got = hourly.data["AAPL"]
    assert [(b.timestamp, b.open, b.high, b.low, b.close) for b in got] == [
        (t.to_pydatetime(), r.open, r.high, r.low, r.close) for t, r in expected.iterrows()
    ]


def test_crypto_symbol_not_base_quote_is_400(data_emulator) -> None:
    response = requests.get(
        f"{data_emulator.base_url}/v1beta3/crypto/us/bars",
        params={"symbols": "BTCUSD", "timeframe": "1Min"},
        timeout=5,
    )
    assert response.status_code == 400
    assert "BASE/QUOTE" in response.json()["message"]


def test_bars_never_pass_the_virtual_clock(venue_bars) -> None:
    with Emulator(venue_bars, speed=0) as emu:
        client = StockHistoricalDataClient(emu.key_id, emu.secret_key, url_override=emu.base_url)
        request = StockBarsRequest(
            symbol_or_symbols="AAPL", timeframe=TimeFrame.Day, start=datetime(2000, 1, 1)
        )
        assert len(client.get_stock_bars(request).data["AAPL"]) == 1
        emu.advance(100)
        got = client.get_stock_bars(request).data["AAPL"]
        assert got[-1].timestamp <= emu.now
        assert len(got) == int((venue_bars["AAPL"].index <= emu.now).sum())
        with pytest.raises(APIError) as info:
            client.get_stock_bars(
                StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute)
            )
        assert info.value.status_code == 422
        client._session.close()
