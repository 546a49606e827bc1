"""Websocket endpoints: the trading stream (JSON) and the market-data streams (msgpack).

Trading stream (``/stream``), as alpaca-py's ``TradingStream`` speaks it: the client sends
``{"action": "authenticate", "data": {"key_id", "secret_key"}}`` and gets
``{"stream": "authorization", "data": {"status": "authorized", ...}}``; then
``{"action": "listen", "data": {"streams": ["trade_updates"]}}`` and gets
``{"stream": "listening", ...}``. Frames are *binary* JSON, like Alpaca's paper endpoint.
Events produced while no listener is connected are not replayed (they are lost, as live).

Market data (``/v2/iex``, ``/v2/sip``, ``/v2/test`` for stocks, ``/v1beta3/crypto/us`` for
crypto), msgpack arrays: ``[{"T": "success", "msg": "connected"}]`` on connect,
``{"action": "auth", "key", "secret"}`` -> ``authenticated`` (or error 402), a second
authenticated connection with the same key on the same feed -> error 406 ``connection limit
exceeded``; ``{"action": "subscribe", "bars": [...]}`` -> a ``subscription`` ack. Bars go out as
``{"T": "b", "S", "o", "h", "l", "c", "v", "n", "vw", "t": msgpack Timestamp}``.

Each connection has an outgoing queue and one writer task, so frames leave in order and a
publisher never waits. ``ws_mute`` drops data frames (events, bars) but still answers the
protocol (auth, subscribe), so a muted client hangs in ``recv`` the way a half-dead feed does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import msgpack
from aiohttp import WSCloseCode, WSMsgType, web

from modelyard.emulator.faults import FaultPlan
from modelyard.emulator.marketdata import Bar

__all__ = ["StreamHub"]

logger = logging.getLogger(__name__)
STOCK_FEEDS = ("/v2/iex", "/v2/sip", "/v2/test", "/v2/delayed_sip")
CRYPTO_FEEDS = ("/v1beta3/crypto/us",)


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    stream: str  # "trading", "stock" or "crypto"
    key: str | None = None
    listening: bool = False
    bars: set[str] = field(default_factory=set)
    queue: asyncio.Queue[tuple[bytes, bool] | None] = field(default_factory=asyncio.Queue)


class StreamHub:
    """All open websockets of one server; every method runs on the server's event loop."""

    def __init__(self, key_id: str, secret_key: str, faults: FaultPlan) -> None:
        self._key_id = key_id
        self._secret_key = secret_key
        self._faults = faults
        self._conns: set[_Conn] = set()
        self.sent_events = 0
        self.sent_bars = 0

    def routes(self) -> list[web.RouteDef]:
        routes = [web.get("/stream", self.trading_handler)]
        routes += [web.get(path, self.stock_handler) for path in STOCK_FEEDS]
        routes += [web.get(path, self.crypto_handler) for path in CRYPTO_FEEDS]
        return routes

    def counts(self) -> dict[str, int]:
        """Connections that listen to trade updates or hold a bars subscription, per stream."""
        out = {"trading": 0, "stock": 0, "crypto": 0}
        for conn in self._conns:
            if conn.listening or conn.bars:
                out[conn.stream] += 1
        return out

    # -- publishing --------------------------------------------------------------------------
    def publish_trade(self, event: dict[str, Any]) -> None:
        frame = json.dumps(event).encode()
        copies = 2 if self._faults.take(frozenset({"duplicate_event"})) else 1
        for conn in self._conns:
            if conn.stream == "trading" and conn.listening:
                for _ in range(copies):
                    conn.queue.put_nowait((frame, True))
                self.sent_events += copies

    def publish_bars(self, bars: list[Bar]) -> None:
        if not bars:
            return
        for conn in self._conns:
            if conn.stream == "trading" or not conn.bars:
                continue
            crypto = conn.stream == "crypto"
            _, muted = self._faults.muted(conn.stream)
            wanted = [
                _bar_message(b)
                for b in bars
                if ("/" in b.symbol) == crypto
                and (b.symbol in conn.bars or "*" in conn.bars)
                and b.symbol not in muted
            ]
            if wanted:
                conn.queue.put_nowait((_pack(wanted), True))
                self.sent_bars += len(wanted)

    async def drop(self, stream: str) -> None:
        """Close the matching connections now (the ``ws_drop`` fault)."""
        doomed = [c for c in self._conns if stream in ("all", c.stream)]
        for conn in doomed:
            logger.info("dropping %s websocket", conn.stream)
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"emulator: dropped")

    async def close_all(self) -> None:
        for conn in list(self._conns):
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"emulator: shutdown")

    # -- plumbing ----------------------------------------------------------------------------
    async def _writer(self, conn: _Conn) -> None:
        while True:
            item = await conn.queue.get()
            if item is None:
                return
            frame, is_data = item
            if is_data and self._faults.muted(conn.stream)[0]:
                continue
            try:
                await conn.ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):
                return

    async def _serve(self, request: web.Request, stream: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 22)
        await ws.prepare(request)
        conn = _Conn(ws, stream)
        self._conns.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        try:
            if stream != "trading":
                conn.queue.put_nowait((_pack([{"T": "success", "msg": "connected"}]), False))
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    if stream == "trading":
                        await self._on_trading(conn, json.loads(msg.data))
                    else:
                        await self._on_data(conn, msgpack.unpackb(msg.data))
                except (ValueError, TypeError, AttributeError) as exc:
                    logger.info("bad %s websocket message: %s", stream, exc)
        finally:
            self._conns.discard(conn)
            conn.queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(writer, timeout=1.0)
        return ws

    async def trading_handler(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, "trading")

    async def stock_handler(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, "stock")

    async def crypto_handler(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, "crypto")

    def _reply(self, conn: _Conn, body: Any) -> None:
        frame = json.dumps(body).encode() if conn.stream == "trading" else _pack(body)
        conn.queue.put_nowait((frame, False))

    async def _on_trading(self, conn: _Conn, msg: dict[str, Any]) -> None:
        action, data = msg.get("action"), msg.get("data") or {}
        if action in ("authenticate", "auth"):
            ok = data.get("key_id") == self._key_id and data.get("secret_key") == self._secret_key
            status = "authorized" if ok else "unauthorized"
            self._reply(
                conn, {"stream": "authorization", "data": {"status": status, "action": action}}
            )
            if ok:
                conn.key = self._key_id
            else:
                await self._close_after_reply(conn)
        elif action == "listen":
            if conn.key is None:
                self._reply(conn, {"stream": "authorization", "data": {"status": "unauthorized"}})
                return
            streams = [s for s in data.get("streams", []) if s == "trade_updates"]
            conn.listening = bool(streams)
            self._reply(conn, {"stream": "listening", "data": {"streams": streams}})

    async def _on_data(self, conn: _Conn, msg: dict[str, Any]) -> None:
        action = msg.get("action")
        if action == "auth":
            if msg.get("key") != self._key_id or msg.get("secret") != self._secret_key:
                self._reply(conn, [{"T": "error", "code": 402, "msg": "auth failed"}])
                await self._close_after_reply(conn)
                return
            if any(c is not conn and c.stream == conn.stream and c.key for c in self._conns):
                self._reply(conn, [{"T": "error", "code": 406, "msg": "connection limit exceeded"}])
                await self._close_after_reply(conn)
                return
            conn.key = self._key_id
            self._reply(conn, [{"T": "success", "msg": "authenticated"}])
        elif action in ("subscribe", "unsubscribe"):
            if conn.key is None:
                self._reply(conn, [{"T": "error", "code": 401, "msg": "not authenticated"}])
                return
            symbols = {str(s) for s in msg.get("bars", [])}
            delay = self._faults.param("ws_slow_subscribe", "seconds", 1.0, conn.stream)
            if delay is not None and action == "subscribe":
                await asyncio.sleep(delay)
            if action == "subscribe":
                conn.bars |= symbols
            else:
                conn.bars -= symbols
            ack: dict[str, Any] = {"T": "subscription", "trades": [], "quotes": []}
            ack.update({"bars": sorted(conn.bars), "updatedBars": [], "dailyBars": []})
            self._reply(conn, [ack])
        else:
            self._reply(conn, [{"T": "error", "code": 400, "msg": "invalid syntax"}])

    async def _close_after_reply(self, conn: _Conn) -> None:
        await asyncio.sleep(0.05)
        await conn.ws.close(code=WSCloseCode.POLICY_VIOLATION)


def _pack(body: Any) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def _bar_message(bar: Bar) -> dict[str, Any]:
    return {
        "T": "b",
        "S": bar.symbol,
        "o": bar.open,
        "h": bar.high,
        "l": bar.low,
        "c": bar.close,
        "v": bar.volume,
        "n": 0,
        "vw": (bar.high + bar.low + bar.close) / 3.0,
        "t": msgpack.Timestamp.from_unix_nano(bar.ts_ns),
    }
