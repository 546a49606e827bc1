"""``OrderExecutor``: risk check -> journal intent (committed) -> POST -> journal the answer.

Never an order twice: the ``client_order_id`` is deterministic and written before the POST; an
unknown outcome (timeout, 5xx, dropped connection) is resolved with
``GET /v2/orders:by_client_order_id``: found -> adopted; a confirmed 404 -> resent with the
same id (bounded; the venue refuses a second order with the same id); still unknown -> left
``submitted`` for :meth:`OrderExecutor.recover` / reconciliation.

Never an order lost: :meth:`OrderExecutor.recover` resolves every ``intent``/``submitted`` row
at startup the same way, and :meth:`OrderExecutor.on_trade_update` applies ``trade_updates``
idempotently (fills deduplicated by ``execution_id``).

Symbols: orders use Alpaca's order form (``BTC/USD``), positions its position form (``BTCUSD``);
both come from :class:`~modelyard.routing.classifier.AssetClassifier`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

from modelyard.brokers.alpaca_client import AlpacaClient, AssetInfo, BrokerOrder, OutcomeUnknown
from modelyard.brokers.journal import (
    OPEN_STATES,
    UNRESOLVED_STATES,
    Journal,
    JournalOrder,
)
from modelyard.brokers.reconcile import adopt_order
from modelyard.brokers.risk import OrderCheck, RiskEngine
from modelyard.errors import BrokerError, BrokerUnavailable, OrderRejected, RiskLimitBreached
from modelyard.routing.classifier import AssetClassifier

__all__ = ["OrderExecutor"]

logger = logging.getLogger(__name__)
Side = Literal["buy", "sell"]
_FILL_EVENTS = frozenset({"fill", "partial_fill"})
_FINAL_EVENTS = frozenset({"canceled", "expired", "rejected", "done_for_day", "replaced"})


def _default_classifier() -> AssetClassifier:
    from modelyard.config import load_config

    return AssetClassifier(load_config())


class OrderExecutor:
    """Journal + risk + client for one strategy. Thread-safe through the journal's lock."""

    def __init__(
        self,
        journal: Journal,
        client: AlpacaClient,
        risk: RiskEngine,
        strategy_id: str,
        *,
        classifier: AssetClassifier | None = None,
        max_resubmits: int = 2,
        stage_hook: Callable[[str, str], None] | None = None,
    ) -> None:
        if not strategy_id.strip():
            raise ValueError("strategy_id must not be empty")
        self.journal = journal
        self.client = client
        self.risk = risk
        self.strategy_id = strategy_id
        self.classifier = classifier or _default_classifier()
        self.max_resubmits = max_resubmits
        self._stage_hook = stage_hook  # observation points for tests and metrics
        self._assets: dict[str, AssetInfo] = {}
        self.prices: dict[str, float] = {}  # last price by position symbol
        if risk.cancel_open_orders is None:
            risk.cancel_open_orders = self.cancel_open_orders

    # -- submit ------------------------------------------------------------------------------
    def submit(
        self,
        symbol: str,
        side: Side,
        *,
        decision_bar_ts: datetime,
        qty: float | None = None,
        notional: float | None = None,
        price: float | None = None,
        order_type: Literal["market", "limit"] = "market",
        limit_price: float | None = None,
        time_in_force: str | None = None,
    ) -> JournalOrder:
        """Check, journal and send one order; returns its journal row.

        Raises :class:`RiskLimitBreached` (journaled ``failed``, nothing sent) and
        :class:`OrderRejected` (journaled ``failed``). A row left ``submitted`` means the outcome
        is still unknown; :meth:`recover` or reconciliation settles it.
        """
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
        if (qty is None) == (notional is None):
            raise ValueError("pass exactly one of qty= or notional=")
        if (qty is not None and qty <= 0) or (notional is not None and notional <= 0):
            raise ValueError("qty and notional must be > 0")
        if order_type == "limit" and limit_price is None:
            raise ValueError("a limit order needs limit_price=")
        info = self.classifier.classify(symbol)
        order_symbol = info.canonical
        position_symbol = self.classifier.alpaca_position_symbol(symbol)
        crypto = info.asset_class == "crypto"
        tif = time_in_force or ("gtc" if crypto else "day")
        ref = price or limit_price or self.prices.get(position_symbol)
        if ref is None:
            raise ValueError(f"{symbol}: pass price= (the decision bar's close) for risk checks")
        self.prices[position_symbol] = ref
        intent: dict[str, Any] = {
            "strategy_id": self.strategy_id,
            "symbol": order_symbol,
            "position_symbol": position_symbol,
            "side": side,
            "qty": qty,
            "notional": notional,
            "order_type": order_type,
            "limit_price": limit_price,
            "time_in_force": tif,
            "decision_bar_ts": decision_bar_ts,
        }
        local = self._local_problem(order_symbol, crypto, qty, notional, tif, intent)
        if local is not None:
            row = self.journal.record_intent(**intent, failed_reason=local)
            raise OrderRejected(f"{row.client_order_id}: {local}")
        clock = self.client.get_clock()
        units = intent["qty"] if intent["qty"] is not None else (notional or 0.0) / ref
        check = OrderCheck(
            symbol=position_symbol,
            asset_class=info.asset_class,
            signed_qty=units if side == "buy" else -units,
            price=ref,
            decision_bar_ts=decision_bar_ts,
            now=clock.timestamp,
            market_open=clock.is_open,
        )
        try:
            self.risk.check(check, positions=self.projected_positions(), prices=self.prices)
        except RiskLimitBreached as exc:
            reason = f"risk:{exc.rule}: {exc}"
            row = self.journal.record_intent(**intent, failed_reason=reason)
            logger.warning("%s refused: %s", row.client_order_id, reason)
            raise
        row = self.journal.record_intent(**intent)
        self._stage("intent_written", row.client_order_id)
        self.risk.record_sent()
        return self._send(row)

    def _local_problem(
        self,
        symbol: str,
        crypto: bool,
        qty: float | None,
        notional: float | None,
        tif: str,
        intent: dict[str, Any],
    ) -> str | None:
        if crypto and qty is not None:
            asset = self._asset(symbol)
            floored = _floor(qty, asset.min_trade_increment)
            intent["qty"] = floored
            minimum = asset.min_order_size or 0.0
            if floored <= 0 or floored < minimum:
                return f"qty {qty} floored to {floored} is below the minimum {minimum}"
            return None
        fractional = notional is not None or (qty is not None and qty % 1 != 0)
        if not crypto and fractional and (tif != "day" or intent["order_type"] != "market"):
            return "fractional and notional equity orders must be market/day orders"
        return None

    def _asset(self, symbol: str) -> AssetInfo:
        asset = self._assets.get(symbol)
        if asset is None:
            asset = self.client.get_asset(symbol)
            self._assets[symbol] = asset
        return asset

    def _send(self, row: JournalOrder) -> JournalOrder:
        coid = row.client_order_id
        if row.state == "intent":
            self.journal.transition(coid, "submitted")
        for attempt in range(self.max_resubmits + 1):
            try:
                order = self.client.submit_order(
                    row.symbol,
                    "buy" if row.side == "buy" else "sell",
                    client_order_id=coid,
                    qty=row.qty,
                    notional=row.notional,
                    order_type="limit" if row.order_type == "limit" else "market",
                    limit_price=row.limit_price,
                    time_in_force=row.time_in_force,
                )
            except OrderRejected as exc:
                if attempt > 0:  # a resend: the first POST may have landed after all
                    found = self._lookup(coid)
                    if found is not None:
                        return self._adopt(found)
                reason = f"rejected: HTTP {exc.status} code {exc.code}: {exc}"
                self.journal.transition(coid, "failed", reason=reason)
                raise
            except OutcomeUnknown as exc:
                logger.warning("%s: outcome unknown (%s); looking it up", coid, exc)
                try:
                    found = self.client.get_order_by_client_id(coid)
                except BrokerUnavailable as lookup_exc:
                    logger.error("%s: still unknown (%s); left submitted", coid, lookup_exc)
                    return self.journal.get(coid)
                if found is not None:
                    return self._adopt(found)
                logger.warning("%s: confirmed absent; resending with the same id", coid)
                continue
            except BrokerUnavailable as exc:  # 429s or connect timeouts: never processed
                logger.error("%s: venue unavailable (%s); left submitted", coid, exc)
                return self.journal.get(coid)
            self._stage("posted", coid)
            return self._adopt(order)
        logger.error("%s: %d resends without an answer; left submitted", coid, self.max_resubmits)
        return self.journal.get(coid)

    def _lookup(self, coid: str) -> BrokerOrder | None:
        try:
            return self.client.get_order_by_client_id(coid)
        except BrokerError as exc:
            logger.error("%s: lookup failed: %s", coid, exc)
            return None

    def _adopt(self, order: BrokerOrder) -> JournalOrder:
        return adopt_order(self.journal, order, source="rest")

    def _stage(self, stage: str, coid: str) -> None:
        if self._stage_hook is not None:
            self._stage_hook(stage, coid)

    # -- recovery ----------------------------------------------------------------------------
    def recover(self) -> list[JournalOrder]:
        """Resolve every ``intent``/``submitted`` row: adopt what the venue has, POST (same id)
        only what it confirms it never saw (404), unless the decision went stale meanwhile."""
        resolved = []
        for row in self.journal.orders(UNRESOLVED_STATES):
            coid = row.client_order_id
            try:
                found = self.client.get_order_by_client_id(coid)
            except BrokerError as exc:
                logger.error("recover %s: lookup failed (%s); left %s", coid, exc, row.state)
                resolved.append(row)
                continue
            if found is not None:
                logger.info("recover %s: found at the venue (%s)", coid, found.status)
                resolved.append(self._adopt(found))
                continue
            try:
                now = self.client.get_clock().timestamp
                self.risk.check_resend(row.decision_bar_ts, now)
            except RiskLimitBreached as exc:
                reason = f"risk:{exc.rule}: {exc} (at recovery)"
                resolved.append(self.journal.transition(coid, "failed", reason=reason))
                continue
            except BrokerError as exc:
                logger.error("recover %s: no clock (%s); left %s", coid, exc, row.state)
                resolved.append(row)
                continue
            logger.warning("recover %s: never reached the venue; sending it now", coid)
            try:
                resolved.append(self._send(row))
            except OrderRejected as exc:
                logger.error("recover %s: refused by the venue: %s", coid, exc)
                resolved.append(self.journal.get(coid))
        return resolved

    def sync_order(self, client_order_id: str) -> JournalOrder:
        """Refresh one journal row from ``GET /v2/orders:by_client_order_id``."""
        found = self.client.get_order_by_client_id(client_order_id)
        if found is None:
            return self.journal.get(client_order_id)
        return self._adopt(found)

    # -- cancel ------------------------------------------------------------------------------
    def cancel(self, client_order_id: str) -> JournalOrder:
        """Cancel one order; a cancel that loses the race against a fill adopts the fill."""
        row = self.journal.get(client_order_id)
        if row.is_terminal:
            return row
        broker_id = row.broker_order_id
        if broker_id is None:
            found = self.client.get_order_by_client_id(client_order_id)
            if found is None:
                logger.warning("%s: not at the venue; nothing to cancel", client_order_id)
                return row
            broker_id = found.id
        try:
            self.client.cancel_order(broker_id)
        except OrderRejected as exc:
            logger.warning("%s: cancel refused (%s); reading its state", client_order_id, exc)
        return self.sync_order(client_order_id)

    def cancel_open_orders(self) -> int:
        """Cancel every open journal order (the kill switch calls this). Returns how many."""
        count = 0
        for row in self.journal.orders(OPEN_STATES | {"submitted"}):
            try:
                self.cancel(row.client_order_id)
                count += 1
            except BrokerError as exc:
                logger.error("%s: cancel failed: %s", row.client_order_id, exc)
        return count

    # -- positions ---------------------------------------------------------------------------
    def projected_positions(self) -> dict[str, float]:
        """Journaled positions plus what the open and unresolved orders would add."""
        positions = dict(self.journal.positions())
        for row in self.journal.orders(OPEN_STATES | UNRESOLVED_STATES):
            if row.qty is not None:
                total = row.qty
            else:
                price = self.prices.get(row.position_symbol) or row.avg_fill_price or 0.0
                total = (row.notional or 0.0) / price if price else 0.0
            remaining = max(total - row.filled_qty, 0.0)
            sign = 1.0 if row.side == "buy" else -1.0
            positions[row.position_symbol] = (
                positions.get(row.position_symbol, 0.0) + sign * remaining
            )
        return positions

    # -- trade updates -----------------------------------------------------------------------
    async def handle_trade_update(self, event: Any) -> None:
        """Handler for ``TradingStream.subscribe_trade_updates``; never raises."""
        self.on_trade_update(event)

    def on_trade_update(self, event: Any) -> None:
        """Apply one ``trade_updates`` event (alpaca-py ``TradeUpdate`` or its JSON) idempotently.

        Catches everything: alpaca-py's stream swallows handler exceptions and can spin.
        """
        try:
            self._apply_event(event)
        except Exception:
            logger.exception("trade update could not be applied; reconciliation will catch up")

    def _apply_event(self, event: Any) -> None:
        fields = _event_fields(event)
        order = BrokerOrder.from_json(fields["order"])
        coid = order.client_order_id
        if self.journal.find(coid) is None:
            logger.info("trade update for %s, not in this journal; ignored", coid)
            return
        kind = str(getattr(fields["event"], "value", fields["event"]))
        if kind in _FILL_EVENTS:
            qty, price = _float_or_none(fields.get("qty")), _float_or_none(fields.get("price"))
            execution_id = fields.get("execution_id")
            if qty and price and execution_id is not None:
                self.journal.record_fill(
                    coid,
                    str(execution_id),
                    qty,
                    price,
                    cumulative_qty=order.filled_qty,
                    cumulative_avg=order.filled_avg_price,
                    at=_utc(fields.get("timestamp")),
                )
            else:
                self.journal.sync_filled(
                    coid, order.filled_qty, order.filled_avg_price, source="stream"
                )
        elif order.filled_qty > 0:
            self.journal.sync_filled(
                coid, order.filled_qty, order.filled_avg_price, source="stream"
            )
        status = kind if kind in _FINAL_EVENTS else order.status
        reason = f"venue: {kind}" if kind == "rejected" else None
        self.journal.apply_broker(coid, status, broker_order_id=order.id, reason=reason)


def _floor(qty: float, increment: float | None) -> float:
    if not increment:
        return qty
    step = Decimal(str(increment))
    return float((Decimal(str(qty)) / step).to_integral_value(rounding=ROUND_FLOOR) * step)


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
