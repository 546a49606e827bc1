"""The aiohttp application: Alpaca's REST surface, the faults middleware, control endpoints.

Every REST response carries ``X-Ratelimit-Limit``, ``X-Ratelimit-Remaining`` and
``X-Ratelimit-Reset`` (epoch seconds) from a token bucket; an empty bucket answers 429 (code
42910000). Requests need the ``APCA-API-KEY-ID`` and ``APCA-API-SECRET-KEY`` headers (403
otherwise) except the crypto bars, which Alpaca serves without keys. Errors use Alpaca's body,
``{"code": ..., "message": ...}``.

Control endpoints (no keys, loopback only): ``GET|POST|DELETE /_emulator/faults``,
``POST /_emulator/advance`` ``{"bars": n}``, ``GET /_emulator/state``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import unquote

from aiohttp import web

from modelyard.emulator.clock import market_clock
from modelyard.emulator.faults import FaultPlan
from modelyard.emulator.marketdata import BadRequest, parse_timeframe, parse_timestamp
from modelyard.emulator.matching import Venue, is_crypto
from modelyard.emulator.state import VenueError
from modelyard.emulator.streams import StreamHub
from modelyard.errors import ConfigError

__all__ = ["RateLimiter", "build_app"]

logger = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PRE = frozenset({"rate_limit", "server_error", "reject", "delay"})
_POST = frozenset({"accept_then_504", "drop_connection"})
_HTML_502 = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


class RateLimiter:
    """A token bucket refilled continuously: ``per_minute`` requests, bursts up to the same."""

    def __init__(self, per_minute: int) -> None:
        self.limit = per_minute
        self._tokens = float(per_minute)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            now = time.monotonic()
            rate = self.limit / 60.0
            self._tokens = min(float(self.limit), self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            allowed = self._tokens >= 1.0
            if allowed:
                self._tokens -= 1.0
            reset = time.time() + (self.limit - self._tokens) / rate if rate else time.time()
            headers = {
                "X-Ratelimit-Limit": str(self.limit),
                "X-Ratelimit-Remaining": str(int(self._tokens)),
                "X-Ratelimit-Reset": str(int(reset) + 1),
            }
            return allowed, headers


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def build_app(
    venue: Venue,
    hub: StreamHub,
    *,
    key_id: str,
    secret_key: str,
    limiter: RateLimiter,
    created_at: datetime,
    requests: Counter[str] | None = None,
    advance: Callable[[int], int],
) -> web.Application:
    """The whole venue as one aiohttp application (REST + websockets + control)."""
    faults: FaultPlan = venue.faults
    tasks: set[asyncio.Task[None]] = set()

    def authorised(request: web.Request) -> bool:
        key = request.headers.get("APCA-API-KEY-ID")
        secret = request.headers.get("APCA-API-SECRET-KEY")
        if key is None and secret is None and request.path.startswith("/v1beta3/crypto/"):
            return True
        return key == key_id and secret == secret_key

    async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        client_order_id = None
        if request.method == "POST" and request.path == "/v2/orders":
            try:
                client_order_id = (await request.json()).get("client_order_id")
            except (ValueError, AttributeError):
                client_order_id = None
        fault = faults.take(_PRE, path=request.path, client_order_id=client_order_id)
        if fault is not None:
            params = fault.params
            if fault.kind == "rate_limit":
                raise VenueError(429, 42910000, "rate limit exceeded")
            if fault.kind == "server_error":
                status = int(params.get("status", 500))
                if params.get("body", "json") == "html":
                    html = _HTML_502.format(status=status)
                    return web.Response(status=status, text=html, content_type="text/html")
                raise VenueError(status, status * 100_000, "internal server error")
            if fault.kind == "reject":
                status = int(params.get("status", 422))
                code = 40310000 if status == 403 else 40010001
                raise VenueError(status, code, str(params.get("message", "rejected by emulator")))
            await asyncio.sleep(float(params.get("seconds", 5.0)))
        response = await handler(request)
        fault = faults.take(_POST, path=request.path, client_order_id=client_order_id)
        if fault is None:
            return response
        if fault.kind == "accept_then_504":
            html = "<html><body><h1>504 Gateway Time-out</h1></body></html>"
            return web.Response(status=504, text=html, content_type="text/html")
        return await _drop(request, response, str(fault.params.get("mode", "after_headers")))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_emulator") or request.headers.get("Upgrade"):
            return await handler(request)
        if requests is not None:
            requests[request.path] += 1
        allowed, headers = limiter.take()
        try:
            if not allowed:
                raise VenueError(429, 42910000, "rate limit exceeded")
            if not authorised(request):
                raise VenueError(403, 40310000, "forbidden")
            response = await apply_faults(request, handler)
        except VenueError as exc:
            response = _error(exc.status, exc.code, exc.message)
        except BadRequest as exc:
            response = _error(exc.status, exc.status * 100_000, str(exc))
        except web.HTTPException as exc:
            response = _error(exc.status, exc.status * 100_000, exc.reason)
        if not response.prepared:
            response.headers.update(headers)
        return response

    # -- trading -----------------------------------------------------------------------------
    async def account(request: web.Request) -> web.Response:
        return web.json_response(venue.account_json(created_at))

    async def clock(request: web.Request) -> web.Response:
        with venue.state.lock:
            now = venue.clock.now
        return web.json_response(market_clock(now, force_closed=faults.active("market_closed")))

    async def asset(request: web.Request) -> web.Response:
        return web.json_response(venue.asset_json(unquote(request.match_info["symbol"])))

    async def positions(request: web.Request) -> web.Response:
        with venue.state.lock:
            keys = sorted(venue.state.positions)
            return web.json_response([venue.position_json(k) for k in keys])

    async def position(request: web.Request) -> web.Response:
        return web.json_response(venue.position_json(unquote(request.match_info["symbol"])))

    async def submit(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError as exc:
            raise VenueError(422, 40010001, "request body is not valid JSON") from exc
        if not isinstance(payload, dict):
            raise VenueError(422, 40010001, "request body must be a JSON object")
        order = venue.submit(payload)
        script = venue.take_script(order.id)
        if script is not None:
            task = asyncio.create_task(_play(venue, order.id, *script))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return web.json_response(order.to_json())

    async def list_orders(request: web.Request) -> web.Response:
        query = request.query
        status = query.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise VenueError(422, 40010001, f"invalid status {status!r}")
        try:
            limit = int(query.get("limit", "50"))
        except ValueError as exc:
            raise VenueError(422, 40010001, "limit must be an integer") from exc
        if not 1 <= limit <= 500:
            raise VenueError(422, 40010001, "limit must be between 1 and 500")
        wanted = {venue.canonical(s) for s in query.get("symbols", "").split(",") if s}
        with venue.state.lock:
            orders = list(venue.state.orders.values())
            if query.get("direction", "desc") == "desc":
                orders.reverse()
            selected = [
                o.to_json()
                for o in orders
                if (status == "all" or o.is_open == (status == "open"))
                and (not wanted or o.symbol in wanted)
            ]
        return web.json_response(selected[:limit])

    async def get_order(request: web.Request) -> web.Response:
        with venue.state.lock:
            return web.json_response(venue.get_order(request.match_info["order_id"]).to_json())

    async def by_client_id(request: web.Request) -> web.Response:
        with venue.state.lock:
            order = venue.get_by_client_id(request.query.get("client_order_id", ""))
            return web.json_response(order.to_json())

    async def cancel(request: web.Request) -> web.Response:
        venue.cancel(request.match_info["order_id"])
        return web.Response(status=204)

    # -- market data -------------------------------------------------------------------------
    async def bars(request: web.Request, crypto: bool) -> web.Response:
        query = request.query
        symbols = [s.strip() for s in query.get("symbols", "").split(",") if s.strip()]
        if not symbols:
            raise BadRequest("symbols is required", status=400)
        for symbol in symbols:
            if is_crypto(symbol) != crypto or (crypto and symbol.count("/") != 1):
                form = "BASE/QUOTE, e.g. BTC/USD" if crypto else "a ticker, e.g. AAPL"
                raise BadRequest(f"invalid symbol: {symbol!r} (expected {form})", status=400)
        step = parse_timeframe(query.get("timeframe", "1Day"))
        if query.get("sort", "asc") != "asc":
            raise BadRequest("the emulator serves sort=asc only")
        try:
            limit = int(query.get("limit", "1000"))
        except ValueError as exc:
            raise BadRequest("limit must be an integer", status=400) from exc
        with venue.state.lock:
            now_ns = venue.clock.now_ns
        start = parse_timestamp(query["start"]) if "start" in query else 0
        end = min(parse_timestamp(query["end"]), now_ns) if "end" in query else now_ns
        page, token = venue.store.query(symbols, step, start, end, limit, query.get("page_token"))
        return web.json_response({"bars": page, "next_page_token": token})

    async def stock_bars(request: web.Request) -> web.Response:
        return await bars(request, crypto=False)

    async def crypto_bars(request: web.Request) -> web.Response:
        return await bars(request, crypto=True)

    # -- control -----------------------------------------------------------------------------
    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response(faults.armed())

    async def add_fault(request: web.Request) -> web.Response:
        body = await request.json()
        params = {k: v for k, v in body.items() if k not in ("kind", "path", "client_order_id")}
        params.update(params.pop("params", {}) or {})
        count = params.pop("count", 1)
        try:
            fault = faults.add(
                str(body.get("kind")),
                path=body.get("path"),
                client_order_id=body.get("client_order_id"),
                count=count,
                **params,
            )
        except ConfigError as exc:
            return _error(422, 40010001, str(exc))
        return web.json_response(fault.to_json(), status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        faults.clear()
        return web.Response(status=204)

    async def control_advance(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        stepped = advance(int(body.get("bars", 1)))
        return web.json_response({"advanced": stepped, "now": venue.clock.now.isoformat()})

    async def control_state(request: web.Request) -> web.Response:
        with venue.state.lock:
            body = venue.state.to_dict()
            body["now"] = venue.clock.now.isoformat()
            body["streams"] = hub.counts()
            body["requests"] = dict(requests or {})
        return web.json_response(body)

    async def on_shutdown(app: web.Application) -> None:
        for task in list(tasks):
            task.cancel()
        await hub.close_all()

    app = web.Application(middlewares=[middleware])
    app.on_shutdown.append(on_shutdown)
    app.add_routes(
        [
            web.get("/v2/account", account),
            web.get("/v2/clock", clock),
            web.get("/v2/assets/{symbol:.+}", asset),
            web.get("/v2/positions", positions),
            web.get("/v2/positions/{symbol:.+}", position),
            web.post("/v2/orders", submit),
            web.get("/v2/orders", list_orders),
            web.get("/v2/orders:by_client_order_id", by_client_id),
            web.get("/v2/orders/{order_id}", get_order),
            web.delete("/v2/orders/{order_id}", cancel),
            web.get("/v2/stocks/bars", stock_bars),
            web.get("/v1beta3/crypto/us/bars", crypto_bars),
            web.get("/_emulator/faults", list_faults),
            web.post("/_emulator/faults", add_fault),
            web.delete("/_emulator/faults", clear_faults),
            web.post("/_emulator/advance", advance_handler_guard(control_advance)),
            web.get("/_emulator/state", control_state),
            *hub.routes(),
        ]
    )
    return app


def advance_handler_guard(handler: Handler) -> Handler:
    """Control calls answer 422 on bad JSON instead of a 500."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ValueError, TypeError) as exc:
            return _error(422, 40010001, f"bad control request: {exc}")

    return guarded


async def _play(venue: Venue, order_id: str, steps: list[str], interval: float) -> None:
    for step in steps:
        await asyncio.sleep(interval)
        venue.play_step(order_id, step)


async def _drop(
    request: web.Request, response: web.StreamResponse, mode: str
) -> web.StreamResponse:
    """Send the status line and headers (and half the body), then cut the connection."""
    body = response.body if isinstance(response, web.Response) else b""
    payload = body if isinstance(body, bytes) else b""
    stream = web.StreamResponse(
        status=response.status, headers={"Content-Type": "application/json"}
    )
    stream.content_length = max(len(payload), 1)
    await stream.prepare(request)
    if mode == "partial_body":
        await stream.write(payload[: len(payload) // 2])
    else:
        await stream.write(b"")
    await asyncio.sleep(0.01)
    if request.transport is not None:
        request.transport.abort()
    return stream
