"""``OrderExecutor``: risk check -> journal intent (durable) -> POST -> journal the answer.

Never an order twice: the ``client_order_id`` is deterministic and written (``FULL`` commit)
before the POST; an unknown outcome (timeout, 5xx, dropped connection) is resolved with
``GET /v2/orders:by_client_order_id``: found -> adopted; a confirmed 404 -> resent with the
same id (bounded; the venue refuses a second order with the same id); still unknown -> left
``submitted`` for :meth:`OrderExecutor.recover` / reconciliation.

Never an order lost: :meth:`OrderExecutor.recover` resolves every ``intent``/``submitted`` row
at startup the same way, and :meth:`OrderExecutor.on_trade_update` applies ``trade_updates``
idempotently (fills deduplicated by ``execution_id``), one short ``NORMAL`` transaction each,
after :attr:`OrderExecutor.trade_update_gate` lets them through (a live bar holds them until its
step's batch is answered, so the batch does not share the interpreter with their bookkeeping).

Batches (:meth:`OrderExecutor.submit_many`, the orders of one bar): the projected positions
(read while the venue clock prefetched at the bar may still be on its way), one venue clock
read, the risk checks in order (each order sees the ones before it), every intent in ONE
durable transaction, the POSTs concurrently on ``post_workers`` threads (each with its own
:class:`AlpacaClient` from ``client_factory``: a ``requests.Session`` is not documented
thread-safe; without a factory they go one by one on ``client``), then ``submitted`` and the
answers in one transaction and the journal's checkpoint (off the bar -> POST path: see
:mod:`.journal`). :meth:`OrderExecutor.submit` is a batch of one, POSTed on the calling thread.
The journal's lock is never held during an HTTP call.

``submitted`` is journaled with the answers, after the POSTs, not between the intents' commit
and the POSTs: a second commit there (0.5-0.6 ms for 50 orders) would only delay them. Nothing
depends on it: an ``intent`` and a ``submitted`` row are resolved alike (looked up by
``client_order_id``, resent only after a confirmed 404), so a crash before the answers are
journaled leaves rows ``intent`` that recovery finds at the venue and adopts.

Symbols: orders use Alpaca's order form (``BTC/USD``), positions its position form (``BTCUSD``);
both come from :class:`~modelyard.routing.classifier.AssetClassifier`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

from modelyard.brokers._batch import (
    CLOCK_MAX_AGE_S,
    POST_WORKERS,
    Answer,
    OrderRequest,
    Plan,
    Poster,
    SubmitResult,
)
from modelyard.brokers._trade_updates import TradeUpdateGate, apply_trade_update
from modelyard.brokers.alpaca_client import AlpacaClient, AssetInfo, BrokerOrder, ClockInfo
from modelyard.brokers.journal import (
    OPEN_STATES,
    UNRESOLVED_STATES,
    Intent,
    Journal,
    JournalOrder,
)
from modelyard.brokers.reconcile import adopt_order
from modelyard.brokers.risk import OrderCheck, RiskEngine
from modelyard.errors import BrokerError, OrderRejected, RiskLimitBreached
from modelyard.routing.classifier import AssetClassifier

__all__ = ["CLOCK_MAX_AGE_S", "POST_WORKERS", "OrderExecutor", "OrderRequest", "SubmitResult"]

logger = logging.getLogger(__name__)
Side = Literal["buy", "sell"]


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
        client_factory: Callable[[], AlpacaClient] | None = None,
        post_workers: int = POST_WORKERS,
    ) -> None:
        if not strategy_id.strip():
            raise ValueError("strategy_id must not be empty")
        self.journal = journal
        self.risk = risk
        self.strategy_id = strategy_id
        self.classifier = classifier or _default_classifier()
        self._stage_hook = stage_hook  # observation points for tests and metrics
        self._poster = Poster(client, client_factory, post_workers, max_resubmits, self._stage)
        self._assets: dict[str, AssetInfo] = {}
        # held by the store's live bars, released by the broker when the step's batch is done
        self.trade_update_gate = TradeUpdateGate()
        self.prices: dict[str, float] = {}  # last price by position symbol
        if risk.cancel_open_orders is None:
            risk.cancel_open_orders = self.cancel_open_orders

    @property
    def client(self) -> AlpacaClient:
        """The client of single orders, recovery, lookups and cancels."""
        return self._poster.client

    @client.setter
    def client(self, client: AlpacaClient) -> None:
        self._poster.client = client

    @property
    def max_resubmits(self) -> int:
        return self._poster.max_resubmits

    @property
    def post_workers(self) -> int:
        return self._poster.post_workers

    def close(self) -> None:
        """Stop the POST workers and close their clients (``client`` stays the caller's)."""
        self._poster.close()

    def request_counts(self) -> dict[str, int]:
        """Requests per endpoint over ``client`` and the POST workers' clients."""
        return self._poster.request_counts()

    def prefetch_clock(self) -> None:
        """Start reading the venue clock for the next batch (see :meth:`Poster.prefetch_clock`)."""
        self._poster.prefetch_clock()

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
        request = OrderRequest(
            symbol, side, decision_bar_ts, qty, notional, price, order_type, limit_price,
            time_in_force,
        )  # fmt: skip
        (result,) = self.submit_many([request])
        if result.error is not None:
            raise result.error
        assert result.row is not None
        return result.row

    def submit_many(self, requests: Sequence[OrderRequest]) -> list[SubmitResult]:
        """Check, journal and send a batch (the orders of one bar); one result per request,
        in order. Never raises for one order's problem (see :class:`SubmitResult`); a journal
        failure before the POSTs raises (then nothing was sent)."""
        results: dict[int, SubmitResult] = {}
        plans: list[Plan] = []
        for index, request in enumerate(requests):
            try:
                plans.append(self._plan(index, request))
            except (ValueError, BrokerError) as exc:
                results[index] = SubmitResult(request, error=exc)
        checked = [p for p in plans if p.failed is None]
        clock: ClockInfo | None = None
        positions: dict[str, float] = {}
        if checked:
            # read while the venue clock (prefetched at the bar) may still be on its way
            positions = self.projected_positions()
            try:
                clock = self._poster.batch_clock()  # once per batch: one bar, one "now"
            except BrokerError as exc:
                for plan in checked:
                    results[plan.index] = SubmitResult(plan.request, error=exc)
                plans = [p for p in plans if p.failed is not None]
        if clock is not None:
            self._check_risk([p for p in plans if p.failed is None], clock, positions)
        rows = self.journal.record_intents(
            [replace(p.intent, failed_reason=p.failed) for p in plans]
        )
        sendable: list[JournalOrder] = []
        for plan, row in zip(plans, rows, strict=True):
            if plan.failed is None:
                sendable.append(row)
                continue
            error = plan.error or OrderRejected(f"{row.client_order_id}: {plan.failed}")
            if isinstance(error, RiskLimitBreached):
                logger.warning("%s refused: %s", row.client_order_id, plan.failed)
            results[plan.index] = SubmitResult(plan.request, row, error, time.perf_counter())
        by_coid = {row.client_order_id: plan for plan, row in zip(plans, rows, strict=True)}
        for row in sendable:
            self._stage("intent_written", row.client_order_id)
        for answer in self._record(self._poster.post_all(sendable)):
            plan = by_coid[answer.row.client_order_id]
            results[plan.index] = SubmitResult(plan.request, answer.row, answer.error, answer.at)
        self._checkpoint()
        return [results[i] for i in range(len(requests))]

    def _checkpoint(self) -> None:
        """The journal's checkpoint, now that the batch is answered (off the bar -> POST path;
        see :mod:`.journal`). A failure costs nothing but a larger WAL."""
        try:
            self.journal.checkpoint()
        except Exception as exc:  # e.g. sqlite3.OperationalError on a busy file
            logger.warning("journal checkpoint failed: %s", exc)

    def _plan(self, index: int, request: OrderRequest) -> Plan:
        """Validate and normalise one request (no journal write, no risk check yet)."""
        side, qty, notional = request.side, request.qty, request.notional
        order_type, limit_price = request.order_type, request.limit_price
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
        if (qty is None) == (notional is None):
            raise ValueError("pass exactly one of qty= or notional=")
        if (qty is not None and qty <= 0) or (notional is not None and notional <= 0):
            raise ValueError("qty and notional must be > 0")
        if order_type == "limit" and limit_price is None:
            raise ValueError("a limit order needs limit_price=")
        info = self.classifier.classify(request.symbol)
        order_symbol = info.canonical
        position_symbol = self.classifier.alpaca_position_symbol(request.symbol)
        crypto = info.asset_class == "crypto"
        tif = request.time_in_force or ("gtc" if crypto else "day")
        ref = request.price or limit_price or self.prices.get(position_symbol)
        if ref is None:
            raise ValueError(
                f"{request.symbol}: pass price= (the decision bar's close) for risk checks"
            )
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
            "decision_bar_ts": request.decision_bar_ts,
        }
        local = self._local_problem(order_symbol, crypto, qty, notional, tif, intent)
        return Plan(index, request, Intent(**intent), info.asset_class, ref, failed=local)

    def _check_risk(self, plans: list[Plan], clock: ClockInfo, positions: dict[str, float]) -> None:
        """The risk checks in order, from the batch's projected ``positions`` (changed here);
        each order sees the projected positions of those before it (exactly as if submitted one
        by one). Refusals are marked on the plan."""
        kill_switch = self.risk.kill_switch  # one read per batch: one bar, one decision
        for plan in plans:
            intent = plan.intent
            units = intent.qty if intent.qty is not None else (intent.notional or 0.0) / plan.ref
            check = OrderCheck(
                symbol=intent.position_symbol,
                asset_class=plan.asset_class,
                signed_qty=units if intent.side == "buy" else -units,
                price=plan.ref,
                decision_bar_ts=intent.decision_bar_ts,
                now=clock.timestamp,
                market_open=clock.is_open,
            )
            try:
                self.risk.check(
                    check, positions=positions, prices=self.prices, kill_switch=kill_switch
                )
            except RiskLimitBreached as exc:
                plan.failed, plan.error = f"risk:{exc.rule}: {exc}", exc
                continue
            self.risk.record_sent()
            symbol = intent.position_symbol
            positions[symbol] = positions.get(symbol, 0.0) + check.signed_qty

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
            asset = self.asset(symbol)
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

    def asset(self, symbol: str) -> AssetInfo:
        """The venue's facts about ``symbol`` (cached)."""
        asset = self._assets.get(symbol)
        if asset is None:
            asset = self.client.get_asset(symbol)
            self._assets[symbol] = asset
        return asset

    def _send(self, row: JournalOrder) -> JournalOrder:
        """POST one journaled row (recovery); raises :class:`OrderRejected` on a refusal.
        ``submitted`` is journaled with the answer, as for a batch (:meth:`_record`)."""
        (answer,) = self._record([self._poster.post(row, self.client, resend=True)])
        if answer.error is not None:
            raise answer.error
        return answer.row

    def _record(self, answers: list[Answer]) -> list[Answer]:
        """Journal the POSTs and the venue's answers in one transaction: ``intent ->
        submitted`` for every row, then each answer. ``NORMAL`` (the venue can tell them
        again), ``FULL`` when one of them is a refusal (``failed`` is ours)."""
        durable = any(a.failed is not None for a in answers)
        try:
            with self.journal.transaction(durable=durable):
                self.journal.mark_submitted([a.row.client_order_id for a in answers])
                return [replace(a, row=self._journal_answer(a)) for a in answers]
        except Exception:
            logger.exception("answers not journaled; recovery and reconciliation adopt them")
            return [replace(a, row=self.journal.get(a.row.client_order_id)) for a in answers]

    def _journal_answer(self, answer: Answer) -> JournalOrder:
        coid = answer.row.client_order_id
        try:
            if answer.order is not None:
                return self._adopt(answer.order)
            if answer.failed is not None:
                return self.journal.transition(coid, "failed", reason=answer.failed)
        except BrokerError as exc:
            logger.error("%s: answer not journaled (%s); reconciliation adopts it", coid, exc)
        return self.journal.get(coid)

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
        exposures = self.journal.exposures(OPEN_STATES | UNRESOLVED_STATES)
        for symbol, side, qty, notional, filled_qty, avg_fill_price in exposures:
            if qty is not None:
                total = qty
            else:
                price = self.prices.get(symbol) or avg_fill_price or 0.0
                total = (notional or 0.0) / price if price else 0.0
            remaining = max(total - filled_qty, 0.0)
            sign = 1.0 if side == "buy" else -1.0
            positions[symbol] = positions.get(symbol, 0.0) + sign * remaining
        return positions

    # -- trade updates -----------------------------------------------------------------------
    async def handle_trade_update(self, event: Any) -> None:
        """Handler for ``TradingStream.subscribe_trade_updates``; never raises."""
        self.on_trade_update(event)

    def on_trade_update(self, event: Any) -> None:
        """Apply one ``trade_updates`` event (alpaca-py ``TradeUpdate`` or its JSON) idempotently.

        Catches everything: alpaca-py's stream swallows handler exceptions and can spin.
        Waits first while :attr:`trade_update_gate` is held (a bar's orders are going out).
        """
        try:
            self.trade_update_gate.wait()
            apply_trade_update(self.journal, event)
        except Exception:
            logger.exception("trade update could not be applied; reconciliation will catch up")


_FLOOR_SLACK = Decimal("1e-6")


def _floor(qty: float, increment: float | None) -> float:
    """``qty`` floored to a multiple of ``increment``. A position summed from fills in binary
    floats can sit a hair under a multiple (0.9564739289999999 for 0.956473929): 1e-6 of an
    increment of slack keeps a full close from leaving one increment behind."""
    if not increment:
        return qty
    step = Decimal(str(increment))
    units = (Decimal(str(qty)) / step + _FLOOR_SLACK).to_integral_value(rounding=ROUND_FLOOR)
    return float(units * step)
