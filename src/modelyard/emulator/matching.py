"""The venue core: order validation, matching against replayed bars, trade events.

Rules (simple on purpose, and the same every run):

- ``type`` market or limit; ``side`` buy or sell; ``qty`` or ``notional`` (not both, > 0).
- Crypto (``BTC/USD``; ``BTCUSD`` is accepted and normalised): ``time_in_force`` gtc or ioc;
  ``qty`` at least the asset's ``min_order_size``.
- Equities: ``time_in_force`` day, gtc, ioc or fok; ``notional`` and fractional ``qty`` only
  with ``day``; ``notional`` only for market orders (crypto too).
- ``client_order_id`` at most 48 characters and unique forever (also after a cancel): 422.
- Buys need buying power (403, code 40310000); sells need the position (no shorting, 403).
- A market order fills whole at the open of the next bar of its symbol. A buy limit fills when
  the bar's low reaches it, at ``min(open, limit)``; a sell limit when the high reaches it, at
  ``max(open, limit)``. Unfilled ``ioc``/``fok`` orders are canceled after that bar; ``day``
  orders expire on the first bar of a later New York date. Fees are zero.

Every change emits an Alpaca ``trade_updates`` message through :attr:`Venue.emit` (never
blocking); the server turns those into websocket frames.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from modelyard.emulator.clock import NEW_YORK, VirtualClock, ns_to_datetime
from modelyard.emulator.faults import FaultPlan
from modelyard.emulator.marketdata import Bar, BarStore
from modelyard.emulator.state import (
    ACCOUNT_ID,
    OrderRecord,
    VenueError,
    VenueState,
    asset_id,
    fmt,
    position_key,
)

__all__ = ["Venue"]

Event = dict[str, Any]
CRYPTO_TIF = frozenset({"gtc", "ioc"})
EQUITY_TIF = frozenset({"day", "gtc", "ioc", "fok"})
MAX_CLIENT_ORDER_ID = 48


def _invalid(message: str) -> VenueError:
    return VenueError(422, 40010001, message)


def is_crypto(symbol: str) -> bool:
    return "/" in symbol


def _number(payload: dict[str, Any], name: str) -> float | None:
    raw = payload.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise _invalid(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value) or value <= 0:
        raise _invalid(f"{name} must be > 0, got {raw!r}")
    return value


class Venue:
    """Bars, clock, account and faults behind one re-entrant lock (``state.lock``)."""

    def __init__(self, store: BarStore, clock: VirtualClock, state: VenueState, faults: FaultPlan):
        self.store = store
        self.clock = clock
        self.state = state
        self.faults = faults
        self.emit: Callable[[Event], None] = lambda event: None
        self._crypto_by_key = {position_key(s): s for s in store.symbols if is_crypto(s)}
        self._scripts: dict[str, tuple[list[str], float]] = {}

    # -- prices ------------------------------------------------------------------------------
    def price(self, symbol: str) -> float:
        return self.store.last_close(symbol, self.clock.now_ns) or 0.0

    def prices(self) -> dict[str, float]:
        return {s: self.price(s) for s in self.store.symbols}

    def canonical(self, symbol: str) -> str:
        return self._crypto_by_key.get(symbol.upper(), symbol.upper())

    # -- events ------------------------------------------------------------------------------
    def _event(self, order: OrderRecord, kind: str, **extra: float) -> None:
        pos = self.state.positions.get(position_key(order.symbol))
        data: Event = {
            "event": kind,
            "execution_id": str(uuid.uuid4()),
            "order": order.to_json(),
            "timestamp": self.clock.now.isoformat().replace("+00:00", "Z"),
            "position_qty": fmt(pos.qty if pos else 0.0),
        }
        data.update({k: fmt(v) for k, v in extra.items()})
        self.emit({"stream": "trade_updates", "data": data})

    # -- orders ------------------------------------------------------------------------------
    def submit(self, payload: dict[str, Any]) -> OrderRecord:
        """Validate and accept an order (emits ``new``); raises :class:`VenueError`."""
        with self.state.lock:
            order = self._validate(payload)
            self._check_funds(order)
            now = self.clock.now
            order.updated_at = now
            self.state.orders[order.id] = order
            self.state.client_ids[order.client_order_id] = order.id
            script = self.faults.pop_script(order.client_order_id)
            if script is not None:
                order.scripted = True
                steps, interval = script
                if steps and steps[0] == "new":
                    self._event(order, "new")
                    steps = steps[1:]
                self._scripts[order.id] = (steps, interval)
            else:
                self._event(order, "new")
            return order

    def take_script(self, order_id: str) -> tuple[list[str], float] | None:
        with self.state.lock:
            return self._scripts.pop(order_id, None)

    def _validate(self, payload: dict[str, Any]) -> OrderRecord:
        symbol = self.canonical(str(payload.get("symbol") or ""))
        if not symbol or not self.store.has(symbol):
            raise _invalid(f'asset "{payload.get("symbol")}" not found')
        crypto = is_crypto(symbol)
        side, kind = payload.get("side"), payload.get("type", "market")
        tif = payload.get("time_in_force")
        if side not in ("buy", "sell"):
            raise _invalid(f"side must be buy or sell, got {side!r}")
        if kind not in ("market", "limit"):
            raise _invalid(f"order type {kind!r} is not supported by the emulator")
        allowed = CRYPTO_TIF if crypto else EQUITY_TIF
        if tif not in allowed:
            raise _invalid(f"invalid time_in_force {tif!r} for {symbol}: use {sorted(allowed)}")
        qty, notional = _number(payload, "qty"), _number(payload, "notional")
        if (qty is None) == (notional is None):
            raise _invalid("exactly one of qty or notional is required")
        if notional is not None and kind != "market":
            raise _invalid("notional orders must be market orders")
        if not crypto and tif != "day" and (notional is not None or (qty or 0) % 1):
            raise _invalid("fractional and notional equity orders must be day orders")
        limit_price = _number(payload, "limit_price")
        if kind == "limit" and limit_price is None:
            raise _invalid("limit_price is required for limit orders")
        if crypto and qty is not None and qty < _min_order_size(self.price(symbol)):
            raise _invalid(f"qty must be >= {fmt(_min_order_size(self.price(symbol)))}")
        client_id = str(payload.get("client_order_id") or uuid.uuid4())
        if len(client_id) > MAX_CLIENT_ORDER_ID:
            raise _invalid(f"client_order_id must be at most {MAX_CLIENT_ORDER_ID} characters")
        if client_id in self.state.client_ids:
            raise _invalid("client_order_id must be unique")
        return OrderRecord(
            id=str(uuid.uuid4()),
            client_order_id=client_id,
            symbol=symbol,
            asset_class="crypto" if crypto else "us_equity",
            side=str(side),
            type=str(kind),
            time_in_force=str(tif),
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            created_at=self.clock.now,
        )

    def _check_funds(self, order: OrderRecord) -> None:
        price = order.limit_price or self.price(order.symbol)
        if order.side == "buy":
            cost = order.notional if order.notional is not None else (order.qty or 0.0) * price
            power = self.state.buying_power(self.prices())
            if cost > power + 1e-9:
                raise VenueError(403, 40310000, "insufficient buying power")
            return
        pos = self.state.positions.get(position_key(order.symbol))
        available = (pos.qty if pos else 0.0) - self.state.held_for_sells(order.symbol)
        wanted = order.qty if order.qty is not None else (order.notional or 0.0) / price
        if wanted > available + 1e-9:
            raise VenueError(
                403,
                40310000,
                f"insufficient qty available for order (requested: {fmt(wanted)}, "
                f"available: {fmt(max(available, 0.0))})",
            )

    def get_order(self, order_id: str) -> OrderRecord:
        with self.state.lock:
            order = self.state.orders.get(order_id)
            if order is None:
                raise VenueError(404, 40410000, "order not found")
            return order

    def get_by_client_id(self, client_order_id: str) -> OrderRecord:
        with self.state.lock:
            order_id = self.state.client_ids.get(client_order_id)
            if order_id is None:
                raise VenueError(404, 40410000, "order not found")
            return self.state.orders[order_id]

    def cancel(self, order_id: str) -> None:
        with self.state.lock:
            order = self.get_order(order_id)
            race = order.is_open and self.faults.take(
                frozenset({"cancel_race"}), client_order_id=order.client_order_id
            )
            if race:
                self._fill(
                    order, order.remaining_qty(self.price(order.symbol)), self.price(order.symbol)
                )
            if not order.is_open:
                raise VenueError(422, 42210000, f'order is already in "{order.status}" state')
            self._finish(order, "canceled")

    # -- state changes -----------------------------------------------------------------------
    def _fill(self, order: OrderRecord, qty: float, price: float, *, final: bool = True) -> None:
        now = self.clock.now
        if qty <= 0:
            return
        self.state.apply_fill(order, qty, price, now)
        order.status = "filled" if final else "partially_filled"
        if final:
            order.filled_at = now
        self._event(order, "fill" if final else "partial_fill", price=price, qty=qty)

    def _finish(self, order: OrderRecord, status: str) -> None:
        now = self.clock.now
        order.status = status
        order.updated_at = now
        stamp = {"canceled": "canceled_at", "expired": "expired_at", "rejected": "failed_at"}
        setattr(order, stamp[status], now)
        self._event(order, status)

    def play_step(self, order_id: str, step: str) -> None:
        """Apply one scripted step (``new``, ``partial_fill:0.4``, ``fill``, ``canceled`` ...)."""
        with self.state.lock:
            order = self.state.orders[order_id]
            name, _, arg = step.partition(":")
            price = order.limit_price or self.price(order.symbol)
            if name == "new":
                self._event(order, "new")
            elif not order.is_open:
                return
            elif name == "partial_fill":
                total = order.qty if order.qty is not None else (order.notional or 0.0) / price
                self._fill(
                    order, min(total * float(arg), order.remaining_qty(price)), price, final=False
                )
            elif name == "fill":
                self._fill(order, order.remaining_qty(price), price)
            else:
                self._finish(order, name)

    def step(self) -> tuple[int, list[Bar]] | None:
        """Advance the clock one timestamp and match open orders against its bars."""
        with self.state.lock:
            ts = self.clock.step()
            if ts is None:
                return None
            self.state.now_ns = ts
            bars = [b for s in self.store.symbols if (b := self.store.bar_at(s, ts)) is not None]
            if any(o.is_open for o in self.state.orders.values()):
                for bar in bars:
                    self._match(bar)
            return ts, bars

    def _match(self, bar: Bar) -> None:
        day = ns_to_datetime(bar.ts_ns).astimezone(NEW_YORK).date().isoformat()
        for order in list(self.state.orders.values()):
            if not order.is_open or order.scripted or order.symbol != bar.symbol:
                continue
            if order.time_in_force == "day" and order.asset_class == "us_equity":
                if order.session_day is None:
                    order.session_day = day
                elif day != order.session_day:
                    self._finish(order, "expired")
                    continue
            price = _fill_price(order, bar)
            if price is not None:
                self._fill(order, order.remaining_qty(price), price)
            elif order.time_in_force in ("ioc", "fok"):
                self._finish(order, "canceled")

    # -- views -------------------------------------------------------------------------------
    def asset_json(self, symbol: str) -> dict[str, Any]:
        canonical = self.canonical(symbol)
        if not self.store.has(canonical):
            raise VenueError(404, 40410000, f"asset not found for {symbol}")
        crypto = is_crypto(canonical)
        body: dict[str, Any] = {
            "id": asset_id(canonical),
            "class": "crypto" if crypto else "us_equity",
            "exchange": "CRYPTO" if crypto else "NASDAQ",
            "symbol": canonical,
            "name": canonical,
            "status": "active",
            "tradable": True,
            "marginable": not crypto,
            "shortable": False,
            "easy_to_borrow": False,
            "fractionable": True,
            "maintenance_margin_requirement": 100.0,
            "attributes": [],
        }
        if crypto:
            body["min_order_size"] = fmt(_min_order_size(self.price(canonical)))
            body["min_trade_increment"] = "0.000000001"
            body["price_increment"] = "0.01" if self.price(canonical) >= 1 else "0.000001"
        return body

    def position_json(self, key: str) -> dict[str, Any]:
        with self.state.lock:
            pos = self.state.positions.get(key)
            if pos is None or "/" in key:
                raise VenueError(404, 40410000, "position does not exist")
            price = self.price(pos.symbol)
            last = self.store.previous_close(pos.symbol, self.clock.now_ns) or price
            value, cost = pos.qty * price, pos.qty * pos.avg_entry_price
            held = self.state.held_for_sells(pos.symbol)
            return {
                "asset_id": asset_id(pos.symbol),
                "symbol": key,
                "exchange": "CRYPTO" if is_crypto(pos.symbol) else "NASDAQ",
                "asset_class": pos.asset_class,
                "asset_marginable": not is_crypto(pos.symbol),
                "avg_entry_price": fmt(pos.avg_entry_price),
                "qty": fmt(pos.qty),
                "qty_available": fmt(pos.qty - held),
                "side": "long" if pos.qty > 0 else "short",
                "market_value": fmt(value),
                "cost_basis": fmt(cost),
                "unrealized_pl": fmt(value - cost),
                "unrealized_plpc": fmt((value - cost) / abs(cost) if cost else 0.0),
                "unrealized_intraday_pl": fmt(pos.qty * (price - last)),
                "unrealized_intraday_plpc": fmt((price - last) / last if last else 0.0),
                "current_price": fmt(price),
                "lastday_price": fmt(last),
                "change_today": fmt((price - last) / last if last else 0.0),
            }

    def account_json(self, created_at: datetime) -> dict[str, Any]:
        with self.state.lock:
            prices = self.prices()
            values = [p.qty * prices.get(p.symbol, 0.0) for p in self.state.positions.values()]
            long_value = sum(v for v in values if v > 0)
            short_value = sum(v for v in values if v < 0)
            equity = self.state.cash + long_value + short_value
            power = fmt(self.state.buying_power(prices))
            return {
                "id": ACCOUNT_ID,
                "account_number": "EMU000001",
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "currency": "USD",
                "buying_power": power,
                "regt_buying_power": power,
                "daytrading_buying_power": "0",
                "non_marginable_buying_power": power,
                "options_buying_power": power,
                "cash": fmt(self.state.cash),
                "accrued_fees": "0",
                "pending_transfer_in": "0",
                "portfolio_value": fmt(equity),
                "equity": fmt(equity),
                "last_equity": fmt(equity),
                "long_market_value": fmt(long_value),
                "short_market_value": fmt(short_value),
                "initial_margin": "0",
                "maintenance_margin": "0",
                "last_maintenance_margin": "0",
                "sma": "0",
                "multiplier": "1",
                "daytrade_count": 0,
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "trade_suspended_by_user": False,
                "shorting_enabled": False,
                "created_at": created_at.isoformat().replace("+00:00", "Z"),
            }


def _min_order_size(price: float) -> float:
    """About one dollar's worth, rounded down to a power of ten (Alpaca's sizes are similar)."""
    if price <= 0:
        return 1e-9
    return float(10 ** math.floor(math.log10(1.0 / price)))


def _fill_price(order: OrderRecord, bar: Bar) -> float | None:
    if order.type == "market":
        return bar.open
    limit = order.limit_price or 0.0
    if order.side == "buy":
        return min(bar.open, limit) if bar.low <= limit else None
    return max(bar.open, limit) if bar.high >= limit else None
