"""``AlpacaBroker``: a thin Backtrader broker delegating to :class:`OrderExecutor`.

* ``buy``/``sell`` with ``exectype`` Market (default) or Limit; by size, or by notional with
  ``notional=`` as an order kwarg (``self.buy(data, notional=1_000)``; Backtrader's size is
  then an estimate, ``notional / close``). Equity quantities are cut to 9 decimals, and to
  whole shares for a limit order or an asset that is not fractionable (Alpaca's rules);
  crypto quantities are floored to the asset's increment by the executor.
* Submission is batched per strategy step: ``buy``/``sell`` notify ``Submitted`` and queue the
  order; right after the strategy's ``prenext``/``next`` (an analyzer the broker adds to every
  strategy at ``start``, found through Backtrader's own owner lookup) :meth:`AlpacaBroker.flush`
  sends the step's orders through :meth:`OrderExecutor.submit_many`: one clock read, the risk
  checks in order, one durable journal commit, concurrent POSTs. Orders placed outside a
  strategy step (``notify_data``, timers) go at the broker's next ``next()`` or ``stop()``.
  The ``Submitted`` notification's copy of the order is taken once the batch is sent, before
  anything moves the order (nothing else changes it in between): copying 50 orders would
  otherwise delay the step's first POST. ``notify_order`` then sees, on the venue's answer,
  ``Accepted``;
  :class:`~modelyard.errors.RiskLimitBreached` -> ``Rejected`` (journaled ``failed``, never
  sent); a 403 (buying power, available quantity) -> ``Margin``; another refusal ->
  ``Rejected``. With ``dry_run`` the intent is journaled ``failed`` with reason ``dry_run``
  and the order is ``Rejected`` (``order.info.reason == "dry_run"``); nothing is sent.
* Order progress comes from the journal, which ``trade_updates`` (a ``TradingStream`` thread
  -> ``executor.on_trade_update``, deduplicated by ``execution_id``) and reconciliation keep
  (a live bar holds trade updates back until the step's batch is answered, at most
  ``HOLD_MAX_S``: see :class:`~modelyard.brokers._trade_updates.TradeUpdateGate`). A
  journaled trade update wakes the Backtrader loop for a round without a bar
  (:meth:`~modelyard.feeds.live.BarHub.poke`): positions and cash move when the venue's news
  is in, not at the next bar or ``qcheck`` timeout, and with ``Cerebro(quicknotify=True)``
  (Backtrader's advice for live brokers) ``notify_order`` fires then too; without it
  Backtrader delivers the notifications right before the next bar, as in a backtest. The
  next bar's orders do not wait for fills already applied (measured neutral: 7.6-8.4 ms to
  the first POST with the wake, 7.9-8.1 without).
  Each new journaled fill is one Backtrader execution (so the average price is the VWAP),
  ``partially_filled`` -> ``Partial``, ``filled`` -> ``Completed``, ``canceled`` ->
  ``Canceled``, ``expired`` -> ``Expired``, ``rejected`` -> ``Rejected``. Every open order is
  also re-read from the journal about once a second (a backstop); on a new bar's step that
  look waits for the next loop round without a bar (a second at most), the trade updates and
  a reconciliation's ``resync`` do not.
* Positions are Backtrader ``Position`` s per data, started from the venue's positions and
  their average entry prices (keyed by Alpaca's position symbol, ``BTCUSD`` for ``BTC/USD``)
  and moved by the fills.
  ``getcash()`` is the account's cash moved by the fills (re-read by :meth:`refresh_account`);
  ``getvalue()`` adds the positions marked at their data's last close.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import backtrader as bt

from modelyard.brokers.executor import OrderRequest, SubmitResult
from modelyard.brokers.journal import TERMINAL_STATES, JournalOrder
from modelyard.errors import BrokerError, OrderRejected, RiskLimitBreached
from modelyard.feeds.bt_feeds import bt_num_to_utc

if TYPE_CHECKING:
    from modelyard.brokers.alpaca_store import AlpacaStore

__all__ = ["AlpacaBroker"]

logger = logging.getLogger(__name__)
_SYNC_EVERY_S = 1.0


def _event_coid(event: Any) -> str | None:
    data = event.get("data", event) if isinstance(event, dict) else event
    order = data.get("order") if isinstance(data, dict) else getattr(data, "order", None)
    if order is None:
        return None
    coid = order.get("client_order_id") if isinstance(order, dict) else order.client_order_id
    return None if coid is None else str(coid)


def equity_qty(size: float, *, whole: bool) -> float:
    """An equity quantity per Alpaca's rules: 9 decimals, or whole shares."""
    if whole:
        return float(math.floor(size + 1e-9))
    return math.floor(size * 1e9 + 1e-6) / 1e9


