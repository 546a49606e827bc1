"""AlpacaHistory against a tiny local aiohttp server that pages bars with next_page_token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiohttp import web

from modelyard.errors import BrokerUnavailable, DataError
from modelyard.feeds import BARS_COLUMNS, AlpacaHistory

PAGE = 3


def _bar(ts: pd.Timestamp, i: int) -> dict[str, Any]:
    price = 100.0 + i
    return {
        "t": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "o": price,
        "h": price + 2,
        "l": price - 1,
        "c": price + 1,
        "v": 10.0 + i,
        "n": 5,
        "vw": price,
    }


@dataclass
class FakeAlpaca:
    """Serves a fixed series in pages of PAGE bars; records every request."""

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    status: int | None = None  # force an error status
    base_url: str = ""

    def bars(self, path: str) -> list[dict[str, Any]]:
        if "crypto" in path:
            stamps = pd.date_range("2024-01-01T00:00:00Z", periods=7, freq="1h")
        else:  # Alpaca labels daily stock bars at midnight New York
            days = pd.bdate_range("2024-01-02", periods=7)
            stamps = days.tz_localize("America/New_York").tz_convert("UTC")
        return [_bar(ts, i) for i, ts in enumerate(stamps)]

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append((request.path, query))
        if self.status is not None:
            return web.Response(status=self.status, text="<html>bad gateway</html>")
        symbol = query["symbols"]
        bars = self.bars(request.path)
        offset = int(query.get("page_token") or 0)
        page = bars[offset : offset + PAGE]
        token = str(offset + PAGE) if offset + PAGE < len(bars) else None
        return web.json_response({"bars": {symbol: page}, "next_page_token": token})


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    state = FakeAlpaca()
    app = web.Application()
    app.router.add_get("/v2/stocks/bars", state.handle)
    app.router.add_get("/v1beta3/crypto/us/bars", state.handle)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        host, port = runner.addresses[0][:2]
        state.base_url = f"http://{host}:{port}"
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_crypto_fetch_pages_once_in_order_and_hits_the_cache(
    fake: FakeAlpaca, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    with AlpacaHistory(url_override=fake.base_url, cache_dir=tmp_path) as history:
        bars = history.fetch("BTC-USD", "1h", "2024-01-01T00:00", "2024-01-01T07:00")
        expected_index = pd.date_range(
            "2024-01-01T00:00:00Z", periods=7, freq="1h", name="timestamp"
        ).as_unit("ns")
        expected = pd.DataFrame(
            {
                "open": [100.0 + i for i in range(7)],
                "high": [102.0 + i for i in range(7)],
                "low": [99.0 + i for i in range(7)],
                "close": [101.0 + i for i in range(7)],
                "volume": [10.0 + i for i in range(7)],
            },
            index=expected_index,
        )
        pd.testing.assert_frame_equal(bars, expected, check_freq=False)
        assert [path for path, _ in fake.requests] == ["/v1beta3/crypto/us/bars"] * 3
        assert [q.get("page_token") for _, q in fake.requests] == [None, "3", "6"]
        assert {q["symbols"] for _, q in fake.requests} == {"BTC/USD"}
        assert fake.requests[0][1]["timeframe"] == "1Hour"

        again = history.fetch("BTC/USD", "1h", "2024-01-01T00:00", "2024-01-01T07:00")
        pd.testing.assert_frame_equal(again, bars)
        assert len(fake.requests) == 3  # served from the Parquet cache
        cached = list(tmp_path.iterdir())
        assert [p.name for p in cached] == ["BTC-USD_1h_20240101T000000Z_20240101T070000Z.parquet"]


def test_stock_daily_bars_are_labelled_at_the_session_close(
    fake: FakeAlpaca, tmp_path: Path
) -> None:
    with AlpacaHistory("key", "secret", url_override=fake.base_url, cache_dir=tmp_path) as history:
        bars = history.fetch("AAPL", "1d", "2024-01-02", "2024-01-11")
    sessions = pd.bdate_range("2024-01-02", periods=7) + pd.Timedelta(hours=16)
    expected = sessions.tz_localize("America/New_York").tz_convert("UTC").as_unit("ns")
    assert bars.index.equals(expected)
    assert list(bars.columns) == list(BARS_COLUMNS)
    assert bars["open"].tolist() == [100.0 + i for i in range(7)]
    assert len(fake.requests) == 3
    assert all(path == "/v2/stocks/bars" for path, _ in fake.requests)


def test_stock_bars_without_keys_say_which_env_vars(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    with (
        AlpacaHistory(url_override=fake.base_url) as history,
        pytest.raises(DataError, match="APCA_API_KEY_ID and APCA_API_SECRET_KEY"),
    ):
        history.fetch("AAPL", "1d", "2024-01-02", "2024-01-11")
    assert fake.requests == []


def test_keys_from_env_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", "AKSECRETID")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "SUPERSECRET")
    text = repr(AlpacaHistory())
    assert "keys set" in text
    assert "AKSECRETID" not in text
    assert "SUPERSECRET" not in text


@pytest.mark.parametrize(
    ("status", "error"), [(502, BrokerUnavailable), (404, DataError), (403, DataError)]
)
def test_http_errors_are_mapped_even_with_an_html_body(
    fake: FakeAlpaca, status: int, error: type[Exception]
) -> None:
    fake.status = status
    with AlpacaHistory(url_override=fake.base_url) as history, pytest.raises(error) as info:
        history.fetch("BTC/USD", "1h", "2024-01-01", "2024-01-02")
    assert f"Alpaca HTTP {status}" in str(info.value)
    assert info.value.__cause__ is not None
    if isinstance(info.value, BrokerUnavailable):
        assert info.value.status == status


def test_unreachable_server_is_broker_unavailable(tmp_path: Path) -> None:
    with (
        AlpacaHistory(url_override="http://127.0.0.1:9", timeout=2) as history,
        pytest.raises(BrokerUnavailable, match="unreachable"),
    ):
        history.fetch("BTC/USD", "1h", "2024-01-01", "2024-01-02")


def test_fetch_many_asks_once_per_asset_class_and_matches_fetch(
    venue_bars: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    """Many symbols in one request per asset class (the emulator pages across symbols as
    Alpaca does); each frame equals a one-symbol fetch; a symbol without bars is left out."""
    from modelyard.emulator import Emulator

    end = max(f.index[-1] for f in venue_bars.values()).to_pydatetime()
    lo, hi = venue_bars["AAPL"].index[2], venue_bars["AAPL"].index[20]  # BTC/USD's 30 days
    with Emulator(venue_bars, speed=0, start=end, rate_limit_per_minute=100_000) as emu:
        cached = AlpacaHistory(
            emu.key_id, emu.secret_key, url_override=emu.base_url, cache_dir=tmp_path
        )
        frames = cached.fetch_many(["AAPL", "msft", "BTCUSD", "BTC/USD", "NVDA"], "1d", lo, hi)
        assert list(frames) == ["AAPL", "msft", "BTCUSD", "BTC/USD"]  # no NVDA bars there
        assert frames["BTCUSD"] is frames["BTC/USD"]  # one symbol, asked for once
        assert emu.request_counts() == {"/v2/stocks/bars": 1, "/v1beta3/crypto/us/bars": 1}
        assert len(frames["AAPL"]) >= 15
        assert not frames["AAPL"].equals(frames["msft"])
        again = cached.fetch_many(["AAPL", "MSFT"], "1d", lo, hi)  # both from the cache
        assert emu.request_counts()["/v2/stocks/bars"] == 1
        plain = AlpacaHistory(emu.key_id, emu.secret_key, url_override=emu.base_url)
        for symbol, given in [("AAPL", "AAPL"), ("MSFT", "msft"), ("BTC/USD", "BTCUSD")]:
            one = plain.fetch(symbol, "1d", lo, hi)
            pd.testing.assert_frame_equal(frames[given], one)
            if symbol != "BTC/USD":
                pd.testing.assert_frame_equal(again[symbol], one)
        with pytest.raises(DataError, match=r"NVDA.*no bars"):
            plain.fetch("NVDA", "1d", lo, hi)
