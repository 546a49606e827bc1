"""Trading REST through the real alpaca-py TradingClient: every answer parses into its models."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import AssetClass, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Clock, Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

from modelyard.emulator import Emulator


def _market(symbol: str, qty: float | None = None, side: OrderSide = OrderSide.BUY, **kw):  # type: ignore[no-untyped-def]
    tif = TimeInForce.GTC if "/" in symbol else TimeInForce.DAY
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=tif, **kw)


def test_account_clock_and_assets_parse(emulator, trading_client) -> None:
    account = trading_client.get_account()
    assert isinstance(account, TradeAccount)
    assert (account.cash, account.buying_power, account.equity) == ("100000", "100000", "100000")
    clock = trading_client.get_clock()
    assert isinstance(clock, Clock)
    assert clock.timestamp == emulator.now
    btc = trading_client.get_asset("BTC/USD")
    assert btc.asset_class == AssetClass.CRYPTO
    assert btc.min_order_size is not None
    assert btc.min_order_size > 0
    assert btc.min_trade_increment == 1e-9
    assert btc.price_increment == 0.01
    aapl = trading_client.get_asset("AAPL")
    assert (aapl.asset_class, aapl.fractionable) == (AssetClass.US_EQUITY, True)
    with pytest.raises(APIError) as info:
        trading_client.get_asset("NOPE")
    assert (info.value.status_code, info.value.code) == (404, 40410000)


def test_clock_opens_on_weekday_session_hours() -> None:
    from datetime import UTC, datetime

    from modelyard.emulator.clock import market_clock

    assert market_clock(datetime(2024, 1, 3, 15, 0, tzinfo=UTC))["is_open"] is True
    assert market_clock(datetime(2024, 1, 3, 21, 0, tzinfo=UTC))["is_open"] is False
    assert market_clock(datetime(2024, 7, 3, 13, 45, tzinfo=UTC))["is_open"] is True  # EDT
    saturday = market_clock(datetime(2024, 1, 6, 15, 0, tzinfo=UTC))
    assert saturday["is_open"] is False
    assert saturday["next_open"] == "2024-01-08T09:30:00-05:00"


def test_market_order_fills_at_next_open_and_books_position(
    emulator, trading_client, advance_until_bar
) -> None:
    order = trading_client.submit_order(_market("AAPL", 3, client_order_id="buy-aapl-1"))
    assert isinstance(order, Order)
    assert order.status == OrderStatus.NEW
    advance_until_bar(emulator, "AAPL")
    bar = emulator.venue.store.bar_at("AAPL", emulator.venue.clock.now_ns)
    assert bar is not None
    filled = trading_client.get_order_by_client_id("buy-aapl-1")
    assert (filled.status, filled.filled_qty, float(filled.filled_avg_price)) == (
        OrderStatus.FILLED,
        "3",
        bar.open,
    )
    (position,) = trading_client.get_all_positions()
    assert isinstance(position, Position)
    assert (position.symbol, position.qty, float(position.avg_entry_price)) == (
        "AAPL",
        "3",
        bar.open,
    )
    assert emulator.cash == pytest.approx(100_000 - 3 * bar.open)
    account = trading_client.get_account()
    assert float(account.cash) == pytest.approx(100_000 - 3 * bar.open)


def test_crypto_position_symbol_has_no_slash(emulator, trading_client, advance_until_bar) -> None:
    trading_client.submit_order(_market("BTC/USD", 0.5))
    advance_until_bar(emulator, "BTC/USD")
    assert trading_client.get_open_position("BTCUSD").qty == "0.5"
    for symbol in ("BTC/USD", "BTC%2FUSD"):
        with pytest.raises(APIError) as info:
            trading_client.get_open_position(symbol)
        assert info.value.status_code == 404


def test_limit_orders_list_and_cancel(emulator, trading_client) -> None:
    request = LimitOrderRequest(
        symbol="AAPL", qty=1, limit_price=1.0, side=OrderSide.BUY, time_in_force=TimeInForce.GTC
    )
    order = trading_client.submit_order(request)
    open_ids = [
        o.id for o in trading_client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    ]
    assert open_ids == [order.id]
    emulator.advance(5)  # far below the market: stays open
    assert trading_client.get_order_by_id(order.id).status == OrderStatus.NEW
    assert trading_client.cancel_order_by_id(order.id) is None
    assert trading_client.get_order_by_id(order.id).status == OrderStatus.CANCELED
    with pytest.raises(APIError) as info:
        trading_client.cancel_order_by_id(order.id)
    assert (info.value.status_code, info.value.code) == (422, 42210000)
    closed = trading_client.get_orders(
        GetOrdersRequest(status=QueryOrderStatus.CLOSED, symbols=["AAPL"])
    )
    assert [o.id for o in closed] == [order.id]


def test_duplicate_client_order_id_is_422_even_after_cancel(emulator, trading_client) -> None:
    request = LimitOrderRequest(
        symbol="AAPL",
        qty=1,
        limit_price=1.0,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.GTC,
        client_order_id="same-id",
    )
    order = trading_client.submit_order(request)
    trading_client.cancel_order_by_id(order.id)
    with pytest.raises(APIError) as info:
        trading_client.submit_order(request)
    assert (info.value.status_code, info.value.code) == (422, 40010001)
    with pytest.raises(APIError) as info:
        trading_client.submit_order(_market("AAPL", 1, client_order_id="x" * 49))
    assert info.value.status_code == 422


def test_insufficient_buying_power_is_403(trading_client) -> None:
    with pytest.raises(APIError) as info:
        trading_client.submit_order(_market("AAPL", 1_000_000))
    assert (info.value.status_code, info.value.code, info.value.message) == (
        403,
        40310000,
        "insufficient buying power",
    )
    with pytest.raises(APIError) as info:
        trading_client.submit_order(_market("AAPL", 1, side=OrderSide.SELL))
    assert info.value.status_code == 403


def test_time_in_force_rules(trading_client) -> None:
    with pytest.raises(APIError) as info:
        trading_client.submit_order(
            MarketOrderRequest(
                symbol="BTC/USD", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
    assert info.value.status_code == 422
    notional = trading_client.submit_order(
        MarketOrderRequest(
            symbol="AAPL", notional=500, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        )
    )
    assert (notional.notional, notional.qty) == ("500", None)
    with pytest.raises(APIError):
        trading_client.submit_order(
            MarketOrderRequest(
                symbol="AAPL", notional=500, side=OrderSide.BUY, time_in_force=TimeInForce.GTC
            )
        )


def test_requests_without_keys_are_403(emulator) -> None:
    response = requests.get(f"{emulator.base_url}/v2/account", timeout=5)
    assert response.status_code == 403
    assert response.json()["code"] == 40310000
    assert {"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"} <= set(
        response.headers
    )


def test_rate_limit_headers_count_down_then_429(venue_bars) -> None:
    with Emulator(venue_bars, speed=0, rate_limit_per_minute=3) as emu:
        headers = {"APCA-API-KEY-ID": emu.key_id, "APCA-API-SECRET-KEY": emu.secret_key}
        with requests.Session() as session:
            answers = [
                session.get(f"{emu.base_url}/v2/clock", headers=headers, timeout=5)
                for _ in range(4)
            ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-Ratelimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[3].json() == {"code": 42910000, "message": "rate limit exceeded"}


def test_position_changed_behind_the_clients_back(emulator, trading_client) -> None:
    emulator.set_position("MSFT", 7)
    assert trading_client.get_open_position("MSFT").qty == "7"
    emulator.set_position("MSFT", 0)
    assert trading_client.get_all_positions() == []


def test_twenty_threads_submitting_stay_consistent(
    emulator, client_factory, advance_until_bar
) -> None:
    clients = [client_factory(emulator) for _ in range(20)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                symbol = ("AAPL", "MSFT", "BTC/USD")[(i + j) % 3]
                qty = 0.001 * (i + 1) if symbol == "BTC/USD" else i % 3 + 1
                clients[i].submit_order(_market(symbol, qty, client_order_id=f"t{i}-{j}"))
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    for symbol in ("AAPL", "MSFT", "BTC/USD"):
        advance_until_bar(emulator, symbol)
    orders = emulator.orders()
    assert len(orders) == 100
    assert {o["status"] for o in orders} == {"filled"}
    assert len({o["client_order_id"] for o in orders}) == 100
    expected: dict[str, float] = {}
    spent = 0.0
    for o in orders:
        key = o["symbol"].replace("/", "")
        expected[key] = expected.get(key, 0.0) + float(o["filled_qty"])
        spent += float(o["filled_qty"]) * float(o["filled_avg_price"])
    assert emulator.positions() == pytest.approx(expected)
    assert emulator.cash == pytest.approx(100_000.0 - spent)


def test_restart_keeps_state_on_disk(
    venue_bars, tmp_path: Path, client_factory, advance_until_bar
) -> None:
    path = tmp_path / "venue.json"
    with Emulator(venue_bars, speed=0, state_path=path) as emu:
        client = client_factory(emu)
        order = client.submit_order(_market("AAPL", 2, client_order_id="before-restart"))
        advance_until_bar(emu, "AAPL")
        port, cash, now = emu.port, emu.cash, emu.now
        emu.restart()
        assert path.exists()
        assert (emu.port, emu.cash, emu.now) == (port, cash, now)
        assert client.get_order_by_id(order.id).status == OrderStatus.FILLED
        assert client.get_open_position("AAPL").qty == "2"
        with pytest.raises(APIError) as info:
            client.submit_order(_market("AAPL", 1, client_order_id="before-restart"))
        assert info.value.status_code == 422
