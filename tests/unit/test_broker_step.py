"""The broker's bar step: what runs between a live bar and the strategy's orders."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from modelyard.brokers._trade_updates import TradeUpdateGate
from modelyard.brokers.bt_broker import _SYNC_EVERY_S, AlpacaBroker, _bar_time
from modelyard.feeds.bt_feeds import bt_num_to_utc
from modelyard.feeds.live import bt_date_number


class _Data:
    def __init__(self) -> None:
        self.bars = 1

    def __len__(self) -> int:
        return self.bars


def _broker(monkeypatch: pytest.MonkeyPatch) -> tuple[AlpacaBroker, _Data, list[list[str]]]:
    data = _Data()
    executor = SimpleNamespace(
        trade_update_gate=TradeUpdateGate(), prefetch_clock=lambda: None, client=None
    )
    store = SimpleNamespace(executor=executor, journal=None, datas={"AAPL": data})
    broker = AlpacaBroker(store=store)  # type: ignore[call-arg]
    synced: list[list[str]] = []
    monkeypatch.setattr(broker, "_sync_many", lambda coids: synced.append(sorted(coids)))
    broker.open_orders = {"c1": object(), "c2": object()}
    return broker, data, synced


def test_the_periodic_sync_waits_for_a_round_without_a_new_bar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Looking at every open order on a bar step would delay the step's orders; it runs on
    the next round without a bar, or on a bar step once it is a whole period late."""
    broker, data, synced = _broker(monkeypatch)
    broker.next()  # the first round (a new bar) syncs: it never synced before
    assert synced == [["c1", "c2"]]
    broker._last_sync = time.monotonic() - 1.5 * _SYNC_EVERY_S  # due
    data.bars += 1
    broker.next()  # a new bar: deferred
    assert synced[-1] == []
    broker.next()  # same bars: the deferred sync runs
    assert synced[-1] == ["c1", "c2"]
    broker._last_sync = time.monotonic() - 2.5 * _SYNC_EVERY_S  # a whole period late
    data.bars += 1
    broker.next()
    assert synced[-1] == ["c1", "c2"]


def test_trade_updates_and_resync_are_applied_on_a_bar_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker, data, synced = _broker(monkeypatch)
    broker.next()
    broker._updates.put("c2")  # a fill journaled by the trade-update thread
    data.bars += 1
    broker.next()
    assert synced[-1] == ["c2"]
    broker.resync()  # after a reconciliation: at once, bar or not
    data.bars += 1
    broker.next()
    assert synced[-1] == ["c1", "c2"]


def test_cached_bar_times_equal_the_conversions() -> None:
    for stamp in ("2024-01-02 14:30", "2024-03-10 07:00:00.123456", "1999-12-31 23:59:59"):
        ts = pd.Timestamp(stamp, tz="UTC")
        num = bt_date_number(int(ts.value))
        assert num == bt.date2num(ts.tz_localize(None).to_pydatetime())
        expected = bt_num_to_utc(num).to_pydatetime()
        assert _bar_time(num) == expected
        assert _bar_time(num).tzinfo == expected.tzinfo


def _placed(steps: Callable[[AlpacaBroker, Any, Any], None]) -> AlpacaBroker:
    """Run ``steps(broker, strategy, data)`` once inside a real strategy step (PandasData) on an
    AlpacaBroker whose store is a stub (nothing is sent: the test drives the broker)."""
    from modelyard.config import load_config
    from modelyard.routing.classifier import AssetClassifier

    executor = SimpleNamespace(
        trade_update_gate=TradeUpdateGate(), prefetch_clock=lambda: None,
        classifier=AssetClassifier(load_config()), strategy_id="t",
    )  # fmt: skip
    store = SimpleNamespace(executor=executor, journal=None, datas={}, dry_run=False)
    broker = AlpacaBroker(store=store)  # type: ignore[call-arg]
    broker._fractionable = {"AAPL": False}
    index = pd.date_range("2024-01-02 14:30", periods=3, freq="1min")
    frame = pd.DataFrame(1.0, index=index, columns=["open", "high", "low", "close", "volume"])

    class Once(bt.Strategy):  # type: ignore[misc]
        def next(self) -> None:
            if len(self) == 2:
                steps(broker, self, self.datas[0])

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame), name="AAPL")
    cerebro.addstrategy(Once)
    cerebro.run()
    return broker


def _statuses(broker: AlpacaBroker) -> list[tuple[int, str]]:
    out = []
    while (order := broker.get_notification()) is not None:
        out.append((order.ref, order.getstatusname()))
    return out


def test_submitted_notifications_are_snapshots_taken_before_the_order_moves() -> None:
    """The Submitted copy is taken after the step's batch, but shows the order as placed."""
    seen: dict[str, Any] = {}

    def steps(broker: AlpacaBroker, strategy: Any, data: Any) -> None:
        first = broker.buy(strategy, data, size=2)
        second = broker.buy(strategy, data, size=3)
        third = broker.buy(strategy, data, size=0.5)  # whole shares only: rounds to 0
        broker.cancel(second)  # still queued: never sent
        assert [item[0] for item in broker._pending] == [first]
        broker._take_snapshots()  # what flush does once the batch is answered
        first.accept(broker)
        broker.notify(first)
        seen.update(first=first.ref, second=second.ref, third=third.ref)

    broker = _placed(steps)
    refs = seen
    assert _statuses(broker) == [
        (refs["first"], "Submitted"), (refs["second"], "Submitted"),
        (refs["third"], "Submitted"), (refs["third"], "Rejected"),
        (refs["second"], "Canceled"), (refs["first"], "Accepted"),
    ]  # fmt: skip


def test_order_snapshot_is_backtraders_clone() -> None:
    """``order_snapshot`` gives what ``order.clone()`` gives: a shallow copy whose ``executed``
    is a copy taken after ``markpending`` (each snapshot shows the executions since the last
    one), and a later fill or status change of the order leaves the snapshot as it was."""
    import copy

    from modelyard.brokers.bt_broker import order_snapshot

    order = bt.BuyOrder(size=3, price=None, exectype=bt.Order.Market, simulated=True)
    order.executed.add(None, 1, 100.0)
    twin = copy.deepcopy(order.executed)
    got = order_snapshot(order)
    assert type(got) is type(order)
    assert got.__dict__.keys() == order.__dict__.keys()
    for key, value in order.__dict__.items():
        if key != "executed":
            assert got.__dict__[key] is value, key
    assert got.executed is not order.executed
    want = twin.clone()  # Backtrader's clone of the same execution state
    assert {k: v for k, v in got.executed.__dict__.items() if k != "exbits"} == {
        k: v for k, v in want.__dict__.items() if k != "exbits"
    }
    assert [vars(b) for b in got.executed.exbits] == [vars(b) for b in want.exbits]
    assert [bit.size for bit in got.executed.iterpending()] == [1]
    order.executed.add(None, 2, 101.0)
    order.completed()
    assert (got.executed.size, got.status) == (1, bt.Order.Created)
    later = order_snapshot(order)
    assert later.executed.size == 3
    assert [bit.size for bit in later.executed.iterpending()] == [2]  # only the new one
