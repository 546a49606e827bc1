"""The order journal: every intent is written and durably committed before it is sent.

SQLite in WAL mode; every change is one transaction (or a savepoint inside a grouping
:meth:`Journal.transaction`), so a SIGKILL at any point leaves the last committed state and the
file reopens cleanly.

Durability, per transaction (``PRAGMA synchronous`` is switched between transactions; SQLite
refuses to change it inside one):

``FULL`` (the connection's default; the commit fsyncs the WAL): what the venue cannot tell us
    again. Intents (:meth:`Journal.record_intents`: they must be on disk BEFORE the POST, so an
    order is never sent twice, even after a power loss), ``failed`` (our refusals and the
    venue's synchronous 4xx), the risk state (kill switch) and reconciliation's adjustments.
``NORMAL`` (no fsync at commit; durable against a process crash or SIGKILL, not against a
    power loss or an OS crash): what the venue can tell us again. ``submitted``, the venue's
    states (``acknowledged`` ... ``filled``) and fills. A power loss can roll these back to an
    earlier committed state, never past an intent: the WAL is sequential, so the next ``FULL``
    commit makes every earlier transaction durable too. :meth:`OrderExecutor.recover` and
    reconciliation re-adopt what was lost (an ``intent``/``submitted`` row is looked up by its
    ``client_order_id`` and resent only after a confirmed 404; fills come back as the broker's
    cumulative ``filled_qty``).

Intents stay ``FULL`` although they sit on the bar -> POST path: ``NORMAL`` would save the WAL
fsync of each bar's intent commit (0.2-0.8 ms on this project's machine, several ms while the
disk is busy), but after an OS crash or a power loss an intent whose order was sent could be
missing. The deterministic ``client_order_id`` would still make the venue refuse a second
send, and reconciliation would report the order as unknown, but the journal would no longer
hold it: a weaker guarantee than the one above, so not taken.

Checkpoints (copying the WAL back into the database file, with an fsync of both) are taken
off the bar -> POST path: :meth:`Journal.checkpoint` (``PASSIVE``) runs after each batch's
answers are journaled (:meth:`OrderExecutor.submit_many`), when nothing waits on the journal.
SQLite's own automatic checkpoint would run inside whichever commit pushes the WAL past its
threshold, an intent's among them (2-15 ms on that bar); it stays on only as a backstop at
``CHECKPOINT_BACKSTOP_PAGES`` (a journal that no executor checkpoints still gets bounded WAL).
Checkpoints change when data reaches the database file, not what is durable: a committed
transaction is in the WAL, which SQLite replays on open.

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
The schema and the state machine's tables live in :mod:`._journal_schema`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.brokers._journal_schema import (
    ALLOWED,
    BROKER_STATES,
    EPS,
    OPEN_STATES,
    ORDER_COLUMNS,
    POSITION_EPS,
    RANK,
    SCHEMA,
    SCHEMA_VERSION,
    TERMINAL_STATES,
    UNRESOLVED_STATES,
    Intent,
    JournalError,
    JournalOrder,
    broker_state,
    catch_up,
    chunks,
    client_order_id_for,
    fill_totals,
    make_client_order_id,
    make_order,
    next_seqs,
    now_text,
    order_state,
    refresh_fills,
    set_state,
    set_states,
    utc_text,
)

__all__ = [
    "BROKER_STATES",
    "OPEN_STATES",
    "TERMINAL_STATES",
    "UNRESOLVED_STATES",
    "Intent",
    "Journal",
    "JournalError",
    "JournalOrder",
    "broker_state",
    "make_client_order_id",
]

logger = logging.getLogger(__name__)
CHECKPOINT_BACKSTOP_PAGES = 10_000  # SQLite's automatic checkpoint (its default: 1000 pages)


def _real(value: float | None) -> float | None:
    """A number as SQLite's ``REAL`` column gives it back."""
    return None if value is None else float(value)


