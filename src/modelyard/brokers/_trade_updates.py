"""``trade_updates`` events -> the journal (fills deduplicated by ``execution_id``), and the
gate that holds them back while a bar's orders are on their way out."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from modelyard.brokers.alpaca_client import BrokerOrder
from modelyard.brokers.journal import Journal

__all__ = ["HOLD_MAX_S", "TradeUpdateGate", "apply_trade_update"]

logger = logging.getLogger("modelyard.brokers.executor")
_FILL_EVENTS = frozenset({"fill", "partial_fill"})
_FINAL_EVENTS = frozenset({"canceled", "expired", "rejected", "done_for_day", "replaced"})
HOLD_MAX_S = 0.25  # the longest a bar step holds trade updates back


class TradeUpdateGate:
    """Gives a bar's orders the interpreter first: from the moment a live bar arrives
    (:meth:`hold`, the stream thread) until the step's batch is answered (:meth:`release`, the
    Backtrader thread), and at most ``max_hold`` seconds, the trade-update thread waits before
    journaling its next event (:meth:`wait`). The events are applied in order afterwards: only
    their bookkeeping moves (Python runs one thread at a time, and a venue that fills the last
    bar's orders as it sends the next bar would otherwise make them compete with the journal
    intents and the POSTs of the new one). Nothing is dropped; journaling of venue news is
    ``NORMAL`` (the venue can tell it again) and reconciliation adopts what a crash loses.

    With ``defer_gc`` (the default) Python's cyclic garbage collector is off for the same
    window (process-wide; only when it was on, and switched back on by :meth:`release`, or
    once ``max_hold`` has passed by :meth:`expire`, which the broker calls every loop round).
    A full collection of a live session's heap takes ~100 ms here and the small ones ~0.5-1.5
    ms each, several per bar step: they run after the batch instead of inside it. Nothing is
    skipped: memory is freed by reference counting meanwhile, cycles at the next collection.
    """

    def __init__(self, max_hold: float = HOLD_MAX_S, *, defer_gc: bool = True) -> None:
        self.max_hold = max_hold
        self.defer_gc = defer_gc
        self._open = threading.Event()
        self._open.set()
        self._until = 0.0
        self._gc_lock = threading.Lock()
        self._gc_paused = False  # this gate switched the collector off

    def hold(self) -> None:
        """A live bar arrived: hold trade updates (for ``max_hold`` at most)."""
        self._until = time.monotonic() + self.max_hold
        self._open.clear()
        if self.defer_gc and not self._gc_paused:
            with self._gc_lock:
                if not self._gc_paused and gc.isenabled():
                    gc.disable()
                    self._gc_paused = True

    def release(self) -> None:
        """The step's orders are answered (or there were none): let trade updates through."""
        self._open.set()
        self._resume_gc()

    def wait(self) -> None:
        """Block while held, at most until the hold expires."""
        if self._open.is_set():
            return
        remaining = self._until - time.monotonic()
        if remaining > 0:
            self._open.wait(remaining)
        self.expire()

    def expire(self) -> None:
        """Switch the garbage collector back on when a hold outlived ``max_hold`` unreleased
        (a bar without a broker step, a stalled loop)."""
        if self._gc_paused and time.monotonic() >= self._until:
            self._resume_gc()

    def _resume_gc(self) -> None:
        if self._gc_paused:
            with self._gc_lock:
                if self._gc_paused:
                    self._gc_paused = False
                    gc.enable()


def apply_trade_update(journal: Journal, event: Any) -> None:
    """Apply one ``trade_updates`` event (alpaca-py ``TradeUpdate`` or its JSON) idempotently,
    in one ``NORMAL`` transaction (no fsync: the journal lock is held for microseconds)."""
    fields = _event_fields(event)
    order = BrokerOrder.from_json(fields["order"])
    coid = order.client_order_id
    kind = str(getattr(fields["event"], "value", fields["event"]))
    with journal.transaction(durable=False):  # one short commit per event, no fsync
        if journal.find(coid) is None:
            logger.info("trade update for %s, not in this journal; ignored", coid)
            return
        _apply(journal, coid, kind, order, fields)


def _apply(
    journal: Journal, coid: str, kind: str, order: BrokerOrder, fields: Mapping[str, Any]
) -> None:
    if kind in _FILL_EVENTS:
        qty, price = _float_or_none(fields.get("qty")), _float_or_none(fields.get("price"))
        execution_id = fields.get("execution_id")
        if qty and price and execution_id is not None:
            journal.record_fill(
                coid,
                str(execution_id),
                qty,
                price,
                cumulative_qty=order.filled_qty,
                cumulative_avg=order.filled_avg_price,
                at=_utc(fields.get("timestamp")),
            )
        else:
            journal.sync_filled(coid, order.filled_qty, order.filled_avg_price, source="stream")
    elif order.filled_qty > 0:
        journal.sync_filled(coid, order.filled_qty, order.filled_avg_price, source="stream")
    status = kind if kind in _FINAL_EVENTS else order.status
    reason = f"venue: {kind}" if kind == "rejected" else None
    journal.apply_broker(coid, status, broker_order_id=order.id, reason=reason)


def _float_or_none(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _event_fields(event: Any) -> Mapping[str, Any]:
    if isinstance(event, Mapping):
        data = event.get("data", event)
        return data if isinstance(data, Mapping) else {}
    return {
        name: getattr(event, name, None)
        for name in ("event", "execution_id", "order", "timestamp", "qty", "price")
    }
