"""Account, orders and positions of the emulated venue: plain Python, lock-protected.

The account is a cash account (``multiplier`` 1, no shorting): ``buying_power`` is cash minus
what open buy orders reserve (qty x limit price, or qty x last price for market orders, or the
notional). Fees are zero. Crypto positions are keyed and reported without the slash
(``BTC/USD`` trades, ``BTCUSD`` is the position), as Alpaca does.

The whole state serialises to JSON (:meth:`VenueState.to_dict`), which is what
``Emulator.restart()`` writes atomically to ``state_path``.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modelyard._atomic import write_text_atomic

__all__ = [
    "OrderRecord",
    "PositionRecord",
    "VenueError",
    "VenueState",
    "fmt",
    "position_key",
]

ACCOUNT_ID = "6f1a5d2e-2f4b-4c57-9a0e-5e6d7a8b9c01"
_ASSET_NAMESPACE = uuid.UUID("0b8e3a52-6c1d-4f0e-8d7a-2a9b1c3d4e5f")
OPEN_STATUSES = frozenset({"new", "accepted", "partially_filled", "pending_new"})


class VenueError(Exception):
    """An error the venue answers with Alpaca's ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def fmt(value: float | None) -> str | None:
    """Alpaca sends decimals as strings; nine places at most, no trailing zeros."""
    if value is None:
        return None
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def position_key(symbol: str) -> str:
    return symbol.replace("/", "")


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(_ASSET_NAMESPACE, symbol))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass
class OrderRecord:
    id: str
    client_order_id: str
    symbol: str
    asset_class: str
    side: str
    type: str
    time_in_force: str
    qty: float | None
    notional: float | None
    limit_price: float | None
    created_at: datetime
    status: str = "new"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    session_day: str | None = None
    scripted: bool = False

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def remaining_qty(self, price: float) -> float:
        total = self.qty if self.qty is not None else (self.notional or 0.0) / price
        return max(0.0, total - self.filled_qty)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at),
            "submitted_at": _iso(self.created_at),
            "filled_at": _iso(self.filled_at),
            "expired_at": _iso(self.expired_at),
            "canceled_at": _iso(self.canceled_at),
            "failed_at": _iso(self.failed_at),
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": asset_id(self.symbol),
            "symbol": self.symbol,
            "asset_class": self.asset_class,
            "notional": fmt(self.notional),
            "qty": fmt(self.qty),
            "filled_qty": fmt(self.filled_qty),
            "filled_avg_price": fmt(self.filled_avg_price),
            "order_class": "simple",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": fmt(self.limit_price),
            "stop_price": None,
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "position_intent": None,
        }

    def to_state(self) -> dict[str, Any]:
        raw = asdict(self)
        for name, value in raw.items():
            if isinstance(value, datetime):
                raw[name] = value.isoformat()
        return raw

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> OrderRecord:
        dated = ("created_at", "updated_at", "filled_at", "canceled_at", "expired_at", "failed_at")
        values: dict[str, Any] = {
            k: (datetime.fromisoformat(v) if k in dated and v else v) for k, v in raw.items()
        }
        return cls(**values)


@dataclass
class PositionRecord:
    symbol: str  # canonical trading symbol (BTC/USD); the key is position_key(symbol)
    asset_class: str
    qty: float = 0.0
    avg_entry_price: float = 0.0


@dataclass
class VenueState:
    """Everything that survives a restart. Guard every access with ``lock``."""

    cash: float
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    client_ids: dict[str, str] = field(default_factory=dict)  # client_order_id -> order id
    positions: dict[str, PositionRecord] = field(default_factory=dict)
    now_ns: int | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    # -- money ---------------------------------------------------------------------------
    def reserved(self, price_of: dict[str, float]) -> float:
        total = 0.0
        for order in self.orders.values():
            if not order.is_open or order.side != "buy":
                continue
            if order.notional is not None and order.qty is None:
                total += max(0.0, order.notional - order.filled_qty * (order.filled_avg_price or 0))
                continue
            price = order.limit_price or price_of.get(order.symbol, 0.0)
            total += order.remaining_qty(price or 1.0) * price
        return total

    def held_for_sells(self, symbol: str) -> float:
        return sum(
            o.remaining_qty(o.limit_price or 1.0)
            for o in self.orders.values()
            if o.is_open and o.side == "sell" and o.symbol == symbol and o.qty is not None
        )

    def buying_power(self, price_of: dict[str, float]) -> float:
        return max(0.0, self.cash - self.reserved(price_of))

    def apply_fill(self, order: OrderRecord, qty: float, price: float, when: datetime) -> float:
        """Book a fill; returns the new position quantity."""
        key = position_key(order.symbol)
        pos = self.positions.get(key) or PositionRecord(order.symbol, order.asset_class)
        signed = qty if order.side == "buy" else -qty
        if signed > 0:
            cost = pos.qty * pos.avg_entry_price + qty * price
            pos.qty += qty
            pos.avg_entry_price = cost / pos.qty if pos.qty else 0.0
        else:
            pos.qty -= qty
        self.cash -= signed * price
        previous = order.filled_qty * (order.filled_avg_price or 0.0)
        order.filled_qty += qty
        order.filled_avg_price = (previous + qty * price) / order.filled_qty
        order.updated_at = when
        if abs(pos.qty) < 1e-12:
            self.positions.pop(key, None)
            return 0.0
        self.positions[key] = pos
        return pos.qty

    def set_position(self, symbol: str, asset_class: str, qty: float, price: float) -> None:
        """Change a position behind the client's back (cash is not touched)."""
        key = position_key(symbol)
        if abs(qty) < 1e-12:
            self.positions.pop(key, None)
            return
        self.positions[key] = PositionRecord(symbol, asset_class, qty, price)

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "cash": self.cash,
            "now_ns": self.now_ns,
            "orders": [o.to_state() for o in self.orders.values()],
            "client_ids": self.client_ids,
            "positions": [asdict(p) for p in self.positions.values()],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VenueState:
        orders = [OrderRecord.from_state(o) for o in raw["orders"]]
        positions = [PositionRecord(**p) for p in raw["positions"]]
        return cls(
            cash=float(raw["cash"]),
            orders={o.id: o for o in orders},
            client_ids=dict(raw["client_ids"]),
            positions={position_key(p.symbol): p for p in positions},
            now_ns=raw.get("now_ns"),
        )

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, then rename."""
        with self.lock:
            payload = json.dumps(self.to_dict(), indent=1)
        write_text_atomic(path, payload)

    @classmethod
    def load(cls, path: Path) -> VenueState:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