class Journal:
    """The SQLite order journal; thread-safe (one connection behind a lock).

    The lock is held only for SQLite work (never across an HTTP call); a ``NORMAL`` transaction
    holds it for tens of microseconds, a ``FULL`` one for the fsync.
    """

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
        self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")
        self._db.executescript(SCHEMA)
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise JournalError(f"{self.path}: journal schema {version}, expected {SCHEMA_VERSION}")
        self._depth = 0  # open transaction + savepoints (owned by the thread holding the lock)
        self._durable = True  # the open transaction's level
        self._db.executescript(_POSITION_RESETS)
        self._sums = _PositionSums()  # positions(): committed running sums, and their key
        self._sums_key: tuple[int, int] | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file now (``PASSIVE``: it never waits for a reader;
        see the module docstring). Inside a transaction it does nothing."""
        with self._lock:
            if not self._depth:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def transaction(self, *, durable: bool) -> Iterator[None]:
        """Group several journal calls in one transaction (one commit, at most one fsync).

        ``durable=True`` commits with ``synchronous=FULL``, ``False`` with ``NORMAL`` (see the
        module docstring). Each grouped call is a savepoint: when one raises, only its own
        changes are undone and the caller may go on. A call that needs ``FULL`` inside a
        ``NORMAL`` transaction raises :class:`JournalError`.
        """
        with self._tx(durable=durable):
            yield

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._depth:
                if durable and not self._durable:
                    raise JournalError("a durable write inside a non-durable transaction")
                name = f"sp{self._depth}"
                self._depth += 1
                self._db.execute(f"SAVEPOINT {name}")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._depth -= 1
                self._db.execute(f"RELEASE {name}")
                return
            if not durable:  # switched back after the commit: FULL is the resting level
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._durable, self._depth = durable, 1
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            finally:
                self._depth, self._durable = 0, True
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    # -- intents -----------------------------------------------------------------------------
    def next_seq(self, strategy_id: str, symbol: str, decision_bar_ts: datetime) -> int:
        """The next sequence number of (strategy, symbol, decision bar)."""
        sql = (
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM orders "
            "WHERE strategy_id = ? AND symbol = ? AND decision_bar_ts = ?"
        )
        return int(self._query(sql, (strategy_id, symbol, utc_text(decision_bar_ts)))[0][0])

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
        """Write (and durably commit) a new intent; with ``failed_reason`` it is born ``failed``."""
        intent = Intent(
            strategy_id, symbol, position_symbol, side, qty, notional, order_type, limit_price,
            time_in_force, decision_bar_ts, failed_reason,
        )  # fmt: skip
        return self.record_intents([intent])[0]

    def record_intents(self, intents: Sequence[Intent]) -> list[JournalOrder]:
        """Write every intent in ONE durable (``FULL``) transaction: one fsync for a whole bar.

        All or nothing: when one row cannot be written, none is. Returns the rows in order,
        built from what was written (not read back: this is on the bar -> POST path).
        """
        now = now_text()
        texts: dict[datetime, tuple[str, datetime]] = {}  # a bar's orders share one time
        bars: list[tuple[str, datetime]] = []
        for intent in intents:
            known = texts.get(intent.decision_bar_ts)
            if known is None:  # naive timestamps: refused before writing
                text = utc_text(intent.decision_bar_ts)
                known = texts[intent.decision_bar_ts] = (text, datetime.fromisoformat(text))
            bars.append(known)
        rows: list[JournalOrder] = []
        values: list[tuple[Any, ...]] = []
        with self._tx(durable=True) as db:
            seqs = next_seqs(
                db, [(i.strategy_id, i.symbol, b[0]) for i, b in zip(intents, bars, strict=True)]
            )
            for intent, (bar, moment) in zip(intents, bars, strict=True):
                key = (intent.strategy_id, intent.symbol, bar)
                seq = seqs[key]
                seqs[key] = seq + 1  # two intents of one symbol in one batch
                coid = client_order_id_for(intent.strategy_id, intent.symbol, bar, seq)
                qty, notional, limit = (
                    _real(intent.qty),
                    _real(intent.notional),
                    _real(intent.limit_price),
                )
                values.append(
                    (
                        coid, intent.strategy_id, intent.symbol, intent.position_symbol,
                        intent.side, qty, notional, intent.order_type, limit,
                        intent.time_in_force, bar, seq, now, now,
                    )
                )  # fmt: skip
                failed = intent.failed_reason
                rows.append(
                    JournalOrder(
                        coid, intent.strategy_id, intent.symbol, intent.position_symbol,
                        intent.side, qty, notional, intent.order_type, limit,
                        intent.time_in_force, moment, seq, "intent" if failed is None else
                        "failed", failed, None, 0.0, None,
                    )
                )  # fmt: skip
            db.executemany(
                "INSERT INTO orders (client_order_id, strategy_id, symbol, position_symbol,"
                " side, qty, notional, order_type, limit_price, time_in_force,"
                " decision_bar_ts, seq, state, created_at, updated_at) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'intent', ?, ?)",
                values,
            )
            db.executemany(
                "INSERT INTO events (client_order_id, from_state, to_state, reason, detail, at)"
                " VALUES (?, NULL, 'intent', NULL, NULL, ?)",
                [(row.client_order_id, now) for row in rows],
            )
            for intent, row in zip(intents, rows, strict=True):
                if intent.failed_reason is not None:
                    set_state(db, row.client_order_id, "intent", "failed", row.reason, None, now)
        return rows

    # -- transitions -------------------------------------------------------------------------
    def transition(
        self, client_order_id: str, to_state: str, *, reason: str | None = None
    ) -> JournalOrder:
        """An explicit, validated transition; raises :class:`JournalError` when not allowed.

        ``failed`` commits ``FULL`` (our decision: the venue cannot tell it again); any other
        state ``NORMAL``.
        """
        now = now_text()
        with self._tx(durable=to_state == "failed") as db:
            current = order_state(db, client_order_id)
            if to_state not in ALLOWED.get(current, frozenset()):
                raise JournalError(f"{client_order_id}: {current} -> {to_state} is not allowed")
            if to_state == "failed" and not reason:
                raise JournalError(f"{client_order_id}: failed needs a reason")
            set_state(db, client_order_id, current, to_state, reason, None, now)
            return self.get(client_order_id)

    def mark_submitted(self, client_order_ids: Sequence[str]) -> None:
        """``intent -> submitted`` for a batch that was POSTed, in one ``NORMAL`` transaction
        (the executor journals it with the answers; :meth:`OrderExecutor.recover` treats both
        states alike). Rows already past ``intent`` are left as they are; an unknown id raises
        and changes nothing. Returns nothing: its caller journals each answer next and reads
        the rows then."""
        now = now_text()
        ids = list(dict.fromkeys(client_order_ids))
        with self._tx(durable=False) as db:
            states = {row.client_order_id: row.state for row in self.get_many(ids)}
            set_states(db, [(c, "intent") for c in ids if states[c] == "intent"], "submitted", now)

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
        now = now_text()
        with self._tx(durable=False) as db:
            current = order_state(db, client_order_id)
            if broker_order_id is not None:
                db.execute(
                    "UPDATE orders SET broker_order_id = COALESCE(broker_order_id, ?) "
                    "WHERE client_order_id = ?",
                    (broker_order_id, client_order_id),
                )
            if current == "intent":  # written, then found at the venue: it was sent
                set_state(db, client_order_id, current, "submitted", None, None, now)
                current = "submitted"
            moves_forward = current not in TERMINAL_STATES and (
                target in TERMINAL_STATES or RANK[target] > RANK[current]
            )
            if moves_forward and target in ALLOWED[current]:
                detail = {"broker_status": status}
                set_state(db, client_order_id, current, target, reason, detail, now)
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
        with self._tx(durable=False) as db:
            order_state(db, client_order_id)
            seen = db.execute(
                "SELECT 1 FROM fills WHERE execution_id = ?", (execution_id,)
            ).fetchone()
            if seen is not None:
                logger.info("%s: fill %s already recorded", client_order_id, execution_id)
                return False
            if cumulative_qty is not None:
                filled = fill_totals(db, client_order_id)[0]
                if qty > cumulative_qty - filled + EPS:
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
                catch_up(db, client_order_id, cumulative_qty, cumulative_avg, source)
            refresh_fills(db, client_order_id)
        return True

    def sync_filled(
        self, client_order_id: str, filled_qty: float, avg_price: float | None, *, source: str
    ) -> float:
        """Bring the journaled fills up to the broker's cumulative ``filled_qty``/``avg_price``.

        A missing quantity (events lost) becomes one synthetic fill whose price keeps the VWAP
        equal to the broker's. Idempotent. Returns the quantity added.
        """
        with self._tx(durable=False) as db:
            order_state(db, client_order_id)
            added = catch_up(db, client_order_id, filled_qty, avg_price, source)
            refresh_fills(db, client_order_id)
        return added

    def fills(self, client_order_id: str) -> list[tuple[str, float, float]]:
        """``(execution_id, qty, price)`` of one order, oldest first."""
        sql = "SELECT execution_id, qty, price FROM fills WHERE client_order_id = ? ORDER BY rowid"
        return [(r[0], r[1], r[2]) for r in self._query(sql, (client_order_id,))]

    def fills_many(
        self, client_order_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, float, float]]]:
        """:meth:`fills` of many orders in one read (every id is a key, maybe empty)."""
        out: dict[str, list[tuple[str, float, float]]] = {coid: [] for coid in client_order_ids}
        for chunk in chunks(list(out)):
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT client_order_id, execution_id, qty, price FROM fills"
                f" WHERE client_order_id IN ({marks}) ORDER BY rowid"
            )
            for r in self._query(sql, tuple(chunk)):
                out[r[0]].append((r[1], r[2], r[3]))
        return out

    # -- positions ---------------------------------------------------------------------------
    def positions(self) -> dict[str, float]:
        """Position by Alpaca position symbol implied by the fills plus adopted adjustments.

        Running sums: each call adds only the fills and adjustments committed since the last
        one (summed in insertion order), so the risk check of a bar does not re-read the whole
        history. They are summed again from the start when a row they
        cover may have changed: an UPDATE/DELETE of a fill, an adjustment or an order's
        symbol/side (temporary triggers of this connection count them) or a commit by another
        connection (``PRAGMA data_version``)."""
        with self._lock:
            db = self._db
            key = (
                db.execute("SELECT n FROM temp.position_resets").fetchone()[0],
                db.execute("PRAGMA data_version").fetchone()[0],
            )
            sums = self._sums if key == self._sums_key else _PositionSums()
            if self._depth:  # uncommitted rows may roll back: counted, not kept
                sums = sums.copy()
            sums.advance(db)
            if not self._depth:
                self._sums, self._sums_key = sums, key
            out = sums.total()
        # Keep anything above float noise: 1e-9 is one crypto increment, a real position
        # (e.g. what a floored sell leaves behind) that the venue reports too.
        return {s: q for s, q in out.items() if abs(q) > POSITION_EPS}

    def record_adjustment(self, position_symbol: str, delta: float, reason: str) -> None:
        """Journal a position change adopted from the venue (reconciliation)."""
        with self._tx(durable=True) as db:
            db.execute(
                "INSERT INTO adjustments (position_symbol, delta, reason, at) VALUES (?,?,?,?)",
                (position_symbol, delta, reason, now_text()),
            )

    # -- reads -------------------------------------------------------------------------------
    def get(self, client_order_id: str) -> JournalOrder:
        found = self.find(client_order_id)
        if found is None:
            raise JournalError(f"unknown client_order_id {client_order_id!r}")
        return found

    def get_many(self, client_order_ids: Sequence[str]) -> list[JournalOrder]:
        """:meth:`get` of many orders in one read, in order; unknown ids raise."""
        found: dict[str, JournalOrder] = {}
        for chunk in chunks(list(dict.fromkeys(client_order_ids))):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {ORDER_COLUMNS} FROM orders WHERE client_order_id IN ({marks})"
            found.update((r[0], make_order(r)) for r in self._query(sql, chunk))
        missing = [coid for coid in client_order_ids if coid not in found]
        if missing:
            raise JournalError(f"unknown client_order_id {missing[0]!r}")
        return [found[coid] for coid in client_order_ids]

    def find(self, client_order_id: str) -> JournalOrder | None:
        sql = f"SELECT {ORDER_COLUMNS} FROM orders WHERE client_order_id = ?"
        rows = self._query(sql, (client_order_id,))
        return make_order(rows[0]) if rows else None

    def orders(self, states: frozenset[str] | set[str] | None = None) -> list[JournalOrder]:
        """Journal rows, oldest first; only those in ``states`` when given."""
        if states is None:
            sql = f"SELECT {ORDER_COLUMNS} FROM orders ORDER BY rowid"
            return [make_order(r) for r in self._query(sql)]
        marks = ",".join("?" * len(states))
        sql = f"SELECT {ORDER_COLUMNS} FROM orders WHERE state IN ({marks}) ORDER BY rowid"
        return [make_order(r) for r in self._query(sql, tuple(sorted(states)))]

    def exposures(
        self, states: frozenset[str] | set[str]
    ) -> list[tuple[str, str, float | None, float | None, float, float | None]]:
        """``(position_symbol, side, qty, notional, filled_qty, avg_fill_price)`` of the orders
        in ``states``, oldest first: what projected positions need, without whole rows."""
        marks = ",".join("?" * len(states))
        sql = (
            "SELECT position_symbol, side, qty, notional, filled_qty, avg_fill_price FROM orders"
            f" WHERE state IN ({marks}) ORDER BY rowid"
        )
        return [tuple(r) for r in self._query(sql, tuple(sorted(states)))]

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
        with self._tx(durable=True) as db:
            db.execute(
                "INSERT INTO risk_state (key, value, updated_at) VALUES (?,?,?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, json.dumps(value), now_text()),
            )


class _PositionSums:
    """:meth:`Journal.positions` as running sums, with the last fill rowid and adjustment id
    they include."""

    def __init__(self) -> None:
        self.fills: dict[str, float] = {}
        self.adjustments: dict[str, float] = {}
        self.fill_mark = 0
        self.adjustment_mark = 0

    def copy(self) -> _PositionSums:
        other = _PositionSums()
        other.fills, other.adjustments = dict(self.fills), dict(self.adjustments)
        other.fill_mark, other.adjustment_mark = self.fill_mark, self.adjustment_mark
        return other

    def advance(self, db: sqlite3.Connection) -> None:
        """Add the rows past the marks, oldest first."""
        fills = self.fills
        for rowid, symbol, side, qty in db.execute(
            "SELECT f.rowid, o.position_symbol, o.side, f.qty FROM fills f"
            " JOIN orders o USING (client_order_id) WHERE f.rowid > ? ORDER BY f.rowid",
            (self.fill_mark,),
        ):
            fills[symbol] = fills.get(symbol, 0.0) + (qty if side == "buy" else -qty)
            self.fill_mark = rowid
        adjustments = self.adjustments
        for row_id, symbol, delta in db.execute(
            "SELECT id, position_symbol, delta FROM adjustments WHERE id > ? ORDER BY id",
            (self.adjustment_mark,),
        ):
            adjustments[symbol] = adjustments.get(symbol, 0.0) + delta
            self.adjustment_mark = row_id

    def total(self) -> dict[str, float]:
        out = dict(self.fills)
        for symbol, delta in self.adjustments.items():
            out[symbol] = out.get(symbol, 0.0) + delta
        return out


# Counts, per connection, the changes that running position sums cannot follow (fills and
# adjustments are only ever inserted by the journal; an order's symbol and side never change).
_POSITION_RESETS = """
CREATE TEMP TABLE IF NOT EXISTS position_resets (n INTEGER NOT NULL);
INSERT INTO position_resets SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM position_resets);
CREATE TEMP TRIGGER IF NOT EXISTS fills_updated AFTER UPDATE ON main.fills
BEGIN UPDATE position_resets SET n = n + 1; END;
CREATE TEMP TRIGGER IF NOT EXISTS fills_deleted AFTER DELETE ON main.fills
BEGIN UPDATE position_resets SET n = n + 1; END;
CREATE TEMP TRIGGER IF NOT EXISTS adjustments_updated AFTER UPDATE ON main.adjustments
BEGIN UPDATE position_resets SET n = n + 1; END;
CREATE TEMP TRIGGER IF NOT EXISTS adjustments_deleted AFTER DELETE ON main.adjustments
BEGIN UPDATE position_resets SET n = n + 1; END;
CREATE TEMP TRIGGER IF NOT EXISTS orders_moved AFTER UPDATE OF position_symbol, side
ON main.orders BEGIN UPDATE position_resets SET n = n + 1; END;
CREATE TEMP TRIGGER IF NOT EXISTS orders_deleted AFTER DELETE ON main.orders
BEGIN UPDATE position_resets SET n = n + 1; END;
"""