@lru_cache(maxsize=256)
def _bar_time(num: float) -> datetime:
    """A Backtrader date number as a UTC ``datetime`` (cached: a step's orders share a bar)."""
    moment: datetime = bt_num_to_utc(num).to_pydatetime()
    return moment


def order_snapshot(order: Any) -> Any:
    """What Backtrader's ``order.clone()`` gives (a shallow copy whose ``executed`` is a
    shallow copy of its own, taken after ``markpending()``), without ``copy.copy``'s generic
    path: 1 us instead of 4 us an order, and a step notifies every order two or three times."""
    snapshot = object.__new__(type(order))
    snapshot.__dict__.update(order.__dict__)
    executed = order.executed
    executed.markpending()
    copied = object.__new__(type(executed))
    copied.__dict__.update(executed.__dict__)
    snapshot.executed = copied
    return snapshot


class _LateClone:
    """A ``Submitted`` notification whose ``order.clone()`` is taken later (see
    :meth:`AlpacaBroker._notify_submitted`)."""

    __slots__ = ("clone", "order")

    def __init__(self, order: Any) -> None:
        self.order = order
        self.clone: Any = None

    def take(self) -> Any:
        if self.clone is None:
            self.clone = order_snapshot(self.order)
        return self.clone


class _FlushOrders(bt.Analyzer):  # type: ignore[misc]
    """Sends the orders a strategy placed in this step as one batch: Backtrader runs a
    strategy's analyzers right after its ``prenext``/``nextstart``/``next``."""

    params = (("broker", None),)

    def next(self) -> None:
        self.p.broker.flush()


