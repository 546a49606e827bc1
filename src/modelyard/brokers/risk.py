"""The risk engine: every order is checked here before it leaves the process.

Rules (each names itself in ``RiskLimitBreached.rule``):

``kill_switch``        tripped (daily loss, an adopted breach, an operator): nothing goes out
                       until ``reset_kill_switch(operator=...)``; persisted in the journal
``max_position_units`` / ``max_position_notional``  per symbol, on the projected position
                       (journaled position + open orders + this order)
``max_gross_exposure`` sum of |projected position x price| over all symbols
``max_orders_per_minute``  sliding 60 s window of orders let through
``max_daily_loss``     equity below the day's first equity by more than this trips the switch
``stale_data``         the decision bar is older than ``stale_factor`` x the timeframe
``market_closed``      equities only trade while the venue clock says open (crypto 24/7)

Tripping the kill switch calls ``cancel_open_orders`` (set by the executor).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.brokers.journal import Journal
from modelyard.errors import RiskLimitBreached

__all__ = ["KillSwitchState", "OrderCheck", "RiskConfig", "RiskEngine"]

logger = logging.getLogger(__name__)
_KILL_KEY = "kill_switch"
_DAY_KEY = "day_start_equity"


class RiskConfig(BaseModel):
    """Limits; ``None`` switches a rule off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_position_units: float | None = Field(default=None, gt=0)
    max_position_notional: float | None = Field(default=None, gt=0)
    max_gross_exposure: float | None = Field(default=None, gt=0)
    max_orders_per_minute: int | None = Field(default=60, gt=0)
    max_daily_loss: float | None = Field(default=None, gt=0)
    timeframe: timedelta = timedelta(days=1)
    stale_factor: float = Field(default=2.0, gt=0)
    enforce_market_hours: bool = True
    # what reconciliation does when a position adopted from the broker breaks a limit
    on_adopted_breach: Literal["report", "kill_switch"] = "report"


@dataclass(frozen=True)
class KillSwitchState:
    active: bool
    reason: str | None = None
    at: str | None = None
    by: str | None = None


@dataclass(frozen=True)
class OrderCheck:
    """What the risk engine needs to judge one order."""

    symbol: str  # position symbol (AAPL, BTCUSD)
    asset_class: str
    signed_qty: float  # + buy, - sell (notional orders: notional / price)
    price: float
    decision_bar_ts: datetime
    now: datetime
    market_open: bool | None


