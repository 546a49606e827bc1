"""Reconciliation: the journal against the venue's orders and positions; the venue wins.

1. Every unsettled journal row (``intent``, ``submitted``, ``acknowledged``,
   ``partially_filled``) is looked up by ``client_order_id`` and updated from the venue's status
   and cumulative ``filled_qty`` (fills lost while the stream was down become synthetic fills
   that keep the VWAP). Rows the venue never saw stay for :meth:`OrderExecutor.recover`.
2. Venue orders with our id prefix that the journal does not know are reported.
3. Positions: the venue's are compared with the journal's (fills + earlier adjustments); a
   difference is adopted as a journaled adjustment. The comparison is retried when fills land
   meanwhile. A failed positions call is an error, NEVER "flat": nothing is adjusted.
4. The risk limits are applied to the adopted positions: a breach is reported and, with
   ``on_adopted_breach="kill_switch"``, trips the kill switch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelyard.brokers.alpaca_client import AlpacaClient, BrokerOrder
from modelyard.brokers.journal import OPEN_STATES, UNRESOLVED_STATES, Journal, JournalOrder
from modelyard.brokers.risk import RiskEngine
from modelyard.errors import BrokerError, RiskLimitBreached

__all__ = ["Discrepancy", "ReconcileReport", "reconcile"]

logger = logging.getLogger(__name__)
_EPS = 1e-9
_PASSES = 3


@dataclass(frozen=True)
class Discrepancy:
    kind: str  # order_state | order_fill | missing_at_venue | unknown_venue_order | position
    key: str  # client_order_id or position symbol
    journal: str
    venue: str
    action: str


@dataclass
class ReconcileReport:
    ok: bool = True
    error: str | None = None
    discrepancies: list[Discrepancy] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # never seen by the venue: recover()
    venue_positions: dict[str, float] | None = None
    journal_positions: dict[str, float] = field(default_factory=dict)

    def _fail(self, error: str) -> ReconcileReport:
        self.ok = False
        self.error = error
        logger.error("reconciliation: %s", error)
        return self


def reconcile(
    journal: Journal,
    client: AlpacaClient,
    risk: RiskEngine,
    *,
    prices: Mapping[str, float] | None = None,
    id_prefix: str = "my-",
) -> ReconcileReport:
    """Adopt the venue's truth into ``journal``; see the module docstring."""
    report = ReconcileReport()
    try:
        _check_unknown_orders(journal, client, report, id_prefix)
        for _ in range(_PASSES):
            _sync_orders(journal, client, report)
            before = journal.positions()
            try:
                venue = client.get_positions()
            except BrokerError as exc:
                return report._fail(f"positions unavailable ({exc}); nothing adjusted")
            changed = _sync_orders(journal, client, report)
            if not changed and journal.positions() == before:
                break
            logger.info("reconciliation: fills landed meanwhile; comparing again")
        else:
            return report._fail("fills kept landing; positions not compared")
    except BrokerError as exc:
        return report._fail(f"orders unavailable ({exc}); nothing adjusted")
    report.venue_positions = venue
    _adopt_positions(journal, venue, before, report)
    report.journal_positions = journal.positions()
    _apply_limits(risk, venue, prices or {}, report)
    try:
        account = client.get_account()
        risk.update_equity(account.equity, client.get_clock().timestamp)
    except BrokerError as exc:
        logger.warning("reconciliation: account unavailable for the daily loss (%s)", exc)
    report.ok = report.ok and not report.breaches
    return report


def adopt_order(journal: Journal, order: BrokerOrder, *, source: str) -> JournalOrder:
    """Update one journal row from the venue's order (cumulative fills first, then status)."""
    coid = order.client_order_id
    if order.filled_qty > 0:
        journal.sync_filled(coid, order.filled_qty, order.filled_avg_price, source=source)
    return journal.apply_broker(coid, order.status, broker_order_id=order.id)


def _sync_orders(journal: Journal, client: AlpacaClient, report: ReconcileReport) -> bool:
    changed = False
    for row in journal.orders(UNRESOLVED_STATES | OPEN_STATES):
        coid = row.client_order_id
        found = client.get_order_by_client_id(coid)
        if found is None:
            if row.state in UNRESOLVED_STATES:
                if coid not in report.unresolved:
                    report.unresolved.append(coid)
                continue
            if row.filled_qty <= _EPS:
                after = journal.transition(coid, "failed", reason="not found at the venue")
                _note(report, "missing_at_venue", coid, row.state, "404", "marked failed")
                changed = changed or after.state != row.state
            else:
                _note(report, "missing_at_venue", coid, row.state, "404", "none (has fills)")
            continue
        after = adopt_order(journal, found, source="reconcile")
        if abs(after.filled_qty - row.filled_qty) > _EPS:
            _note(
                report, "order_fill", coid, f"filled {row.filled_qty}",
                f"filled {found.filled_qty}", "adopted the venue's fills",
            )  # fmt: skip
            changed = True
        if after.state != row.state:
            _note(report, "order_state", coid, row.state, found.status, f"now {after.state}")
            changed = True
    return changed


def _check_unknown_orders(
    journal: Journal, client: AlpacaClient, report: ReconcileReport, prefix: str
) -> None:
    for order in client.list_orders("all"):
        coid = order.client_order_id
        if coid.startswith(prefix) and journal.find(coid) is None:
            _note(report, "unknown_venue_order", coid, "absent", order.status, "reported")


def _adopt_positions(
    journal: Journal,
    venue: Mapping[str, float],
    implied: Mapping[str, float],
    report: ReconcileReport,
) -> None:
    for symbol in sorted(set(venue) | set(implied)):
        held, ours = venue.get(symbol, 0.0), implied.get(symbol, 0.0)
        delta = held - ours
        if abs(delta) <= _EPS:
            continue
        reason = f"reconcile: venue holds {held}, journal implied {ours}"
        journal.record_adjustment(symbol, delta, reason)
        _note(report, "position", symbol, str(ours), str(held), f"adjusted by {delta}")


def _apply_limits(
    risk: RiskEngine,
    venue: Mapping[str, float],
    prices: Mapping[str, float],
    report: ReconcileReport,
) -> None:
    for symbol, qty in sorted(venue.items()):
        try:
            risk.check_position(symbol, qty, prices.get(symbol, 0.0))
        except RiskLimitBreached as exc:
            message = f"{exc.rule}: {exc}"
            report.breaches.append(message)
            logger.error("reconciliation: adopted position breaks a limit: %s", message)
            if risk.config.on_adopted_breach == "kill_switch":
                risk.trip_kill_switch(f"adopted position: {message}")


def _note(
    report: ReconcileReport, kind: str, key: str, journal: str, venue: str, action: str
) -> None:
    item = Discrepancy(kind, key, journal, venue, action)
    report.discrepancies.append(item)
    logger.warning(
        "reconciliation: %s %s: journal %s, venue %s -> %s", kind, key, journal, venue, action
    )
