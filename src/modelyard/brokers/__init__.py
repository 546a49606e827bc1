"""The paper-trading core: order journal, risk engine, Alpaca client, executor, reconciliation.

Nothing is sent twice and nothing is lost: every intent is committed to the SQLite journal
(with a deterministic ``client_order_id``) before the POST, unknown outcomes are resolved by
looking the id up at the venue, and reconciliation adopts the venue's truth.
"""

from modelyard.brokers.alpaca_client import (
    AccountInfo,
    AlpacaClient,
    AssetInfo,
    BrokerOrder,
    ClockInfo,
    OutcomeUnknown,
    RetryPolicy,
)
from modelyard.brokers.executor import OrderExecutor
from modelyard.brokers.journal import Journal, JournalError, JournalOrder, make_client_order_id
from modelyard.brokers.reconcile import Discrepancy, ReconcileReport, reconcile
from modelyard.brokers.risk import KillSwitchState, OrderCheck, RiskConfig, RiskEngine

__all__ = [
    "AccountInfo",
    "AlpacaClient",
    "AssetInfo",
    "BrokerOrder",
    "ClockInfo",
    "Discrepancy",
    "Journal",
    "JournalError",
    "JournalOrder",
    "KillSwitchState",
    "OrderCheck",
    "OrderExecutor",
    "OutcomeUnknown",
    "ReconcileReport",
    "RetryPolicy",
    "RiskConfig",
    "RiskEngine",
    "make_client_order_id",
    "reconcile",
]