class RiskEngine:
    """Checks orders against :class:`RiskConfig`; the kill switch lives in the journal."""

    def __init__(
        self,
        config: RiskConfig,
        journal: Journal,
        *,
        cancel_open_orders: Callable[[], object] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.config = config
        self.journal = journal
        self.cancel_open_orders = cancel_open_orders
        self._monotonic = monotonic or time.monotonic
        self._sent: deque[float] = deque()

    # -- kill switch -------------------------------------------------------------------------
    @property
    def kill_switch(self) -> KillSwitchState:
        raw = self.journal.get_risk_state(_KILL_KEY)
        if not raw:
            return KillSwitchState(active=False)
        return KillSwitchState(
            active=bool(raw.get("active")), reason=raw.get("reason"), at=raw.get("at"),
            by=raw.get("by"),
        )  # fmt: skip

    def trip_kill_switch(self, reason: str) -> None:
        """Block every new order (persisted) and cancel the open ones through the callback."""
        if not self.kill_switch.active:
            now = datetime.now(UTC).isoformat()
            self.journal.set_risk_state(_KILL_KEY, {"active": True, "reason": reason, "at": now})
            logger.error("kill switch tripped: %s", reason)
        if self.cancel_open_orders is not None:
            try:
                self.cancel_open_orders()
            except Exception:
                logger.exception("kill switch: cancelling the open orders failed")

    def reset_kill_switch(self, *, operator: str) -> None:
        if not operator.strip():
            raise ValueError("reset_kill_switch needs the operator's name")
        previous = self.kill_switch
        now = datetime.now(UTC).isoformat()
        self.journal.set_risk_state(
            _KILL_KEY,
            {
                "active": False,
                "reason": f"reset (was: {previous.reason})",
                "at": now,
                "by": operator,
            },
        )
        logger.warning("kill switch reset by %s (was: %s)", operator, previous.reason)

    # -- daily loss --------------------------------------------------------------------------
    def update_equity(
        self, equity: float, now: datetime, *, day_start: float | None = None
    ) -> None:
        """Track the day's P&L; a loss beyond ``max_daily_loss`` trips the kill switch."""
        day = now.astimezone(UTC).date().isoformat()
        stored = self.journal.get_risk_state(_DAY_KEY)
        if not stored or stored.get("day") != day:
            start = day_start if day_start is not None else equity
            self.journal.set_risk_state(_DAY_KEY, {"day": day, "equity": start})
        else:
            start = float(stored["equity"])
        limit = self.config.max_daily_loss
        if limit is not None and start - equity > limit:
            self.trip_kill_switch(
                f"max_daily_loss: equity {equity:.2f} is {start - equity:.2f} below the day's "
                f"start {start:.2f} (limit {limit:.2f})"
            )

    # -- orders ------------------------------------------------------------------------------
    def check(
        self,
        order: OrderCheck,
        *,
        positions: Mapping[str, float],
        prices: Mapping[str, float],
        kill_switch: KillSwitchState | None = None,
    ) -> None:
        """Raise :class:`RiskLimitBreached` when ``order`` breaks a rule.

        ``positions`` are the projected positions before this order (journal + open orders).
        ``kill_switch``: the state the caller read for a whole batch (one journal read per
        batch, not per order); read here when not given.
        """
        config = self.config
        state = self.kill_switch if kill_switch is None else kill_switch
        if state.active:
            raise RiskLimitBreached(f"kill switch is active: {state.reason}", rule="kill_switch")
        age = order.now - order.decision_bar_ts
        if age > config.timeframe * config.stale_factor:
            raise RiskLimitBreached(
                f"{order.symbol}: decision bar {order.decision_bar_ts.isoformat()} is {age} old "
                f"(more than {config.stale_factor} x {config.timeframe})",
                rule="stale_data",
            )
        if (
            config.enforce_market_hours
            and order.asset_class != "crypto"
            and order.market_open is not True
        ):
            raise RiskLimitBreached(f"{order.symbol}: the market is closed", rule="market_closed")
        after = positions.get(order.symbol, 0.0) + order.signed_qty
        self._check_position(order.symbol, after, order.price, grows=_grows(positions, order))
        if config.max_gross_exposure is not None:
            marks = {**prices, order.symbol: order.price}
            projected = {**positions, order.symbol: after}
            gross = sum(abs(q) * marks.get(s, 0.0) for s, q in projected.items())
            current = sum(abs(q) * marks.get(s, 0.0) for s, q in positions.items())
            if gross > config.max_gross_exposure and gross > current:
                raise RiskLimitBreached(
                    f"gross exposure would be {gross:.2f} > {config.max_gross_exposure:.2f}",
                    rule="max_gross_exposure",
                )
        if config.max_orders_per_minute is not None:
            now = self._monotonic()
            while self._sent and now - self._sent[0] >= 60.0:
                self._sent.popleft()
            if len(self._sent) >= config.max_orders_per_minute:
                raise RiskLimitBreached(
                    f"{len(self._sent)} orders in the last minute "
                    f"(limit {config.max_orders_per_minute})",
                    rule="max_orders_per_minute",
                )

    def check_resend(self, decision_bar_ts: datetime, now: datetime) -> None:
        """The rules that still apply to an intent recovered after a restart."""
        state = self.kill_switch
        if state.active:
            raise RiskLimitBreached(f"kill switch is active: {state.reason}", rule="kill_switch")
        if now - decision_bar_ts > self.config.timeframe * self.config.stale_factor:
            raise RiskLimitBreached(
                f"decision bar {decision_bar_ts.isoformat()} is stale at {now.isoformat()}",
                rule="stale_data",
            )

    def record_sent(self) -> None:
        """Count an order that passed :meth:`check` in the per-minute window."""
        self._sent.append(self._monotonic())

    def check_position(self, symbol: str, qty: float, price: float) -> None:
        """Check a held position (e.g. one adopted by reconciliation) against the limits."""
        self._check_position(symbol, qty, price, grows=True)

    def _check_position(self, symbol: str, qty: float, price: float, *, grows: bool) -> None:
        if not grows:
            return  # an order that shrinks the position is always allowed
        units = self.config.max_position_units
        if units is not None and abs(qty) > units + 1e-12:
            raise RiskLimitBreached(
                f"{symbol}: position {qty} would exceed {units} units", rule="max_position_units"
            )
        notional = self.config.max_position_notional
        if notional is not None and abs(qty) * price > notional + 1e-9:
            raise RiskLimitBreached(
                f"{symbol}: position notional {abs(qty) * price:.2f} would exceed {notional:.2f}",
                rule="max_position_notional",
            )


def _grows(positions: Mapping[str, float], order: OrderCheck) -> bool:
    before = positions.get(order.symbol, 0.0)
    return abs(before + order.signed_qty) > abs(before) + 1e-12
