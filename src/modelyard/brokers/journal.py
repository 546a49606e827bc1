"""The order journal: every intent is written and committed before it is sent.

SQLite in WAL mode with ``synchronous=FULL``; every change is one transaction, so a SIGKILL at
any point leaves the last committed state and the file reopens cleanly.

Tables
    ``orders``      one row per intent: the current state (``client_order_id`` primary key)
    ``events``      append-only audit, one row per state change (triggers refuse UPDATE/DELETE)
    ``fills``       one row per execution, ``execution_id`` unique: replays are ignored
    ``adjustments`` position changes adopted from the broker by reconciliation
    ``risk_state``  small key/value store of the risk engine (the kill switch survives restarts)

State machine::

    intent -> submitted -> acknowledged -> partially_filled -> filled | canceled | expired
       |          |             |                                     | rejected
       +-> failed +-> (any broker state, when events overtake the answer)

``failed(reason)`` is ours (risk refusal, synchronous 4xx); ``rejected`` is the venue's,
after acceptance. Broker states only move forward: a late ``new`` after a ``fill`` is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.errors import BrokerError

__all__ = [
    "BROKER_STATES",
    "OPEN_STATES",
    "TERMINAL_STATES",
    "Journal",
    "JournalError",
    "JournalOrder",
    "make_client_order_id",
]

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 1
TERMINAL_STATES = frozenset({"filled", "canceled", "expired", "rejected", "failed"})
OPEN_STATES = frozenset({"acknowledged", "partially_filled"})
UNRESOLVED_STATES = frozenset({"intent", "submitted"})
BROKER_STATES = frozenset(
    {"acknowledged", "partially_filled", "filled", "canceled", "expired", "rejected"}
)
_RANK = {"intent": 0, "submitted": 1, "acknowledged": 2, "partially_filled": 3}
_ALLOWED: dict[str, frozenset[str]] = {
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
_EPS = 1e-9

_SCHEMA = """
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


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise JournalError("decision_bar_ts must be timezone-aware (UTC)")
    return moment.astimezone(UTC).isoformat()


def make_client_order_id(strategy_id: str, symbol: str, decision_bar_ts: datetime, seq: int) -> str:
    """Deterministic: ``my-<strategy[:8]>-<sha256 hex[:32]>`` (at most 45 characters)."""
    payload = "|".join([strategy_id, symbol, _ts(decision_bar_ts), str(seq)])
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
    prefix = "".join(ch for ch in strategy_id if ch.isalnum())[:8].lower() or "s"
    return f"my-{prefix}-{digest}"


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


def _row(row: sqlite3.Row) -> JournalOrder:
    values = {name: row[name] for name in JournalOrder.__dataclass_fields__}
    values["decision_bar_ts"] = datetime.fromisoformat(values["decision_bar_ts"])
    return JournalOrder(**values)


def broker_state(status: str) -> str:
    """The journal state an Alpaca order status maps to (open statuses: ``acknowledged``)."""
    return _FROM_BROKER.get(status, "acknowledged")


