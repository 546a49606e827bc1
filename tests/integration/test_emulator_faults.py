"""Every fault mode triggered once and observed by the client."""

from __future__ import annotations

import time

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from conftest import synthetic_bars
from modelyard.emulator import Emulator
from modelyard.errors import ConfigError


def _order(coid: str, qty: float = 1) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol="AAPL",
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        client_order_id=coid,
    )


def _headers(emu: Emulator) -> dict[str, str]:
    return {"APCA-API-KEY-ID": emu.key_id, "APCA-API-SECRET-KEY": emu.secret_key}


def test_429_burst_then_recovery(emulator, trading_client) -> None:
    emulator.faults.add("rate_limit", path="/v2/account", count=2)
    for _ in range(2):
        with pytest.raises(APIError) as info:
            trading_client.get_account()
        assert (info.value.status_code, info.value.code) == (429, 42910000)
    assert trading_client.get_account().cash == "100000"


def test_alpaca_py_default_retries_absorb_a_short_429_burst(emulator, client_factory) -> None:
    client = client_factory(emulator)
    client._retry, client._retry_wait = 3, 0  # the SDK default count, without its 3 s waits
    emulator.faults.add("rate_limit", path="/v2/clock", count=3)
    assert client.get_clock().timestamp == emulator.now


def test_5xx_with_json_and_with_html_bodies(emulator, trading_client) -> None:
    emulator.faults.add("server_error", status=500, body="json")
    with pytest.raises(APIError) as info:
        trading_client.get_clock()
    assert (info.value.status_code, info.value.code) == (500, 50000000)
    emulator.faults.add("server_error", status=502, body="html")
    with pytest.raises(APIError) as info:
        trading_client.get_clock()
    assert info.value.status_code == 502
    assert "<html>" in str(info.value)
    with pytest.raises(ValueError, match="Expecting value"):  # json.JSONDecodeError
        _ = info.value.code


def test_accept_then_504_creates_the_order(emulator, trading_client) -> None:
    emulator.faults.add("accept_then_504", path="/v2/orders")
    with pytest.raises(APIError) as info:
        trading_client.submit_order(_order("ghost-1"))
    assert info.value.status_code == 504
    assert trading_client.get_order_by_client_id("ghost-1").status == OrderStatus.NEW
    with pytest.raises(APIError) as info:  # a blind resend with the same id is refused
        trading_client.submit_order(_order("ghost-1"))
    assert info.value.status_code == 422


def test_delay_past_the_client_timeout(emulator) -> None:
    emulator.faults.add("delay", path="/v2/clock", seconds=1.0)
    started = time.monotonic()
    with requests.Session() as session, pytest.raises(requests.exceptions.ReadTimeout):
        session.get(f"{emulator.base_url}/v2/clock", headers=_headers(emulator), timeout=0.2)
    assert time.monotonic() - started < 1.0
    with requests.Session() as session:
        assert session.get(
            f"{emulator.base_url}/v2/clock", headers=_headers(emulator), timeout=5
        ).ok


@pytest.mark.parametrize("mode", ["after_headers", "partial_body"])
def test_dropped_connection_mid_response(emulator, trading_client, mode: str) -> None:
    emulator.faults.add("drop_connection", path="/v2/orders", mode=mode)
    # requests raises ChunkedEncodingError (not ConnectionError) for a body cut short
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        trading_client.submit_order(_order(f"drop-{mode}"))
    # the order was processed before the socket died: the client must look it up
    assert trading_client.get_order_by_client_id(f"drop-{mode}").status == OrderStatus.NEW


@pytest.mark.parametrize(("status", "code"), [(422, 40010001), (403, 40310000)])
def test_synchronous_reject(emulator, trading_client, status: int, code: int) -> None:
    emulator.faults.add("reject", client_order_id="no-1", status=status, message="nope")
    with pytest.raises(APIError) as info:
        trading_client.submit_order(_order("no-1"))
    assert (info.value.status_code, info.value.code, info.value.message) == (status, code, "nope")
    assert emulator.orders() == []


def test_cancel_racing_a_fill(emulator, trading_client) -> None:
    request = LimitOrderRequest(
        symbol="AAPL",
        qty=2,
        limit_price=1.0,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.GTC,
        client_order_id="race-1",
    )
    order = trading_client.submit_order(request)
    emulator.faults.add("cancel_race", client_order_id="race-1")
    with pytest.raises(APIError) as info:
        trading_client.cancel_order_by_id(order.id)
    assert (info.value.status_code, info.value.code) == (422, 42210000)
    assert trading_client.get_order_by_id(order.id).status == OrderStatus.FILLED
    assert emulator.positions() == {"AAPL": 2.0}


def test_market_clock_forced_closed(client_factory) -> None:
    bars = {"AAPL": synthetic_bars("2024-01-03 14:30", 60, "1min", 100.0, seed=1)}
    with Emulator(bars, speed=0) as emu:
        _closed_clock(emu, client_factory(emu))


def _closed_clock(emulator: Emulator, trading_client: TradingClient) -> None:
    assert trading_client.get_clock().is_open is True
    emulator.faults.add("market_closed")
    assert trading_client.get_clock().is_open is False
    emulator.faults.clear()
    assert trading_client.get_clock().is_open is True


def test_control_endpoint_arms_and_clears_faults(emulator, trading_client) -> None:
    url = f"{emulator.base_url}/_emulator/faults"
    with requests.Session() as session:
        armed = session.post(
            url, json={"kind": "rate_limit", "path": "/v2/clock", "count": 1}, timeout=5
        )
        assert armed.status_code == 201
        assert session.get(url, timeout=5).json() == [
            {
                "id": armed.json()["id"],
                "kind": "rate_limit",
                "path": "/v2/clock",
                "client_order_id": None,
                "count": 1,
            }
        ]
        typo = session.post(url, json={"kind": "rate_limt"}, timeout=5)
        assert typo.status_code == 422
        assert "Did you mean 'rate_limit'" in typo.json()["message"]
        with pytest.raises(APIError):
            trading_client.get_clock()
        session.post(url, json={"kind": "server_error"}, timeout=5)
        assert session.delete(url, timeout=5).status_code == 204
        assert trading_client.get_clock().is_open in (True, False)
        advanced = session.post(
            f"{emulator.base_url}/_emulator/advance", json={"bars": 3}, timeout=5
        )
        assert advanced.json()["advanced"] == 3


def test_unknown_fault_kind_suggests_the_right_one(emulator) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'ws_drop'"):
        emulator.faults.add("ws_dorp")
    with pytest.raises(ConfigError, match=r"partial_fill:0\.4"):
        emulator.faults.script("x", ["new", "partial_fill:abc"])


def test_server_restart_refuses_connections_while_down(venue_bars, client_factory) -> None:
    with Emulator(venue_bars, speed=0) as emu:
        client = client_factory(emu)
        order = client.submit_order(_order("kept-1"))
        emu.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            client.get_order_by_id(order.id)
        emu.restart()
        assert client.get_order_by_id(order.id).client_order_id == "kept-1"
