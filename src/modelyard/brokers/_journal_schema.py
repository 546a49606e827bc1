"""The journal's schema, state machine, row type and row-level SQL (split out of :mod:`.journal`).

The helpers take the open connection and run inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from modelyard.errors import BrokerError

__all__ = [
    "ALLOWED",
    "BROKER_STATES",
    "EPS",
    "OPEN_STATES",
    "ORDER_COLUMNS",
    "POSITION_EPS",
    "RANK",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "UNRESOLVED_STATES",
    "Intent",
    "JournalError",
    "JournalOrder",
    "add_event",
    "broker_state",
    "catch_up",
    "chunks",
    "client_order_id_for",
    "fill_totals",
    "make_client_order_id",
    "make_order",
    "next_seqs",
    "now_text",
    "order_state",
    "refresh_fills",
    "set_state",
    "set_states",
    "utc_text",
]

logger = logging.getLogger("modelyard.brokers.journal")  # the journal's own log
EPS = 1e-9
POSITION_EPS = 1e-12  # below any venue increment; above float summation noise
SCHEMA_VERSION = 1
TERMINAL_STATES = frozenset({"filled", "canceled", "expired", "rejected", "failed"})
OPEN_STATES = frozenset({"acknowledged", "partially_filled"})
UNRESOLVED_STATES = frozenset({"intent", "submitted"})
BROKER_STATES = frozenset(
    {"acknowledged", "partially_filled", "filled", "canceled", "expired", "rejected"}
)
RANK = {"intent": 0, "submitted": 1, "acknowledged": 2, "partially_filled": 3}
ALLOWED: dict[str, frozenset[str]] = {
    "intent": frozenset({"submitted", "failed"}),
    "submitted": BROKER_STATES | {"failed"},
    "acknowledged": BROKER_STATES - {"acknowledged"},
    "partially_filled": frozenset(
        {"partially_filled", "filled", "canceled", "expired", "rejected"}
    ),
}
# Alpaca order statuses -> journal states (every other status is an open order: acknowledged)
_FROM_BROKER = {
    **{name: name for name in ("partially_filled", "filled", "canceled", "expired", "rejected")},
    "done_for_day": "expired",
    "replaced": "canceled",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    strategy_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    position_symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty REAL,
    notional REAL,
    order_type TEXT NOT NULL,
    limit_price REAL,
    time_in_force TEXT NOT NULL,
    decision_bar_ts TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    broker_order_id TEXT,
    filled_qty REAL NOT NULL DEFAULT 0,
    avg_fill_price REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (strategy_id, symbol, decision_bar_ts, seq)
);
CREATE INDEX IF NOT EXISTS orders_state ON orders (state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TABLE IF NOT EXISTS fills (
    execution_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
    qty REAL NOT NULL CHECK (qty >= 0),
    price REAL NOT NULL,
    source TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS fills_execution_id ON fills (execution_id);
CREATE TABLE IF NOT EXISTS adjustments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    position_symbol TEXT NOT NULL,
    delta REAL NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS risk_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


class JournalError(BrokerError):
    """An invalid state transition or an unknown order."""


def now_text() -> str:
    return datetime.now(UTC).isoformat()


def utc_text(moment: datetime) -> str:
    """ISO text of a timezone-aware moment in UTC (naive moments are refused)."""
    if moment.tzinfo is None:
        raise JournalError("decision_bar_ts must be timezone-aware (UTC)")
    return moment.astimezone(UTC).isoformat()


def make_client_order_id(strategy_id: str, symbol: str, decision_bar_ts: datetime, seq: int) -> str:
    """Deterministic: ``my-<strategy[:8]>-<sha256 hex[:32]>`` (at most 45 characters)."""
    return client_order_id_for(strategy_id, symbol, utc_text(decision_bar_ts), seq)


def client_order_id_for(strategy_id: str, symbol: str, bar_text: str, seq: int) -> str:
    """:func:`make_client_order_id` of a bar already in its :func:`utc_text` form."""
    payload = "|".join([strategy_id, symbol, bar_text, str(seq)])
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
    return f"my-{_id_prefix(strategy_id)}-{digest}"


@lru_cache(maxsize=64)
def _id_prefix(strategy_id: str) -> str:
    return "".join(ch for ch in strategy_id if ch.isalnum())[:8].lower() or "s"


def broker_state(status: str) -> str:
    """The journal state an Alpaca order status maps to (open statuses: ``acknowledged``)."""
    return _FROM_BROKER.get(status, "acknowledged")


@dataclass(frozen=True)
class Intent:
    """One order to journal; with ``failed_reason`` it is born ``failed`` (never sent)."""

    strategy_id: str
    symbol: str
    position_symbol: str
    side: str
    qty: float | None
    notional: float | None
    order_type: str
    limit_price: float | None
    time_in_force: str
    decision_bar_ts: datetime
    failed_reason: str | None = None


@dataclass(frozen=True)
class JournalOrder:
    client_order_id: str
    strategy_id: str
    symbol: str
    position_symbol: str
    side: str
    qty: float | None
    notional: float | None
    order_type: str
    limit_price: float | None
    time_in_force: str
    decision_bar_ts: datetime
    seq: int
    state: str
    reason: str | None
    broker_order_id: str | None
    filled_qty: float
    avg_fill_price: float | None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


ORDER_COLUMNS = ", ".join(JournalOrder.__dataclass_fields__)
"""The ``orders`` columns of a :class:`JournalOrder` in its fields' order (:func:`make_order`)."""