class Journal:
    """The SQLite order journal; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise JournalError(f"{self.path}: journal schema {version}, expected {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- intents -----------------------------------------------------------------------------
    def next_seq(self, strategy_id: str, symbol: str, decision_bar_ts: datetime) -> int:
        """The next sequence number of (strategy, symbol, decision bar)."""
        sql = (
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM orders "
            "WHERE strategy_id = ? AND symbol = ? AND decision_bar_ts = ?"
        )
        return int(self._query(sql, (strategy_id, symbol, _ts(decision_bar_ts)))[0][0])

    def record_intent(
        self,
        *,
        strategy_id: str,
        symbol: str,
        position_symbol: str,
        side: str,
        qty: float | None,
        notional: float | None,
        order_type: str,
        limit_price: float | None,
        time_in_force: str,
        decision_bar_ts: datetime,
        failed_reason: str | None = None,
    ) -> JournalOrder:
        """Write (and commit) a new intent; with ``failed_reason`` it is born ``failed``."""
        now = _now()
        bar = _ts(decision_bar_ts)
        with self._tx() as db:
            seq = self.next_seq(strategy_id, symbol, decision_bar_ts)
            coid = make_client_order_id(strategy_id, symbol, decision_bar_ts, seq)
            db.execute(
                "INSERT INTO orders (client_order_id, strategy_id, symbol, position_symbol, side,"
                " qty, notional, order_type, limit_price, time_in_force, decision_bar_ts, seq,"
                " state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'intent',?,?)",
                (coid, strategy_id, symbol, position_symbol, side, qty, notional, order_type,
                 limit_price, time_in_force, bar, seq, now, now),
            )  # fmt: skip
            self._event(db, coid, None, "intent", None, None, now)
            if failed_reason is not None:
                self._set_state(db, coid, "intent", "failed", failed_reason, None, now)
        return self.get(coid)

    # -- transitions -------------------------------------------------------------------------
    def transition(
        self, client_order_id: str, to_state: str, *, reason: str | None = None
    ) -> JournalOrder:
        """An explicit, validated transition; raises :class:`JournalError` when not allowed."""
        now = _now()
        with self._tx() as db:
            current = self._state(db, client_order_id)
            if to_state not in _ALLOWED.get(current, frozenset()):
                raise JournalError(f"{client_order_id}: {current} -> {to_state} is not allowed")
            if to_state == "failed" and not reason:
                raise JournalError(f"{client_order_id}: failed needs a reason")
            self._set_state(db, client_order_id, current, to_state, reason, None, now)
        return self.get(client_order_id)

    def apply_broker(
        self,
        client_order_id: str,
        status: str,
        *,
        broker_order_id: str | None = None,
        reason: str | None = None,
    ) -> JournalOrder:
        """Move to the state an Alpaca ``status`` implies, forward only (stale news ignored)."""
        target = broker_state(status)
        now = _now()
        with self._tx() as db:
            current = self._state(db, client_order_id)
            if broker_order_id is not None:
                db.execute(
                    "UPDATE orders SET broker_order_id = COALESCE(broker_order_id, ?) "
                    "WHERE client_order_id = ?",
                    (broker_order_id, client_order_id),
                )
            if current == "intent":  # written, then found at the venue: it was sent
                self._set_state(db, client_order_id, current, "submitted", None, None, now)
                current = "submitted"
            moves_forward = current not in TERMINAL_STATES and (
                target in TERMINAL_STATES or _RANK[target] > _RANK[current]
            )
            if moves_forward and target in _ALLOWED[current]:
                detail = {"broker_status": status}
                self._set_state(db, client_order_id, current, target, reason, detail, now)
            elif current in TERMINAL_STATES and target in TERMINAL_STATES and current != target:
                logger.warning(
                    "%s: journal says %s, broker says %s", client_order_id, current, status
                )
        return self.get(client_order_id)

    # -- fills -------------------------------------------------------------------------------
    def record_fill(
        self,
        client_order_id: str,
        execution_id: str,
        qty: float,
        price: float,
        *,
        cumulative_qty: float | None = None,
        cumulative_avg: float | None = None,
        at: datetime | None = None,
        source: str = "stream",
    ) -> bool:
        """Record one execution; ``False`` when ``execution_id`` was already recorded.

        With the order's ``cumulative_qty`` (what the event's order says is filled so far) the
        execution is capped to what is not journaled yet (a reconciliation may have adopted it
        already), and a shortfall (earlier events lost) is adopted as a synthetic fill.
        """
        stamp = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
        with self._tx() as db:
            self._state(db, client_order_id)
            seen = db.execute(
                "SELECT 1 FROM fills WHERE execution_id = ?", (execution_id,)
            ).fetchone()
            if seen is not None:
                logger.info("%s: fill %s already recorded", client_order_id, execution_id)
                return False
            if cumulative_qty is not None:
                filled = self._totals(db, client_order_id)[0]
                if qty > cumulative_qty - filled + _EPS:
                    logger.warning(
                        "%s: fill %s of %s capped to %s (already adopted)",
                        client_order_id, execution_id, qty, max(cumulative_qty - filled, 0.0),
                    )  # fmt: skip
                    qty = max(cumulative_qty - filled, 0.0)
            db.execute(
                "INSERT INTO fills (execution_id, client_order_id, qty, price, source, at)"
                " VALUES (?,?,?,?,?,?)",
                (execution_id, client_order_id, qty, price, source, stamp),
            )
            if cumulative_qty is not None:
                self._catch_up(db, client_order_id, cumulative_qty, cumulative_avg, source)
            self._refresh_fills(db, client_order_id)
        return True

    def sync_filled(
        self, client_order_id: str, filled_qty: float, avg_price: float | None, *, source: str
    ) -> float:
        """Bring the journaled fills up to the broker's cumulative ``filled_qty``/``avg_price``.

        A missing quantity (events lost) becomes one synthetic fill whose price keeps the VWAP
        equal to the broker's. Idempotent. Returns the quantity added.
        """
        with self._tx() as db:
            self._state(db, client_order_id)
            added = self._catch_up(db, client_order_id, filled_qty, avg_price, source)
            self._refresh_fills(db, client_order_id)
        return added

    @staticmethod
    def _totals(db: sqlite3.Connection, client_order_id: str) -> tuple[float, float]:
        """``(quantity, quantity x price)`` of the journaled fills of one order."""
        total, cost = db.execute(
            "SELECT COALESCE(SUM(qty), 0), COALESCE(SUM(qty * price), 0) FROM fills "
            "WHERE client_order_id = ?",
            (client_order_id,),
        ).fetchone()
        return float(total), float(cost)

    def _catch_up(
        self,
        db: sqlite3.Connection,
        client_order_id: str,
        filled_qty: float,
        avg_price: float | None,
        source: str,
    ) -> float:
        total, cost = self._totals(db, client_order_id)
        missing = filled_qty - total
        if missing <= _EPS:
            if missing < -_EPS:
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
            (execution_id, client_order_id, missing, price, source, _now()),
        )
        logger.warning(
            "%s: adopted %s filled from the broker (%s)", client_order_id, missing, source
        )
        return missing

    def _refresh_fills(self, db: sqlite3.Connection, client_order_id: str) -> None:
        total, cost = self._totals(db, client_order_id)
        avg = cost / total if total > 0 else None
        db.execute(
            "UPDATE orders SET filled_qty = ?, avg_fill_price = ?, updated_at = ? "
            "WHERE client_order_id = ?",
            (total, avg, _now(), client_order_id),
        )

    def fills(self, client_order_id: str) -> list[tuple[str, float, float]]:
        """``(execution_id, qty, price)`` of one order, oldest first."""
        sql = "SELECT execution_id, qty, price FROM fills WHERE client_order_id = ? ORDER BY rowid"
        return [(r[0], r[1], r[2]) for r in self._query(sql, (client_order_id,))]

    # -- positions ---------------------------------------------------------------------------
    def positions(self) -> dict[str, float]:
        """Position by Alpaca position symbol implied by the fills plus adopted adjustments."""
        out: dict[str, float] = {}
        for symbol, qty in self._query(
            "SELECT o.position_symbol, SUM(CASE o.side WHEN 'buy' THEN f.qty ELSE -f.qty END)"
            " FROM fills f JOIN orders o USING (client_order_id) GROUP BY o.position_symbol"
            " UNION ALL SELECT position_symbol, SUM(delta) FROM adjustments"
            " GROUP BY position_symbol"
        ):
            out[symbol] = out.get(symbol, 0.0) + float(qty)
        return {s: q for s, q in out.items() if abs(q) > _EPS}

    def record_adjustment(self, position_symbol: str, delta: float, reason: str) -> None:
        """Journal a position change adopted from the venue (reconciliation)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO adjustments (position_symbol, delta, reason, at) VALUES (?,?,?,?)",
                (position_symbol, delta, reason, _now()),
            )

    # -- reads -------------------------------------------------------------------------------
    def get(self, client_order_id: str) -> JournalOrder:
        found = self.find(client_order_id)
        if found is None:
            raise JournalError(f"unknown client_order_id {client_order_id!r}")
        return found

    def find(self, client_order_id: str) -> JournalOrder | None:
        rows = self._query("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return _row(rows[0]) if rows else None

    def orders(self, states: frozenset[str] | set[str] | None = None) -> list[JournalOrder]:
        """Journal rows, oldest first; only those in ``states`` when given."""
        if states is None:
            return [_row(r) for r in self._query("SELECT * FROM orders ORDER BY rowid")]
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY rowid"
        return [_row(r) for r in self._query(sql, tuple(sorted(states)))]

    def events(self, client_order_id: str) -> list[tuple[str | None, str, str | None]]:
        """``(from_state, to_state, reason)`` of one order, oldest first."""
        sql = (
            "SELECT from_state, to_state, reason FROM events WHERE client_order_id = ? ORDER BY id"
        )
        return [(r[0], r[1], r[2]) for r in self._query(sql, (client_order_id,))]

    # -- risk state --------------------------------------------------------------------------
    def get_risk_state(self, key: str) -> Any:
        rows = self._query("SELECT value FROM risk_state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_risk_state(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO risk_state (key, value, updated_at) VALUES (?,?,?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, json.dumps(value), _now()),
            )

    # -- internals ---------------------------------------------------------------------------
    @staticmethod
    def _state(db: sqlite3.Connection, client_order_id: str) -> str:
        row = db.execute(
            "SELECT state FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        if row is None:
            raise JournalError(f"unknown client_order_id {client_order_id!r}")
        return str(row[0])

    def _set_state(
        self,
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
        self._event(db, coid, current, to_state, reason, detail, now)
        logger.info("%s: %s -> %s%s", coid, current, to_state, f" ({reason})" if reason else "")

    @staticmethod
    def _event(
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