class AlpacaBroker(bt.BrokerBase):  # type: ignore[misc]
    """See the module docstring. Made by :meth:`AlpacaStore.getbroker`."""

    params = (("store", None),)

    def __init__(self) -> None:
        super().__init__()
        store: AlpacaStore = self.p.store
        self.store = store
        self.executor = store.executor
        self.journal = store.journal
        self.notifs: deque[Any] = deque()
        self.positions: dict[str, bt.Position] = {}
        self.open_orders: dict[str, Any] = {}  # client_order_id -> Backtrader order
        self.coids: dict[int, str] = {}  # order.ref -> client_order_id
        self._applied: dict[str, set[str]] = {}
        self._updates: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._cash = 0.0
        self.startingcash = 0.0
        self._fill_version = 0
        self._lock = threading.Lock()
        self._last_sync = 0.0
        self._fractionable: dict[str, bool] = {}
        # placed, not yet flushed: (order, request, perf_counter of its bar's arrival)
        self._pending: list[tuple[Any, OrderRequest, float]] = []
        self._late: list[_LateClone] = []  # Submitted notifications without their snapshot
        self._lengths: list[int] = []  # bars per data at the last next(): a new bar step?
        # (client_order_id, bar received, POST answered), perf_counter seconds; for benchmarks
        self.timings: list[tuple[str, float, float]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        self.refresh_account()
        self.startingcash = self._cash
        venue = self.executor.client.get_position_details()
        for name in self.store.datas:
            key = self.executor.classifier.alpaca_position_symbol(name)
            qty, entry = venue.get(key, (0.0, 0.0))
            # a position held at start keeps the venue's average entry price (its P&L basis)
            self.positions[name] = bt.Position(size=qty, price=entry)
        self._warm_assets()
        self._install_flush()
        self.store.start_trade_updates(self._on_trade_update)

    def stop(self) -> None:
        self.flush()
        super().stop()

    def _install_flush(self) -> None:
        """Add :class:`_FlushOrders` to the running Cerebro (called from its ``runstrategies``,
        before the strategies are made; the same frame lookup Backtrader uses for owners)."""
        cerebro = bt.metabase.findowner(self, bt.Cerebro)
        if cerebro is None:
            logger.warning("no Cerebro found: orders are sent at the broker's next cycle")
            return
        cerebro.analyzers[:] = [a for a in cerebro.analyzers if a[0] is not _FlushOrders]
        cerebro.addanalyzer(_FlushOrders, broker=self)

    def _warm_assets(self) -> None:
        """Read the asset facts orders need (fractionable, crypto increments) before the first
        live bar, not on its critical path. Failures are not cached: the order asks again."""
        for name in self.store.datas:
            info = self.executor.classifier.classify(name)
            try:
                if info.asset_class == "crypto":
                    self.executor.asset(info.canonical)
                elif info.canonical not in self._fractionable:
                    asset = self.executor.client.get_asset(info.canonical)
                    self._fractionable[info.canonical] = asset.fractionable
            except BrokerError as exc:
                logger.warning("%s: asset not read at start (%s)", name, exc)

    def refresh_account(self) -> None:
        """Re-read the cash from the account, unless fills landed during the request."""
        version = self._fill_version
        account = self.executor.client.get_account()
        with self._lock:
            if version == self._fill_version:
                self._cash = account.cash

    # -- Backtrader's broker interface -------------------------------------------------------
    def getcash(self) -> float:
        return self._cash

    def getvalue(self, datas: Any = None) -> float:
        value = self._cash
        for name, position in self.positions.items():
            if position.size:
                data = self.store.datas.get(name)
                price = data.close[0] if data is not None and len(data) else position.price
                value += position.size * price
        return value

    def getposition(self, data: Any, clone: bool = True) -> Any:
        position = self.positions.setdefault(data._name, bt.Position())
        return position.clone() if clone else position

    def has_open_order(self, data: Any) -> bool:
        return any(o.data is data for o in self.open_orders.values()) or any(
            item[0].data is data for item in self._pending
        )

    def get_notification(self) -> Any:
        if not self.notifs:
            return None
        item = self.notifs.popleft()
        return item.take() if isinstance(item, _LateClone) else item

    def notify(self, order: Any) -> None:
        self.notifs.append(order_snapshot(order))

    def _notify_submitted(self, order: Any) -> None:
        """:meth:`notify` of a just-placed order, with its snapshot taken after the step's batch
        is sent (:meth:`_take_snapshots`), not on the strategy's ``buy``/``sell``: the order
        does not change in between (nothing but this broker moves it), and the batch's first
        POST need not wait for every order's copy."""
        late = _LateClone(order)
        self.notifs.append(late)
        self._late.append(late)

    def _take_snapshots(self) -> None:
        """Take the pending ``Submitted`` snapshots: before anything moves an order placed
        this step (its answer, a refusal, a cancel)."""
        if self._late:
            for late in self._late:
                late.take()
            self._late.clear()

    def buy(self, owner: Any, data: Any, size: float, price: float | None = None,
            plimit: float | None = None, exectype: Any = None, valid: Any = None,
            tradeid: int = 0, oco: Any = None, trailamount: Any = None,
            trailpercent: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        return self._place(bt.order.BuyOrder, owner, data, size, price, plimit, exectype,
                           valid, tradeid, kwargs)  # fmt: skip

    def sell(self, owner: Any, data: Any, size: float, price: float | None = None,
             plimit: float | None = None, exectype: Any = None, valid: Any = None,
             tradeid: int = 0, oco: Any = None, trailamount: Any = None,
             trailpercent: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        return self._place(bt.order.SellOrder, owner, data, size, price, plimit, exectype,
                           valid, tradeid, kwargs)  # fmt: skip

    def _place(self, kind: Any, owner: Any, data: Any, size: float, price: float | None,
               plimit: float | None, exectype: Any, valid: Any, tradeid: int,
               kwargs: dict[str, Any]) -> Any:  # fmt: skip
        """A ``kind`` (Backtrader's ``BuyOrder``/``SellOrder``) of ``buy``/``sell``, queued."""
        order = kind(
            owner=owner, data=data, size=self._size(data, size, kwargs), price=price,
            pricelimit=plimit, exectype=exectype, valid=valid, tradeid=tradeid,
        )  # fmt: skip
        return self._submit(order, kwargs)

    def cancel(self, order: Any) -> None:
        queued = [item for item in self._pending if item[0] is order]
        if queued:  # never journaled, never sent
            self._pending.remove(queued[0])
            self._take_snapshots()
            order.cancel()
            self.notify(order)
            return
        coid = self.coids.get(order.ref)
        if coid is None or not order.alive():
            return
        try:
            self.executor.cancel(coid)
        except BrokerError as exc:
            logger.error("%s: cancel failed: %s", coid, exc)
        self._sync(coid)

    def next(self) -> None:
        """Send what is still queued, then apply journal changes (trade updates,
        reconciliation) to the open orders. A new bar starts reading the venue clock for the
        orders the strategies are about to place (whose flush releases the trade updates)."""
        self.flush(release=False)
        self.executor.trade_update_gate.expire()
        lengths = [len(data) for data in self.store.datas.values()]
        new_bar = lengths != self._lengths
        if new_bar:
            self._lengths = lengths
            self.executor.prefetch_clock()
        due: set[str] = set()
        while True:
            try:
                due.add(self._updates.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        since = now - self._last_sync
        # The periodic look at every open order (a backstop: trade updates are applied above)
        # waits for a loop round without a new bar, for one more period at most: on a bar step
        # it would delay the orders the strategy is about to place. resync() does not wait.
        if since >= _SYNC_EVERY_S and (not new_bar or since >= 2 * _SYNC_EVERY_S):
            self._last_sync = now
            due |= set(self.open_orders)
        self._sync_many([coid for coid in due if coid in self.open_orders])

    # -- submission --------------------------------------------------------------------------
    @staticmethod
    def _size(data: Any, size: float | None, kwargs: dict[str, Any]) -> float:
        notional = kwargs.get("notional")
        if notional is not None:
            close = float(data.close[0]) if len(data) else 0.0
            return notional / close if close > 0 else 0.0
        return abs(float(size or 0.0))

    def _fractional_ok(self, symbol: str) -> bool:
        if symbol not in self._fractionable:
            try:
                self._fractionable[symbol] = self.executor.client.get_asset(symbol).fractionable
            except BrokerError:
                self._fractionable[symbol] = False
        return self._fractionable[symbol]

    def _submit(self, order: Any, kwargs: dict[str, Any]) -> Any:
        data = order.data
        order.addinfo(**kwargs)
        order.addcomminfo(self.getcommissioninfo(data))
        order.submit(self)
        self._notify_submitted(order)
        symbol = data._name
        side: Literal["buy", "sell"] = "buy" if order.isbuy() else "sell"
        notional = kwargs.get("notional")
        exectype = order.exectype
        limit = exectype == bt.Order.Limit
        if exectype not in (None, bt.Order.Market, bt.Order.Limit):
            return self._refuse(order, "only market and limit orders are supported")
        info = self.executor.classifier.classify(symbol)
        qty: float | None = None
        if notional is None:
            qty = abs(order.created.size)
            if info.asset_class != "crypto":
                qty = equity_qty(qty, whole=limit or not self._fractional_ok(info.canonical))
            if qty <= 0:
                return self._refuse(order, f"size {order.created.size} rounds to 0")
        bar_ts = _bar_time(data.datetime[0])
        close = float(data.close[0])
        limit_price = float(order.created.price) if limit else None
        if self.store.dry_run:
            self.journal.record_intent(
                strategy_id=self.executor.strategy_id, symbol=info.canonical,
                position_symbol=self.executor.classifier.alpaca_position_symbol(symbol),
                side=side, qty=qty, notional=notional,
                order_type="limit" if limit else "market", limit_price=limit_price,
                time_in_force="gtc" if info.asset_class == "crypto" else "day",
                decision_bar_ts=bar_ts, failed_reason="dry_run",
            )  # fmt: skip
            return self._refuse(order, "dry_run")
        request = OrderRequest(
            symbol, side, bar_ts, qty=qty, notional=notional, price=close,
            order_type="limit" if limit else "market", limit_price=limit_price,
        )  # fmt: skip
        self._pending.append((order, request, getattr(data, "bar_received", 0.0)))
        return order

    def flush(self, *, release: bool = True) -> None:
        """Send the queued orders as one batch (:meth:`OrderExecutor.submit_many`); then, with
        ``release`` (the end of a strategy step), let the trade updates that a live bar held
        back through (``trade_update_gate``)."""
        if not self._pending:
            if release:
                self.executor.trade_update_gate.release()
            return
        batch, self._pending = self._pending, []
        try:
            results = self.executor.submit_many([item[1] for item in batch])
        except Exception as exc:  # the journal refused the batch: nothing was sent
            self._take_snapshots()
            logger.exception("%d orders not placed", len(batch))
            for order, _, _ in batch:
                self._refuse(order, f"not placed: {exc}")
            return
        finally:
            if release:
                self.executor.trade_update_gate.release()
        self._take_snapshots()
        coids = [r.row.client_order_id for r in results if r.row is not None]
        fills = self.journal.fills_many(coids) if coids else {}
        for (order, _, received), result in zip(batch, results, strict=True):
            self._settle(order, result, received, fills)

    def _settle(
        self,
        order: Any,
        result: SubmitResult,
        received: float,
        fills: dict[str, list[tuple[str, float, float]]],
    ) -> None:
        error, row = result.error, result.row
        if isinstance(error, RiskLimitBreached):
            self._refuse(order, f"risk:{error.rule}")
            return
        if row is None or row.state == "failed":
            if isinstance(error, OrderRejected):
                self._refuse(order, str(error), margin=error.status == 403)
            else:
                logger.error("%s: order not placed: %s", order.data._name, error)
                self._refuse(order, str(error or (row.reason if row else "not placed")))
            return
        if error is not None:  # sent, outcome unknown: recovery/reconciliation settle the row
            logger.error("%s: %s; tracked until the journal knows", row.client_order_id, error)
        coid = row.client_order_id
        if received:
            self.timings.append((coid, received, result.answered_at))
        self.coids[order.ref] = coid
        self.open_orders[coid] = order
        self._applied[coid] = set()
        self._apply(order, row, fills.get(coid))

    def _refuse(self, order: Any, reason: str, *, margin: bool = False) -> Any:
        self._take_snapshots()
        order.addinfo(reason=reason)
        if margin:
            order.margin()
        else:
            order.reject(self)
        self.notify(order)
        return order

    # -- progress ----------------------------------------------------------------------------
    async def _on_trade_update(self, event: Any) -> None:
        """The ``trade_updates`` handler: journal first, then tell the Backtrader thread."""
        try:
            self.executor.on_trade_update(event)
            coid = _event_coid(event)
            if coid is not None:
                self._updates.put(coid)
                self.store.hub.poke()  # a loop round applies it now, not at the next bar
        except Exception:
            logger.exception("trade update not handled; the periodic sync catches up")

    def resync(self) -> None:
        """Look at every open order on the next ``next()`` (after a reconciliation)."""
        self._last_sync = 0.0

    def _sync(self, coid: str) -> None:
        order = self.open_orders.get(coid)
        if order is not None:
            self._apply(order, self.journal.get(coid))

    def _sync_many(self, coids: list[str]) -> None:
        """:meth:`_sync` of many open orders with two journal reads (not two per order: each
        read waits for the journal lock, which the trade-update thread holds at bar time)."""
        if not coids:
            return
        rows = self.journal.get_many(coids)
        fills = self.journal.fills_many(coids)
        for row in rows:
            order = self.open_orders.get(row.client_order_id)
            if order is not None:
                self._apply(order, row, fills[row.client_order_id])

    def _apply(
        self, order: Any, row: JournalOrder, journaled: list[tuple[str, float, float]] | None = None
    ) -> None:
        """Bring ``order`` up to its journal ``row``; ``journaled``: its fills, when the caller
        read them already (else read here)."""
        coid = row.client_order_id
        if row.state not in ("intent", "submitted", "failed") and order.status == order.Submitted:
            order.accept(self)
            self.notify(order)
        applied = self._applied.setdefault(coid, set())
        if journaled is None:
            journaled = self.journal.fills(coid)
        fills = [f for f in journaled if f[0] not in applied]
        for i, (execution_id, qty, price) in enumerate(fills):
            applied.add(execution_id)
            self._execute(order, qty if order.isbuy() else -qty, price)
            last = i == len(fills) - 1
            if last and row.state == "filled":
                order.completed()
            else:
                order.partial()
            self.notify(order)
        if row.state in TERMINAL_STATES:
            final = {
                "canceled": order.cancel,
                "expired": lambda: setattr(order, "status", order.Expired),
                "rejected": lambda: order.reject(self),
                "failed": lambda: order.reject(self),
            }.get(row.state)  # fmt: skip
            if final is not None and order.alive():
                order.addinfo(reason=row.reason or row.state)
                final()
                self.notify(order)
            elif row.state == "filled" and order.status != order.Completed:
                order.completed()
                self.notify(order)
            self.open_orders.pop(coid, None)

    def _execute(self, order: Any, size: float, price: float) -> None:
        data = order.data
        position = self.getposition(data, clone=False)
        pprice_orig = position.price
        psize, pprice, opened, closed = position.update(size, price)
        comminfo = self.getcommissioninfo(data)
        closedvalue = comminfo.getoperationcost(closed, pprice_orig)
        openedvalue = comminfo.getoperationcost(opened, price)
        pnl = comminfo.profitandloss(-closed, pprice_orig, price)
        order.execute(
            data.datetime[0], size, price, closed, closedvalue, 0.0, opened, openedvalue, 0.0,
            0.0, pnl, psize, pprice,
        )  # fmt: skip
        with self._lock:
            self._cash -= size * price
            self._fill_version += 1