def make_order(values: Sequence[Any]) -> JournalOrder:
    """A :class:`JournalOrder` from a row selected as ``SELECT {ORDER_COLUMNS}`` (by position:
    a bar's rows are built on the bar -> POST path, and by name costs twice as much)."""
    v = values
    return JournalOrder(
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
        datetime.fromisoformat(v[10]), v[11], v[12], v[13], v[14], v[15], v[16],
    )  # fmt: skip


# -- row-level SQL (inside the caller's transaction) ---------------------------------------
def fill_totals(db: sqlite3.Connection, client_order_id: str) -> tuple[float, float]:
    """``(quantity, quantity x price)`` of the journaled fills of one order."""
    total, cost = db.execute(
        "SELECT COALESCE(SUM(qty), 0), COALESCE(SUM(qty * price), 0) FROM fills "
        "WHERE client_order_id = ?",
        (client_order_id,),
    ).fetchone()
    return float(total), float(cost)


def catch_up(
    db: sqlite3.Connection,
    client_order_id: str,
    filled_qty: float,
    avg_price: float | None,
    source: str,
) -> float:
    total, cost = fill_totals(db, client_order_id)
    missing = filled_qty - total
    if missing <= EPS:
        if missing < -EPS:
            logger.warning(
                "%s: journal has %s filled, broker %s", client_order_id, total, filled_qty
            )
        return 0.0
    known_avg = cost / total if total > 0 else 0.0
    price = (filled_qty * (avg_price or known_avg) - cost) / missing
    if price <= 0:
        price = avg_price or known_avg
    execution_id = f"{source}:{client_order_id}:{filled_qty:.9f}"
    db.execute(
        "INSERT OR IGNORE INTO fills (execution_id, client_order_id, qty, price, source, at)"
        " VALUES (?,?,?,?,?,?)",
        (execution_id, client_order_id, missing, price, source, now_text()),
    )
    logger.warning("%s: adopted %s filled from the broker (%s)", client_order_id, missing, source)
    return missing


def refresh_fills(db: sqlite3.Connection, client_order_id: str) -> None:
    total, cost = fill_totals(db, client_order_id)
    avg = cost / total if total > 0 else None
    db.execute(
        "UPDATE orders SET filled_qty = ?, avg_fill_price = ?, updated_at = ? "
        "WHERE client_order_id = ?",
        (total, avg, now_text(), client_order_id),
    )


def order_state(db: sqlite3.Connection, client_order_id: str) -> str:
    row = db.execute(
        "SELECT state FROM orders WHERE client_order_id = ?", (client_order_id,)
    ).fetchone()
    if row is None:
        raise JournalError(f"unknown client_order_id {client_order_id!r}")
    return str(row[0])


def set_state(
    db: sqlite3.Connection,
    coid: str,
    current: str,
    to_state: str,
    reason: str | None,
    detail: dict[str, Any] | None,
    now: str,
) -> None:
    db.execute(
        "UPDATE orders SET state = ?, reason = COALESCE(?, reason), updated_at = ? "
        "WHERE client_order_id = ?",
        (to_state, reason, now, coid),
    )
    add_event(db, coid, current, to_state, reason, detail, now)
    logger.info("%s: %s -> %s%s", coid, current, to_state, f" ({reason})" if reason else "")


def set_states(
    db: sqlite3.Connection, moves: Sequence[tuple[str, str]], to_state: str, now: str
) -> None:
    """:func:`set_state` for many ``(client_order_id, current)`` at once (no reason, no
    detail): two statements for the whole batch."""
    db.executemany(
        "UPDATE orders SET state = ?, updated_at = ? WHERE client_order_id = ?",
        [(to_state, now, coid) for coid, _ in moves],
    )
    db.executemany(
        "INSERT INTO events (client_order_id, from_state, to_state, reason, detail, at)"
        " VALUES (?,?,?,?,NULL,?)",
        [(coid, current, to_state, None, now) for coid, current in moves],
    )
    if logger.isEnabledFor(logging.INFO):
        for coid, current in moves:
            logger.info("%s: %s -> %s", coid, current, to_state)


def add_event(
    db: sqlite3.Connection,
    coid: str,
    from_state: str | None,
    to_state: str,
    reason: str | None,
    detail: dict[str, Any] | None,
    now: str,
) -> None:
    db.execute(
        "INSERT INTO events (client_order_id, from_state, to_state, reason, detail, at)"
        " VALUES (?,?,?,?,?,?)",
        (coid, from_state, to_state, reason, json.dumps(detail) if detail else None, now),
    )


_CHUNK = 500  # ids per IN (...) list: below SQLite's oldest limit of 999 parameters


def chunks(ids: Sequence[str]) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(ids), _CHUNK):
        yield tuple(ids[start : start + _CHUNK])


def next_seqs(
    db: sqlite3.Connection, keys: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], int]:
    """The next sequence number of every ``(strategy, symbol, bar)`` key of a batch, the bar
    in its UTC text (:func:`utc_text`); one read per (strategy, decision bar)."""
    groups: dict[tuple[str, str], set[str]] = {}
    for strategy_id, symbol, bar in keys:
        groups.setdefault((strategy_id, bar), set()).add(symbol)
    out: dict[tuple[str, str, str], int] = {}
    for (strategy_id, bar), symbols in groups.items():
        for symbol in symbols:
            out[(strategy_id, symbol, bar)] = 0
        for chunk in chunks(sorted(symbols)):
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT symbol, MAX(seq) FROM orders WHERE strategy_id = ? AND"
                f" decision_bar_ts = ? AND symbol IN ({marks}) GROUP BY symbol"
            )
            for symbol, top in db.execute(sql, (strategy_id, bar, *chunk)).fetchall():
                out[(strategy_id, symbol, bar)] = int(top) + 1
    return out
