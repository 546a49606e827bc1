"""The real alpaca-py streams against the emulator's websockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from alpaca.data.live import CryptoDataStream, StockDataStream
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from alpaca.trading.stream import TradingStream

from modelyard.emulator import Emulator
from modelyard.errors import ConfigError


def _trading_stream(emu: Emulator, run_stream, raw: bool = False):  # type: ignore[no-untyped-def]
    stream = TradingStream(
        emu.key_id, emu.secret_key, raw_data=raw, url_override=emu.trading_stream_url
    )
    return run_stream(emu, stream, "trading", lambda r: stream.subscribe_trade_updates(r.handler))


def _buy(client, symbol: str = "AAPL", qty: float = 2, coid: str | None = None):  # type: ignore[no-untyped-def]
    tif = TimeInForce.GTC if "/" in symbol else TimeInForce.DAY
    request = MarketOrderRequest(
        symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=tif, client_order_id=coid
    )
    return client.submit_order(request)


def test_trading_stream_gets_new_then_fill(
    emulator, trading_client, run_stream, advance_until_bar
) -> None:
    runner = _trading_stream(emulator, run_stream)
    order = _buy(trading_client)
    advance_until_bar(emulator, "AAPL")
    new, fill = runner.get(2)
    assert (new.event, fill.event) == ("new", "fill")
    assert new.order.id == fill.order.id == order.id
    assert new.execution_id != fill.execution_id
    bar = emulator.venue.store.bar_at("AAPL", emulator.venue.clock.now_ns)
    assert bar is not None
    assert (fill.price, fill.qty, fill.position_qty) == (bar.open, 2.0, 2.0)
    assert fill.order.status == "filled"
    assert fill.timestamp == emulator.now
    runner.stop()


def test_scripted_partial_fill_then_expire(emulator, trading_client, run_stream) -> None:
    runner = _trading_stream(emulator, run_stream)
    emulator.faults.add("partial_then_expire", client_order_id="pte-1", fraction=0.4)
    _buy(trading_client, qty=10, coid="pte-1")
    events = runner.get(3)
    assert [e.event for e in events] == ["new", "partial_fill", "expired"]
    assert events[1].qty == 4.0
    assert events[2].order.filled_qty == "4"
    assert emulator.positions() == {"AAPL": 4.0}
    runner.stop()


def test_stream_reject_after_acceptance(emulator, trading_client, run_stream) -> None:
    runner = _trading_stream(emulator, run_stream)
    emulator.faults.add("stream_reject", client_order_id="rej-1")
    order = _buy(trading_client, coid="rej-1")
    assert order.status == "new"
    events = runner.get(2)
    assert [e.event for e in events] == ["new", "rejected"]
    assert trading_client.get_order_by_id(order.id).status == "rejected"
    runner.stop()


def test_duplicated_event_has_the_same_execution_id(emulator, trading_client, run_stream) -> None:
    runner = _trading_stream(emulator, run_stream)
    emulator.faults.add("duplicate_event", count=1)
    _buy(trading_client)
    first, second = runner.get(2)
    assert first.event == second.event == "new"
    assert first.execution_id == second.execution_id
    runner.stop()


def test_events_while_the_stream_is_down_are_lost(
    emulator, trading_client, run_stream, advance_until_bar
) -> None:
    runner = _trading_stream(emulator, run_stream)
    runner.stop()
    lost = _buy(trading_client)
    advance_until_bar(emulator, "AAPL")
    assert trading_client.get_order_by_id(lost.id).status == "filled"
    again = _trading_stream(emulator, run_stream)
    kept = _buy(trading_client)
    (event,) = again.get(1)
    assert event.order.id == kept.id
    assert again.drain() == []
    again.stop()


def test_muted_stream_stays_open_and_says_nothing(emulator, trading_client, run_stream) -> None:
    runner = _trading_stream(emulator, run_stream)
    emulator.faults.add("ws_mute", stream="trading")
    _buy(trading_client)
    assert runner.drain(wait=0.3) == []
    assert emulator.stream_counts()["trading"] == 1
    emulator.faults.clear()
    _buy(trading_client)
    assert runner.get(1)[0].event == "new"
    runner.stop()


def test_dropped_trading_stream_reconnects(emulator, trading_client, run_stream) -> None:
    runner = _trading_stream(emulator, run_stream)
    emulator.faults.add("ws_drop", stream="trading")
    emulator.wait_for_streams(timeout=10.0, trading=1)  # alpaca-py reconnects after ~1 s
    _buy(trading_client)
    assert runner.get(1, timeout=10.0)[0].event == "new"
    runner.stop()


def test_stock_stream_replays_bars_with_utc_timestamps(emulator, run_stream) -> None:
    stream = StockDataStream(
        emulator.key_id, emulator.secret_key, url_override=emulator.stock_stream_url
    )
    runner = run_stream(
        emulator, stream, "stock", lambda r: stream.subscribe_bars(r.handler, "AAPL")
    )
    emulator.advance(30)  # daily AAPL plus hourly BTC: some steps carry no AAPL bar
    expected = _published(emulator, "AAPL", 30)
    got = runner.get(len(expected))
    assert [b.timestamp for b in got] == list(expected.index.to_pydatetime())
    assert all(
        b.timestamp.tzinfo is not None and b.timestamp.utcoffset().total_seconds() == 0 for b in got
    )
    assert [b.open for b in got] == expected["open"].tolist()
    assert {b.symbol for b in got} == {"AAPL"}
    runner.stop()


def test_a_symbol_mute_skips_that_symbols_bars_only(emulator, run_stream) -> None:
    stream = StockDataStream(
        emulator.key_id, emulator.secret_key, url_override=emulator.stock_stream_url
    )
    runner = run_stream(
        emulator, stream, "stock", lambda r: stream.subscribe_bars(r.handler, "AAPL", "MSFT")
    )
    emulator.faults.add("ws_mute", stream="stock", symbols=["AAPL"])
    emulator.advance(30)
    msft = _published(emulator, "MSFT", 30)
    got = runner.get(len(msft))
    assert {b.symbol for b in got} == {"MSFT"}  # the venue skipped AAPL, the rest flowed
    assert runner.drain(wait=0.2) == []
    emulator.faults.clear()
    emulator.advance(30)
    expected = len(_published(emulator, "AAPL", 30)) + len(_published(emulator, "MSFT", 30))
    assert {b.symbol for b in runner.get(expected)} == {"AAPL", "MSFT"}
    runner.stop()


def test_a_symbol_mute_needs_a_list_of_symbols(emulator) -> None:
    for bad in ("AAPL", [], [1]):
        with pytest.raises(ConfigError, match="ws_mute symbols must be a non-empty list"):
            emulator.faults.add("ws_mute", stream="stock", symbols=bad)


def test_crypto_stream_replays_bars(emulator, run_stream) -> None:
    stream = CryptoDataStream(
        emulator.key_id, emulator.secret_key, url_override=emulator.crypto_stream_url
    )
    runner = run_stream(
        emulator, stream, "crypto", lambda r: stream.subscribe_bars(r.handler, "BTC/USD")
    )
    emulator.advance(10)
    expected = _published(emulator, "BTC/USD", 10)
    got = runner.get(len(expected))
    assert [(b.symbol, b.timestamp, b.close) for b in got] == [
        ("BTC/USD", t.to_pydatetime(), c) for t, c in expected["close"].items()
    ]
    runner.stop()


def test_second_data_connection_gets_406(emulator, run_stream) -> None:
    import msgpack
    import websockets.sync.client as ws_sync

    stream = StockDataStream(
        emulator.key_id, emulator.secret_key, url_override=emulator.stock_stream_url
    )
    runner = run_stream(
        emulator, stream, "stock", lambda r: stream.subscribe_bars(r.handler, "AAPL")
    )
    with ws_sync.connect(emulator.stock_stream_url, open_timeout=5) as second:
        assert msgpack.unpackb(second.recv(timeout=5)) == [{"T": "success", "msg": "connected"}]
        second.send(
            msgpack.packb({"action": "auth", "key": emulator.key_id, "secret": emulator.secret_key})
        )
        assert msgpack.unpackb(second.recv(timeout=5)) == [
            {"T": "error", "code": 406, "msg": "connection limit exceeded"}
        ]
    runner.stop()


def _published(emu: Emulator, symbol: str, steps: int) -> pd.DataFrame:
    """The bars of ``symbol`` the last ``steps`` clock steps published (first bar excluded)."""
    timeline = emu.venue.store.timeline
    pos = emu.venue.clock.position
    lo, hi = timeline[pos - steps + 1], timeline[pos]
    frame = emu.venue.store._frames[symbol]
    index = frame.index.as_unit("ns").asi8
    out = frame[(index >= lo) & (index <= hi)]
    assert len(out) > 0
    assert out.index[0] > datetime(2000, 1, 1, tzinfo=UTC)
    return out
